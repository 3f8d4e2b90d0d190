"""Celery on pull queues, end to end."""
