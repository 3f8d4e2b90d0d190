"""Queue semantics of the emulator, checked against a model simple enough to be obviously right.

A hypothesis state machine inserts, leases, releases, extends, deletes and
reads tasks on a real emulator over HTTP, moving a fake clock so that leases
expire without sleeping, and does the same to :class:`QueueModel`: a plain
list scanned linearly, written from TASKQUEUE_API.md without looking at the
emulator's heaps. Every answer must match the model exactly.

The last tests look inside :mod:`kombu_appengine.emulator.model` to check that
its lazily cleaned heaps do not grow without bound.
"""

from __future__ import annotations

import itertools
import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httplib2
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from kombu_appengine.emulator import QueueConfig, TaskQueueService
from tests.support.helpers import FakeClock, MakeEmulator, b64

#: Where the fake clock starts, in seconds since the epoch.
START_SECONDS = 1_700_000_000
#: A week: how long a deleted task's name stays reserved, and the longest lease.
WEEK_MICROS = 7 * 24 * 3600 * 1_000_000
#: The queue without a lease limit, and the one whose tasks may be leased twice.
PLAIN_QUEUE, LIMITED_QUEUE = "model", "limited"
LIMITED_MAX_LEASES = 2
#: Explicit task names, few enough that inserts collide and hit tombstones.
TASK_NAMES = ("t0", "t1", "t2", "t3")
#: Tags given to inserts; the empty tag means no tag.
TAGS = ("", "red", "blue")
#: Tags asked for by leases; ``green`` is never given to a task, and the empty tag is none.
LEASE_TAGS = ("red", "blue", "green", "")
#: Clock steps, in seconds: within a lease, past one, past the stats windows, past a tombstone.
CLOCK_STEPS = (0.5, 1, 2, 5, 61, 3601, 7 * 24 * 3600)

TASK_NAME_RE = re.compile(r"[a-zA-Z0-9_-]{1,500}\Z")

SETTINGS = settings(max_examples=50, stateful_step_count=30, deadline=None)


@dataclass
class ModelTask:
    name: str
    payload: bytes
    tag: str | None
    enqueued: int
    seq: int
    eta: int
    lease_expires: int = 0
    retry_count: int = 0

    def leased(self, now: int) -> bool:
        return self.lease_expires > now

    def resource(self, queue_name: str, now: int, with_payload: bool = True) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "kind": "taskqueues#task",
            "id": self.name,
            "queueName": queue_name,
            # App Engine keeps the enqueue time in whole seconds.
            "enqueueTimestamp": str(self.enqueued // 1_000_000 * 1_000_000),
            "leaseTimestamp": str(self.lease_expires if self.leased(now) else 0),
            "retry_count": self.retry_count,
        }
        if with_payload:
            resource["payloadBase64"] = b64(self.payload)
        if self.tag is not None:
            resource["tag"] = self.tag
        return resource


