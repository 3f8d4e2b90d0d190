"""All talking to the Task Queue REST API happens here.

:class:`TaskQueueClient` builds google-api-python-client's service from the
shipped discovery document, points it at the real service or an emulator,
retries what is worth retrying with exponential backoff, and turns HTTP
failures into :mod:`kombu_appengine.errors` whose messages name the queue
and the project.

It is safe to share between threads (each thread gets its own HTTP
connection, since ``httplib2.Http`` is not thread-safe) and across
``fork()`` (a child process builds its own).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Callable

import google.auth.exceptions
import httplib2
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError

from . import api
from .api import EMULATOR_HOST_ENV, GOOGLE_ROOT_URL, MAX_PAYLOAD_BYTES, RATE_LIMIT_REASONS
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
)

logger = logging.getLogger(__name__)

#: Most requests sent in one batch call.
BATCH_SIZE = 100
#: Errors of the network or the HTTP exchange itself, worth retrying.
TRANSPORT_ERRORS = (OSError, httplib2.HttpLib2Error, http.client.HTTPException)


def emulator_root_url() -> str | None:
    """The root URL of the emulator named by ``TASKQUEUE_EMULATOR_HOST``, if any."""
    host = os.environ.get(EMULATOR_HOST_ENV, "").strip()
    if not host:
        return None
    if "://" not in host:
        host = "http://" + host
    return host.rstrip("/") + "/"


def root_url_of(api_endpoint: str) -> str:
    """The discovery ``rootUrl`` for an ``api_endpoint`` option.

    Accepts ``http://host:port``, with or without a trailing slash or the
    ``/taskqueue/v1beta2/projects/`` path.
    """
    root = api_endpoint.strip()
    if "://" not in root:
        root = "http://" + root
    root = root.rstrip("/") + "/"
    if root.endswith(api.SERVICE_PATH):
        root = root[: -len(api.SERVICE_PATH) + 1]
    return root


def _error_reason(error: HttpError) -> tuple[str | None, str]:
    """Google's ``reason`` and message from an HttpError's body."""
    try:
        document = json.loads(error.content.decode("utf-8"))["error"]
        details = document.get("errors") or [{}]
        return details[0].get("reason"), str(document.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return None, error.content.decode("utf-8", "replace")[:200] if error.content else ""


def _lease_body(queue: str, lease_timestamp: str | None) -> dict[str, str]:
    """The Task a lease change sends: the queue, and the lease it is meant for if known."""
    body = {"queueName": queue}
    if lease_timestamp is not None:
        body["leaseTimestamp"] = lease_timestamp
    return body


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
            local.pid = os.getpid()
        return local

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
        self, make_request: Callable[[], Any], queue: str, action: str, done_if_retried: Iterable[int] = ()
    ) -> Any:
        """Run a request, retrying transient failures with backoff.

        ``done_if_retried`` are statuses that mean the request already took
        effect when they answer a retry (409 for an insert with our own
        task name, 404 for a delete); the call then returns ``None``. They
        count on the first attempt too: httplib2 itself sends a request
        again (POST included) when the connection drops before the answer,
        so a first answer may already be to a resend.
        """
        delay = self.retry_delay
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                return make_request().execute()
            except HttpError as error:
                status = error.resp.status
                if status in done_if_retried:
                    return None
                if last or not _retryable(error):
                    raise self._translate(error, queue, action) from None
                logger.warning("%s on queue %r answered %s; retrying in %.2fs", action, queue, status, delay)
            except google.auth.exceptions.RefreshError as error:
                # Batches refresh credentials themselves, outside authorized_http.
                raise refresh_refused(error) from None
            except TRANSPORT_ERRORS as error:
                if last:
                    raise TaskQueueConnectionError(
                        f"cannot reach the Task Queue API at {self.root_url} to {action} "
                        f"on queue {queue!r} of project {self.project!r}: {error!r}"
                    ) from error
                logger.warning("%s on queue %r failed (%r); retrying in %.2fs", action, queue, error, delay)
                # A connection that failed may be half-used: start afresh.
                self._local.pid = None
            time.sleep(delay * (0.5 + random.random()))
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
        self, queue: str, num_tasks: int, lease_secs: int, tag: str | None = None
    ) -> list[dict[str, Any]]:
        """``tasks.lease`` of up to ``num_tasks`` (only those tagged ``tag`` when given)."""
        options: dict[str, Any] = {}
        if tag is not None:
            options = {"groupByTag": True, "tag": tag}
        response = self._execute(
            lambda: self.tasks.lease(
                project=self.project, taskqueue=queue, numTasks=num_tasks, leaseSecs=lease_secs, **options
            ),
            queue,
            "lease tasks",
        )
        return response.get("items", [])

    def get_task(self, queue: str, task: str) -> dict[str, Any]:
        """``tasks.get``: the task as it is now, its lease and retry count included.

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
            lease_timestamp: the ``leaseTimestamp`` of the lease to change, as
                the service last reported it: the change is then refused
                unless that lease is still the task's. Without it, whoever
                holds the task now has their lease changed, another
                consumer's too once ours ran out.

        Raises:
            LeaseLost: the lease had expired, or is not the one named.
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

    def release(self, queue: str, task: str, lease_timestamp: str | None = None) -> None:
        """Give a leased task back to the queue at once; gone or expired is fine.

        With ``lease_timestamp``, only that lease is given back (see :meth:`change_lease`).
        """
        try:
            self.change_lease(queue, task, 0, lease_timestamp)
        except (TaskNotFound, LeaseLost):
            logger.debug("task %s of queue %r was no longer leased when released", task, queue)

    def list_tasks(self, queue: str) -> list[dict[str, Any]]:
        """``tasks.list``: up to 100 tasks, leased ones included, without payloads."""
        response = self._execute(
            lambda: self.tasks.list(project=self.project, taskqueue=queue), queue, "list tasks"
        )
        return response.get("items", [])

    def delete_many(self, queue: str, tasks: Iterable[str]) -> None:
        """Delete tasks with batch calls; tasks already gone are skipped."""
        self._batch(
            queue,
            tasks,
            "delete task",
            lambda tasks, task: tasks.delete(project=self.project, taskqueue=queue, task=task),
        )

    def release_many(
        self, queue: str, tasks: Iterable[str], lease_timestamps: Mapping[str, str | None] | None = None
    ) -> None:
        """Release leases with batch calls; tasks gone or no longer leased are skipped.

        ``lease_timestamps`` names, by task, the lease to give back (see :meth:`change_lease`).
        """
        stamps = lease_timestamps or {}
        self._batch(
            queue,
            tasks,
            "change lease",
            lambda tasks, task: tasks.update(
                project=self.project,
                taskqueue=queue,
                task=task,
                newLeaseSeconds=0,
                body=_lease_body(queue, stamps.get(task)),
            ),
        )

    def _batch(self, queue: str, tasks: Iterable[str], action: str, make: Callable[[Any, str], Any]) -> None:
        """Send ``make(tasks_resource, task)`` for each task in batch calls.

        Tasks that are gone (404) or no longer leased (400) are skipped;
        parts that failed transiently, or whose token was refused (401), are
        sent again one by one.
        """
        pending = list(tasks)
        for start in range(0, len(pending), BATCH_SIZE):
            failures = self._send_batch(queue, pending[start : start + BATCH_SIZE], action, make)
            for task, error in failures.items():
                if error.resp.status in (400, 404):
                    continue
                if error.resp.status != 401 and not _retryable(error):
                    raise self._translate(error, queue, action)
                with contextlib.suppress(TaskNotFound, LeaseLost):
                    self._execute(
                        functools.partial(make, self.tasks, task), queue, action, done_if_retried=(400, 404)
                    )

    def _send_batch(
        self, queue: str, chunk: list[str], action: str, make: Callable[[Any, str], Any]
    ) -> dict[str, HttpError]:
        """One batch call (retried whole on transient failure); the parts that failed."""
        failures: dict[str, HttpError] = {}

        def collect(request_id: str, _response: Any, error: Exception | None) -> None:
            if isinstance(error, HttpError):
                failures[request_id] = error

        def build() -> Any:
            failures.clear()
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

        self._execute(build, queue, action)
        return failures
