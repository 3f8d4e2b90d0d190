"""The test suite of kombu-appengine-pullqueue."""
