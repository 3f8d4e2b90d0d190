"""The gateway's backend: App Engine's task queue service behind the REST front.

:class:`AppEngineBackend` implements :class:`~kombu_appengine.rest.backend.TaskQueueBackend`
with the bundled API's ``Queue`` where it has the method (``add``,
``lease_tasks``, ``lease_tasks_by_tag``, ``delete_tasks_by_name``,
``modify_task_lease``, ``fetch_statistics``) and the service's own RPCs
where it has not (``FetchTask`` for get, ``QueryTasks`` for list,
``FetchQueues`` for a queue's mode, ``maxLeases`` and ACL).

How the REST resources map onto the service's tasks:

* A leased task's ETA is its lease expiry (the service keeps the lease in
  the ETA): a task is leased while ``retry_count > 0`` and its ETA is in the
  future, and ``leaseTimestamp`` is that ETA (``"0"`` otherwise).
* ``enqueueTimestamp`` is the service's creation time, kept in whole seconds.
  A lease's answer carries none, so the gateway reads it with one
  ``QueryTasks`` at the lease's ETA (all the tasks of one lease share it).
  Should that read fail, the lease has taken effect all the same: the tasks
  are answered, with the lease's time (whole seconds) as their
  ``enqueueTimestamp``, an upper bound of the real one.
* ``maxLeases`` is the queue's ``task_retry_limit``; the ACL's consumers are
  its ``user_email`` entries (FetchQueues reports only those); the
  ``writer_email`` entries come from the ``queue.yaml`` the gateway is given.
* ``leasedLastMinute`` and ``leasedLastHour`` are counted by this process:
  the service's own figures are not real in the SDK, and approximate in
  production.

The bundled API's classes check the API's limits, but its raw RPCs accept
values outside them; every check is made before any call, by the shared
:mod:`kombu_appengine.rest.backend`.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Callable, NamedTuple

from google.appengine.api import apiproxy_stub_map
from google.appengine.api import taskqueue as gae_taskqueue
from google.appengine.api.taskqueue import taskqueue_service_bytes_pb2 as pb
from google.appengine.runtime import apiproxy_errors

from .. import api
from ..api import MAX_LIST_TASKS, bare_project
from ..rest import errors
from ..rest.backend import (
    LeaseCounts,
    PeekedTask,
    QueueAcl,
    check_lease,
    check_queue_name,
    check_task_name_syntax,
    find_pull_queue,
    name_taken,
    no_such_task,
    not_leased,
    parse_lease_change,
    parse_new_task,
    queue_resource,
    stale_lease,
    task_resource,
)
from ..rest.errors import ApiError

logger = logging.getLogger(__name__)

_MICROS = 1_000_000
_SERVICE = "taskqueue"
_ERROR = pb.TaskQueueServiceError
#: Most queues one FetchQueues asks for (an application may declare up to 100 in production).
_MAX_QUEUES = 1000
#: Tasks one QueryTasks reads when counting leased tasks.
_LEASED_PAGE = 1000
#: Service errors that are worth retrying: answered 503.
_TRANSIENT = (gae_taskqueue.TransientError, gae_taskqueue.InternalError)


class QueueInfo(NamedTuple):
    """What FetchQueues says of one queue."""

    pull: bool
    max_leases: int | None
    consumer_emails: tuple[str, ...]


class AppEngineBackend:
    """The REST API's methods on App Engine's task queue service.

    Parameters:
        project: the application id (with or without ``s~``/``e~``); a URL
            naming another project is 404. ``None`` accepts any.
        clock: seconds since the epoch; it must be the service's own clock
            (locally, the stub is given the same).
        lock: held around every call into the service: the SDK's stub is not
            thread-safe, App Engine's service is (pass
            :func:`contextlib.nullcontext` there).
        writers: each queue's ``writer_email`` entries (from ``queue.yaml``),
            which the service does not report.
        queues_ttl: seconds a FetchQueues answer is reused (queues change
            only when ``queue.yaml`` is deployed); 0 asks every time.
        name_unnamed: give a task inserted without an id a generated unique
            name (as the emulator does) instead of letting the service name
            it. The SDK's stub names tasks ``task1``, ``task2``..., which
            collide with names clients chose; App Engine's own names never
            collide, and a named task costs it a check of its name, so
            deployed this is off.
    """

    def __init__(
        self,
        project: str | None = None,
        clock: Callable[[], float] = time.time,
        lock: contextlib.AbstractContextManager[Any] | None = None,
        writers: Mapping[str, Sequence[str]] | None = None,
        queues_ttl: float = 0.0,
        name_unnamed: bool = False,
    ) -> None:
        self.project = bare_project(project) if project else None
        self.clock = clock
        self.lock: Any = lock if lock is not None else contextlib.nullcontext()
        self.writers: Mapping[str, Sequence[str]] = writers if writers is not None else {}
        self.queues_ttl = queues_ttl
        self.name_unnamed = name_unnamed
        self._queues: dict[str, QueueInfo] = {}
        self._queues_fetched = -float("inf")
        self._lease_counts: dict[str, LeaseCounts] = {}
        # Requests run on several threads with no lock around the service (deployed).
        self._lease_counts_lock = threading.Lock()

    # -- queues -----------------------------------------------------------

    def _fetch_queues(self) -> dict[str, QueueInfo]:
        now = time.monotonic()
        if now - self._queues_fetched >= self.queues_ttl or not self._queues:
            response = pb.TaskQueueFetchQueuesResponse()
            _call("FetchQueues", pb.TaskQueueFetchQueuesRequest(max_rows=_MAX_QUEUES), response)
            self._queues = {
                queue.queue_name.decode("utf-8"): QueueInfo(
                    pull=queue.mode == pb.TaskQueueMode.PULL,
                    max_leases=queue.retry_parameters.retry_limit
                    if queue.HasField("retry_parameters") and queue.retry_parameters.HasField("retry_limit")
                    else None,
                    consumer_emails=tuple(email.decode("utf-8") for email in queue.acl.user_email),
                )
                for queue in response.queue
            }
            self._queues_fetched = now
        return self._queues

    def _queue(self, project: str, name: str) -> QueueInfo:
        """The pull queue ``name`` of ``project``.

        Raises:
            ApiError: 404 for another project or an unknown queue, 400 for an
                illegal queue name or a push queue.
        """
        return find_pull_queue(project, name, self.project, lambda queue: self._fetch_queues().get(queue))

    def acl(self, project: str, queue: str) -> QueueAcl | None:
        """The queue's ``user_email`` (consumers) and ``writer_email`` (producers) entries."""
        with self.lock, _translated():
            info = self._fetch_queues().get(queue)
        if info is None:
            return None
        return QueueAcl(info.consumer_emails, self.writers.get(queue, ()))

    def get_queue(self, project: str, queue: str, get_stats: bool = False) -> dict[str, Any]:
        """``taskqueues.get``; stats from ``Queue.fetch_statistics`` and this process's lease counts."""
        with self.lock, _translated():
            info = self._queue(project, queue)
            resource = queue_resource(
                queue, info.max_leases, QueueAcl(info.consumer_emails, self.writers.get(queue, ()))
            )
            if get_stats:
                statistics = gae_taskqueue.Queue(queue).fetch_statistics()
                oldest = (
                    statistics.oldest_eta_usec if statistics.tasks and statistics.oldest_eta_usec else None
                )
                resource["stats"] = self._counts(queue).stats(statistics.tasks, oldest, self._now())
            return resource

    # -- tasks ------------------------------------------------------------

    def insert(self, project: str, queue: str, body: Any) -> dict[str, Any]:
        """``tasks.insert`` through ``Queue.add``: a PULL task due now."""
        name, payload, tag = parse_new_task(body, queue)
        if name is None and self.name_unnamed:
            name = uuid.uuid4().hex
        with self.lock, _translated():
            self._queue(project, queue)
            check_queue_name(body, project, queue)
            now = self.clock()
            # The service leases only tasks due strictly before now: due a
            # microsecond ago, the task can be leased at once, as the API says.
            eta = (int(now * _MICROS) - 1) / _MICROS
            task = gae_taskqueue.Task(
                payload=payload,
                method="PULL",
                name=name,
                tag=tag,
                eta=datetime.datetime.fromtimestamp(eta, datetime.timezone.utc),
            )
            try:
                added = gae_taskqueue.Queue(queue).add(task)
            except (gae_taskqueue.TaskAlreadyExistsError, gae_taskqueue.TombstonedTaskError):
                raise name_taken(name or "(named by the service)", queue) from None
            # The service keeps the creation time in whole seconds.
            return task_resource(
                added.name, api.long_queue_name(project, queue), int(now) * _MICROS, 0, 0, payload, tag
            )

    def lease(
        self,
        project: str,
        queue: str,
        num_tasks: int,
        lease_secs: int,
        group_by_tag: bool = False,
        tag: str | None = None,
    ) -> dict[str, Any]:
        """``tasks.lease`` through ``Queue.lease_tasks`` or ``lease_tasks_by_tag``."""
        check_lease(num_tasks, lease_secs, group_by_tag, tag)
        with self.lock, _translated():
            self._queue(project, queue)
            pull_queue = gae_taskqueue.Queue(queue)
            if group_by_tag:
                leased = pull_queue.lease_tasks_by_tag(lease_secs, num_tasks, tag=tag)
            else:
                leased = pull_queue.lease_tasks(lease_secs, num_tasks)
            response: dict[str, Any] = {"kind": api.LEASED_TASKS_KIND}
            if not leased:
                return response
            now = self._now()
            self._counts(queue).add(now, len(leased))
            created = self._creation_times_after_lease(queue, leased[0]._eta_usec, leased)
            long_name = api.long_queue_name(project, queue)
            # The lease took effect: from here on, never fail. A creation time
            # that could not be read is approximated by the lease's time (in
            # whole seconds, as the service keeps it): the task was enqueued
            # no later than that.
            leased_at = now // _MICROS * _MICROS
            response["items"] = [
                task_resource(
                    task.name,
                    long_name,
                    created.get(task.name, leased_at),
                    task._eta_usec,
                    task.retry_count,
                    task.payload or b"",
                    task.tag,
                )
                for task in leased
            ]
            return response

    def _creation_times_after_lease(self, queue: str, eta: int, leased: list[Any]) -> dict[str, int]:
        """:meth:`_creation_times` of leased tasks; what was read before a failure (logged), if it fails.

        The tasks are leased already: a failure of this read must not turn
        the lease into an error the client would never see its tasks through.
        """
        found: dict[str, int] = {}
        try:
            self._creation_times(queue, eta, {task.name for task in leased}, found)
        except (apiproxy_errors.Error, gae_taskqueue.Error) as error:
            logger.warning(
                "queue %s: leased %d tasks but could not read their enqueue times (%s): "
                "answered with the lease's time instead",
                queue,
                len(leased),
                type(error).__name__,
            )
        return found

    def _creation_times(
        self, queue: str, eta: int, names: set[str], found: dict[str, int] | None = None
    ) -> dict[str, int]:
        """The creation times of the tasks ``names``, all due at ``eta``: one QueryTasks from there.

        They are added to ``found`` (a new dict by default) as they are read.
        """
        found = {} if found is None else found
        start_name = b""
        while len(found) < len(names):
            read = _query_tasks(queue, len(names) - len(found) + 10, eta, start_name)
            rows = [row for row in read if row.eta_usec == eta]
            for row in rows:
                name = row.task_name.decode("utf-8")
                if name in names:
                    found[name] = row.creation_time_usec
            if len(rows) < len(read) or not rows:
                break
            start_name = rows[-1].task_name + b"\x00"
        return found

    def get_task(self, project: str, queue: str, task: str) -> dict[str, Any]:
        """``tasks.get`` through the ``FetchTask`` RPC."""
        with self.lock, _translated():
            self._queue(project, queue)
            check_task_name_syntax(task)
            found = self._fetch_task(queue, task)
            return self._resource(project, queue, found, with_payload=True)

    def list_tasks(self, project: str, queue: str) -> dict[str, Any]:
        """``tasks.list`` through the ``QueryTasks`` RPC, in lease order (ETA, then name)."""
        with self.lock, _translated():
            self._queue(project, queue)
            return {
                "kind": api.LISTED_TASKS_KIND,
                "items": [
                    self._resource(project, queue, row, with_payload=False)
                    for row in _query_tasks(queue, MAX_LIST_TASKS)
                ],
            }

    def delete_task(self, project: str, queue: str, task: str) -> None:
        """``tasks.delete`` through ``Queue.delete_tasks_by_name``."""
        [error] = self.delete_tasks(project, queue, [task])
        if error is not None:
            raise error

    def delete_tasks(self, project: str, queue: str, tasks: Sequence[str]) -> list[ApiError | None]:
        """Several ``tasks.delete`` of one queue in one ``Queue.delete_tasks_by_name`` (one RPC)."""
        results: dict[str, ApiError | None] = {}
        for name in tasks:
            try:
                check_task_name_syntax(name)
            except ApiError as error:
                results[name] = error
        valid = [name for name in dict.fromkeys(tasks) if name not in results]
        with self.lock, _translated():
            self._queue(project, queue)
            if valid:
                for deleted in gae_taskqueue.Queue(queue).delete_tasks_by_name(valid):
                    results[deleted.name] = None if deleted.was_deleted else no_such_task(deleted.name, queue)
        return [results[name] for name in tasks]

    def update_task(
        self, project: str, queue: str, task: str, new_lease_seconds: int, body: Any
    ) -> dict[str, Any]:
        """``tasks.update``/``patch``: ``FetchTask`` for the lease, then ``Queue.modify_task_lease``."""
        given = parse_lease_change(new_lease_seconds, body, project, queue)
        with self.lock, _translated():
            self._queue(project, queue)
            check_task_name_syntax(task)
            found = self._fetch_task(queue, task)
            if not self._leased(found):
                raise not_leased(task)
            if given is not None and given != found.eta_usec:
                raise stale_lease(task)
            held = gae_taskqueue.Task._FromQueryAndOwnResponseTask(queue, found)
            try:
                gae_taskqueue.Queue(queue).modify_task_lease(held, new_lease_seconds)
            except gae_taskqueue.TaskLeaseExpiredError:
                raise not_leased(task) from None
            lease_expires = held._eta_usec if new_lease_seconds else 0
            return task_resource(
                task,
                api.long_queue_name(project, queue),
                found.creation_time_usec,
                lease_expires,
                found.retry_count,
                found.body,
                found.tag.decode("utf-8") if found.HasField("tag") else None,
            )

    # -- what the dashboard reads -------------------------------------------

    def projects(self) -> list[str]:
        """The application served; none when any id names the (one) application's queues."""
        return [self.project] if self.project is not None else []

    def queue_names(self) -> list[str]:
        """The pull queues ``FetchQueues`` reports, by name."""
        with self.lock, _translated():
            return sorted(name for name, info in self._fetch_queues().items() if info.pull)

    def peek_tasks(self, project: str, queue: str, limit: int, payload_bytes: int) -> list[PeekedTask]:
        """The first ``limit`` tasks in lease order (ETA, then name), with the first
        ``payload_bytes`` of each payload: one ``QueryTasks`` (which reads whole payloads)."""
        with self.lock, _translated():
            self._queue(project, queue)
            return [
                PeekedTask(
                    self._resource(project, queue, row, with_payload=False),
                    row.body[:payload_bytes],
                    len(row.body),
                )
                for row in _query_tasks(queue, limit)
            ]

    def leased_count(self, project: str, queue: str) -> int:
        """How many tasks are leased now: those due after now that were leased, read from now on.

        A lease lives in the ETA, so only tasks whose ETA is in the future
        are read (leased ones, and tasks added with a countdown), in pages of
        :data:`_LEASED_PAGE`, never the whole queue.
        """
        with self.lock, _translated():
            self._queue(project, queue)
            count = 0
            start_eta, start_name = self._now() + 1, b""
            while True:
                rows = _query_tasks(queue, _LEASED_PAGE, start_eta, start_name)
                count += sum(1 for row in rows if self._leased(row))
                if len(rows) < _LEASED_PAGE:
                    return count
                start_eta, start_name = rows[-1].eta_usec, rows[-1].task_name + b"\x00"

    # -- helpers ----------------------------------------------------------

    def _counts(self, queue: str) -> LeaseCounts:
        """The lease counts of ``queue``, made once whatever the threads."""
        with self._lease_counts_lock:
            counts = self._lease_counts.get(queue)
            if counts is None:
                counts = self._lease_counts[queue] = LeaseCounts()
            return counts

    def _now(self) -> int:
        return int(self.clock() * _MICROS)

    def _fetch_task(self, queue: str, task: str) -> Any:
        request = pb.TaskQueueFetchTaskRequest(
            queue_name=queue.encode("utf-8"), task_name=task.encode("utf-8")
        )
        response = pb.TaskQueueFetchTaskResponse()
        try:
            _call("FetchTask", request, response)
        except apiproxy_errors.ApplicationError as error:
            if error.application_error in (_ERROR.UNKNOWN_TASK, _ERROR.TOMBSTONED_TASK):
                raise no_such_task(task, queue) from None
            raise
        return response.task.task[0]

    def _leased(self, row: Any) -> bool:
        """The service keeps a lease in the ETA: leased once, and due in the future.

        At the very microsecond of its ETA a task is neither leased nor due.
        """
        return bool(row.retry_count > 0 and row.eta_usec > self._now())

    def _resource(self, project: str, queue: str, row: Any, with_payload: bool) -> dict[str, Any]:
        return task_resource(
            row.task_name.decode("utf-8"),
            api.long_queue_name(project, queue),
            row.creation_time_usec,
            row.eta_usec if self._leased(row) else 0,
            row.retry_count,
            row.body if with_payload else None,
            row.tag.decode("utf-8") if row.HasField("tag") else None,
        )


