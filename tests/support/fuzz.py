"""Fuzzing the emulator over real sockets: a fresh server per case, and the invariants.

Each case (:func:`fuzz_case`) starts an :class:`~kombu_appengine.emulator.Emulator`
on a clock that never moves, seeds it with a few tasks (one leased, one
available, one tagged, one worn out by ``maxLeases``), sends one drawn
request as raw bytes, and checks what every request must keep to, whatever
it holds:

* an answer (or the connection closed) within a deadline: never a hang;
* never a 5xx (no fault is injected);
* every error is Google's JSON error body with the answer's status, in a
  batch's parts too;
* a request that is refused (or not answered) changes nothing: the tasks,
  their leases and retry counts, and the deleted names; what a successful
  one changes is what its answers say (an inserted task is there, a leased
  one has one more lease, a deleted one is gone and its name reserved);
* no handler crashed (an exception other than a socket error, in the log);
* the server still answers a well-formed request.

The number of examples each fuzz test runs is ``FUZZ_EXAMPLES`` when set
(``scripts/fuzz_emulator.py`` sets it), else the test's own small default;
:data:`CASES` counts the cases run, by test.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import select
import socket
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from hypothesis import HealthCheck, settings

from kombu_appengine import api
from kombu_appengine.emulator import Emulator, QueueConfig
from kombu_appengine.emulator.server import LINGER_SECONDS
from tests.support.fuzz_strategies import (
    IDLE,
    LEASE_SECONDS,
    LEASED,
    LIMITED_MAX_LEASES,
    LIMITED_QUEUE,
    PROJECT,
    PULL_QUEUES,
    PUSH_QUEUE,
    START,
    TAG,
    TAGGED,
    WORN,
    RawRequest,
)
from tests.support.helpers import FakeClock, b64
from tests.support.raw_http import Answer, address, assert_google_error, assert_serving, parse_next

#: Environment variable: how many examples each fuzz test runs.
FUZZ_EXAMPLES_ENV = "FUZZ_EXAMPLES"
#: Cases run so far in this process, by fuzz test.
CASES: collections.Counter[str] = collections.Counter()
#: The fuzzed server's ``request_timeout``: short, as every request is sent in
#: one piece, and an unfinished one is answered only once it passes.
REQUEST_TIMEOUT = 0.25
#: The fuzzed server's ``idle_timeout``.
IDLE_TIMEOUT = 2.0
#: Time the machine may add to the server's own deadlines before a wait counts as a hang.
GRACE = 10.0
#: Longest wait for the first answer (or the connection closed), from the last byte sent.
ANSWER_DEADLINE = REQUEST_TIMEOUT + LINGER_SECONDS + GRACE
#: Queues of the fuzzed server.
QUEUES = (
    *PULL_QUEUES,
    QueueConfig(LIMITED_QUEUE, max_leases=LIMITED_MAX_LEASES),
    QueueConfig(PUSH_QUEUE, mode="push"),
)


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings of a fuzz test: ``examples`` unless ``FUZZ_EXAMPLES`` says otherwise."""
    return settings(
        max_examples=int(os.environ.get(FUZZ_EXAMPLES_ENV) or examples),
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -- the server and its state -------------------------------------------------------


#: A task or a deleted name: (bare project, queue, task name).
Key = tuple[str, str, str]


class State(NamedTuple):
    """What a refused request must leave as it was."""

    #: Each task: payload, tag, enqueue time, sequence, ETA, lease expiry, retry count.
    tasks: dict[Key, dict[str, Any]]
    #: Each reserved (deleted) name: when it was deleted.
    tombstones: dict[Key, int]


def service_state(emulator: Emulator) -> State:
    """The emulator's tasks and deleted names, from the service's own snapshot."""
    with emulator.service.lock:
        entries = list(emulator.service.snapshot())
    tasks: dict[Key, dict[str, Any]] = {}
    tombstones: dict[Key, int] = {}
    for entry in entries:
        if entry["op"] == "delete":
            tombstones[(entry["project"], entry["queue"], entry["name"])] = entry["when"]
        elif entry["op"] == "insert":
            task = {field: entry[field] for field in ("payload", "tag", "enqueued", "seq")}
            tasks[(entry["project"], entry["queue"], entry["name"])] = {
                **task,
                "eta": entry["enqueued"],
                "lease_expires": 0,
                "retry_count": 0,
            }
        else:
            for name, eta, lease_expires, retry_count in entry["tasks"]:
                tasks[(entry["project"], entry["queue"], name)].update(
                    eta=eta, lease_expires=lease_expires, retry_count=retry_count
                )
    return State(tasks, tombstones)


def seed(emulator: Emulator) -> None:
    """The tasks every case starts with."""
    service = emulator.service
    service.insert(PROJECT, "default", {"id": LEASED, "payloadBase64": b64(b"leased")})
    service.lease(PROJECT, "default", 1, LEASE_SECONDS)
    service.insert(PROJECT, "default", {"id": IDLE, "payloadBase64": b64(b"idle")})
    service.insert(PROJECT, "default", {"id": TAGGED, "payloadBase64": b64(b"tagged"), "tag": TAG})
    service.insert(PROJECT, LIMITED_QUEUE, {"id": WORN, "payloadBase64": b64(b"worn")})
    service.lease(PROJECT, LIMITED_QUEUE, 1, 0)


class CrashLog(logging.Handler):
    """Collects the log records of the emulator that carry an exception other than a socket error."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.crashes: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[0] is not None and not issubclass(record.exc_info[0], OSError):
            self.crashes.append(record)

    def check(self) -> None:
        assert not self.crashes, "a handler crashed:\n" + "\n".join(
            logging.Formatter().format(record) for record in self.crashes
        )


@contextlib.contextmanager
def fuzz_case(name: str) -> Iterator[Emulator]:
    """A fresh, seeded emulator for one case of the fuzz test ``name``.

    On the way out (unless the case already failed): no handler crashed, and
    the server still answers.
    """
    CASES[name] += 1
    # Debug records (a line a request) go to the crash log alone: pytest
    # would keep them all, for thousands of cases.
    logger = logging.getLogger("kombu_appengine")  # the emulator and its REST front (kombu_appengine.rest)
    crash_log = CrashLog()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(crash_log)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        with Emulator(
            QUEUES,
            clock=FakeClock(float(START)),
            request_timeout=REQUEST_TIMEOUT,
            idle_timeout=IDLE_TIMEOUT,
        ) as emulator:
            seed(emulator)
            yield emulator
            crash_log.check()
            assert_serving(emulator)
            crash_log.check()
    finally:
        logger.removeHandler(crash_log)
        logger.setLevel(level)
        logger.propagate = propagate


# -- one exchange -------------------------------------------------------------------


def exchange(emulator: Emulator, request: RawRequest, keep_open: bool) -> list[Answer]:
    """Send ``request`` and read every final answer (interim ``100 Continue`` left out)
    until the server closes the connection.

    With ``keep_open`` the connection stays open until the first answer (or
    the server closes it): a request that never ends must be answered by the
    server's own deadline. Then (or at once without ``keep_open``) the
    client half-closes and reads the rest.

    Raises:
        AssertionError: the server neither answered nor closed in time (a
            hang), or sent something that is not HTTP responses.
    """
    data = request.render(emulator.host)
    with socket.create_connection(address(emulator), timeout=ANSWER_DEADLINE) as sock:
        with contextlib.suppress(OSError):  # the server may close before it read everything
            sock.sendall(data)
        received = bytearray()
        reset = False
        half_closed = False
        deadline = time.monotonic() + ANSWER_DEADLINE
        while True:
            if not half_closed and (not keep_open or _has_final_answer(received)):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                half_closed = True
                deadline = time.monotonic() + ANSWER_DEADLINE
            remaining = deadline - time.monotonic()
            assert remaining > 0, (
                f"no answer and no close within {ANSWER_DEADLINE}s "
                f"({'half-closed' if half_closed else 'connection open'}); got {bytes(received[:300])!r}"
            )
            readable, _, _ = select.select([sock], [], [], remaining)
            if not readable:
                continue
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                reset = True
                break
            if not chunk:
                break
            received += chunk
    return _final_answers(bytes(received), reset)


def _has_final_answer(data: bytearray) -> bool:
    try:
        rest = bytes(data)
        while rest:
            answer, rest = parse_next(rest)
            if answer.status >= 200:
                return True
    except (AssertionError, ValueError, KeyError, IndexError):
        return False
    return False


def _final_answers(data: bytes, reset: bool) -> list[Answer]:
    """The final answers in ``data``; after a reset (which may lose bytes) the last may be cut short."""
    answers = []
    while data:
        try:
            answer, data = parse_next(data)
        except (AssertionError, ValueError, KeyError, IndexError):
            # Only a reset may cut an answer short; anything else is not HTTP.
            assert reset, f"not a complete HTTP response: {data[:300]!r}"
            break
        if answer.status >= 200:
            answers.append(answer)
        else:
            assert answer.status == 100, answer
    return answers


# -- the invariants -----------------------------------------------------------------


def parts_of(answer: Answer) -> list[tuple[str | None, Answer]]:
    """The parts of a batch's ``multipart/mixed`` answer: each part's Content-ID and answer."""
    content_type = answer.headers["content-type"]
    assert content_type.startswith("multipart/mixed; boundary="), content_type
    delimiter = b"--" + content_type.partition("boundary=")[2].encode()
    pieces = answer.body.split(delimiter)
    assert pieces[0] == b"", pieces[0][:100]
    assert pieces[-1] == b"--\r\n", pieces[-1][:100]
    parts = []
    for piece in pieces[1:-1]:
        head, separator, inner = piece.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        assert separator, piece[:200]
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in head.decode("ascii").split("\r\n"))
        }
        assert headers.get("content-type") == "application/http", headers
        part_answer, rest = parse_next(inner)
        assert rest == b"\r\n", rest[:100]
        parts.append((headers.get("content-id"), part_answer))
    return parts


def check_answer(answer: Answer) -> list[Answer]:
    """One answer keeps to the rules; returns it and, for a batch, its parts' answers."""
    assert answer.status < 500, (answer.status, answer.body[:500])
    if answer.status >= 400:
        assert_google_error(answer, answer.status)
        return [answer]
    if answer.status == 204:
        assert answer.body == b""
        return [answer]
    assert answer.status == 200, (answer.status, answer.body[:300])
    if answer.headers.get("content-type", "").startswith("text/html"):
        # The dashboard's page, at /.
        assert answer.body.startswith(b"<!DOCTYPE html>"), answer.body[:100]
        return [answer]
    if answer.headers.get("content-type", "").startswith("multipart/mixed"):
        parts = [part for _, part in parts_of(answer)]
        assert parts, "a batch answered with no parts"
        return [answer] + [checked for part in parts for checked in check_answer(part)]
    assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers
    json.loads(answer.body)
    return [answer]


def _task_key(resource: dict[str, Any]) -> Key:
    """The key of a task resource, from its long ``queueName``."""
    queue_name = resource["queueName"]
    assert queue_name.startswith("projects/"), queue_name
    project, _, queue = queue_name[len("projects/") :].rpartition("/taskqueues/")
    return api.bare_project(project), queue, resource["id"]


def check_state_change(before: State, after: State, answers: list[Answer]) -> None:
    """What changed between ``before`` and ``after`` is what the successful ``answers`` say.

    With none, nothing changed at all.
    """
    successes = [answer for answer in answers if 200 <= answer.status < 300]
    if not successes:
        assert after == before, f"a refused request changed the state: {_diff(before, after)}"
        return
    answered: dict[Key, dict[str, Any]] = {}  # tasks inserted, updated or read
    leased: collections.Counter[Key] = collections.Counter()
    deletes = leases = 0
    for answer in successes:
        if answer.status == 204:
            deletes += 1
            continue
        if not answer.headers.get("content-type", "").startswith("application/json"):
            continue
        document = json.loads(answer.body)
        if not isinstance(document, dict):
            continue
        if document.get("kind") == api.TASK_KIND:
            answered[_task_key(document)] = document
        elif document.get("kind") == api.LEASED_TASKS_KIND:
            leases += 1
            leased.update(_task_key(item) for item in document.get("items", []))
    diff = _diff(before, after)
    added = after.tasks.keys() - before.tasks.keys()
    removed = before.tasks.keys() - after.tasks.keys()
    for key in added:
        assert key in answered, f"task {key} appeared unanswered: {diff}"
        task, resource = after.tasks[key], answered[key]
        assert b64(api.decode_payload(resource.get("payloadBase64", ""))) == task["payload"], diff
        assert resource.get("tag") == task["tag"], diff
        assert task["retry_count"] == leased[key], diff
    for key, resource in answered.items():
        if key not in before.tasks and key not in before.tombstones:
            assert resource["retry_count"] == 0, resource
            assert key in after.tasks or key in after.tombstones, f"inserted task {key} is nowhere: {diff}"
    new_tombstones = after.tombstones.keys() - before.tombstones.keys()
    # A lease deletes, instead of leasing, the tasks of a queue with maxLeases that reached it.
    retired = {
        key
        for key in new_tombstones
        if key[1] == LIMITED_QUEUE
        and leases
        and before.tasks.get(key, {}).get("retry_count", LIMITED_MAX_LEASES) >= LIMITED_MAX_LEASES
    }
    assert len(removed - retired) <= deletes, f"more tasks gone than deleted: {diff}"
    assert len(new_tombstones - retired) <= deletes, f"more names reserved than deleted: {diff}"
    assert removed <= new_tombstones, f"a task went without its name reserved: {diff}"
    assert new_tombstones <= removed | answered.keys(), f"a name reserved unanswered: {diff}"
    for key, when in before.tombstones.items():
        assert after.tombstones.get(key) == when, f"deleted name {key} changed: {diff}"
    for key in before.tasks.keys() & after.tasks.keys():
        old, new = before.tasks[key], after.tasks[key]
        for field in ("payload", "tag", "enqueued", "seq"):
            assert old[field] == new[field], f"{field} of {key} changed: {diff}"
        assert new["retry_count"] == old["retry_count"] + leased[key], f"retry count of {key}: {diff}"
        if (old["eta"], old["lease_expires"]) != (new["eta"], new["lease_expires"]):
            assert key in leased or key in answered, f"lease of {key} changed unanswered: {diff}"


def _diff(before: State, after: State) -> str:
    changed = {
        key: (before.tasks.get(key), after.tasks.get(key))
        for key in before.tasks.keys() | after.tasks.keys()
        if before.tasks.get(key) != after.tasks.get(key)
    }
    tombstones = {
        key: (before.tombstones.get(key), after.tombstones.get(key))
        for key in before.tombstones.keys() | after.tombstones.keys()
        if before.tombstones.get(key) != after.tombstones.get(key)
    }
    return f"tasks {changed}, deleted names {tombstones}"


def check_request(emulator: Emulator, request: RawRequest, keep_open: bool) -> list[Answer]:
    """Send ``request`` to the case's ``emulator`` and check every invariant.

    Returns the answers (a batch's parts after the batch's own answer).
    """
    before = service_state(emulator)
    answers = [
        checked for answer in exchange(emulator, request, keep_open) for checked in check_answer(answer)
    ]
    check_state_change(before, service_state(emulator), answers)
    return answers
