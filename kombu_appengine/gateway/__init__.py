"""The gateway: the Task Queue REST API (v1beta2) on App Engine's own task queue service.

Google turned the REST API off; pull queues live on only inside App Engine,
through its bundled task queue service. The gateway is a small WSGI
application, deployed as a service of your own App Engine app
(``pullqueue_gateway scaffold``), that speaks the REST API on top of that
service, so the transport, the worker and Celery reach real pull queues with
nothing changed but ``api_endpoint`` and credentials.

It is the REST front the emulator uses (:mod:`kombu_appengine.rest`) on
another backend, :class:`~.appengine.AppEngineBackend`. On this machine,
``pullqueue_gateway serve`` runs it on the SDK's task queue stub
(:mod:`.local`), a second local server whose queue semantics are Google's own.

Serving needs the ``gateway`` extra (``appengine-python-standard``); scaffolding does not.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from ..api import bare_project
from ..rest.front import RestApi
from ..rest.wsgi import WsgiApp
from .auth import GOOGLE_TOKENINFO_URL, TokenInfoAuthenticator

__all__ = ["AppEngineBackend", "TokenInfoAuthenticator", "make_app"]


def __getattr__(name: str) -> Any:
    # The App Engine SDK (the gateway extra) is imported only when the backend is
    # used: scaffolding a deployment and --version need only this package.
    if name == "AppEngineBackend":
        from .appengine import AppEngineBackend

        return AppEngineBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Largest request body the gateway reads (413 beyond): App Engine's own cap on
#: a request, 32 MiB, which also bounds what one request can make an instance hold.
MAX_REQUEST_BYTES = 32 * 1024 * 1024
#: Seconds the deployed gateway reuses the queues' settings (mode, retry limit, ACL).
QUEUES_TTL = 10.0


def make_app(queue_yaml: str | None = "queue.yaml", environ: Any = None) -> Any:
    """The gateway as a WSGI application on App Engine (what ``main.py`` serves).

    Settings come from the environment (``env_variables`` in ``app.yaml``):

    * ``GATEWAY_ALLOWED_SERVICE_ACCOUNTS``: emails, comma-separated, allowed on
      every queue whatever its ``acl``;
    * ``GATEWAY_TOKENINFO_URL``: the token-info endpoint (Google's by default).

    The application id is App Engine's own (``GAE_APPLICATION``). ``queue_yaml``
    (deployed beside ``main.py``) gives the ``writer_email`` entries, which
    App Engine does not report.
    """
    from ..emulator.queue_yaml import load_queue_yaml
    from .appengine import AppEngineBackend

    env = os.environ if environ is None else environ
    writers: dict[str, list[str]] = {}
    if queue_yaml and os.path.exists(queue_yaml):
        writers = {config.name: list(config.producer_emails) for config in load_queue_yaml(queue_yaml)}
    project = env.get("GAE_APPLICATION") or env.get("GOOGLE_CLOUD_PROJECT")
    backend = AppEngineBackend(
        bare_project(project) if project else None,
        lock=contextlib.nullcontext(),
        writers=writers,
        queues_ttl=QUEUES_TTL,
    )
    authenticator = TokenInfoAuthenticator(
        env.get("GATEWAY_TOKENINFO_URL") or GOOGLE_TOKENINFO_URL,
        allowed_service_accounts=(env.get("GATEWAY_ALLOWED_SERVICE_ACCOUNTS") or "").split(","),
    )
    app: Any = WsgiApp(
        RestApi(
            backend,
            authenticator=authenticator,
            keep_tokens=False,
            fault_injection=False,
            max_body_bytes=MAX_REQUEST_BYTES,
        )
    )
    if env.get("GAE_ENV") == "standard":
        from google.appengine.api import wrap_wsgi_app

        app = wrap_wsgi_app(app)
    return app
