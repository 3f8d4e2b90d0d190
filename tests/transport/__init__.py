"""Tests of the kombu transport (kombu_appengine.transport), through kombu's API."""