class QueueModel:
    """One pull queue as TASKQUEUE_API.md describes it (App Engine's semantics), scanned linearly.

    A task is due strictly after its ETA, and a new one's ETA is a
    microsecond before its enqueue time; equal ETAs go by name. Payloads stay
    far below the 1 MiB lease batch cap, which is left out.
    """

    def __init__(self, max_leases: int | None) -> None:
        self.max_leases = max_leases
        self.tasks: list[ModelTask] = []
        self.deleted_at: dict[str, int] = {}
        self.leases: list[tuple[int, int]] = []
        self._seq = itertools.count()

    def find(self, name: str) -> ModelTask | None:
        for task in self.tasks:
            if task.name == name:
                return task
        return None

    def reserved(self, name: str, now: int) -> bool:
        if self.find(name) is not None:
            return True
        return name in self.deleted_at and self.deleted_at[name] > now - WEEK_MICROS

    def insert(self, name: str, payload: bytes, tag: str | None, now: int) -> ModelTask:
        task = ModelTask(name, payload, tag, enqueued=now, seq=next(self._seq), eta=now - 1)
        self.tasks.append(task)
        return task

    def delete(self, task: ModelTask, now: int) -> None:
        self.tasks.remove(task)
        self.deleted_at[task.name] = now

    def in_lease_order(self) -> list[ModelTask]:
        return sorted(self.tasks, key=lambda task: (task.eta, task.name))

    def lease(
        self, num_tasks: int, lease_secs: int, group_by_tag: bool, tag: str | None, now: int
    ) -> list[ModelTask]:
        available = [t for t in self.in_lease_order() if t.eta < now and not t.leased(now)]
        tag = tag or None  # an empty tag is no tag
        if group_by_tag and tag is None:
            # The oldest due task's tag; untagged: the untagged among the oldest num_tasks.
            window = available[:num_tasks]
            tag = window[0].tag if window else None
            if tag is None:
                available = [t for t in window if t.tag is None]
        if group_by_tag and tag is not None:
            available = [t for t in available if t.tag == tag]
        leased: list[ModelTask] = []
        deleted = 0
        for task in available:
            if len(leased) + deleted == num_tasks:
                break
            if self.max_leases is not None and task.retry_count >= self.max_leases:
                # Deleted instead, taking its place among the num_tasks.
                self.delete(task, now)
                deleted += 1
                continue
            task.retry_count += 1
            task.eta = task.lease_expires = now + lease_secs * 1_000_000
            leased.append(task)
        if leased:
            self.leases.append((now, len(leased)))
        return leased

    def stats(self, now: int) -> dict[str, str]:
        def leased_since(micros_ago: int) -> int:
            return sum(count for when, count in self.leases if when > now - micros_ago)

        # The earliest ETA (a leased task's is its lease expiry), a new task's microsecond given back.
        oldest = min((t.eta + 1 for t in self.tasks), default=0)
        return {
            "totalTasks": len(self.tasks),
            "oldestTask": str(oldest // 1_000_000),
            "leasedLastMinute": str(leased_since(60 * 1_000_000)),
            "leasedLastHour": str(leased_since(3600 * 1_000_000)),
        }


class Client:
    """JSON over one keep-alive httplib2 connection to the emulator."""

    def __init__(self, url: str) -> None:
        self.base = url + "/taskqueue/v1beta2/projects/"
        self.http = httplib2.Http()

    def call(self, method: str, path: str, body: Any = None, **query: Any) -> tuple[int, Any]:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        response, content = self.http.request(url, method, body=data, headers=headers)
        document = json.loads(content) if content else None
        if response.status >= 400:
            assert document["error"]["code"] == response.status, document
        return response.status, document


class QueueMachine(RuleBasedStateMachine):
    """Each run gets a project of its own, so it starts from empty queues."""

    #: Set by the test: the shared emulator, its clock and a client for it.
    clock: FakeClock
    client: Client
    _runs = itertools.count()

    @initialize(limited=st.booleans(), prefix=st.sampled_from(["", "s~"]))
    def choose_queue(self, limited: bool, prefix: str) -> None:
        project = f"{prefix}model-run-{next(self._runs)}"
        queue = LIMITED_QUEUE if limited else PLAIN_QUEUE
        self.model = QueueModel(LIMITED_MAX_LEASES if limited else None)
        self.path = f"{project}/taskqueues/{queue}"
        self.short_name = queue
        self.long_name = f"projects/{project}/taskqueues/{queue}"

    def task_names(self) -> list[str]:
        """Names worth naming: live, deleted, explicit ones and one never used."""
        names = {t.name for t in self.model.tasks} | set(self.model.deleted_at)
        return sorted(names | set(TASK_NAMES) | {"never-inserted"})

    @rule(
        name=st.none() | st.sampled_from(TASK_NAMES),
        tag=st.none() | st.sampled_from(TAGS),
        payload=st.binary(max_size=16),
    )
    def insert(self, name: str | None, tag: str | None, payload: bytes) -> None:
        body: dict[str, Any] = {"payloadBase64": b64(payload)}
        if name is not None:
            body["id"] = name
        if tag is not None:
            body["tag"] = tag
        now = self.clock.micros
        status, document = self.client.call("POST", self.path + "/tasks", body)
        if name is not None and self.model.reserved(name, now):
            assert status == 409, document
            assert document["error"]["errors"][0]["reason"] == "alreadyExists"
            return
        assert status == 200, document
        if name is None:
            name = document["id"]
            assert TASK_NAME_RE.match(name), name
            assert not self.model.reserved(name, now), name
        task = self.model.insert(name, payload, tag or None, now)
        assert document == task.resource(self.long_name, now)

    @rule(
        num_tasks=st.integers(1, 4),
        lease_secs=st.integers(0, 5),
        group_by_tag=st.booleans(),
        tag=st.none() | st.sampled_from(LEASE_TAGS),
    )
    def lease(self, num_tasks: int, lease_secs: int, group_by_tag: bool, tag: str | None) -> None:
        query: dict[str, Any] = {"numTasks": num_tasks, "leaseSecs": lease_secs}
        if group_by_tag:
            query["groupByTag"] = "true"
            if tag is not None:
                query["tag"] = tag
        now = self.clock.micros
        status, document = self.client.call("POST", self.path + "/tasks/lease", **query)
        assert status == 200, document
        leased = self.model.lease(num_tasks, lease_secs, group_by_tag, tag if group_by_tag else None, now)
        expected: dict[str, Any] = {"kind": "taskqueue#tasks"}
        if leased:
            # The lease made, even one of 0 seconds that is over at once.
            expected["items"] = [
                {**task.resource(self.long_name, now), "leaseTimestamp": str(task.lease_expires)}
                for task in leased
            ]
        assert document == expected

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.task_names()), label="name")
        now = self.clock.micros
        status, document = self.client.call("DELETE", f"{self.path}/tasks/{name}")
        task = self.model.find(name)
        if task is None:
            assert status == 404, document
            return
        assert status == 204, document
        self.model.delete(task, now)

    @rule(
        data=st.data(),
        new_lease_seconds=st.sampled_from([0, 0, 1, 3, 10]),
        method=st.sampled_from(["POST", "PATCH"]),
        long_form=st.booleans(),
        lease_timestamp=st.sampled_from(["absent", "current", "wrong"]),
    )
    def update(
        self, data: st.DataObject, new_lease_seconds: int, method: str, long_form: bool, lease_timestamp: str
    ) -> None:
        name = data.draw(st.sampled_from(self.task_names()), label="name")
        task = self.model.find(name)
        body: dict[str, Any] = {"queueName": self.long_name if long_form else self.short_name}
        if lease_timestamp != "absent" and task is not None:
            offset = 1 if lease_timestamp == "wrong" else 0
            body["leaseTimestamp"] = str(task.lease_expires + offset)
        now = self.clock.micros
        status, document = self.client.call(
            method, f"{self.path}/tasks/{name}", body, newLeaseSeconds=new_lease_seconds
        )
        if task is None:
            assert status == 404, document
            return
        if not task.leased(now) or lease_timestamp == "wrong":
            assert status == 400, document
            return
        assert status == 200, document
        if new_lease_seconds == 0:
            task.eta, task.lease_expires = now, 0
        else:
            task.eta = task.lease_expires = now + new_lease_seconds * 1_000_000
        assert document == task.resource(self.long_name, now)

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.task_names()), label="name")
        status, document = self.client.call("GET", f"{self.path}/tasks/{name}")
        task = self.model.find(name)
        if task is None:
            assert status == 404, document
        else:
            assert status == 200, document
            assert document == task.resource(self.long_name, self.clock.micros)

    @rule(seconds=st.sampled_from(CLOCK_STEPS))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def list_matches_model(self) -> None:
        status, document = self.client.call("GET", self.path + "/tasks")
        assert status == 200, document
        now = self.clock.micros
        expected = [
            t.resource(self.long_name, now, with_payload=False) for t in self.model.in_lease_order()[:100]
        ]
        assert document["kind"] == "taskqueues#tasks"
        assert document.get("items", []) == expected

    @invariant()
    def stats_match_model(self) -> None:
        status, document = self.client.call("GET", self.path, getStats="true")
        assert status == 200, document
        assert document["stats"] == self.model.stats(self.clock.micros)


