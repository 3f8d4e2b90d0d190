"""What a backend of the REST front implements, and the API's rules both backends share.

:class:`TaskQueueBackend` is the one interface between the REST front
(:mod:`.front`, :mod:`.batch`) and the queues behind it: the emulator's
:class:`~kombu_appengine.emulator.model.TaskQueueService` on one side, the
gateway's :class:`~kombu_appengine.gateway.appengine.AppEngineBackend` (App
Engine's task queue service) on the other. Each method takes the call's
already-parsed arguments (JSON bodies as parsed JSON), returns the API's
resource as a dictionary, and raises :class:`~.errors.ApiError` for every
refusal.

The checks of arguments and bodies that the API makes whatever stands behind
it (ranges of ``numTasks``, ``leaseSecs`` and ``newLeaseSeconds``, a Task
body's fields, ``queueName`` naming the queue of the URL, which project and
queue a path may name) live here, once, and so do the refusals both backends
answer, the rendering of tasks and queues as the API's resources, and the
lease counts of a queue's stats.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple, Protocol, TypeVar

from .. import api
from ..api import (
    LONG_QUEUE_NAME_RE,
    MAX_LEASE_SECONDS,
    MAX_NUM_TASKS,
    MAX_PAYLOAD_BYTES,
    MAX_TAG_BYTES,
    QUEUE_NAME_RE,
    TASK_NAME_RE,
    bare_project,
)
from . import errors
from .errors import ApiError

_MICROS = 1_000_000


class QueueAcl(NamedTuple):
    """Who may use a queue, as its ``acl`` in ``queue.yaml`` says."""

    #: ``user_email`` entries: may lease, get, list, update and delete.
    consumer_emails: Sequence[str]
    #: ``writer_email`` entries: may insert.
    producer_emails: Sequence[str]


class TaskQueueBackend(Protocol):
    """The queues behind the REST front: one method per API method.

    ``project`` and ``queue`` are the path's segments as sent (the project
    possibly with ``s~``/``e~``); an unknown project or queue is 404, a push
    queue 400.
    """

    #: Seconds since the epoch: the backend's own clock.
    clock: Callable[[], float]

    def get_queue(self, project: str, queue: str, get_stats: bool = False) -> dict[str, Any]:
        """``taskqueues.get``: the ``taskqueues#taskqueue`` resource, with ``stats`` when asked."""

    def insert(self, project: str, queue: str, body: Any) -> dict[str, Any]:
        """``tasks.insert`` of the Task ``body`` (see :func:`parse_new_task`); a reserved name is 409."""

    def lease(
        self,
        project: str,
        queue: str,
        num_tasks: int,
        lease_secs: int,
        group_by_tag: bool = False,
        tag: str | None = None,
    ) -> dict[str, Any]:
        """``tasks.lease`` (arguments as :func:`check_lease` takes them): a ``taskqueue#tasks``."""

    def get_task(self, project: str, queue: str, task: str) -> dict[str, Any]:
        """``tasks.get``: the task with its payload."""

    def list_tasks(self, project: str, queue: str) -> dict[str, Any]:
        """``tasks.list``: the first :data:`~kombu_appengine.api.MAX_LIST_TASKS` tasks, without payloads."""

    def delete_task(self, project: str, queue: str, task: str) -> None:
        """``tasks.delete``: unknown or deleted is 404."""

    def delete_tasks(self, project: str, queue: str, tasks: Sequence[str]) -> list[ApiError | None]:
        """Several ``tasks.delete`` of one queue at once (a batch's): each one's error, or ``None``.

        Raises:
            ApiError: what refuses them all (an unknown project or queue).
        """

    def update_task(
        self, project: str, queue: str, task: str, new_lease_seconds: int, body: Any
    ) -> dict[str, Any]:
        """``tasks.update`` and ``tasks.patch``: change or release (0) a held lease."""

    def acl(self, project: str, queue: str) -> QueueAcl | None:
        """The queue's ACL, or ``None`` when the queue is unknown (its call then answers 404)."""

    # What the dashboard reads beside the API's methods (the API has no call
    # listing queues, and tasks.list gives no payloads).

    def projects(self) -> list[str]:
        """The projects (bare ids) whose queues hold state, in order: the one
        served when the backend serves one; empty when any project id names
        the same queues and none is known yet."""

    def queue_names(self) -> list[str]:
        """The declared pull queues, by name."""

    def peek_tasks(self, project: str, queue: str, limit: int, payload_bytes: int) -> list[PeekedTask]:
        """The first ``limit`` tasks in lease order, each with the first ``payload_bytes`` of its
        payload; changes nothing."""

    def leased_count(self, project: str, queue: str) -> int:
        """How many of the queue's tasks are leased now."""


