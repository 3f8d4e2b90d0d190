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

Needs the ``gateway`` extra (``appengine-python-standard``).
"""

from .appengine import AppEngineBackend

__all__ = ["AppEngineBackend"]