def test_queue_semantics_match_the_model(make_emulator: MakeEmulator) -> None:
    clock = FakeClock(START_SECONDS)
    queues = [QueueConfig(PLAIN_QUEUE), QueueConfig(LIMITED_QUEUE, max_leases=LIMITED_MAX_LEASES)]
    running = make_emulator(queues=queues, clock=clock)
    machine = type("BoundQueueMachine", (QueueMachine,), {"clock": clock, "client": Client(running.url)})
    run_state_machine_as_test(machine, settings=SETTINGS)


# -- the model's internals ---------------------------------------------------


def heap_sizes(service: TaskQueueService, project: str, queue: str) -> tuple[int, int]:
    """Entries in a queue's main heap, and in all its tag heaps together."""
    internals = service.queue(project, queue)
    return len(internals._heap), sum(len(heap) for heap in internals._tag_heaps.values())


@pytest.mark.parametrize("tag", [None, "red"])
def test_lease_and_delete_cycles_do_not_grow_the_heaps(tag: str | None) -> None:
    """Leased-then-deleted tasks leave stale heap entries behind; they must be reclaimed
    even when the clock stands still, in the main heap and in a tag's."""
    clock = FakeClock(START_SECONDS)
    service = TaskQueueService([QueueConfig("q")], clock=clock)
    body: dict[str, Any] = {"payloadBase64": "", **({"tag": tag} if tag else {})}
    for _ in range(10):
        service.insert("p", "q", body)
    for _ in range(5000):
        service.insert("p", "q", body)
        by_tag = {"group_by_tag": True, "tag": tag} if tag else {}
        (task,) = service.lease("p", "q", num_tasks=1, lease_secs=600, **by_tag)["items"]
        service.delete_task("p", "q", task["id"])
    assert service.get_queue("p", "q", get_stats=True)["stats"]["totalTasks"] == 10
    main, tagged = heap_sizes(service, "p", "q")
    assert main <= 200, (main, tagged)
    assert tagged <= 200, (main, tagged)


