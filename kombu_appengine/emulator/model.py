"""The emulated pull queues: plain domain code that knows nothing of HTTP.

:class:`TaskQueueService` holds the queues of every project and carries out
the API's methods on already-parsed arguments, returning the JSON resources
of TASKQUEUE_API.md as dictionaries and raising
:class:`~kombu_appengine.emulator.errors.ApiError` for every refusal.

Leasing costs O(log n) in the depth of the queue: each queue keeps a heap of
``(eta, name)`` for all its tasks and one per tag, and stale heap entries
(tasks deleted or leased since) are recognised by a version number and
dropped lazily when they reach the top.
"""

from __future__ import annotations

import base64
import collections
import heapq
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .. import api
from ..api import (
    MAX_LEASE_BATCH_BYTES,
    MAX_LIST_TASKS,
    QUEUE_NAME_RE,
    TASK_NAME_RE,
    TOMBSTONE_SECONDS,
    bare_project,
)
from ..rest.backend import (
    LeaseCounts,
    PeekedTask,
    QueueAcl,
    check_lease,
    check_queue_name,
    check_task_name_syntax,
    decode_payload,
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

__all__ = ["MalformedEntry", "QueueConfig", "Task", "TaskQueueService", "decode_payload"]

#: How long a deleted task's name stays reserved, in microseconds.
TOMBSTONE_MICROS = TOMBSTONE_SECONDS * 1_000_000
#: Stale entries a heap may hold beyond as many as its live tasks before it is
#: rebuilt without them: stale entries below the top are never popped.
HEAP_SLACK = 64

_MICROS = 1_000_000


@dataclass
class QueueConfig:
    """A queue as ``queue.yaml`` or ``--queue`` declares it."""

    name: str
    #: ``"pull"``; a ``"push"`` queue is known but not served by the REST API.
    mode: str = "pull"
    #: ``task_retry_limit``: most leases of one task; ``None`` for no limit.
    max_leases: int | None = None
    #: ``user_email`` entries of the queue's ACL.
    consumer_emails: list[str] = field(default_factory=list)
    #: ``writer_email`` entries of the queue's ACL.
    producer_emails: list[str] = field(default_factory=list)

    @property
    def pull(self) -> bool:
        """Whether the REST API serves it."""
        return self.mode == "pull"

    def __post_init__(self) -> None:
        if not QUEUE_NAME_RE.match(self.name):
            raise ValueError(f"invalid queue name {self.name!r}: use 1 to 100 of a-z, A-Z, 0-9 and -")
        if self.mode not in ("pull", "push"):
            raise ValueError(f"queue {self.name!r}: mode must be 'pull' or 'push', not {self.mode!r}")
        if self.max_leases is not None and self.max_leases < 0:
            raise ValueError(f"queue {self.name!r}: task_retry_limit must not be negative")


class Task:
    """One task and its lease state; times are microseconds since the epoch."""

    __slots__ = (
        "enqueued",
        "eta",
        "lease_expires",
        "name",
        "payload",
        "retry_count",
        "seq",
        "tag",
        "version",
    )

    def __init__(self, name: str, payload: bytes, tag: str | None, enqueued: int, seq: int) -> None:
        self.name = name
        self.payload = payload
        self.tag = tag
        self.enqueued = enqueued
        #: When the task may next be leased: a microsecond before its
        #: enqueue time (a task is due strictly after its ETA, as App
        #: Engine's; so a new task is due at once), then its lease expiry.
        self.eta = enqueued - 1
        #: Expiry of the current lease, 0 when never leased or released.
        self.lease_expires = 0
        self.retry_count = 0
        #: Insertion order (kept in the journal); equal ETAs go by name, as App Engine's.
        self.seq = seq
        #: Bumped whenever the task's heap position changes or it is deleted.
        self.version = 0

    def leased_at(self, now: int) -> bool:
        """Whether a lease on the task is in force at ``now``."""
        return self.lease_expires > now

    def resource(self, queue_name: str, now: int, with_payload: bool = True) -> dict[str, Any]:
        """The ``taskqueues#task`` resource."""
        return task_resource(
            self.name,
            queue_name,
            # App Engine keeps the enqueue time in whole seconds.
            self.enqueued // _MICROS * _MICROS,
            self.lease_expires if self.leased_at(now) else 0,
            self.retry_count,
            self.payload if with_payload else None,
            self.tag,
        )


#: ``(eta, name, seq, version, task)``: equal ETAs go by name; ``seq`` tells apart a task
#: restored under the name of one forgotten.
_HeapEntry = tuple[int, str, int, int, Task]
#: One task's lease in a journal entry: name, ETA, lease expiry, retry count.
_Lease = tuple[str, int, int, int]


class Queue:
    """One pull queue of one project."""

    def __init__(self, config: QueueConfig) -> None:
        self.config = config
        #: Every task, in insertion order (so the first is the oldest).
        self.tasks: collections.OrderedDict[str, Task] = collections.OrderedDict()
        self._heap: list[_HeapEntry] = []
        #: A heap per tag that was leased by (``groupByTag``), built on first
        #: use: queues never leased by tag keep one heap only.
        self._tag_heaps: dict[str | None, list[_HeapEntry]] = {}
        #: Live tasks per tag.
        self._tag_counts: dict[str | None, int] = {}
        #: Deleted names still reserved: name -> deletion time.
        self.tombstones: dict[str, int] = {}
        self._tombstone_order: collections.deque[tuple[int, str]] = collections.deque()
        #: Tasks leased recently, for the stats.
        self._lease_counts = LeaseCounts()

    # -- index upkeep -----------------------------------------------------

    def _index(self, task: Task) -> None:
        task.version += 1
        entry = (task.eta, task.name, task.seq, task.version, task)
        self._push(self._heap, entry, len(self.tasks))
        tag_heap = self._tag_heaps.get(task.tag)
        if tag_heap is not None:
            self._push(tag_heap, entry, self._tag_counts[task.tag])

    def _tag_heap(self, tag: str | None) -> list[_HeapEntry]:
        """The heap of the tasks tagged ``tag``, built from the queue on first use."""
        heap = self._tag_heaps.get(tag)
        if heap is None:
            heap = [(t.eta, t.name, t.seq, t.version, t) for t in self.tasks.values() if t.tag == tag]
            heapq.heapify(heap)
            self._tag_heaps[tag] = heap
        return heap

    @staticmethod
    def _push(heap: list[_HeapEntry], entry: _HeapEntry, live: int) -> None:
        """Push ``entry``; drop the stale entries once they outnumber the ``live`` ones.

        Rebuilding costs O(n) once per n pushes, so pushes stay O(log n)
        amortized while the heap stays within twice the queue's depth.
        """
        heapq.heappush(heap, entry)
        if len(heap) > 2 * live + HEAP_SLACK:
            heap[:] = [e for e in heap if e[3] == e[4].version]
            heapq.heapify(heap)

    def _first_available(self, heap: list[_HeapEntry], now: int) -> Task | None:
        """Drop stale entries from the top of ``heap``; the top task if due."""
        while heap:
            eta, _, _, version, task = heap[0]
            if version != task.version:
                heapq.heappop(heap)
                continue
            return task if eta < now else None
        return None

    def add(self, task: Task) -> None:
        """Add a new (or restored) task and index it."""
        self.tasks[task.name] = task
        self._tag_counts[task.tag] = self._tag_counts.get(task.tag, 0) + 1
        self._index(task)

    def remove(self, task: Task, now: int) -> None:
        """Delete a task and reserve its name."""
        self.forget(task)
        self.tombstone(task.name, now)

    def forget(self, task: Task) -> None:
        """Drop a task from the queue and its indexes, reserving nothing."""
        del self.tasks[task.name]
        task.version += 1
        self._tag_counts[task.tag] -= 1
        if not self._tag_counts[task.tag]:
            del self._tag_counts[task.tag]
            if task.tag in self._tag_heaps:
                # Only stale entries are left; the (empty) heap stays for
                # the consumers that lease by this tag.
                self._tag_heaps[task.tag] = []

    def tombstone(self, name: str, when: int) -> None:
        """Reserve a deleted name until ``when`` + the tombstone period."""
        self.tombstones[name] = when
        self._tombstone_order.append((when, name))
        limit = when - TOMBSTONE_MICROS
        order = self._tombstone_order
        while order and order[0][0] <= limit:
            old_when, old_name = order.popleft()
            if self.tombstones.get(old_name) == old_when:
                del self.tombstones[old_name]

    def name_reserved(self, name: str, now: int) -> bool:
        """Whether ``name`` exists or was deleted within the tombstone period."""
        if name in self.tasks:
            return True
        deleted = self.tombstones.get(name)
        return deleted is not None and deleted > now - TOMBSTONE_MICROS

    def set_lease(self, task: Task, eta: int, lease_expires: int) -> None:
        """Move a task's ETA and lease expiry, keeping the heaps right."""
        task.eta = eta
        task.lease_expires = lease_expires
        self._index(task)

    # -- operations -------------------------------------------------------

    def plan_lease(
        self, num_tasks: int, tag: str | None, by_tag: bool, now: int
    ) -> tuple[list[Task], list[Task]]:
        """What a lease of up to ``num_tasks`` due tasks, oldest first, would do.

        Changes nothing, so that the lease can be journaled before it is
        applied (:meth:`apply_lease`). Returns the tasks to lease and the
        tasks to delete instead, because they reached ``maxLeases``.
        """
        candidates: Iterable[Task] = self._due(self._heap, now)
        # As App Engine: an empty tag is no tag, here as on insert (the group
        # is the oldest task's, not the tasks tagged "", of which there are none).
        tag = tag or None
        if by_tag and tag is None:
            # As App Engine: the oldest task's tag is the group; a tagged
            # group is every due task of that tag, but an untagged one only
            # the untagged among the oldest num_tasks due tasks.
            window = list(itertools.islice(candidates, num_tasks))
            if not window:
                return [], []
            tag = window[0].tag
            candidates = [task for task in window if task.tag is None]
        if by_tag and tag is not None:
            candidates = self._due(self._tag_heap(tag), now) if self._tag_counts.get(tag) else []
        leased: list[Task] = []
        expired: list[Task] = []
        batch_bytes = 0
        max_leases = self.config.max_leases
        for task in candidates:
            if leased and batch_bytes + len(task.payload) > MAX_LEASE_BATCH_BYTES:
                break
            # A task out of leases is deleted instead, and takes its place
            # among the num_tasks, as App Engine's.
            if max_leases is not None and task.retry_count >= max_leases:
                expired.append(task)
            else:
                batch_bytes += len(task.payload)
                leased.append(task)
            if len(leased) + len(expired) == num_tasks:
                break
        return leased, expired

    def _due(self, heap: list[_HeapEntry], now: int) -> Iterator[Task]:
        """The tasks of ``heap`` due at ``now``, in lease order, leaving the heap as it is.

        Stale entries at the top are dropped first (that changes no task);
        below it the heap is walked as the tree it is, as :meth:`ordered`
        does, pruning subtrees that are not due yet.
        """
        if self._first_available(heap, now) is None:
            return
        frontier: list[tuple[_HeapEntry, int]] = [(heap[0], 0)]
        while frontier:
            (eta, _, _, version, task), index = heapq.heappop(frontier)
            if eta >= now:
                return
            if version == task.version:
                yield task
            for child in (2 * index + 1, 2 * index + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child], child))

    def apply_lease(self, leased: list[Task], expired: list[Task], lease_micros: int, now: int) -> None:
        """Carry out a lease that :meth:`plan_lease` planned."""
        for task in expired:
            self.remove(task, now)
        for task in leased:
            task.retry_count += 1
            self.set_lease(task, now + lease_micros, now + lease_micros)
        self._lease_counts.add(now, len(leased))

    def ordered(self, limit: int) -> list[Task]:
        """The first ``limit`` tasks in lease order (ETA, then name).

        Walks the heap as the tree it is, smallest entry first, so the cost
        grows with ``limit`` and the stale entries met, not with the depth.
        """
        heap = self._heap
        found: list[Task] = []
        frontier: list[tuple[_HeapEntry, int]] = [(heap[0], 0)] if heap else []
        while frontier and len(found) < limit:
            (_, _, _, version, task), index = heapq.heappop(frontier)
            if version == task.version:
                found.append(task)
            for child in (2 * index + 1, 2 * index + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child], child))
        return found

    def stats(self, now: int) -> dict[str, Any]:
        """The ``stats`` object of ``taskqueues.get``; exact, not approximate.

        ``oldestTask`` is the earliest ETA, as App Engine's queue statistics
        have it: a leased task's is its lease expiry.
        """
        first = self.ordered(1)
        return self._lease_counts.stats(len(self.tasks), first[0].eta if first else None, now)


