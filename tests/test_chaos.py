"""Chaos at scale: nothing is lost, and every duplicate is a lease that ran out.

10,000 tasks (kombu envelopes, and raw JSON and raw bytes inserted over
plain REST) flow through three kombu consumer processes (``ConsumerMixin``)
and a ``pullqueue_worker`` with four processes, all on one queue, while
about one request in ten meets a fault (:class:`~tests.support.fault_proxy.FaultProxy`:
503, 429, a reset before the request arrives, a reset after it was carried
out, a stall of up to 3 s) and the emulator, a subprocess with
``--data-dir``, is SIGKILLed and restarted on the same port twice: at once,
and after every lease has run out.

The proxy is also the witness: it sees every lease, renewal and delete the
emulator answered, so the test knows each task's lease history (when each
lease was granted and when it ended, renewals included) without asking the
transport. The emulator leases a task again only once its lease has run out
or was given back, and never after a delete it acknowledged, restarts
included (its journal holds every change it acknowledged). Consumers give
back only tasks they did not process, and a late give-back names a lease
that is no longer the task's, so it is refused. Hence:

* every task is processed, and none is left in the queue;
* a processing begins under a lease that still holds, and no two
  processings begin under one lease;
* before a task is processed again, the lease it was processed under had run
  out (its last expiry, renewals included, came before the next lease was
  granted);
* no task is leased after a delete of it was acknowledged.

Why a processed task's lease ran out is read off its ack (its deletes on the
wire), for the report: the emulator was down, the delete stalled, or it was
refused or reset and retried too late.
"""

from __future__ import annotations

import base64
import bisect
import collections
import contextlib
import dataclasses
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from kombu_appengine.client import TaskQueueClient
from kombu_appengine.errors import TaskQueueError
from tests.support.emulator_process import EmulatorProcess
from tests.support.fault_proxy import FAULT_WEIGHTS, Exchange, FaultProxy
from tests.support.helpers import ROOT, wait_for
from tests.support.raw_http import batch_parts_answered, batch_requests, response_id
from tests.support.worker_jobs import number_of

#: Tasks inserted.
TASKS = 10_000
#: The one pull queue every producer and consumer uses.
QUEUE = "chaos"
#: The project the transport uses with an emulator.
PROJECT = "emulator"
#: Short leases, so that leases do run out: a buffered task is handed out
#: only with more than a second left, and a stall can outlast that.
LEASE_SECS = 2
#: Tasks one lease asks for.
NUM_TASKS = 10
#: About one request in ten meets a fault.
FAULT_RATE = 0.10
#: The kinds of faults, by weight. Stalls are rarer than the others: each
#: holds its client for seconds.
FAULTS = {**FAULT_WEIGHTS, "stall": 0.5}
#: A stall lasts between these many seconds: it may outlast a lease.
STALL_SECONDS = (0.5, 3.0)
#: Seeds the proxy's draws; ``CHAOS_SEED`` replays another run.
SEED = int(os.environ.get("CHAOS_SEED", "20240611"))
#: Retries of the transport's client in the kombu producers: enough for any
#: outage here. The kombu consumers keep the default (5, about three seconds),
#: which the longer outage outlasts: they reconnect, as Celery would.
PRODUCER_MAX_RETRIES = 10
#: What kombu logs when a consumer lost its connection and reconnects.
RECONNECTING = "Connection to broker lost"
#: The emulator is killed when these shares of the tasks have been processed,
#: and restarted after this many seconds: at once (the leases it granted must
#: still hold), and after every lease has run out (acks fail meanwhile).
KILLS = ((0.3, 0.0), (0.65, LEASE_SECS + 1.0))
#: Processes of pullqueue_worker, and kombu consumer processes.
WORKER_PROCESSES = 4
KOMBU_CONSUMERS = 3
#: Producer processes inserting through kombu, and through plain REST. Fewer
#: than the consumers: the queue stays shallow, so that a task whose lease
#: ran out is leased again at once rather than behind a backlog.
KOMBU_PRODUCERS = 3
REST_PRODUCERS = 2
#: Seconds everything may take to be processed and deleted.
DRAIN_DEADLINE = 240.0
#: Seconds a restarted emulator may wait for its port.
RESTART_DEADLINE = 10.0
_MICROS = 1_000_000

