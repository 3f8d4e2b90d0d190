"""The REST surface of the emulator: routes, parameters, auth and responses.

:class:`RestApi` turns one HTTP request (method, target, headers, body) into
one :class:`Response`, calling :class:`~kombu_appengine.emulator.model.TaskQueueService`
for the work. It knows nothing of sockets, so the batch endpoint runs each
of its parts through the same :meth:`RestApi.dispatch`.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

from .. import discovery
from . import errors
from .errors import ApiError
from .model import TaskQueueService

#: Where the API lives below the server's root.
SERVICE_PATH = "/taskqueue/v1beta2/projects/"
#: The batch endpoint, at both paths discovery revisions gave.
BATCH_PATHS = ("/batch", "/batch/taskqueue/v1beta2")
#: Content type of every JSON answer.
JSON_TYPE = "application/json; charset=UTF-8"
#: ACL roles: ``user_email`` entries consume, ``writer_email`` entries insert.
CONSUMER, PRODUCER = "consumer", "producer"
_ROLE_VERBS = {CONSUMER: "consume from", PRODUCER: "insert into", "any": "use"}


class Response(NamedTuple):
    """An HTTP answer before it is written to a socket."""

    status: int
    body: bytes = b""
    content_type: str | None = JSON_TYPE


def json_response(status: int, document: Any) -> Response:
    """A JSON answer."""
    return Response(status, json.dumps(document).encode("utf-8"))


def error_response(error: ApiError) -> Response:
    """Google's JSON error body with the error's status."""
    return Response(error.code, error.body())


def _one(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def int_param(query: Mapping[str, list[str]], name: str) -> int:
    """A required integer query parameter.

    Raises:
        ApiError: 400 naming the parameter when it is missing or not an integer.
    """
    value = _one(query, name)
    if value is None:
        raise errors.bad_request(f"Required parameter {name} is missing", reason="required")
    try:
        return int(value)
    except ValueError:
        raise errors.bad_request(f"Invalid value {value!r} for {name}: expected an integer") from None


def bool_param(query: Mapping[str, list[str]], name: str) -> bool:
    """An optional boolean query parameter (``true``/``false``), false when absent."""
    value = _one(query, name)
    if value is None:
        return False
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise errors.bad_request(f"Invalid value {value!r} for {name}: expected true or false")
    return lowered == "true"


def json_body(body: bytes) -> Any:
    """The request body as JSON.

    Raises:
        ApiError: 400 when the body is missing or not JSON.
    """
    if not body.strip():
        raise errors.bad_request("This method needs a Task in the request body", reason="required")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.bad_request(f"The request body is not valid JSON: {exc}", reason="parseError") from None
    except RecursionError:
        raise errors.bad_request(
            "The request body is not valid JSON: nested too deeply", reason="parseError"
        ) from None


class RestApi:
    """Route and answer requests for a :class:`TaskQueueService`.

    Parameters:
        service: the queues.
        require_auth: refuse requests without a bearer token (401).
        accepted_tokens: when not ``None``, the only bearer tokens accepted.
        identities: when not ``None``, the account (email) of each bearer
            token; requests are then held to the queues' ACLs (403): a
            ``user_email`` may consume, a ``writer_email`` may insert.
    """

    def __init__(
        self,
        service: TaskQueueService,
        require_auth: bool = False,
        accepted_tokens: set[str] | None = None,
        identities: Mapping[str, str] | None = None,
    ) -> None:
        self.service = service
        self.require_auth = require_auth
        self.accepted_tokens = accepted_tokens
        self.identities = identities
        #: Every bearer token received, in order, for tests of credentials.
        self.tokens: list[str] = []
        self._tokens_lock = threading.Lock()
        #: Set by the server: answers the batch endpoint.
        self.batch_handler: Callable[[Mapping[str, str], bytes, str | None], Response] | None = None

    def dispatch(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        host: str,
        outer_token: str | None = None,
    ) -> Response:
        """Answer one request; never raises for a bad request.

        ``headers`` has lower-case names; ``host`` is the server's address as
        the client named it (for the discovery document's ``rootUrl``);
        ``outer_token`` is the bearer token of the batch a part came in.
        """
        try:
            return self._dispatch(method.upper(), target, headers, body, host, outer_token)
        except ApiError as error:
            return error_response(error)

    def _authenticate(
        self, headers: Mapping[str, str], query: Mapping[str, list[str]], outer_token: str | None
    ) -> str | None:
        token = None
        authorization = headers.get("authorization")
        if authorization:
            scheme, _, credentials = authorization.strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                token = credentials.strip()
        token = token or _one(query, "oauth_token") or outer_token
        if token is not None:
            with self._tokens_lock:
                self.tokens.append(token)
        if token is None and self.require_auth:
            raise errors.login_required()
        if token is not None and self.accepted_tokens is not None and token not in self.accepted_tokens:
            raise errors.invalid_credentials()
        return token

    def _dispatch(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        host: str,
        outer_token: str | None,
    ) -> Response:
        path, _, query_string = target.partition("?")
        query = urllib.parse.parse_qs(query_string, keep_blank_values=True)
        override = headers.get("x-http-method-override")
        if override and method == "POST":
            method = override.upper()
            if method == "GET" and headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"
            ):
                # google-api-python-client sends a GET whose URL would pass
                # 2048 characters as such a POST, its query in the body.
                form = urllib.parse.parse_qs(body.decode("latin-1"), keep_blank_values=True)
                query = {**query, **form}
        if path == discovery.DISCOVERY_PATH:
            if method != "GET":
                raise ApiError(405, "httpMethodNotAllowed", f"{method} is not allowed on {path}")
            return Response(200, discovery.document_json(f"http://{host}/").encode("utf-8"))
        if path in BATCH_PATHS:
            if method != "POST":
                raise ApiError(405, "httpMethodNotAllowed", f"{method} is not allowed on {path}")
            token = self._authenticate(headers, query, None)
            assert self.batch_handler is not None
            return self.batch_handler(headers, body, token)
        if not path.startswith(SERVICE_PATH):
            raise errors.not_found(f"No API at {path}")
        segments = [urllib.parse.unquote(part) for part in path[len(SERVICE_PATH) :].split("/")]
        if len(segments) < 3 or segments[1] != "taskqueues" or not all(segments):
            raise errors.not_found(f"No API at {path}")
        project, _, queue = segments[:3]
        rest = segments[3:]
        service = self.service
        if not rest:
            self._allow(method, path, "GET")
            self._authorize(headers, query, outer_token, queue, "any")
            return json_response(200, service.get_queue(project, queue, bool_param(query, "getStats")))
        if rest[0] != "tasks" or len(rest) > 2:
            raise errors.not_found(f"No API at {path}")
        if len(rest) == 1:
            self._allow(method, path, "GET", "POST")
            self._authorize(headers, query, outer_token, queue, CONSUMER if method == "GET" else PRODUCER)
            if method == "GET":
                return json_response(200, service.list_tasks(project, queue))
            return json_response(200, service.insert(project, queue, json_body(body)))
        task = rest[1]
        if task == "lease" and method == "POST":
            self._authorize(headers, query, outer_token, queue, CONSUMER)
            tag = _one(query, "tag")
            return json_response(
                200,
                service.lease(
                    project,
                    queue,
                    int_param(query, "numTasks"),
                    int_param(query, "leaseSecs"),
                    bool_param(query, "groupByTag"),
                    tag,
                ),
            )
        self._allow(method, path, "GET", "DELETE", "POST", "PATCH")
        self._authorize(headers, query, outer_token, queue, CONSUMER)
        if method == "GET":
            return json_response(200, service.get_task(project, queue, task))
        if method == "DELETE":
            service.delete_task(project, queue, task)
            return Response(204, b"", None)
        new_lease = int_param(query, "newLeaseSeconds")
        return json_response(200, service.update_task(project, queue, task, new_lease, json_body(body)))

    def _authorize(
        self,
        headers: Mapping[str, str],
        query: Mapping[str, list[str]],
        outer_token: str | None,
        queue: str,
        role: str,
    ) -> None:
        """Authenticate, then hold the token's account to the queue's ACL (when identities are known)."""
        token = self._authenticate(headers, query, outer_token)
        if self.identities is None:
            return
        email = self.identities.get(token) if token is not None else None
        config = self.service.configs.get(queue)
        if config is None:
            return  # the service answers 404 for it
        allowed = {
            CONSUMER: config.consumer_emails,
            PRODUCER: config.producer_emails,
            "any": config.consumer_emails + config.producer_emails,
        }[role]
        if email is None or email not in allowed:
            who = email or "this caller"
            raise ApiError(
                403,
                "forbidden",
                f"{who} is not allowed to {_ROLE_VERBS[role]} queue {queue!r}: "
                "see the acl of the queue in queue.yaml",
            )

    @staticmethod
    def _allow(method: str, path: str, *allowed: str) -> None:
        if method not in allowed:
            raise ApiError(405, "httpMethodNotAllowed", f"{method} is not allowed on {path}")


def parse_headers(lines: list[bytes]) -> dict[str, str]:
    """Header lines (``Name: value``) as a dict with lower-case names.

    Raises:
        ApiError: 400 for a line that is not a header.
    """
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name.strip():
            raise errors.bad_request(f"Malformed header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers
