"""Tests of pullqueue_worker (kombu_appengine.worker)."""
