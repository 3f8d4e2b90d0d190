"""The REST front: routes, parameters, auth and responses, for every backend.

:class:`RestApi` turns one HTTP request (method, target, headers, body) into
one :class:`Response`, calling a :class:`~kombu_appengine.rest.backend.TaskQueueBackend`
for the work: the emulator's :class:`~kombu_appengine.emulator.model.TaskQueueService`
or the gateway's App Engine backend. It knows nothing of sockets, so the
batch endpoint runs each of its parts through the same dispatch, and any
server (the emulator's, or a WSGI server through :mod:`.wsgi`) can host it.

Requests for ``/`` and under ``/dashboard/`` go to the dashboard
(:mod:`kombu_appengine.dashboard`), which uses the same authentication and
ACLs (:meth:`RestApi.caller`, :meth:`RestApi.check_acl`).

Authentication is the emulator's static one by default (``require_auth``,
``accepted_tokens``, ``identities``), or an :class:`Authenticator` (the
gateway verifies tokens at Google's token-info endpoint). When the caller's
email is known, it is held to the queue's ACL (403).

Body limits, per endpoint, derived from the API's own limits
(:meth:`RestApi.body_limit`): insert, update and patch take
:data:`MAX_TASK_BODY_BYTES` (a Task whose payload is the largest the API
allows, as base64 JSON, plus slack), the batch endpoint
:data:`MAX_BATCH_BODY_BYTES` (as many such requests as a batch may hold),
everything else :data:`MAX_SMALL_BODY_BYTES`.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, Callable, NamedTuple, Protocol

from .. import api, discovery
from . import errors
from .backend import QueueAcl, QueueAdmin, TaskQueueBackend, no_such_task
from .errors import ApiError
from .faults import RETRY_TEST_HEADER, RETRY_TEST_PATH, FaultInjector, ResetConnection

logger = logging.getLogger(__name__)

#: Content type of every JSON answer.
JSON_TYPE = "application/json; charset=UTF-8"
#: Room in a Task's JSON body beside its base64 payload: the other fields
#: (a tag of up to 500 bytes, escaped up to six times over, the name, the
#: queue name) and whitespace.
TASK_BODY_SLACK = 64 * 1024
#: Largest body of insert, update and patch: a Task with the largest payload
#: the API allows, in base64, plus :data:`TASK_BODY_SLACK`.
MAX_TASK_BODY_BYTES = 4 * -(-api.MAX_PAYLOAD_BYTES // 3) + TASK_BODY_SLACK
#: Largest body of every other request (the form of a long GET sent as a
#: POST, a retry test's document).
MAX_SMALL_BODY_BYTES = 64 * 1024
#: Room per part of a batch for its MIME headers and its request's head.
BATCH_PART_SLACK = 8 * 1024
#: Largest body of the batch endpoint: as many of the largest requests as a batch may hold.
MAX_BATCH_BODY_BYTES = api.MAX_BATCH_PARTS * (MAX_TASK_BODY_BYTES + BATCH_PART_SLACK)
#: Most of ``{``, ``[``, ``,`` and ``:`` (outside strings) a JSON body may hold: a
#: Task has a handful of fields, and parsing a body of ``[{},{},...]`` costs
#: some 25 times its size in memory before any check could refuse it.
MAX_JSON_STRUCTURE = 256
#: How many bearer tokens :attr:`RestApi.tokens` keeps (the latest).
TOKENS_KEPT = 1000
#: Methods whose body is a Task.
_TASK_BODY_METHODS = frozenset({api.TASKS_INSERT.id, api.TASKS_UPDATE.id, api.TASKS_PATCH.id})
#: A JSON string, escapes included (unrolled, so long strings cost no backtracking).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
#: An integer query parameter: an optional minus sign, then ASCII digits only.
_INTEGER = re.compile(r"-?[0-9]+\Z")
#: ACL roles: ``user_email`` entries consume, ``writer_email`` entries insert.
CONSUMER, PRODUCER = "consumer", "producer"
_ROLE_VERBS = {CONSUMER: "consume from", PRODUCER: "insert into", "any": "use"}


class Identity(NamedTuple):
    """Who a request comes from, for the queues' ACLs."""

    #: The caller's email; ``None`` when the token names none.
    email: str | None
    #: Allowed on every queue (the gateway's allow-list of service accounts).
    everywhere: bool = False
    #: The token carries only the consume-only scope: no insert, whatever the ACL.
    consume_only: bool = False


