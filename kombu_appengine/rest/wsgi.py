"""The REST front as a WSGI application, for any WSGI server (App Engine's gunicorn, wsgiref).

:class:`WsgiApp` reads a request from the WSGI environment, once its head
is authenticated (:meth:`RestApi.check_head
<kombu_appengine.rest.front.RestApi.check_head>`), bounded by the front's
body limit for its endpoint (413 beyond), hands it to
:meth:`RestApi.dispatch <kombu_appengine.rest.front.RestApi.dispatch>`, and
writes the answer.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any, Callable

from . import batch
from .errors import ApiError, too_large
from .faults import ResetConnection
from .front import Response, RestApi, error_response

StartResponse = Callable[..., Any]


class WsgiApp:
    """A WSGI application answering every request through ``api``.

    Parameters:
        api: the REST front with its backend.
    """

    def __init__(self, api: RestApi) -> None:
        self.api = api
        self._request = threading.local()
        api.batch_handler = lambda headers, body, token: batch.answer_batch(
            api, headers, body, self._request.host, token
        )

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        response = self._answer(environ)
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = "Unknown"
        headers = [("Content-Length", str(len(response.body)))]
        if response.content_type:
            headers.append(("Content-Type", response.content_type))
        headers.extend(response.headers)
        start_response(f"{response.status} {reason}", headers)
        return [response.body]

    def _answer(self, environ: dict[str, Any]) -> Response:
        method = environ.get("REQUEST_METHOD", "GET")
        # The path as sent, so that percent-encoded segments are decoded once, by routing.
        raw_path = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        if raw_path:
            target = (
                raw_path if raw_path.startswith("/") else "/" + raw_path.split("://", 1)[-1].partition("/")[2]
            )
        else:
            path = urllib.parse.quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
            query = environ.get("QUERY_STRING", "")
            target = path + ("?" + query if query else "")
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        host = (
            headers.get("host")
            or f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
        )
        self._request.host = host
        try:
            body = self._body(environ, method, target, headers)
            return self.api.dispatch(method, target, headers, body, host)
        except ApiError as error:
            return error_response(error)
        except ResetConnection:
            return error_response(ApiError(503, "backendError", "The request was dropped"))

    def _body(self, environ: dict[str, Any], method: str, target: str, headers: dict[str, str]) -> bytes:
        # Before the body: a caller without credentials is not read from.
        self.api.check_head(method, target, headers)
        limit = self.api.body_limit(method, target, headers)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise ApiError(400, "badRequest", "Malformed Content-Length") from None
        if length > limit:
            raise too_large(limit)
        stream = environ.get("wsgi.input")
        return stream.read(length) if stream is not None and length > 0 else b""
