"""kombu, a multi-process worker and Celery on App Engine pull queues.

The kombu transport is ``kombu_appengine:Transport``; the emulator of the
Task Queue REST API is :mod:`kombu_appengine.emulator`.
"""

__version__ = "0.1.0"

from .transport import Transport

__all__ = ["Transport", "__version__"]