class MalformedEntry(ValueError):
    """A journal line that is JSON but not an entry the emulator writes."""


def _is_int(value: Any) -> bool:
    return type(value) is int  # JSON true and false are not numbers here


def _is_project(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _is_queue_name(value: Any) -> bool:
    return isinstance(value, str) and bool(QUEUE_NAME_RE.match(value))


def _is_task_name(value: Any) -> bool:
    return isinstance(value, str) and bool(TASK_NAME_RE.match(value))


def _is_leases(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(lease, list)
        and len(lease) == 4
        and _is_task_name(lease[0])
        and all(_is_int(number) for number in lease[1:])
        for lease in value
    )


_Check = tuple[Callable[[Any], bool], str]
_WHERE: dict[str, _Check] = {
    "project": (_is_project, "a project id"),
    "queue": (_is_queue_name, "a queue name"),
}
#: Each kind of journal entry: its keys, how to check each, and what it must be.
ENTRY_KEYS: dict[str, dict[str, _Check]] = {
    "insert": {
        **_WHERE,
        "name": (_is_task_name, "a task name"),
        "payload": (lambda value: isinstance(value, str), "base64 text"),
        "tag": (lambda value: value is None or isinstance(value, str), "a string or null"),
        "enqueued": (_is_int, "an integer"),
        "seq": (_is_int, "an integer"),
    },
    "lease": {**_WHERE, "tasks": (_is_leases, "a list of [name, eta, lease expiry, retry count]")},
    "delete": {**_WHERE, "name": (_is_task_name, "a task name"), "when": (_is_int, "an integer")},
}


def check_entry(entry: Any) -> str:
    """The ``op`` of a journal entry whose keys all hold what they must.

    Raises:
        MalformedEntry: saying what is wrong with it.
    """
    if not isinstance(entry, dict):
        raise MalformedEntry(f"not a JSON object but {_shown(entry)}")
    op = entry.get("op")
    if not isinstance(op, str) or op not in ENTRY_KEYS:
        raise MalformedEntry(f"unknown op {_shown(op)}")
    keys = ENTRY_KEYS[op]
    for key, (valid, what) in keys.items():
        if key not in entry:
            raise MalformedEntry(f"{op} entry without {key!r}")
        if not valid(entry[key]):
            raise MalformedEntry(f"{op} entry: {key} must be {what}, not {_shown(entry[key])}")
    return op


def _shown(value: Any) -> str:
    """``value`` as JSON, cut short: enough to find it in the file."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Journal(Protocol):
    """Where a durable service records each change before it applies it.

    The in-memory service has none; :class:`~kombu_appengine.emulator.storage.FileJournal`
    is the durable one. It is called with the service's lock held, and
    the service changes nothing when it raises.
    """

    def record(self, *entries: dict[str, Any]) -> None:
        """Persist the entries of one change, all or none.

        Returns only once they survive the process.

        Raises:
            ApiError: 503 when they could not be persisted; then none was.
        """


class TaskQueueService:
    """Every pull queue of every project, and the API's methods on them.

    Parameters:
        queues: the declared queues, the same set for every project.
        project: when given, the only project served (with or without
            ``s~``/``e~``); otherwise any project id is accepted.
        clock: seconds since the epoch, as :func:`time.time`; tests pass
            their own to move time at will.
    """

    def __init__(
        self,
        queues: Iterable[QueueConfig] = (),
        project: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.configs: dict[str, QueueConfig] = {}
        self.project = bare_project(project) if project else None
        self.clock = clock
        self.lock = threading.RLock()
        self.journal: Journal | None = None
        self._projects: dict[str, dict[str, Queue]] = {}
        self._seq = 0
        for config in queues:
            self.declare_queue(config)

    def now(self) -> int:
        """The clock in whole microseconds."""
        return int(self.clock() * _MICROS)

    def declare_queue(self, config: QueueConfig) -> None:
        """Declare (or redeclare) a queue for every project, as ``queue.yaml`` does."""
        with self.lock:
            self.configs[config.name] = config
            for queues in self._projects.values():
                if config.name in queues:
                    queues[config.name].config = config

    # -- lookup -----------------------------------------------------------

    def queue(self, project: str, name: str, create: bool = False) -> Queue:
        """The pull queue ``name`` of ``project``.

        A queue that holds nothing yet is kept only once ``create`` asks for
        it (an insert): reading a project never seen before gives an empty
        queue that is not kept, so requests for any number of unknown
        projects leave no state behind.

        Raises:
            ApiError: 404 for an unknown project or queue, 400 for an illegal
                queue name or a push queue.
        """
        config = find_pull_queue(project, name, self.project, self.configs.get)
        bare = bare_project(project)
        queue = self._projects.get(bare, {}).get(name)
        if queue is None:
            queue = Queue(config)
            if create:
                self._projects.setdefault(bare, {})[name] = queue
        return queue

    def _task(self, queue: Queue, name: str) -> Task:
        check_task_name_syntax(name)
        task = queue.tasks.get(name)
        if task is None:
            raise no_such_task(name, queue.config.name)
        return task

    def _record(self, *entries: dict[str, Any]) -> None:
        """Journal a change before it is applied: when this raises, nothing changed."""
        if self.journal is not None and entries:
            self.journal.record(*entries)

    @staticmethod
    def _lease_record(project: str, queue: str, leases: Iterable[_Lease]) -> dict[str, Any]:
        """A lease entry: ``(name, eta, lease_expires, retry_count)`` of each task."""
        return {
            "op": "lease",
            "project": bare_project(project),
            "queue": queue,
            "tasks": [list(lease) for lease in leases],
        }

    @staticmethod
    def _delete_record(project: str, queue: str, name: str, when: int) -> dict[str, Any]:
        return {"op": "delete", "project": bare_project(project), "queue": queue, "name": name, "when": when}

    # -- the API ----------------------------------------------------------

    def get_queue(self, project: str, name: str, get_stats: bool = False) -> dict[str, Any]:
        """``taskqueues.get``."""
        with self.lock:
            queue = self.queue(project, name)
            config = queue.config
            resource = queue_resource(
                name, config.max_leases, QueueAcl(config.consumer_emails, config.producer_emails)
            )
            if get_stats:
                resource["stats"] = queue.stats(self.now())
            return resource

    def insert(self, project: str, name: str, body: Any) -> dict[str, Any]:
        """``tasks.insert``: add a task; a reserved name is 409."""
        task_name, payload, tag = parse_new_task(body, name)
        with self.lock:
            queue = self.queue(project, name)
            check_queue_name(body, project, name)
            now = self.now()
            if task_name is None:
                task_name = uuid.uuid4().hex
            elif queue.name_reserved(task_name, now):
                raise name_taken(task_name, name)
            task = Task(task_name, payload, tag, now, self._seq + 1)
            self._record(
                {
                    "op": "insert",
                    "project": bare_project(project),
                    "queue": name,
                    "name": task.name,
                    "payload": base64.b64encode(payload).decode("ascii"),
                    "tag": tag,
                    "enqueued": now,
                    "seq": task.seq,
                }
            )
            self._seq = task.seq
            # Kept from now on: it holds a task.
            self.queue(project, name, create=True).add(task)
            return task.resource(api.long_queue_name(project, name), now)

    def lease(
        self,
        project: str,
        name: str,
        num_tasks: int,
        lease_secs: int,
        group_by_tag: bool = False,
        tag: str | None = None,
    ) -> dict[str, Any]:
        """``tasks.lease``: lease up to ``num_tasks`` due tasks, oldest first."""
        check_lease(num_tasks, lease_secs, group_by_tag, tag)
        with self.lock:
            queue = self.queue(project, name)
            now = self.now()
            leased, expired = queue.plan_lease(num_tasks, tag, group_by_tag, now)
            expires = now + lease_secs * _MICROS
            entries = [self._delete_record(project, name, task.name, now) for task in expired]
            if leased:
                leases = [(task.name, expires, expires, task.retry_count + 1) for task in leased]
                entries.append(self._lease_record(project, name, leases))
            self._record(*entries)
            queue.apply_lease(leased, expired, lease_secs * _MICROS, now)
            long_name = api.long_queue_name(project, name)
            response: dict[str, Any] = {"kind": api.LEASED_TASKS_KIND}
            if leased:
                # The lease made, even one of 0 seconds, over at once (as App
                # Engine's lease gives each task its new ETA); a later get says 0.
                response["items"] = [
                    {**task.resource(long_name, now), "leaseTimestamp": str(expires)} for task in leased
                ]
            return response

    def get_task(self, project: str, name: str, task_name: str) -> dict[str, Any]:
        """``tasks.get``."""
        with self.lock:
            queue = self.queue(project, name)
            return self._task(queue, task_name).resource(api.long_queue_name(project, name), self.now())

    def list_tasks(self, project: str, name: str) -> dict[str, Any]:
        """``tasks.list``: the first 100 tasks in lease order, without payloads."""
        with self.lock:
            queue = self.queue(project, name)
            now = self.now()
            long_name = api.long_queue_name(project, name)
            return {
                "kind": api.LISTED_TASKS_KIND,
                "items": [
                    task.resource(long_name, now, with_payload=False)
                    for task in queue.ordered(MAX_LIST_TASKS)
                ],
            }

    def delete_task(self, project: str, name: str, task_name: str) -> None:
        """``tasks.delete``: no lease needed; unknown or deleted is 404."""
        with self.lock:
            queue = self.queue(project, name)
            task = self._task(queue, task_name)
            now = self.now()
            self._record(self._delete_record(project, name, task_name, now))
            queue.remove(task, now)

    def delete_tasks(self, project: str, name: str, tasks: Sequence[str]) -> list[ApiError | None]:
        """Several ``tasks.delete`` of one queue: each one's error, or ``None``."""
        with self.lock:
            self.queue(project, name)
            results: list[ApiError | None] = []
            for task_name in tasks:
                try:
                    self.delete_task(project, name, task_name)
                except ApiError as error:
                    if error.code == 503:
                        raise
                    results.append(error)
                else:
                    results.append(None)
            return results

    def acl(self, project: str, name: str) -> QueueAcl | None:
        """The ACL of queue ``name`` from ``queue.yaml``; ``None`` for an unknown queue."""
        config = self.configs.get(name)
        if config is None:
            return None
        return QueueAcl(config.consumer_emails, config.producer_emails)

    # -- what the dashboard reads, and its purge ---------------------------

    def projects(self) -> list[str]:
        """The project served, else the projects whose queues hold state (ever held a task), by id."""
        with self.lock:
            if self.project is not None:
                return [self.project]
            return sorted(self._projects)

    def queue_names(self) -> list[str]:
        """The declared pull queues, by name."""
        with self.lock:
            return sorted(name for name, config in self.configs.items() if config.mode == "pull")

    def peek_tasks(self, project: str, name: str, limit: int, payload_bytes: int) -> list[PeekedTask]:
        """The first ``limit`` tasks in lease order, with the first ``payload_bytes`` of each
        payload; changes nothing."""
        with self.lock:
            queue = self.queue(project, name)
            now = self.now()
            long_name = api.long_queue_name(project, name)
            return [
                PeekedTask(
                    task.resource(long_name, now, with_payload=False),
                    task.payload[:payload_bytes],
                    len(task.payload),
                )
                for task in queue.ordered(limit)
            ]

    def leased_count(self, project: str, name: str) -> int:
        """How many of the queue's tasks are leased now (exact: every task is looked at)."""
        with self.lock:
            queue = self.queue(project, name)
            now = self.now()
            return sum(1 for task in queue.tasks.values() if task.leased_at(now))

    def purge_queue(self, project: str, name: str) -> int:
        """Delete every task the queue holds now, leased or not, in one journaled change; how many."""
        with self.lock:
            queue = self.queue(project, name)
            now = self.now()
            tasks = list(queue.tasks.values())
            self._record(*(self._delete_record(project, name, task.name, now) for task in tasks))
            for task in tasks:
                queue.remove(task, now)
            return len(tasks)

    def update_task(
        self, project: str, name: str, task_name: str, new_lease_seconds: int, body: Any
    ) -> dict[str, Any]:
        """``tasks.update`` and ``tasks.patch``: change or release a held lease."""
        given = parse_lease_change(new_lease_seconds, body, project, name)
        with self.lock:
            queue = self.queue(project, name)
            task = self._task(queue, task_name)
            now = self.now()
            if not task.leased_at(now):
                raise not_leased(task_name)
            if given is not None and given != task.lease_expires:
                raise stale_lease(task_name)
            if new_lease_seconds == 0:
                eta, expires = now, 0
            else:
                eta = expires = now + new_lease_seconds * _MICROS
            self._record(self._lease_record(project, name, [(task.name, eta, expires, task.retry_count)]))
            queue.set_lease(task, eta, expires)
            return task.resource(api.long_queue_name(project, name), now)

    # -- restore from a journal -------------------------------------------

    def replay(self, entry: Any) -> None:
        """Apply one journal entry written by an earlier run.

        Raises:
            MalformedEntry: ``entry`` is not an entry the emulator writes.
            ApiError: its queue is not declared now, or its project not served.
        """
        op = check_entry(entry)
        queue = self.queue(entry["project"], entry["queue"], create=True)
        if op == "insert":
            try:
                payload = base64.b64decode(entry["payload"], validate=True)
            except ValueError:
                raise MalformedEntry("insert entry: payload must be standard base64") from None
            earlier = queue.tasks.get(entry["name"])
            if earlier is not None:
                # Kept while its queue was not declared, then inserted anew
                # once it was: the later entry is the truth.
                queue.forget(earlier)
            restored = Task(entry["name"], payload, entry["tag"], entry["enqueued"], entry["seq"])
            self._seq = max(self._seq, restored.seq)
            queue.add(restored)
        elif op == "lease":
            for task_name, eta, lease_expires, retry_count in entry["tasks"]:
                task = queue.tasks.get(task_name)
                if task is not None:
                    task.retry_count = retry_count
                    queue.set_lease(task, eta, lease_expires)
        else:
            task = queue.tasks.get(entry["name"])
            if task is not None:
                queue.remove(task, entry["when"])
            else:
                queue.tombstone(entry["name"], entry["when"])

    def snapshot(self) -> Iterable[dict[str, Any]]:
        """Journal entries that rebuild the present state, for compaction."""
        for project, queues in self._projects.items():
            for name, queue in queues.items():
                for task_name, when in queue.tombstones.items():
                    yield {"op": "delete", "project": project, "queue": name, "name": task_name, "when": when}
                for task in queue.tasks.values():
                    yield {
                        "op": "insert",
                        "project": project,
                        "queue": name,
                        "name": task.name,
                        "payload": base64.b64encode(task.payload).decode("ascii"),
                        "tag": task.tag,
                        "enqueued": task.enqueued,
                        "seq": task.seq,
                    }
                    if task.retry_count or task.eta != task.enqueued - 1:
                        lease = (task.name, task.eta, task.lease_expires, task.retry_count)
                        yield self._lease_record(project, name, [lease])
