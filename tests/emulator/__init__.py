"""Tests of the emulator (kombu_appengine.emulator): its domain, its REST API, its process."""