class PeekedTask(NamedTuple):
    """A task as the dashboard reads it: its resource, and the head of its payload."""

    #: The ``taskqueues#task`` resource, without ``payloadBase64``.
    resource: dict[str, Any]
    #: The payload's first bytes (all of it when it is short enough).
    payload: bytes
    #: The payload's whole length, in bytes.
    size: int


class QueueAdmin(Protocol):
    """What a dashboard that changes queues needs beyond the API: the emulator's model has it."""

    def purge_queue(self, project: str, queue: str) -> int:
        """Delete every task the queue holds now, leased or not; returns how many.

        Raises:
            ApiError: 404 for an unknown project or queue.
        """


#: What App Engine counts of a pull task beside its payload, name, tag and
#: queue name against the 1 MiB limit. It checks twice: the bundled API
#: counts the payload, the method and the headers it adds (54 bytes and the
#: length of the app's host name: 64 with the SDK testbed's), the service the
#: whole add request (the payload, the name, the tag, the queue name and up
#: to 53 bytes of fields). 64 makes the count never smaller than either of
#: the SDK's, so nothing accepted here is refused there.
TASK_OVERHEAD_BYTES = 64


class NewTask(NamedTuple):
    """A Task body of ``tasks.insert``, checked."""

    #: The name asked for, or ``None`` for one the backend chooses.
    name: str | None
    payload: bytes
    #: The tag; ``None`` for none (an empty tag is none).
    tag: str | None


