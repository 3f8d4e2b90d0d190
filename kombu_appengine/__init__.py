"""kombu, a multi-process worker and Celery on App Engine pull queues.

The kombu transport is ``kombu_appengine:Transport``; importing this package
also registers it under the URL scheme ``appengine://`` for kombu and
Celery. The emulator of the Task Queue REST API is
:mod:`kombu_appengine.emulator`.
"""

from typing import Any

from kombu.transport import TRANSPORT_ALIASES

__version__ = "0.1.0"

#: The URL scheme kombu and Celery know this transport by.
URL_SCHEME = "appengine"
TRANSPORT_ALIASES.setdefault(URL_SCHEME, "kombu_appengine:Transport")

__all__ = ["URL_SCHEME", "Transport", "__version__"]


def __getattr__(name: str) -> Any:
    # The transport (and google-api-python-client behind it) loads on first
    # use, so the emulator alone starts quickly and quietly.
    if name == "Transport":
        from .transport import Transport

        return Transport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