class Authenticator(Protocol):
    """Tells who sends a request from its bearer token."""

    def identify(self, token: str | None) -> Identity | None:
        """The caller, or ``None`` when requests are not held to ACLs.

        Raises:
            ApiError: 401 when the token is missing or not valid.
        """


class Response(NamedTuple):
    """An HTTP answer before it is written to a socket."""

    status: int
    body: bytes = b""
    content_type: str | None = JSON_TYPE
    #: More header lines (name, value) beside Content-Type and Content-Length.
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, document: Any) -> Response:
    """A JSON answer."""
    return Response(status, json.dumps(document).encode("utf-8"))


def error_response(error: ApiError) -> Response:
    """Google's JSON error body with the error's status."""
    return Response(error.code, error.body())


def _one(query: Mapping[str, list[str]], name: str) -> str | None:
    """A query parameter given at most once.

    Raises:
        ApiError: 400 naming the parameter when it is given more than once
            (which of the values would count is anyone's guess).
    """
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise errors.bad_request(f"Parameter {name} is given {len(values)} times: give it once")
    return values[0]


def parse_query(text: str) -> dict[str, list[str]]:
    """A query string's parameters, percent-decoded as UTF-8.

    Raises:
        ApiError: 400 when a parameter is not UTF-8 once decoded (a tag, say,
            would otherwise arrive with replacement characters in it).
    """
    try:
        return urllib.parse.parse_qs(text, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise errors.bad_request("The query string is not UTF-8 text once percent-decoded") from None


def tag_param(query: Mapping[str, list[str]]) -> str | None:
    """The optional ``tag`` of a lease, within the API's limit.

    Raises:
        ApiError: 400 when it is longer than :data:`~kombu_appengine.api.MAX_TAG_BYTES`.
    """
    tag = _one(query, "tag")
    if tag is not None and len(tag.encode("utf-8")) > api.MAX_TAG_BYTES:
        raise errors.bad_request(f"tag is longer than {api.MAX_TAG_BYTES} bytes")
    return tag


def int_param(query: Mapping[str, list[str]], name: str) -> int:
    """A required integer query parameter.

    Raises:
        ApiError: 400 naming the parameter when it is missing or not an integer.
    """
    value = _one(query, name)
    if value is None:
        raise errors.bad_request(f"Required parameter {name} is missing", reason="required")
    # int() also takes " +1 ", "1_0" and digits of every script: the API does not.
    if not _INTEGER.match(value):
        raise errors.bad_request(f"Invalid value {value!r} for {name}: expected an integer")
    try:
        return int(value)
    except ValueError:  # more digits than int() converts
        raise errors.bad_request(f"Invalid value for {name}: an integer of {len(value)} digits") from None


def bool_param(query: Mapping[str, list[str]], name: str) -> bool:
    """An optional boolean query parameter (:func:`~kombu_appengine.api.parse_bool`), false when absent."""
    value = _one(query, name)
    if value is None:
        return False
    try:
        return api.parse_bool(value)
    except ValueError:
        raise errors.bad_request(f"Invalid value {value!r} for {name}: expected true or false") from None


def json_body(body: bytes, headers: Mapping[str, str], what: str = "a Task") -> Any:
    """The request body as JSON.

    Arrays, strings, and bodies with more structure than
    :data:`MAX_JSON_STRUCTURE`, are refused before they are parsed: parsing
    would build their arrays and objects, far bigger than their text. (The
    callers refuse the scalars that are left.)

    Parameters:
        body: the request body.
        headers: the request's headers, lower-case names.
        what: what the body must hold, for messages.

    Raises:
        ApiError: 400 when the content type is not ``application/json``
            (what a page of another site cannot send without asking), or the
            body is missing, not JSON, an array or a string, too complex, or
            holds a string that is not text (an unpaired surrogate).
    """
    check_json_content_type(headers)
    if not body.strip():
        raise errors.bad_request(f"This method needs {what} in the request body", reason="required")
    skeleton = _JSON_STRING.sub(b'""', body).lstrip()
    kind = {b"[": "a JSON array", b'"': "a JSON string"}.get(skeleton[:1])
    if kind is not None:
        raise errors.bad_request(f"The request body must be {what}, a JSON object, not {kind}")
    structure = sum(skeleton.count(mark) for mark in (b"{", b"[", b",", b":"))
    if structure > MAX_JSON_STRUCTURE:
        raise errors.bad_request(
            f"The request body holds more JSON structure ({structure} of {{ [ , :) than {what} "
            f"has fields: at most {MAX_JSON_STRUCTURE}",
            reason="parseError",
        )
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.bad_request(f"The request body is not valid JSON: {exc}", reason="parseError") from None
    except RecursionError:
        raise errors.bad_request(
            "The request body is not valid JSON: nested too deeply", reason="parseError"
        ) from None
    _check_unicode(document)
    return document


def check_json_content_type(headers: Mapping[str, str]) -> None:
    """Refuse a JSON body sent as anything but ``application/json``.

    Parameters:
        headers: the request's headers, lower-case names.

    Raises:
        ApiError: 400 naming the content type sent.
    """
    content_type = headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "application/json":
        sent = repr(content_type[:100]) if content_type else "without a content type"
        raise errors.bad_request(
            f"The request body must be sent as application/json, not {sent}", reason="badContent"
        )


def _check_unicode(document: Any, field: str | None = None) -> None:
    """Refuse a JSON document holding a string that is no Unicode text.

    JSON's ``\\udc00`` escapes (and the bytes of a surrogate, which
    :func:`json.loads` lets through) give strings with lone surrogates, which
    cannot be encoded as UTF-8: every string of a request is checked here,
    once, so no later ``.encode()`` (of a tag, a task name, a queue name, a
    journal entry) can fail on one.

    Raises:
        ApiError: 400 naming the field (the top-level field it is in).
    """
    if isinstance(document, dict):
        for key, value in document.items():
            named = field or (key if isinstance(key, str) and _is_unicode(key) else None)
            if not _is_unicode(key):
                raise errors.bad_request("The request body holds a field name that is not valid Unicode")
            _check_unicode(value, named)
    elif isinstance(document, list):
        for value in document:
            _check_unicode(value, field)
    elif isinstance(document, str) and not _is_unicode(document):
        raise errors.bad_request(
            f"Field {field!r} of the request body is not valid Unicode (a lone surrogate)"
        )


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class RestApi:
    """Route and answer requests for a :class:`~kombu_appengine.rest.backend.TaskQueueBackend`.

    Parameters:
        backend: the queues.
        require_auth: refuse requests without a bearer token (401).
        accepted_tokens: when not ``None``, the only bearer tokens accepted.
        identities: when not ``None``, the account (email) of each bearer
            token; requests are then held to the queues' ACLs (403): a
            ``user_email`` may consume, a ``writer_email`` may insert.
        injector: the failures to inject (retry tests); a new, empty one by default.
        authenticator: when given, it tells who sends each request instead
            of ``require_auth``, ``accepted_tokens`` and ``identities``.
        keep_tokens: keep the latest bearer tokens in :attr:`tokens` (for
            tests of credentials); a server facing the world keeps none.
        fault_injection: serve retry tests (``/retry_test``); a server
            facing the world does not.
        admin: when given, the dashboard (``/``, :mod:`kombu_appengine.dashboard`)
            deletes tasks and purges queues through it (the emulator);
            without, the dashboard is read-only (the gateway).
        max_body_bytes: when given, no request body may pass it, whatever
            its endpoint's own limit (the gateway: App Engine's cap on a request).
    """

    def __init__(
        self,
        backend: TaskQueueBackend,
        require_auth: bool = False,
        accepted_tokens: Iterable[str] | None = None,
        identities: Mapping[str, str] | None = None,
        injector: FaultInjector | None = None,
        authenticator: Authenticator | None = None,
        keep_tokens: bool = True,
        fault_injection: bool = True,
        admin: QueueAdmin | None = None,
        max_body_bytes: int | None = None,
    ) -> None:
        # Imported here: the dashboard builds on this module.
        from ..dashboard.app import Dashboard

        self.backend = backend
        self.require_auth = require_auth
        self.accepted_tokens = set(accepted_tokens) if accepted_tokens is not None else None
        self.identities = identities
        self.authenticator = authenticator
        self.keep_tokens = keep_tokens
        self.fault_injection = fault_injection
        self.max_body_bytes = max_body_bytes
        #: The page at ``/`` and its data, on the same auth and ACLs as the API.
        self.dashboard = Dashboard(self, admin)
        #: The failures to inject: retry tests, and Python-level faults.
        self.faults = injector or FaultInjector()
        #: The latest :data:`TOKENS_KEPT` bearer tokens received, oldest
        #: first, for tests of credentials; older ones are forgotten, so a
        #: long-running emulator does not grow with every token it is sent.
        self.tokens: collections.deque[str] = collections.deque(maxlen=TOKENS_KEPT)
        self._tokens_lock = threading.Lock()
        #: Set by the server: answers the batch endpoint.
        self.batch_handler: Callable[[Mapping[str, str], bytes, str | None], Response] | None = None
        #: The handler of each API method, by method id.
        self._handlers: dict[str, Callable[[Call], Response]] = {
            api.TASKQUEUES_GET.id: self._get_queue,
            api.TASKS_INSERT.id: self._insert,
            api.TASKS_LIST.id: self._list,
            api.TASKS_LEASE.id: self._lease,
            api.TASKS_GET.id: self._get_task,
            api.TASKS_DELETE.id: self._delete,
            api.TASKS_UPDATE.id: self._update,
            api.TASKS_PATCH.id: self._update,
        }

    def dispatch(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        host: str,
        outer_token: str | None = None,
        outer_retry_test: str | None = None,
    ) -> Response:
        """Answer one request; never raises for a bad request.

        ``headers`` has lower-case names; ``host`` is the server's address as
        the client named it (for the discovery document's ``rootUrl``);
        ``outer_token`` and ``outer_retry_test`` are the bearer token and the
        ``x-retry-test-id`` of the batch a part came in.

        Raises:
            ResetConnection: a retry test says to drop the connection.
        """
        try:
            # A batch's parts (which come with its token) are API calls only.
            if outer_token is None and self.dashboard.serves(target):
                return self.dashboard.answer(method.upper(), target, headers, body, host)
            return self._dispatch(method.upper(), target, headers, body, host, outer_token, outer_retry_test)
        except ApiError as error:
            return error_response(error)
        except ResetConnection:
            raise
        except Exception:
            # A bug: answered as Google answers its own, never a dropped
            # connection (in a batch, that part's answer: see dispatch_parts).
            logger.exception("unexpected error answering %s %s", method[:20], loggable_target(target))
            return error_response(errors.internal_error())

    def body_limit(self, method: str, target: str, headers: Mapping[str, str]) -> int:
        """Most body bytes the request may carry, known from its head alone.

        ``headers`` has lower-case names. A request that routes nowhere gets
        the small limit; routing answers it once its body is read.
        """
        limit = self._endpoint_body_limit(method, target, headers)
        return limit if self.max_body_bytes is None else min(limit, self.max_body_bytes)

    @staticmethod
    def _endpoint_body_limit(method: str, target: str, headers: Mapping[str, str]) -> int:
        path = target.partition("?")[0]
        if path in api.BATCH_PATHS:
            return MAX_BATCH_BODY_BYTES
        try:
            called, _ = resolve(_verb(method.upper(), headers), path)
        except ApiError:
            return MAX_SMALL_BODY_BYTES
        return MAX_TASK_BODY_BYTES if called.id in _TASK_BODY_METHODS else MAX_SMALL_BODY_BYTES

    def check_head(self, method: str, target: str, headers: Mapping[str, str]) -> None:
        """Authenticate a request from its head, before its body is read.

        When tokens are required, a call of the API or of its batch endpoint
        whose head carries no acceptable token is refused at once, so that a
        caller without credentials cannot make the server read (and hold)
        a body of up to :meth:`body_limit`. The one exception is a long GET
        sent as a form POST (``X-HTTP-Method-Override``): its token may be in
        its body, which is small (:data:`MAX_SMALL_BODY_BYTES`); dispatch
        authenticates it. ``headers`` has lower-case names.

        Raises:
            ApiError: 401 when a token is required and missing, or not
                accepted; what the :class:`Authenticator` raises (403, 503).
        """
        if self.authenticator is None and not self.require_auth and self.accepted_tokens is None:
            return
        path, _, query_string = target.partition("?")
        if path not in api.BATCH_PATHS and not path.startswith(api.SERVICE_PATH):
            return
        if _verb(method.upper(), headers) != method.upper() and headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return
        token = _bearer_token(headers, parse_query(query_string), None)
        try:
            if self.authenticator is not None:
                self.authenticator.identify(token)
            else:
                self._check_static_token(token)
        except ApiError:
            # Kept as dispatch keeps it, which this request never reaches.
            self._keep(token)
            raise

    @staticmethod
    def takes_json_body(method: str, target: str, headers: Mapping[str, str]) -> bool:
        """Whether the request's body is JSON (a Task, a retry test), known from its head alone.

        ``headers`` has lower-case names.
        """
        path = target.partition("?")[0]
        verb = _verb(method.upper(), headers)
        if path == RETRY_TEST_PATH:
            return verb == "POST"
        try:
            called, _ = resolve(verb, path)
        except ApiError:
            return False
        return called.id in _TASK_BODY_METHODS

    def caller(
        self, headers: Mapping[str, str], query: Mapping[str, list[str]], outer_token: str | None = None
    ) -> Identity | None:
        """Who sends a request, from its bearer token; ``None`` when requests are not held to ACLs.

        ``headers`` has lower-case names; ``outer_token`` is the token of the
        batch a part came in.

        Raises:
            ApiError: 401 when a token is required and missing, or not accepted.
        """
        return self._identify(self._authenticate(headers, query, outer_token))

    def check_acl(self, identity: Identity | None, project: str, queue: str, role: str) -> None:
        """Hold ``identity`` to the queue's ACL for ``role`` (:data:`CONSUMER`, :data:`PRODUCER`, ``"any"``).

        Raises:
            ApiError: 403 ``forbidden`` when the ACL does not allow it;
                403 ``insufficientPermissions`` for an insert with a token
                of the consume-only scope.
        """
        if identity is not None and identity.consume_only and role == PRODUCER:
            raise errors.insufficient_scope(
                f"The access token carries only the consume-only scope {api.TASKQUEUE_CONSUMER_SCOPE}: "
                f"inserting a task needs {api.TASKQUEUE_SCOPE}"
            )
        if identity is None or identity.everywhere:
            return
        acl = self.backend.acl(project, queue)
        if acl is None:
            return  # the backend answers 404 for it
        if identity.email is None or not _allows(acl, role, identity.email):
            who = identity.email or "this caller"
            raise errors.forbidden(
                f"{who} is not allowed to {_ROLE_VERBS[role]} queue {queue!r}: "
                "see the acl of the queue in queue.yaml"
            )

    def _authenticate(
        self, headers: Mapping[str, str], query: Mapping[str, list[str]], outer_token: str | None
    ) -> str | None:
        token = _bearer_token(headers, query, outer_token)
        self._keep(token)
        if self.authenticator is None:
            self._check_static_token(token)
        return token

    def _keep(self, token: str | None) -> None:
        if token is not None and self.keep_tokens:
            with self._tokens_lock:
                self.tokens.append(token)

    def _check_static_token(self, token: str | None) -> None:
        """The emulator's static authentication (``require_auth``, ``accepted_tokens``)."""
        if token is None and self.require_auth:
            raise errors.login_required()
        if token is not None and self.accepted_tokens is not None and token not in self.accepted_tokens:
            raise errors.invalid_credentials()

    def _identify(self, token: str | None) -> Identity | None:
        if self.authenticator is not None:
            return self.authenticator.identify(token)
        if self.identities is None:
            return None
        return Identity(self.identities.get(token) if token is not None else None)

    def _dispatch(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        host: str,
        outer_token: str | None,
        outer_retry_test: str | None,
        deferred: list[Call] | None = None,
    ) -> Response:
        path, _, query_string = target.partition("?")
        query = parse_query(query_string)
        verb = _verb(method, headers)
        if verb != method:
            method = verb
            if method == "GET" and headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"
            ):
                # google-api-python-client sends a GET whose URL would pass
                # 2048 characters as such a POST, its query in the body.
                form = parse_query(body.decode("latin-1"))
                query = {**query, **form}
        if path == api.DISCOVERY_PATH:
            self._allow(method, path, "GET")
            return Response(200, discovery.document_json(f"http://{host}/").encode("utf-8"))
        if path in api.BATCH_PATHS:
            self._allow(method, path, "POST")
            token = self._authenticate(headers, query, None)
            if token is None and self.authenticator is not None:
                # Checked once for the batch; each part is checked with the token again.
                self.authenticator.identify(None)
            assert self.batch_handler is not None
            return self.batch_handler(headers, body, token)
        if self.fault_injection and (path == RETRY_TEST_PATH or path.startswith(RETRY_TEST_PATH + "/")):
            # Retry tests are behind the API's own authentication: on a
            # server that asks for tokens, no stranger makes it fail or stall.
            self.caller(headers, query)
            return self._retry_test(method, path, headers, body)
        called, params = resolve(method, path)
        self._authorize(
            headers, query, outer_token, params["project"], params["taskqueue"], _ROLES[called.id]
        )
        # Only a request the server would carry out consumes an instruction.
        retry_test = headers.get(RETRY_TEST_HEADER) or outer_retry_test
        if retry_test and self.fault_injection:
            instruction = self.faults.next_instruction(retry_test, called.id)
            if instruction is not None:
                instruction.carry_out()
        call = Call(params, query, body, headers)
        if deferred is not None and called.id == api.TASKS_DELETE.id:
            deferred.append(call)
            return DEFERRED
        return self._handlers[called.id](call)

    def dispatch_parts(
        self,
        requests: list[tuple[str, str, Mapping[str, str], bytes] | ApiError],
        host: str,
        outer_token: str | None,
        outer_retry_test: str | None,
    ) -> list[Response]:
        """Answer the requests of one batch, each on its own.

        The deletes of one queue are carried out together, as one call of
        :meth:`~kombu_appengine.rest.backend.TaskQueueBackend.delete_tasks`
        (one RPC on App Engine), after the batch's other parts.

        Raises:
            ResetConnection: a retry test says to drop the connection.
        """
        answers: list[Response] = []
        deletes: dict[tuple[str, str], list[tuple[int, Call]]] = {}
        for request in requests:
            if isinstance(request, ApiError):
                answers.append(error_response(request))
                continue
            method, target, headers, body = request
            deferred: list[Call] = []
            try:
                answer = self._dispatch(
                    method.upper(), target, headers, body, host, outer_token, outer_retry_test, deferred
                )
            except ApiError as error:
                answer = error_response(error)
            except ResetConnection:
                raise
            except Exception:
                # A bug: this part's answer is Google's 500, after parts that took effect.
                logger.exception("unexpected error answering %s %s", method[:20], loggable_target(target))
                answer = error_response(errors.internal_error())
            if deferred:
                [call] = deferred
                deletes.setdefault((call.project, call.queue), []).append((len(answers), call))
            answers.append(answer)
        for (project, queue), calls in deletes.items():
            self._delete_together(project, queue, calls, answers)
        return answers

    def _delete_together(
        self, project: str, queue: str, calls: list[tuple[int, Call]], answers: list[Response]
    ) -> None:
        names = list(dict.fromkeys(call.task for _, call in calls))
        try:
            results = dict(zip(names, self.backend.delete_tasks(project, queue, names)))
        except ApiError as error:
            for index, _ in calls:
                answers[index] = error_response(error)
            return
        except Exception:
            logger.exception("unexpected error deleting %d tasks of queue %s", len(names), queue[:100])
            for index, _ in calls:
                answers[index] = error_response(errors.internal_error())
            return
        done: set[str] = set()
        for index, call in calls:
            result = results[call.task]
            if call.task in done and result is None:
                # The same task twice: the second delete finds it gone.
                result = no_such_task(call.task, queue)
            done.add(call.task)
            answers[index] = error_response(result) if result is not None else Response(204, b"", None)

    def _retry_test(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """``POST /retry_test``, ``GET`` and ``DELETE /retry_test/ID`` (see :mod:`.faults`)."""
        if path == RETRY_TEST_PATH:
            self._allow(method, path, "POST")
            return json_response(200, self.faults.create(json_body(body, headers, "a retry test")))
        self._allow(method, path, "GET", "DELETE")
        test_id = urllib.parse.unquote(path[len(RETRY_TEST_PATH) + 1 :])
        if method == "GET":
            return json_response(200, self.faults.show(test_id))
        self.faults.delete(test_id)
        return Response(204, b"", None)

    def _get_queue(self, call: Call) -> Response:
        return json_response(
            200, self.backend.get_queue(call.project, call.queue, bool_param(call.query, "getStats"))
        )

    def _insert(self, call: Call) -> Response:
        return json_response(
            200, self.backend.insert(call.project, call.queue, json_body(call.body, call.headers))
        )

    def _list(self, call: Call) -> Response:
        return json_response(200, self.backend.list_tasks(call.project, call.queue))

    def _lease(self, call: Call) -> Response:
        leased = self.backend.lease(
            call.project,
            call.queue,
            int_param(call.query, "numTasks"),
            int_param(call.query, "leaseSecs"),
            bool_param(call.query, "groupByTag"),
            tag_param(call.query),
        )
        return json_response(200, leased)

    def _get_task(self, call: Call) -> Response:
        return json_response(200, self.backend.get_task(call.project, call.queue, call.task))

    def _delete(self, call: Call) -> Response:
        self.backend.delete_task(call.project, call.queue, call.task)
        return Response(204, b"", None)

    def _update(self, call: Call) -> Response:
        new_lease = int_param(call.query, "newLeaseSeconds")
        task = self.backend.update_task(
            call.project, call.queue, call.task, new_lease, json_body(call.body, call.headers)
        )
        return json_response(200, task)

    def _authorize(
        self,
        headers: Mapping[str, str],
        query: Mapping[str, list[str]],
        outer_token: str | None,
        project: str,
        queue: str,
        role: str,
    ) -> None:
        """Authenticate, then hold the caller's account to the queue's ACL (when it is known)."""
        self.check_acl(self.caller(headers, query, outer_token), project, queue, role)

    @staticmethod
    def _allow(method: str, path: str, *allowed: str) -> None:
        if method not in allowed:
            raise errors.method_not_allowed(method, path)


class Call(NamedTuple):
    """One call of an API method: its path parameters, query, body and headers (lower-case names)."""

    params: Mapping[str, str]
    query: Mapping[str, list[str]]
    body: bytes
    headers: Mapping[str, str]

    @property
    def project(self) -> str:
        return self.params["project"]

    @property
    def queue(self) -> str:
        return self.params["taskqueue"]

    @property
    def task(self) -> str:
        return self.params["task"]


#: What a batch part's delete answers until the deletes of its queue are carried out together.
DEFERRED = Response(204, b"", None)


def canonical_email(email: str) -> str:
    """``email`` as accounts are compared: ACL entries, token emails, allow-lists.

    Case-insensitively: Google's accounts are (a token of ``bob@example.com``
    is the account ``queue.yaml`` may list as ``Bob@Example.com``).
    """
    return email.strip().lower()


def _allows(acl: QueueAcl, role: str, email: str) -> bool:
    allowed = {
        CONSUMER: acl.consumer_emails,
        PRODUCER: acl.producer_emails,
        "any": [*acl.consumer_emails, *acl.producer_emails],
    }[role]
    return canonical_email(email) in {canonical_email(entry) for entry in allowed}


def _verb(method: str, headers: Mapping[str, str]) -> str:
    """The HTTP method a request means: a POST may name another in ``X-HTTP-Method-Override``."""
    override = headers.get("x-http-method-override")
    return override.upper() if override and method == "POST" else method


def _bearer_token(
    headers: Mapping[str, str], query: Mapping[str, list[str]], outer_token: str | None
) -> str | None:
    """A request's bearer token: its ``Authorization`` header's, its ``oauth_token``, or its batch's."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    return _one(query, "oauth_token") or outer_token


#: Each method's path as segments, parameters as ``{name}``.
_TEMPLATES = [(method, method.path.split("/")) for method in api.METHODS]
#: What a caller must be allowed by the queue's ACL to call each method.
_ROLES = {method.id: CONSUMER for method in api.METHODS}
_ROLES[api.TASKS_INSERT.id] = PRODUCER
_ROLES[api.TASKQUEUES_GET.id] = "any"


def resolve(http_method: str, path: str) -> tuple[api.Method, dict[str, str]]:
    """The API method a request calls, and its path parameters (unquoted).

    Raises:
        ApiError: 404 when no method has that path, 405 when none of those
            that do takes ``http_method``.
    """
    if not path.startswith(api.SERVICE_PATH):
        raise errors.not_found(f"No API at {path}")
    segments = [urllib.parse.unquote(part) for part in path[len(api.SERVICE_PATH) :].split("/")]
    path_matched = False
    for method, template in _TEMPLATES:
        params = _match(template, segments)
        if params is None:
            continue
        if method.http_method == http_method:
            return method, params
        path_matched = True
    if path_matched:
        raise errors.method_not_allowed(http_method, path)
    raise errors.not_found(f"No API at {path}")


def _match(template: list[str], segments: list[str]) -> dict[str, str] | None:
    if len(template) != len(segments):
        return None
    params: dict[str, str] = {}
    for expected, given in zip(template, segments):
        if expected.startswith("{"):
            if not given:
                return None
            params[expected[1:-1]] = given
        elif expected != given:
            return None
    return params


#: Query parameters that carry credentials, left out of logs.
_SECRET_PARAMETERS = frozenset({"oauth_token", "access_token", "key"})


def loggable_target(target: str) -> str:
    """A request target fit for a log: no credentials in its query, at most 300 characters."""
    path, _, query = target.partition("?")
    if query:
        kept = [
            (name, value)
            for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True)
            if name.lower() not in _SECRET_PARAMETERS
        ]
        path += "?" + urllib.parse.urlencode(kept) if kept else ""
    return path[:300]


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
