"""kombu, a multi-process worker and Celery on App Engine pull queues.

The kombu transport is ``kombu_appengine:Transport``; importing this package
also registers it under the URL scheme ``appengine://`` for kombu and
Celery. The emulator of the Task Queue REST API is
:mod:`kombu_appengine.emulator`.
"""

from kombu.transport import TRANSPORT_ALIASES

from .transport import Transport

__version__ = "0.1.0"

#: The URL scheme kombu and Celery know this transport by.
URL_SCHEME = "appengine"
TRANSPORT_ALIASES.setdefault(URL_SCHEME, "kombu_appengine:Transport")

__all__ = ["Transport", "URL_SCHEME", "__version__"]