def test_lease_extensions_do_not_grow_the_heaps() -> None:
    clock = FakeClock(START_SECONDS)
    service = TaskQueueService([QueueConfig("q")], clock=clock)
    service.insert("p", "q", {"payloadBase64": "", "id": "worker-task"})
    service.lease("p", "q", num_tasks=1, lease_secs=60)
    for _ in range(5000):
        service.update_task("p", "q", "worker-task", 60, {"queueName": "q"})
    main, tagged = heap_sizes(service, "p", "q")
    assert main <= 100, (main, tagged)
    assert tagged <= 100, (main, tagged)


def test_a_queue_never_leased_by_tag_keeps_one_heap() -> None:
    clock = FakeClock(START_SECONDS)
    service = TaskQueueService([QueueConfig("q")], clock=clock)
    for number in range(50):
        service.insert("p", "q", {"payloadBase64": "", "tag": f"tag-{number % 5}"})
        clock.advance(1)
    service.lease("p", "q", num_tasks=10, lease_secs=60)
    assert heap_sizes(service, "p", "q")[1] == 0
    leased = service.lease("p", "q", num_tasks=100, lease_secs=60, group_by_tag=True, tag="tag-3")["items"]
    assert len(leased) == 8  # ten tag-3 tasks, two of them leased already
    assert set(service.queue("p", "q")._tag_heaps) == {"tag-3"}


def test_tags_of_deleted_tasks_are_forgotten() -> None:
    clock = FakeClock(START_SECONDS)
    service = TaskQueueService([QueueConfig("q")], clock=clock)
    for number in range(2000):
        task = service.insert("p", "q", {"payloadBase64": "", "tag": f"tag-{number}"})
        service.delete_task("p", "q", task["id"])
    assert len(service.queue("p", "q")._tag_heaps) <= 100


def test_a_zero_second_lease_takes_each_task_once_per_call() -> None:
    """With leaseSecs=0 a leased task is due again at once; the same call must not lease it again."""
    service = TaskQueueService([QueueConfig("q")], clock=FakeClock(START_SECONDS))
    service.insert("p", "q", {"payloadBase64": "", "id": "only"})
    items = service.lease("p", "q", num_tasks=3, lease_secs=0)["items"]
    assert [(task["id"], task["retry_count"]) for task in items] == [("only", 1)]
