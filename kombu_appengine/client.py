"""All talking to the Task Queue REST API happens here.

:class:`TaskQueueClient` builds google-api-python-client's service from the
shipped discovery document, points it at the real service or an emulator,
retries what is worth retrying with exponential backoff, and turns HTTP
failures into :mod:`kombu_appengine.errors` whose messages name the queue
and the project.

It is safe to share between threads (each thread gets its own HTTP
connection, since ``httplib2.Http`` is not thread-safe) and across
``fork()`` (a child process builds its own).

:func:`observe_calls` lets a process watch every call it makes (its name,
how long it took, whether it failed), as ``pullqueue_worker --metrics-port``
does, without this module knowing what watches.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional

import google.auth.exceptions
import httplib2
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError

from . import api
from .api import GOOGLE_ROOT_URL, MAX_PAYLOAD_BYTES, RATE_LIMIT_REASONS
from .credentials import authorized_http, refresh_refused
from .discovery import load_document
from .errors import (
    AuthenticationFailed,
    LeaseLost,
    PayloadTooLarge,
    QueueNotFound,
    TaskNotFound,
    TaskQueueChannelError,
    TaskQueueConnectionError,
    TaskQueueError,
)

logger = logging.getLogger(__name__)

#: Errors of the network or the HTTP exchange itself, worth retrying.
TRANSPORT_ERRORS = (OSError, httplib2.HttpLib2Error, http.client.HTTPException)

#: What an observer of calls is told: the call's name (:data:`CALL_NAMES`,
#: with ``_batch`` added for a batch call), its seconds, retries included,
#: and the error it ended with, or ``None``.
CallObserver = Callable[[str, float, Optional[BaseException]], None]
#: The name each call is observed under, by the action its errors name.
CALL_NAMES = {
    "get queue": "get_queue",
    "insert task": "insert",
    "lease tasks": "lease",
    "get task": "get_task",
    "delete task": "delete",
    "change lease": "change_lease",
    "list tasks": "list",
}
#: The observers of this process's calls (see :func:`observe_calls`).
_observers: list[CallObserver] = []


def observe_calls(observer: CallObserver) -> Callable[[], None]:
    """Call ``observer(name, seconds, error)`` after every API call of this process.

    A batch call is one call, named after its parts with ``_batch`` added
    (``delete_batch``, ``change_lease_batch``). The observer runs on the
    thread that made the call, so it must be quick and must not raise; one
    that raises is logged and the call's own outcome stands.

    Returns:
        A function that stops the observing.
    """
    _observers.append(observer)
    return lambda: _observers.remove(observer)


def _tell_observers(name: str, seconds: float, error: BaseException | None) -> None:
    for observer in list(_observers):
        try:
            observer(name, seconds, error)
        except Exception:  # an observer's bug must not fail the call it watched
            logger.exception("an observer of API calls failed on %s", name)


def root_url_of(api_endpoint: str) -> str:
    """The discovery ``rootUrl`` for an ``api_endpoint`` option (or ``TASKQUEUE_EMULATOR_HOST``).

    Accepts ``http://host:port``, with or without a trailing slash or the
    ``/taskqueue/v1beta2/projects/`` path; a bare ``host:port`` is taken as
    ``http``.

    Raises:
        ValueError: naming ``api_endpoint``, for another scheme, no host, a
            port that is not a number from 1 to 65535, a query or fragment,
            or a path other than the API's (which would answer 404 to every
            call): each would otherwise fail only at the first call, as an
            error that is retried for ever or names a missing queue.
    """
    root = api_endpoint.strip()
    if "://" not in root:
        root = "http://" + root
    root = root.rstrip("/") + "/"
    if root.endswith(api.SERVICE_PATH):
        root = root[: -len(api.SERVICE_PATH) + 1]
    not_a_url = ValueError(f"{api_endpoint!r} is not an http(s) URL such as http://127.0.0.1:8123")
    try:
        parts = urllib.parse.urlsplit(root)
    except ValueError:  # a broken IPv6 address
        raise not_a_url from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise not_a_url
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = 0
    if port == 0:
        raise ValueError(f"{api_endpoint!r} has a port that is not a number from 1 to 65535")
    if parts.path != "/":
        raise ValueError(
            f"{api_endpoint!r} has the path {parts.path!r}: give the server's root (http://host:port) "
            f"or its API path ({api.SERVICE_PATH})"
        )
    return root


def _error_reason(error: HttpError) -> tuple[str | None, str]:
    """Google's ``reason`` and message from an HttpError's body."""
    try:
        document = json.loads(error.content.decode("utf-8"))["error"]
        details = document.get("errors") or [{}]
        return details[0].get("reason"), str(document.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return None, error.content.decode("utf-8", "replace")[:200] if error.content else ""


def _retryable(error: HttpError) -> bool:
    status = error.resp.status
    if status >= 500 or status == 429:
        return True
    return status == 403 and _error_reason(error)[0] in RATE_LIMIT_REASONS


class TaskQueueClient:
    """The Task Queue API of one project.

    Parameters:
        project: the application id, as the service wants it (``s~`` included
            for high-replication apps).
        root_url: the service's root URL (an emulator's); Google's by default.
        credentials: signs requests (google-auth or oauth2client); ``None``
            sends none, as for an emulator.
        max_retries: retries of a failing request before giving up.
        retry_delay: first backoff in seconds; it doubles each retry (with
            jitter) up to :attr:`max_retry_delay`.
        timeout: socket timeout of each HTTP request, in seconds.
    """

    #: Longest wait between two retries, in seconds.
    max_retry_delay = 10.0

    def __init__(
        self,
        project: str,
        root_url: str = GOOGLE_ROOT_URL,
        credentials: Any = None,
        max_retries: int = 5,
        retry_delay: float = 0.1,
        timeout: float = 60.0,
    ) -> None:
        self.project = project
        self.root_url = root_url
        self.credentials = credentials
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self._document = load_document(root_url)
        self._local = threading.local()
        #: Every thread's HTTP object of this process, for :meth:`close`.
        self._https: list[tuple[int, Any]] = []
        self._https_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<TaskQueueClient project={self.project!r} root_url={self.root_url!r}>"

    def _thread_api(self) -> threading.local:
        """This thread's (and process's) service and resources, built on first use."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            http = httplib2.Http(timeout=self.timeout)
            if self.credentials is not None:
                http = authorized_http(self.credentials, http)
            #: What google-api-python-client finds on the http to sign with.
            local.signing_credentials = getattr(http, "credentials", None)
            # build_from_document writes into the document it is given.
            document = json.loads(json.dumps(self._document))
            local.service = build_from_document(document, http=http)
            # Building a resource object rebuilds all its methods: keep them.
            local.tasks = local.service.tasks()
            local.taskqueues = local.service.taskqueues()
            local.http = http
            local.pid = os.getpid()
            with self._https_lock:
                self._https.append((local.pid, http))
        return local

    def close_thread(self) -> None:
        """Close this thread's HTTP connections (a thread that ends leaves no socket behind)."""
        local = self._local
        if getattr(local, "pid", None) == os.getpid():
            self._close_http(local.http)
        local.pid = None

    def close(self) -> None:
        """Close the HTTP connections of every thread (the client can still be used: it reconnects)."""
        with self._https_lock:
            https = list(self._https)  # a thread that goes on using its own reconnects
        for pid, opened in https:
            if pid == os.getpid():  # a parent's sockets are the parent's to close
                opened.close()

    def _close_http(self, http: Any) -> None:
        with self._https_lock:
            self._https = [(pid, kept) for pid, kept in self._https if kept is not http]
        http.close()

    @property
    def service(self) -> Any:
        """This thread's google-api-python-client service."""
        return self._thread_api().service

    @property
    def tasks(self) -> Any:
        """This thread's ``tasks`` resource."""
        return self._thread_api().tasks

    @property
    def taskqueues(self) -> Any:
        """This thread's ``taskqueues`` resource."""
        return self._thread_api().taskqueues

    # -- retries and errors -----------------------------------------------

    def _execute(
        self,
        make_request: Callable[[], Any],
        queue: str,
        action: str,
        done_if_retried: Iterable[int] = (),
        deadline: float | None = None,
        max_retries: int | None = None,
        call_name: str | None = None,
    ) -> Any:
        """Run a request, retrying transient failures with backoff; tell the observers.

        ``done_if_retried`` are statuses that mean the request already took
        effect when they answer a retry (409 for an insert with our own
        task name, 404 for a delete); the call then returns ``None``. They
        count on the first attempt too: httplib2 itself sends a request
        again (POST included) when the connection drops before the answer,
        so a first answer may already be to a resend.

        ``deadline`` (on :func:`time.monotonic`'s clock) ends the retries
        early: a retry that could not start before it is not made, and the
        last failure is raised. ``max_retries`` overrides the client's.
        ``call_name`` is what observers are told (by default, ``action``'s
        name in :data:`CALL_NAMES`).
        """
        if not _observers:
            return self._execute_with_retries(
                make_request, queue, action, done_if_retried, deadline, max_retries
            )
        started = time.monotonic()
        error: BaseException | None = None
        try:
            return self._execute_with_retries(
                make_request, queue, action, done_if_retried, deadline, max_retries
            )
        except BaseException as raised:
            error = raised
            raise
        finally:
            _tell_observers(call_name or CALL_NAMES.get(action, action), time.monotonic() - started, error)

    def _execute_with_retries(
        self,
        make_request: Callable[[], Any],
        queue: str,
        action: str,
        done_if_retried: Iterable[int],
        deadline: float | None,
        max_retries: int | None,
    ) -> Any:
        retries = self.max_retries if max_retries is None else max_retries
        delay = self.retry_delay
        for attempt in range(retries + 1):
            wait = delay * (0.5 + random.random())
            last = attempt == retries or (deadline is not None and time.monotonic() + wait > deadline)
            try:
                return make_request().execute()
            except HttpError as error:
                status = error.resp.status
                if status in done_if_retried:
                    return None
                if last or not _retryable(error):
                    raise self._translate(error, queue, action) from None
                logger.warning("%s on queue %r answered %s; retrying in %.2fs", action, queue, status, wait)
            except google.auth.exceptions.RefreshError as error:
                # Batches refresh credentials themselves, outside authorized_http.
                if last or not error.retryable:
                    raise refresh_refused(error) from None
                logger.warning("the token endpoint failed (%s); retrying in %.2fs", error, wait)
            except TaskQueueConnectionError as error:
                # The token endpoint could not be reached, or failed
                # transiently (authorized_http says so).
                if last:
                    raise
                logger.warning("%s on queue %r failed (%s); retrying in %.2fs", action, queue, error, wait)
            except TRANSPORT_ERRORS as error:
                if last:
                    raise TaskQueueConnectionError(
                        f"cannot reach the Task Queue API at {self.root_url} to {action} "
                        f"on queue {queue!r} of project {self.project!r}: {error!r}"
                    ) from error
                logger.warning("%s on queue %r failed (%r); retrying in %.2fs", action, queue, error, wait)
                # A connection that failed may be half-used: start afresh.
                self.close_thread()
            time.sleep(wait)
            delay = min(delay * 2, self.max_retry_delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _translate(self, error: HttpError, queue: str, action: str) -> Exception:
        status = error.resp.status
        reason, message = _error_reason(error)
        where = f"queue {queue!r} of project {self.project!r}"
        if status >= 500 or status == 429 or reason in RATE_LIMIT_REASONS:
            return TaskQueueConnectionError(
                f"the Task Queue API kept failing to {action} on {where}: {status} {message}"
            )
        if status == 401:
            return AuthenticationFailed(
                f"the Task Queue API refused the credentials to {action} on {where}: {message}",
                status,
                reason,
            )
        if status == 403:
            return AuthenticationFailed(
                f"not allowed to {action} on {where} ({message}): the queue's acl in "
                "queue.yaml must list the account (user_email to consume, writer_email to insert)",
                status,
                reason,
            )
        if status == 404:
            if action in ("delete task", "change lease", "get task"):
                return TaskNotFound(f"cannot {action} on {where}: {message}", status, reason)
            return QueueNotFound(
                f"{where} does not exist or is not a pull queue: declare it in queue.yaml "
                "with 'mode: pull', or set the transport option shared_queue",
                status,
                reason,
            )
        if status == 400 and action == "change lease":
            return LeaseLost(f"cannot {action} on {where}: {message}", status, reason)
        if status == 400 and reason == "taskTooLarge":
            return PayloadTooLarge(f"cannot {action} on {where}: {message}", status, reason)
        return TaskQueueChannelError(f"cannot {action} on {where}: {status} {message}", status, reason)

    # -- the API ------------------------------------------------------------

    def get_queue(self, queue: str, stats: bool = False) -> dict[str, Any]:
        """``taskqueues.get``: the queue's resource, with ``stats`` if asked."""
        return self._execute(
            lambda: self.taskqueues.get(project=self.project, taskqueue=queue, getStats=stats),
            queue,
            "get queue",
        )

    def insert(self, queue: str, payload: bytes, tag: str | None = None) -> str:
        """``tasks.insert`` of ``payload``; returns the task's name.

        The name is chosen here, so a retried insert that had in fact
        succeeded is recognised (409) instead of inserting a copy.

        Raises:
            PayloadTooLarge: the payload is over 1 MiB.
        """
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(
                f"a message of {len(payload)} bytes does not fit in a task of queue {queue!r} "
                f"of project {self.project!r}: the limit is {MAX_PAYLOAD_BYTES} bytes"
            )
        name = uuid.uuid4().hex
        body: dict[str, Any] = {
            "id": name,
            "queueName": queue,
            "payloadBase64": api.encode_payload(payload),
        }
        if tag is not None:
            body["tag"] = tag
        self._execute(
            lambda: self.tasks.insert(project=self.project, taskqueue=queue, body=body),
            queue,
            "insert task",
            done_if_retried=(409,),
        )
        return name

    def lease(
        self,
        queue: str,
        num_tasks: int,
        lease_secs: int,
        tag: str | None = None,
        deadline: float | None = None,
    ) -> list[dict[str, Any]]:
        """``tasks.lease`` of up to ``num_tasks`` (only those tagged ``tag`` when given).

        Each task carries its ``leaseTimestamp``, which every later change of
        its lease must send back. ``deadline`` bounds the retries (see
        :meth:`_execute`).
        """
        options: dict[str, Any] = {}
        if tag is not None:
            options = {"groupByTag": True, "tag": tag}
        response = self._execute(
            lambda: self.tasks.lease(
                project=self.project, taskqueue=queue, numTasks=num_tasks, leaseSecs=lease_secs, **options
            ),
            queue,
            "lease tasks",
            deadline=deadline,
        )
        return response.get("items", [])

    def get_task(self, queue: str, task: str) -> dict[str, Any]:
        """``tasks.get``: the task as the service holds it now, lease included.

        Raises:
            TaskNotFound: the task is gone.
        """
        return self._execute(
            lambda: self.tasks.get(project=self.project, taskqueue=queue, task=task), queue, "get task"
        )

    def delete(self, queue: str, task: str) -> None:
        """``tasks.delete``; a task that is already gone is not an error."""
        try:
            self._execute(
                lambda: self.tasks.delete(project=self.project, taskqueue=queue, task=task),
                queue,
                "delete task",
                done_if_retried=(404,),
            )
        except TaskNotFound:
            logger.debug("task %s of queue %r was already deleted", task, queue)

    def change_lease(
        self, queue: str, task: str, seconds: int, lease_timestamp: str | None = None
    ) -> dict[str, Any]:
        """``tasks.update``: the lease ends ``seconds`` from now (0 releases it).

        Parameters:
            lease_timestamp: the lease as the service reported it; with it,
                the service refuses the change unless that lease is still
                the task's (so a lease that ran out and went to another
                consumer is never touched).

        Raises:
            LeaseLost: the lease had expired, or is not ``lease_timestamp``.
            TaskNotFound: the task is gone.
        """
        return self._execute(
            lambda: self.tasks.update(
                project=self.project,
                taskqueue=queue,
                task=task,
                newLeaseSeconds=seconds,
                body=_lease_body(queue, lease_timestamp),
            ),
            queue,
            "change lease",
        )

    def list_tasks(self, queue: str) -> list[dict[str, Any]]:
        """``tasks.list``: up to 100 tasks, leased ones included, without payloads."""
        response = self._execute(
            lambda: self.tasks.list(project=self.project, taskqueue=queue), queue, "list tasks"
        )
        return response.get("items", [])

    def ping(self, queue: str, timeout: float | None = None) -> None:
        """One ``taskqueues.get``, not retried: raises only if the service cannot be reached.

        ``timeout`` bounds the wait for an answer, in seconds (default: the
        client's ``timeout``): kombu's ``connect_timeout``.

        Any answer of the service (the queue missing, or not allowed to the
        account, included) means it can be reached, except a refusal of the
        credentials themselves.

        Raises:
            TaskQueueConnectionError: no answer, or a transient failure; its
                message names the service and the project, not ``queue``,
                which any queue could have been.
            AuthenticationFailed: the credentials were refused (401), or
                their refresh was.
        """
        http = None
        if timeout is not None:
            http = httplib2.Http(timeout=timeout)
            if self.credentials is not None:
                http = authorized_http(self.credentials, http)

        def request() -> Any:
            made = self.taskqueues.get(project=self.project, taskqueue=queue)
            if http is not None:
                made.http = http  # what execute() sends it with
            return made

        try:
            self._execute(request, queue, "get queue", max_retries=0)
        except AuthenticationFailed as error:
            if error.status != 403:
                raise
        except TaskQueueChannelError:
            pass
        except TaskQueueConnectionError as error:
            failure = error.__cause__ or error.__context__
            if isinstance(failure, HttpError):
                why = f"it answered {failure.resp.status} {_error_reason(failure)[1]}".rstrip()
            elif isinstance(failure, TRANSPORT_ERRORS):
                why = repr(failure)
            else:  # the token endpoint's failure: its message says so
                raise
            raise TaskQueueConnectionError(
                f"cannot reach the Task Queue API at {self.root_url} (project {self.project!r}): {why}"
            ) from error
        finally:
            if http is not None:
                http.close()

    # -- batches ------------------------------------------------------------

    def delete_many(self, queue: str, tasks: Iterable[str]) -> dict[str, Outcome]:
        """Delete tasks with batch calls.

        Returns:
            Each task's outcome: ``None`` when deleted, :class:`TaskNotFound`
            when it was already gone, or the error that kept it.

        Raises:
            TaskQueueError: a batch call itself failed (after its retries).
        """
        outcomes = self._batch(
            queue,
            tasks,
            "delete task",
            lambda tasks, task: tasks.delete(project=self.project, taskqueue=queue, task=task),
            done_if_retried=(404,),
        )
        return {
            task: outcome if isinstance(outcome, Exception) else None for task, outcome in outcomes.items()
        }

    def change_leases(self, queue: str, leases: Mapping[str, str | None], seconds: int) -> dict[str, Outcome]:
        """Change leases with batch calls: each ends ``seconds`` from now (0 releases it).

        Parameters:
            leases: task name → its lease as the service reported it (see
                :meth:`change_lease`), or ``None`` to change whatever lease
                the task has.

        Returns:
            Each task's outcome: the task as changed (with its new
            ``leaseTimestamp``), :class:`LeaseLost` when the lease was no
            longer that one, :class:`TaskNotFound` when the task was gone, or
            the error that kept it.

        Raises:
            TaskQueueError: a batch call itself failed (after its retries).
        """
        return self._batch(
            queue,
            leases,
            "change lease",
            lambda tasks, task: tasks.update(
                project=self.project,
                taskqueue=queue,
                task=task,
                newLeaseSeconds=seconds,
                body=_lease_body(queue, leases[task]),
            ),
        )

    def _batch(
        self,
        queue: str,
        tasks: Iterable[str],
        action: str,
        make: Callable[[Any, str], Any],
        done_if_retried: Iterable[int] = (),
    ) -> dict[str, Outcome]:
        """Send ``make(tasks_resource, task)`` for each task in batch calls; each task's outcome.

        Parts that failed transiently, or whose token was refused (401), are
        sent again one by one, with the usual retries.
        """
        pending = list(dict.fromkeys(tasks))
        outcomes: dict[str, Outcome] = {}
        for start in range(0, len(pending), api.MAX_BATCH_PARTS):
            chunk = pending[start : start + api.MAX_BATCH_PARTS]
            answers = self._send_batch(queue, chunk, action, make)
            for task in chunk:
                answer = answers.get(task)
                if isinstance(answer, HttpError):
                    if answer.resp.status in done_if_retried:
                        answer = self._translate(answer, queue, action)
                    elif answer.resp.status == 401 or _retryable(answer):
                        try:
                            answer = self._execute(
                                functools.partial(make, self.tasks, task),
                                queue,
                                action,
                                done_if_retried=done_if_retried,
                            )
                        except TaskQueueError as error:
                            answer = error
                    else:
                        answer = self._translate(answer, queue, action)
                outcomes[task] = answer
        return outcomes

    def _send_batch(
        self, queue: str, chunk: list[str], action: str, make: Callable[[Any, str], Any]
    ) -> dict[str, Any]:
        """One batch call (retried whole on transient failure): each part's answer or HttpError."""
        answers: dict[str, Any] = {}

        def collect(request_id: str, response: Any, error: Exception | None) -> None:
            answers[request_id] = error if error is not None else response

        def build() -> Any:
            answers.clear()
            batch = self.service.new_batch_http_request(callback=collect)
            # google-api-python-client refreshes the credentials before every
            # batch, valid or not: a token request (and a write-back to the
            # credentials file) per call. Marked as refreshed, they are still
            # refreshed when expired; a part refused with 401 is sent again
            # alone, through the path that refreshes on 401.
            signing = self._thread_api().signing_credentials
            if signing is not None:
                batch._refreshed_credentials[id(signing)] = 1
            for task in chunk:
                batch.add(make(self.tasks, task), request_id=task)
            return batch

        self._execute(build, queue, action, call_name=CALL_NAMES.get(action, action) + "_batch")
        return answers


#: What became of one request of a batch: the answer's resource (``None`` for
#: a delete), or the error that request met.
Outcome = Any


def _lease_body(queue: str, lease_timestamp: str | None) -> dict[str, Any]:
    """The Task body of a lease change: ``queueName`` always, the lease when known."""
    body: dict[str, Any] = {"queueName": queue}
    if lease_timestamp is not None:
        body["leaseTimestamp"] = lease_timestamp
    return body