_LEASE_PATH = re.compile(r"/taskqueue/v1beta2/projects/[^/]+/taskqueues/[^/]+/tasks/lease(\?|\Z)")
_TASK_PATH = re.compile(r"/taskqueue/v1beta2/projects/[^/]+/taskqueues/[^/]+/tasks/([A-Za-z0-9_-]+)(\?|\Z)")
_BATCH_PATH = re.compile(r"/batch(/taskqueue/v1beta2)?(\?|\Z)")


# -- the witness: lease histories as the wire shows them -------------------------


@dataclass
class Grant:
    """One lease of a task, as the emulator answered it."""

    #: When it was granted and when it ends (renewals included), in microseconds.
    granted: int
    expires: int
    retry_count: int


@dataclass
class History:
    """What the wire shows of one task."""

    number: int = -1
    grants: list[Grant] = field(default_factory=list)
    #: Every delete request of the task.
    deletes: list[Exchange] = field(default_factory=list)
    #: ``(when, new expiry)`` of each renewal answered, in microseconds.
    renewals: list[tuple[int, int]] = field(default_factory=list)

    def settle(self) -> None:
        """Order the grants, and extend each by the renewals made while it held."""
        self.grants.sort(key=lambda grant: grant.granted)
        starts = [grant.granted for grant in self.grants]
        for when, expires in self.renewals:
            index = bisect.bisect_right(starts, when) - 1
            assert index >= 0, f"task {self.number} renewed at {when} before any lease"
            grant = self.grants[index]
            grant.expires = max(grant.expires, expires)

    def grant_index(self, seconds: float) -> int:
        """The lease in force (the last granted) at ``seconds``; -1 before the first."""
        return bisect.bisect_right([grant.granted for grant in self.grants], int(seconds * _MICROS)) - 1

    def acknowledged_deletes(self) -> list[float]:
        """When deletes of the task were answered 2xx by the emulator (whether or not the
        client heard): the emulator had deleted it by then."""
        return [e.answered for e in self.deletes if e.status in (200, 204) and e.answered is not None]


def number_in(payload: bytes) -> int:
    """The task number a payload carries: kombu's envelope, raw JSON or raw bytes."""
    try:
        document = json.loads(payload)
    except ValueError:
        return number_of(payload)
    if "properties" in document:
        document = json.loads(base64.b64decode(document["body"]))
    return number_of(document)


def batch_parts(batch: Exchange) -> list[Exchange]:
    """A batch call's parts, each as the exchange it would have been on its own.

    A part has the batch's fault, times and fate (``delivered``,
    ``upstream_failure``: a batch whose answer was lost is carried out or not
    as a whole, unknown to the client); its status and answer are its part of
    the batch's answer, matched by Content-ID, or the batch's own status when
    the batch was not answered 200 (refused whole, or not answered at all).
    """
    requests = batch_requests(batch.request_type, batch.request_body)
    answers = {}
    if batch.status == 200:
        answers = batch_parts_answered(batch.content_type, batch.body)
        expected = {response_id(content_id) for content_id in requests}
        assert set(answers) == expected, f"a batch answered {sorted(answers)} for {sorted(expected)}"
    parts = []
    for content_id, request in requests.items():
        answer = answers.get(response_id(content_id))
        parts.append(
            dataclasses.replace(
                batch,
                method=request.method,
                path=request.target,
                status=batch.status if answer is None else answer.status,
                body=b"" if answer is None else answer.body,
                content_type="" if answer is None else answer.headers.get("content-type", ""),
                request_body=request.body,
                request_type="",
            )
        )
    return parts


class Witness:
    """Collects the proxy's exchanges that change leases, and reads them as histories.

    A batch call is read as its parts, each as a request of its own.
    """

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []

    def observe(self, exchange: Exchange) -> None:
        path = exchange.path
        if _LEASE_PATH.match(path) or _TASK_PATH.match(path) or _BATCH_PATH.match(path):
            self.exchanges.append(exchange)

    def requests(self) -> Iterator[Exchange]:
        """Every request seen, a batch's parts in place of the batch."""
        for exchange in self.exchanges:
            if _BATCH_PATH.match(exchange.path):
                yield from batch_parts(exchange)
            else:
                yield exchange

    def histories(self) -> dict[str, History]:
        histories: dict[str, History] = collections.defaultdict(History)
        for exchange in self.requests():
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(exchange.path).query)
            if _LEASE_PATH.match(exchange.path):
                if exchange.status != 200:
                    continue
                lease_micros = int(query["leaseSecs"][0]) * _MICROS
                for item in json.loads(exchange.body).get("items", []):
                    history = histories[item["id"]]
                    history.number = number_in(base64.b64decode(item["payloadBase64"]))
                    expires = int(item["leaseTimestamp"])
                    history.grants.append(Grant(expires - lease_micros, expires, item["retry_count"]))
                continue
            task = _TASK_PATH.match(exchange.path)
            if task is None:
                continue  # a batch's part that is neither: no lease of it changes
            if exchange.method == "GET":
                continue  # tasks.get changes no lease
            history = histories[task.group(1)]
            if exchange.method == "DELETE":
                history.deletes.append(exchange)
                continue
            unreadable = f"a request the witness cannot read: {exchange.method} {exchange.path}"
            assert exchange.method == "POST", unreadable
            assert "newLeaseSeconds" in query, unreadable
            # A release (newLeaseSeconds=0) is not counted: it ends a lease
            # early, and a task is given back only when it was not processed.
            if exchange.status == 200 and int(query["newLeaseSeconds"][0]) > 0:
                expires = int(json.loads(exchange.body)["leaseTimestamp"])
                history.renewals.append((expires - int(query["newLeaseSeconds"][0]) * _MICROS, expires))
        for history in histories.values():
            history.settle()
        return histories