def _call(method: str, request: Any, response: Any) -> None:
    """One RPC of the task queue service."""
    apiproxy_stub_map.MakeSyncCall(_SERVICE, method, request, response)


def _query_tasks(queue: str, max_rows: int, start_eta: int = 0, start_name: bytes | None = None) -> list[Any]:
    """One ``QueryTasks``: up to ``max_rows`` tasks of ``queue`` in lease order (ETA, then name),
    from ``start_eta`` (and ``start_name`` within it, when given), with their payloads."""
    request = pb.TaskQueueQueryTasksRequest(
        queue_name=queue.encode("utf-8"), start_eta_usec=start_eta, max_rows=max_rows
    )
    if start_name is not None:
        request.start_task_name = start_name
    response = pb.TaskQueueQueryTasksResponse()
    _call("QueryTasks", request, response)
    return list(response.task)


#: The bundled API's errors that are the caller's fault, as the REST API answered them.
_REFUSALS: tuple[tuple[type[Exception], Callable[[str], ApiError]], ...] = (
    (gae_taskqueue.UnknownQueueError, errors.not_found),
    (gae_taskqueue.TaskAlreadyExistsError, errors.conflict),
    (gae_taskqueue.TombstonedTaskError, errors.conflict),
    (gae_taskqueue.TaskTooLargeError, lambda message: errors.bad_request(message, reason="taskTooLarge")),
    (gae_taskqueue.InvalidQueueModeError, lambda message: errors.bad_request(message, reason="badRequest")),
)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """The service's errors as the REST API's: refusals 4xx, everything transient 503."""
    try:
        yield
    except ApiError:
        raise
    except _TRANSIENT as error:
        raise errors.backend_error(
            f"App Engine's task queue service failed: {type(error).__name__}"
        ) from None
    except gae_taskqueue.Error as error:
        for kind, render in _REFUSALS:
            if isinstance(error, kind):
                raise render(str(error) or type(error).__name__) from None
        raise errors.bad_request(str(error) or type(error).__name__) from None
    except apiproxy_errors.ApplicationError as error:
        if error.application_error == _ERROR.UNKNOWN_QUEUE:
            raise errors.not_found("The queue does not exist") from None
        if error.application_error in (_ERROR.TRANSIENT_ERROR, _ERROR.INTERNAL_ERROR):
            raise errors.backend_error("App Engine's task queue service failed") from None
        raise errors.bad_request(f"App Engine's task queue service refused the call ({error})") from None
    except (apiproxy_errors.DeadlineExceededError, apiproxy_errors.OverQuotaError) as error:
        raise errors.backend_error(f"App Engine's task queue service: {type(error).__name__}") from None