def decode_payload(text: Any) -> bytes:
    """Decode a request's ``payloadBase64`` within the API's limit.

    Raises:
        ApiError: 400 when it is not base64 or decodes to more than 1 MiB.
    """
    if not isinstance(text, str):
        raise errors.bad_request("payloadBase64 must be a base64 string")
    try:
        payload = api.decode_payload(text)
    except ValueError:
        raise errors.bad_request("payloadBase64 is not valid base64") from None
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise task_too_large(f"Task payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    return payload


def task_too_large(message: str) -> ApiError:
    """400 ``taskTooLarge``."""
    return errors.bad_request(message, reason="taskTooLarge")


def invalid_task_name(name: Any) -> ApiError:
    """400 for a task name outside the API's alphabet or length."""
    return errors.bad_request(f"Invalid task name {name!r}: use 1 to 500 of a-z, A-Z, 0-9, _ and -")


def parse_new_task(body: Any, queue: str) -> NewTask:
    """The task a ``tasks.insert`` body asks for, to be added to ``queue``.

    Raises:
        ApiError: 400 for a body that is not a Task object, a payload that is
            not base64 or too large, a tag that is not a string or too long,
            an illegal name.
    """
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a Task object")
    payload = decode_payload(body.get("payloadBase64", ""))
    tag = body.get("tag")
    if tag is not None:
        if not isinstance(tag, str):
            raise errors.bad_request("tag must be a string")
        if len(tag.encode("utf-8")) > MAX_TAG_BYTES:
            raise errors.bad_request(f"tag is longer than {MAX_TAG_BYTES} bytes")
        tag = tag or None
    name = body.get("id")
    if name is not None and (not isinstance(name, str) or not TASK_NAME_RE.match(name)):
        raise invalid_task_name(name)
    # As App Engine: the whole task counts, not the payload alone.
    size = (
        len(payload)
        + len(name or "")
        + len((tag or "").encode("utf-8"))
        + len(queue.encode("utf-8"))
        + TASK_OVERHEAD_BYTES
    )
    if size > MAX_PAYLOAD_BYTES:
        raise task_too_large(
            f"Task size must be less than {MAX_PAYLOAD_BYTES}; found {size} (the payload, the name, "
            f"the tag, the queue name and {TASK_OVERHEAD_BYTES} bytes of the task's other fields)"
        )
    return NewTask(name, payload, tag)


def check_queue_name(body: dict[str, Any], project: str, queue: str) -> None:
    """A body's ``queueName``, when given, must name the queue (and project) of the URL.

    Raises:
        ApiError: 400 when it names another, or is not a string.
    """
    given = body.get("queueName")
    if given is None:
        return
    if not isinstance(given, str):
        raise errors.bad_request("queueName must be a string")
    long_form = LONG_QUEUE_NAME_RE.match(given)
    if long_form:
        given_project, given = long_form.groups()
        if bare_project(given_project) != bare_project(project):
            raise errors.bad_request(
                f"queueName names project {given_project!r}, but the URL names {project!r}"
            )
    if given != queue:
        raise errors.bad_request(f"queueName {given!r} does not match the queue {queue!r} of the URL")


class PullFlag(Protocol):
    """What a backend knows of a declared queue, as far as the path's checks go."""

    @property
    def pull(self) -> bool:
        """Whether it is a pull queue (the API serves no other)."""
        ...


_Q = TypeVar("_Q", bound=PullFlag)


def find_pull_queue(
    project: str, queue: str, served_project: str | None, lookup: Callable[[str], _Q | None]
) -> _Q:
    """The declared pull queue a path names.

    Parameters:
        project: the path's project segment (with or without ``s~``/``e~``).
        queue: the path's queue segment.
        served_project: the only project served (bare), or ``None`` for any.
        lookup: the backend's declared queue of that name, or ``None``.

    Raises:
        ApiError: 404 for another project or an unknown queue, 400 for an
            illegal queue name or a push queue.
    """
    bare = bare_project(project)
    if not bare or (served_project is not None and bare != served_project):
        raise errors.not_found(f"Project {project!r} is not known to this server")
    check_queue_name_syntax(queue)
    found = lookup(queue)
    if found is None:
        raise errors.not_found(
            f"Queue {queue!r} of project {bare!r} does not exist: pull queues are declared in queue.yaml"
        )
    if not found.pull:
        raise errors.bad_request(f"Queue {queue!r} is not a pull queue", reason="badRequest")
    return found


def check_queue_name_syntax(queue: str) -> None:
    """Raises: ApiError: 400 for a queue name outside the API's alphabet or length."""
    if not QUEUE_NAME_RE.match(queue):
        raise errors.bad_request(f"Invalid queue name {queue!r}: use 1 to 100 of a-z, A-Z, 0-9 and -")


def check_task_name_syntax(task: str) -> None:
    """Raises: ApiError: 400 for a task name outside the API's alphabet or length."""
    if not TASK_NAME_RE.match(task):
        raise invalid_task_name(task)


def check_lease(num_tasks: int, lease_secs: int, group_by_tag: bool, tag: str | None) -> None:
    """The arguments of ``tasks.lease``, within the API's limits.

    Raises:
        ApiError: 400 for ``numTasks`` outside 1..1000, ``leaseSecs``
            outside 0..one week, or a ``tag`` without ``groupByTag``.
    """
    if not 1 <= num_tasks <= MAX_NUM_TASKS:
        raise errors.bad_request(f"numTasks must be between 1 and {MAX_NUM_TASKS}, not {num_tasks}")
    if not 0 <= lease_secs <= MAX_LEASE_SECONDS:
        raise errors.bad_request(f"leaseSecs must be between 0 and {MAX_LEASE_SECONDS}, not {lease_secs}")
    if tag is not None and not group_by_tag:
        raise errors.bad_request("tag is only allowed with groupByTag=true")


def parse_lease_change(new_lease_seconds: int, body: Any, project: str, queue: str) -> int | None:
    """Check the arguments of ``tasks.update``/``patch``; the ``leaseTimestamp`` the body carries, if any.

    Raises:
        ApiError: 400 for ``newLeaseSeconds`` outside 0..one week, a body
            that is not a Task, one without ``queueName`` or naming another
            queue, a ``leaseTimestamp`` that is not an integer.
    """
    if not 0 <= new_lease_seconds <= MAX_LEASE_SECONDS:
        raise errors.bad_request(
            f"newLeaseSeconds must be between 0 and {MAX_LEASE_SECONDS}, not {new_lease_seconds}"
        )
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a Task object")
    if "queueName" not in body:
        raise errors.bad_request("The Task in the request body must carry queueName")
    check_queue_name(body, project, queue)
    given = body.get("leaseTimestamp")
    if given is None:
        return None
    try:
        return int(given)
    except (TypeError, ValueError, OverflowError):
        raise errors.bad_request("leaseTimestamp must be an integer") from None


def name_taken(task: str, queue: str) -> ApiError:
    """409: the name is held by a task, or by one deleted recently (a tombstone)."""
    return errors.conflict(f"Task {task!r} already exists or was deleted recently in queue {queue!r}")


def no_such_task(task: str, queue: str) -> ApiError:
    """404: no task of that name (it never was, or it was deleted)."""
    return errors.not_found(f"Task {task!r} does not exist in queue {queue!r}")


def stale_lease(task: str) -> ApiError:
    """400: the ``leaseTimestamp`` sent is not the task's current lease."""
    return errors.bad_request(
        f"leaseTimestamp does not match the current lease of task {task!r}", reason="badRequest"
    )


def not_leased(task: str) -> ApiError:
    """400: the task's lease cannot be changed: it holds none."""
    return errors.bad_request(f"Task {task!r} is not leased, or its lease has expired", reason="badRequest")


def task_resource(
    name: str,
    queue_name: str,
    enqueued: int,
    lease_expires: int,
    retry_count: int,
    payload: bytes | None,
    tag: str | None,
) -> dict[str, Any]:
    """The ``taskqueues#task`` resource.

    Parameters:
        queue_name: ``queueName`` as answered (the long form).
        enqueued: when it was enqueued, microseconds since the epoch.
        lease_expires: when its lease ends, microseconds; 0 when not leased.
        payload: ``None`` for a resource without ``payloadBase64`` (list).
    """
    resource: dict[str, Any] = {
        "kind": api.TASK_KIND,
        "id": name,
        "queueName": queue_name,
        "enqueueTimestamp": str(enqueued),
        "leaseTimestamp": str(lease_expires),
        "retry_count": retry_count,
    }
    if payload is not None:
        resource["payloadBase64"] = api.encode_payload(payload)
    if tag is not None:
        resource["tag"] = tag
    return resource


def queue_resource(name: str, max_leases: int | None, acl: QueueAcl) -> dict[str, Any]:
    """The ``taskqueues#taskqueue`` resource, without ``stats``."""
    resource: dict[str, Any] = {
        "kind": api.QUEUE_KIND,
        "id": name,
        "acl": {
            "consumerEmails": list(acl.consumer_emails),
            "producerEmails": list(acl.producer_emails),
            "adminEmails": [],
        },
    }
    if max_leases is not None:
        resource["maxLeases"] = max_leases
    return resource


class LeaseWindow:
    """How many tasks were leased in the last ``seconds``, exactly, in O(1) amortized.

    Thread-safe: the deployed gateway serves requests on several threads
    with no lock around the backend (App Engine's service needs none), and
    reading the total trims the log.
    """

    def __init__(self, seconds: int) -> None:
        self.span = seconds * _MICROS
        self._log: collections.deque[tuple[int, int]] = collections.deque()
        self._total = 0
        self._lock = threading.Lock()

    def add(self, when: int, count: int) -> None:
        """Record ``count`` tasks leased at ``when``."""
        with self._lock:
            self._log.append((when, count))
            self._total += count

    def total(self, now: int) -> int:
        """Tasks leased after ``now`` minus the window."""
        with self._lock:
            log = self._log
            while log and log[0][0] <= now - self.span:
                self._total -= log.popleft()[1]
            return self._total


class LeaseCounts:
    """The tasks one queue leased in the last minute and in the last hour (its stats' counts)."""

    def __init__(self) -> None:
        self._minute = LeaseWindow(60)
        self._hour = LeaseWindow(3600)

    def add(self, when: int, count: int) -> None:
        """Record ``count`` tasks leased at ``when`` (microseconds since the epoch)."""
        if count:
            self._minute.add(when, count)
            self._hour.add(when, count)

    def stats(self, total_tasks: int, oldest_eta: int | None, now: int) -> dict[str, Any]:
        """The ``stats`` object of ``taskqueues.get``.

        Parameters:
            total_tasks: every task of the queue, leased or not.
            oldest_eta: the earliest ETA of its tasks (a leased task's is its
                lease expiry, as App Engine's statistics have it), microseconds;
                ``None`` for an empty queue.
            now: microseconds since the epoch.
        """
        # A new task's ETA is a microsecond before its enqueue time: given back here.
        oldest = max(oldest_eta + 1, 0) // _MICROS if oldest_eta is not None else 0
        return {
            "totalTasks": total_tasks,
            "oldestTask": str(oldest),
            "leasedLastMinute": str(self._minute.total(now)),
            "leasedLastHour": str(self._hour.total(now)),
        }