def why_lease_ran_out(deletes: list[Exchange], since: float, until: float) -> str:
    """Why a processed task's lease ran out before its ack: what its deletes met in between."""
    met = [e for e in deletes if since <= e.received < until]
    if any(e.upstream_failure for e in met):
        return "ack met the emulator down (killed)"
    if any(e.fault == "stall" for e in met):
        return "ack stalled past the lease"
    if any(e.fault for e in met):
        return "ack refused or reset, retried past the lease"
    if met:
        return "ack raced the lease's end"
    return "no ack sent before the lease ran out"


def check(histories: dict[str, History], processings: list[dict[str, Any]], tasks: int) -> dict[str, Any]:
    """Assert what the chaos must leave true of ``tasks`` tasks numbered from 0; the counts for the report."""
    tasks_of: dict[int, list[str]] = collections.defaultdict(list)
    for task, history in histories.items():
        tasks_of[history.number].append(task)
    assert sorted(tasks_of) == list(range(tasks)), "every task was leased"
    copies = {number: names for number, names in tasks_of.items() if len(names) > 1}
    assert not copies, f"inserted more than once: {copies}"
    by_task: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for processing in processings:
        by_task[tasks_of[processing["n"]][0]].append(processing)
    lost = sorted(set(range(tasks)) - {processing["n"] for processing in processings})
    assert not lost, f"never processed: {lost[:20]}"

    explanations: collections.Counter[str] = collections.Counter()
    failed_acks = 0
    for task, history in histories.items():
        grants = history.grants
        deleted = history.acknowledged_deletes()
        if deleted:
            assert grants[-1].granted <= min(deleted) * _MICROS, f"task {task} leased after its delete"
        under: dict[int, dict[str, Any]] = {}
        for processing in sorted(by_task[task], key=lambda p: p["start"]):
            index = history.grant_index(processing["start"])
            assert index >= 0, f"task {task} processed before any lease: {processing}"
            assert processing["start"] * _MICROS < grants[index].expires, (
                f"task {task} processed after its lease ran out: {processing}, {grants[index]}"
            )
            if "retry_count" in processing:
                assert processing["retry_count"] == grants[index].retry_count, (processing, grants)
            assert index not in under, (
                f"task {task} processed twice under one lease: {under[index]}, {processing}"
            )
            if under:
                first_index = max(under)
                first = under[first_index]
                ran_out = grants[first_index].expires
                next_grant = grants[first_index + 1].granted
                assert ran_out <= next_grant, (
                    f"task {task} leased again at {next_grant} while processed under a lease "
                    f"that held until {ran_out}: {first}, {processing}"
                )
                explanations[why_lease_ran_out(history.deletes, first["start"], next_grant / _MICROS)] += 1
                failed_acks += first.get("ack", "ok") != "ok"
            under[index] = processing

    leases_ran_out = sum(
        later.granted >= earlier.expires
        for history in histories.values()
        for earlier, later in zip(history.grants, history.grants[1:])
    )
    return {
        "processings": len(processings),
        "processed_by": dict(collections.Counter(p["kind"] for p in processings)),
        "duplicates": sum(explanations.values()),
        "duplicates_by_explanation": dict(explanations),
        "duplicates_after_a_failed_kombu_ack": failed_acks,
        "leases": sum(len(history.grants) for history in histories.values()),
        "leases_ran_out": leases_ran_out,
    }


def lease(task: str, number: int, *spans: tuple[float, float]) -> History:
    """A task's history: leases granted and ending at the given seconds."""
    return History(
        number, [Grant(int(a * _MICROS), int(b * _MICROS), n) for n, (a, b) in enumerate(spans, 1)]
    )


def processing(number: int, start: float) -> dict[str, Any]:
    return {"kind": "worker", "n": number, "start": start, "finish": start}


def delete(received: float, status: int | None, fault: str | None = None) -> Exchange:
    answered = None if status is None else received + 0.01
    return Exchange("DELETE", "/t", fault, received, status, b"", answered, status is not None)


def test_a_processing_per_lease_is_no_duplicate() -> None:
    histories = {"a": lease("a", 0, (10, 12)), "b": lease("b", 1, (10, 12), (12.5, 14.5))}
    histories["a"].deletes.append(delete(10.2, 204))
    report = check(histories, [processing(0, 10.1), processing(1, 12.6)], tasks=2)
    assert (report["duplicates"], report["leases_ran_out"]) == (0, 1)


def test_a_duplicate_after_its_lease_ran_out_is_explained_by_its_ack() -> None:
    histories = {"a": lease("a", 0, (10, 12), (12.5, 14.5))}
    histories["a"].deletes += [delete(10.2, None, "stall"), delete(12.6, 204)]
    report = check(histories, [processing(0, 10.1), processing(0, 12.55)], tasks=1)
    assert report["duplicates_by_explanation"] == {"ack stalled past the lease": 1}


@pytest.mark.parametrize(
    ("histories", "processings", "complaint"),
    [
        ({"a": lease("a", 0, (10, 12))}, [], "never processed"),
        ({"a": lease("a", 0, (10, 12)), "b": lease("b", 0, (10, 12))}, [processing(0, 11)], "more than once"),
        ({"a": lease("a", 0, (10, 12))}, [processing(0, 9)], "before any lease"),
        ({"a": lease("a", 0, (10, 12))}, [processing(0, 12.5)], "after its lease ran out"),
        ({"a": lease("a", 0, (10, 12))}, [processing(0, 10.1), processing(0, 10.2)], "twice under one lease"),
        (
            {"a": lease("a", 0, (10, 12), (11, 13))},
            [processing(0, 10.1), processing(0, 11.1)],
            "leased again",
        ),
    ],
)
def test_what_the_chaos_must_not_do_is_caught(
    histories: dict[str, History], processings: list[dict[str, Any]], complaint: str
) -> None:
    with pytest.raises(AssertionError, match=complaint):
        check(histories, processings, tasks=1)


def test_a_renewal_extends_the_lease_a_duplicate_must_outlast() -> None:
    history = lease("a", 0, (10, 12), (12.5, 14.5))
    history.renewals.append((int(11 * _MICROS), int(13 * _MICROS)))
    history.settle()
    with pytest.raises(AssertionError, match="leased again"):
        check({"a": history}, [processing(0, 10.1), processing(0, 12.6)], tasks=1)


def test_a_lease_after_an_acknowledged_delete_is_caught() -> None:
    history = lease("a", 0, (10, 12), (12.5, 14.5))
    history.deletes.append(delete(10.2, 204))
    with pytest.raises(AssertionError, match="leased after its delete"):
        check({"a": history}, [processing(0, 10.1)], tasks=1)


