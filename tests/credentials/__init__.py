"""Tests of credentials (kombu_appengine.credentials) and pullqueue_authenticate."""
