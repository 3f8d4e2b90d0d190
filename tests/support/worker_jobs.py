"""Task functions for the worker tests, run by pullqueue_worker's processes.

Each writes what it did as one line appended to the file named by
``WORKER_RECORD`` (one ``write(2)`` a line, so lines from several processes
never interleave); the tests read that file.
"""

import json
import os
import random
import sys
import time


def append_line(path, document):
    """Append ``document`` to ``path`` as one JSON line, with one ``write(2)``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(document) + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def _record(event, payload):
    append_line(os.environ["WORKER_RECORD"], {"event": event, "n": payload["n"], "pid": os.getpid()})


def record(payload):
    """Succeed, recording the task."""
    _record("done", payload)


def flaky(payload):
    """Fail one time in five, else succeed."""
    if random.random() < 0.2:
        _record("failed", payload)
        raise RuntimeError(f"flaky failure on task {payload['n']}")
    _record("done", payload)


def always_fail(payload):
    """Fail every time."""
    _record("failed", payload)
    raise RuntimeError(f"task {payload['n']} always fails")


def blocking(payload):
    """Record the start, then wait for the file ``WORKER_RELEASE`` to exist."""
    _record("started", payload)
    deadline = time.monotonic() + 60
    while not os.path.exists(os.environ["WORKER_RELEASE"]):
        if time.monotonic() > deadline:
            raise RuntimeError("WORKER_RELEASE never appeared")
        time.sleep(0.02)
    _record("done", payload)


def blocking_marked(payload):
    """Succeed at once, except for a payload marked ``{"block": true}``: that one waits like ``blocking``."""
    if payload.get("block"):
        blocking(payload)
    else:
        record(payload)


def raw_payload(payload):
    """Record the payload's Python type (JSON decoded, or bytes)."""
    if isinstance(payload, bytes):
        payload = {"n": payload.decode("utf-8")}
    _record(type(payload["n"]).__name__, payload)


def number_of(payload):
    """The number a chaos test task carries: ``{"n": N}`` (JSON), or bytes ending in ``-N``."""
    if isinstance(payload, dict):
        return payload["n"]
    return int(payload.rpartition(b"-")[2])


def chaos(payload):
    """Record a processing of the chaos test: the task's number, and when it started and finished."""
    started = time.time()
    number = number_of(payload)
    append_line(
        os.environ["WORKER_RECORD"],
        {"kind": "worker", "n": number, "pid": os.getpid(), "start": started, "finish": time.time()},
    )


def interrupted(payload):
    """Record the failure, then raise KeyboardInterrupt (task 0) or call sys.exit(n) (task n)."""
    _record("failed", payload)
    if payload["n"] == 0:
        raise KeyboardInterrupt()
    sys.exit(payload["n"])