def test_the_witness_reads_each_part_of_a_batch_as_a_request_of_its_own(make_emulator: Any) -> None:
    witness = Witness()
    emulator = make_emulator(queues=["default"])
    with FaultProxy(emulator.host, fault_rate=0.0, seed=1, observer=witness.observe) as proxy:
        client = TaskQueueClient(PROJECT, proxy.url + "/", max_retries=0)
        names = [client.insert("default", f"task-{n}".encode()) for n in range(5)]
        leased = {task["id"]: task for task in client.lease("default", 5, 60)}
        deleted, renewed, released, lost, refused = names
        assert client.get_task("default", renewed)["id"] == renewed
        assert client.delete_many("default", [deleted]) == {deleted: None}
        renewal = {renewed: leased[renewed]["leaseTimestamp"]}
        (answer,) = client.change_leases("default", renewal, 120).values()
        assert isinstance(answer, dict)
        client.change_leases("default", {released: leased[released]["leaseTimestamp"]}, 0)
        proxy.inject("lost-answer")
        with pytest.raises(TaskQueueError):
            client.delete_many("default", [lost])
        proxy.inject("503")
        with pytest.raises(TaskQueueError):
            client.delete_many("default", [refused])
    assert sum(_BATCH_PATH.match(e.path) is not None for e in witness.exchanges) == 5
    histories = witness.histories()
    assert {name: history.number for name, history in histories.items()} == dict(zip(names, range(5)))
    granted = {name: leased[name]["leaseTimestamp"] for name in names}
    assert [(e.method, e.status, e.delivered) for e in histories[deleted].deletes] == [("DELETE", 204, True)]
    assert len(histories[deleted].acknowledged_deletes()) == 1
    (renewal,) = histories[renewed].renewals
    assert renewal[1] == int(answer["leaseTimestamp"]) > int(granted[renewed])
    assert histories[renewed].grants[0].expires == renewal[1]
    assert not histories[released].renewals
    assert histories[released].grants[0].expires == int(granted[released])
    # Carried out, though the client never heard: acknowledged all the same.
    lost_deletes = [(e.status, e.delivered, e.fault) for e in histories[lost].deletes]
    assert lost_deletes == [(204, False, "lost-answer")]
    assert len(histories[lost].acknowledged_deletes()) == 1
    assert [(e.status, e.fault) for e in histories[refused].deletes] == [(None, "503")]
    assert not histories[refused].acknowledged_deletes()


# -- the chaos ---------------------------------------------------------------------


class Emulators:
    """The emulator subprocess on one port and data dir, killed and restarted at will."""

    def __init__(self, tmp_path: pathlib.Path) -> None:
        self.tmp_path = tmp_path
        self.data_dir = str(tmp_path / "data")
        self.restarts = 0
        self.process = self._start("0")

    def _start(self, port: str) -> EmulatorProcess:
        log = self.tmp_path / f"emulator-{self.restarts}.log"
        args = ["--port", port, "--queue", QUEUE, "--data-dir", self.data_dir]
        return EmulatorProcess(args, log).wait_listening()

    @property
    def host(self) -> str:
        return self.process.host

    def kill_and_restart(self, down_for: float) -> None:
        """SIGKILL; ``down_for`` seconds later, start again on the same port and data dir."""
        self.process.kill()
        self.restarts += 1
        time.sleep(down_for)  # the length of the outage, a deliberate part of the fault
        port = str(self.process.port)
        deadline = time.monotonic() + RESTART_DEADLINE
        while True:
            try:
                self.process = self._start(port)
                return
            except AssertionError as error:
                # The port may be held a moment longer (a connection that
                # happened to be given it as its own): try again.
                if "Address already in use" not in str(error) or time.monotonic() > deadline:
                    raise

    def total_tasks(self) -> int:
        """Every task of the queue, leased or not, asked of the emulator itself."""
        client = self.process.client()
        try:
            status, queue = client.call(
                "GET", f"/taskqueue/v1beta2/projects/{PROJECT}/taskqueues/{QUEUE}?getStats=true"
            )
        finally:
            client.close()
        assert status == 200, queue
        return int(queue["stats"]["totalTasks"])


class Records:
    """The processings the consumers wrote down, read as they grow."""

    def __init__(self, paths: list[pathlib.Path]) -> None:
        self.paths = paths
        self.offsets = dict.fromkeys(paths, 0)
        self.processings: list[dict[str, Any]] = []
        self.numbers: set[int] = set()

    def read(self) -> Records:
        for path in self.paths:
            if not path.exists():
                continue
            with path.open("rb") as record:
                record.seek(self.offsets[path])
                data = record.read()
            whole = data[: data.rfind(b"\n") + 1]
            self.offsets[path] += len(whole)
            for line in whole.splitlines():
                event = json.loads(line)
                self.processings.append(event)
                self.numbers.add(event["n"])
        return self


def spread(low: int, high: int, index: int, count: int) -> str:
    """``FIRST:STEP:COUNT``: the numbers from ``low`` to ``high`` for producer ``index`` of ``count``."""
    return f"{low + index}:{count}:{len(range(low + index, high, count))}"


@contextlib.contextmanager
def started(command: list[str], env: dict[str, str], log: pathlib.Path) -> Iterator[subprocess.Popen[str]]:
    """A child process with its stderr in ``log``; killed if still running at the end."""
    with log.open("w") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def stop(process: subprocess.Popen[str]) -> int:
    """SIGTERM, and the exit code."""
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    return process.returncode


