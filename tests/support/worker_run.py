"""A ``pullqueue_worker`` process run by the worker tests, and the files its
task functions (:mod:`tests.support.worker_jobs`) write."""

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from tests.support import worker_jobs
from tests.support.helpers import ROOT
from tests.support.transport import PROJECT, connect

#: The module of the task functions, as ``pullqueue_worker MODULE:FUNCTION`` names it.
JOBS = worker_jobs.__name__


def publish(emulator, count, queue="jobs"):
    """Put ``count`` kombu messages ``{"n": N}`` on ``queue``."""
    with connect(emulator) as conn:
        simple = conn.SimpleQueue(queue)
        for n in range(count):
            simple.put({"n": n})


def released(emulator, queue="jobs"):
    """How many tasks of the queue are not leased."""
    return sum(task["leaseTimestamp"] == "0" for task in emulator.service.list_tasks(PROJECT, queue)["items"])


class Run:
    """A running pullqueue_worker and the files its task functions write."""

    def __init__(self, emulator, tmp_path, function, *options, queue="jobs"):
        """Start it on ``function`` of :mod:`tests.support.worker_jobs`, or on ``MODULE:FUNCTION``."""
        self.record = tmp_path / f"record-{time.monotonic_ns()}.jsonl"
        self.release = tmp_path / "release"
        env = dict(
            os.environ,
            TASKQUEUE_EMULATOR_HOST=emulator.host,
            WORKER_RECORD=str(self.record),
            WORKER_RELEASE=str(self.release),
            PYTHONPATH=str(ROOT),
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kombu_appengine.worker",
                function if ":" in function else f"{JOBS}:{function}",
                "--queue",
                queue,
                "--polling-interval",
                "0.05",
                "--stats-interval",
                "0.5",
                *options,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Its own process group: a teardown kills the worker's children
            # too, which would otherwise hold its pipes open.
            start_new_session=True,
        )

    def events(self):
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def count(self, event):
        return collections.Counter(e["n"] for e in self.events() if e["event"] == event)

    def wait_for(self, condition, what, timeout=60):
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"worker exited ({self.process.returncode}) before {what}:\n" + self.process.stderr.read()
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def kill(self):
        """Kill the worker and every process it started, and wait for them."""
        with contextlib.suppress(ProcessLookupError):  # all of them gone already
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.communicate()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Send ``sig`` (none when ``None``) and wait for the exit."""
        if sig is not None and self.process.poll() is None:
            self.process.send_signal(sig)
        stdout, stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode, stdout, stderr