@pytest.mark.slow
def test_chaos_loses_nothing_and_every_duplicate_is_a_lease_that_ran_out(tmp_path: pathlib.Path) -> None:
    emulators = Emulators(tmp_path)
    witness = Witness()
    proxy = FaultProxy(emulators.host, FAULT_RATE, SEED, FAULTS, STALL_SECONDS, observer=witness.observe)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TASKQUEUE_EMULATOR_HOST=proxy.host)
    worker_record = tmp_path / "worker.jsonl"
    kombu_records = [tmp_path / f"kombu-{i}.jsonl" for i in range(KOMBU_CONSUMERS)]
    records = Records([worker_record, *kombu_records])
    worker_command = [
        *(sys.executable, "-m", "kombu_appengine.worker", "tests.support.worker_jobs:chaos"),
        *("--queue", QUEUE, "--processes", str(WORKER_PROCESSES), "--num-tasks", str(NUM_TASKS)),
        *("--lease-secs", str(LEASE_SECS), "--polling-interval", "0.05", "--log-level", "WARNING"),
    ]
    clients = [sys.executable, "-m", "tests.support.chaos_clients"]
    options = ["--endpoint", proxy.url, "--queue", QUEUE]
    produce = [*options, "--max-retries", str(PRODUCER_MAX_RETRIES)]
    half = TASKS // 2
    with contextlib.ExitStack() as running:
        running.callback(lambda: emulators.process.kill())
        running.enter_context(proxy)

        def start(name: str, command: list[str], **extra_env: str) -> subprocess.Popen[str]:
            return running.enter_context(started(command, dict(env, **extra_env), tmp_path / f"{name}.log"))

        worker = start("worker", worker_command, WORKER_RECORD=str(worker_record))
        consume = [
            *clients,
            "consume",
            *options,
            "--lease-secs",
            str(LEASE_SECS),
            "--num-tasks",
            str(NUM_TASKS),
        ]
        consumers = [start(path.stem, [*consume, "--record", str(path)]) for path in kombu_records]
        began = time.monotonic()
        producers = [
            start(
                f"kombu-producer-{i}",
                [*clients, "produce-kombu", *produce, "--numbers", spread(0, half, i, KOMBU_PRODUCERS)],
            )
            for i in range(KOMBU_PRODUCERS)
        ] + [
            start(
                f"rest-producer-{i}",
                [*clients, "produce-rest", *produce, "--numbers", spread(half, TASKS, i, REST_PRODUCERS)],
            )
            for i in range(REST_PRODUCERS)
        ]

        def processed() -> int:
            for process in (worker, *consumers, *producers):
                assert process.poll() in (None, 0), (
                    f"{process.args[2:4]} exited {process.returncode}; see {tmp_path}"
                )
            return len(records.read().numbers)

        def wait_until(condition: Callable[[], bool], what: str) -> None:
            try:
                wait_for(condition, DRAIN_DEADLINE, what, interval=0.1)
            except pytest.fail.Exception:
                pytest.fail(
                    f"timed out waiting for {what}: {processed()} of {TASKS} processed, "
                    f"{emulators.total_tasks()} tasks in the queue; logs in {tmp_path}"
                )

        for share, down_for in KILLS:
            wait_until(
                lambda share=share: processed() >= share * TASKS, f"{share:.0%} of the tasks processed"
            )
            emulators.kill_and_restart(down_for)
        wait_until(
            lambda: processed() == TASKS and emulators.total_tasks() == 0, "every task processed and deleted"
        )
        seconds = time.monotonic() - began
        produced = [producer.wait(timeout=60) for producer in producers]
        stopped = [stop(process) for process in (worker, *consumers)]
        assert emulators.total_tasks() == 0

    assert produced == [0] * len(producers)
    assert stopped == [0] * len(stopped)
    report = check(witness.histories(), records.read().processings, TASKS)
    report.update(
        tasks=TASKS,
        seconds=round(seconds, 1),
        restarts=emulators.restarts,
        requests=proxy.requests,
        faults=dict(sorted(proxy.faults.items())),
        upstream_failures=dict(proxy.upstream_failures),
        kombu_reconnects=sum(
            (tmp_path / f"{path.stem}.log").read_text().count(RECONNECTING) for path in kombu_records
        ),
    )
    print("\nchaos:", json.dumps(report))
    assert emulators.restarts == 2
    assert set(proxy.faults) == set(FAULTS), "every kind of fault was injected"
    assert 0.08 < sum(proxy.faults.values()) / proxy.requests < 0.12
    assert report["leases_ran_out"] > 0, "leases ran out, and their tasks came back"
    assert min(report["processed_by"].values()) >= TASKS // 10, "both kinds of consumer took part"
