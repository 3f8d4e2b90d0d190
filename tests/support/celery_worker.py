"""``celery worker`` processes of :mod:`tests.support.celery_app` for the Celery
tests, and what the tests read back: the workers' logs, the executions the
tasks log, and the tasks waiting in the emulator's queues."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
from typing import Any

import pytest

from kombu_appengine.emulator import Emulator
from tests.support import celery_app
from tests.support.helpers import ROOT, wait_for
from tests.support.transport import PROJECT

#: Pull queues of the test project: Celery's default queue, a routed one, and
#: the shared queue that holds reply queues and ``reports``.
PULL_QUEUES = ("celery", "images", celery_app.SHARED_QUEUE)
#: Queues every worker consumes, unless a test says otherwise.
WORKER_QUEUES = "celery,images,reports"
#: Lines of a clean worker log never contain these.
LOG_ERRORS = ("ERROR", "CRITICAL", "Traceback", "WARNING")


class Worker:
    """A ``celery -A tests.support.celery_app worker`` process group, with its log in a file."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log_path: pathlib.Path,
        queues: str,
        app: str = celery_app.__name__,
        cwd: pathlib.Path = ROOT,
    ) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    app,
                    "worker",
                    "--pool",
                    "prefork",
                    "--concurrency",
                    "2",
                    "--hostname",
                    f"{name}@%h",
                    "--queues",
                    queues,
                    "--loglevel",
                    "INFO",
                ],
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """The worker's main process (the pool processes are its children)."""
        return self.process.pid

    def log(self) -> str:
        """Everything the worker wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = 30) -> Worker:
        """Wait for Celery's ``ready.`` line."""

        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"worker {self.name} exited with {self.process.returncode}:\n{self.log()}")
            return " ready." in self.log()

        wait_for(ready, timeout, f"worker {self.name} to be ready")
        return self

    def received(self, task_id: str) -> int:
        """How many times this worker logged receiving the task ``task_id``."""
        return self.log().count(f"[{task_id}] received")

    def wait_exit(self, timeout: float) -> int:
        """Wait for the main process to exit; its exit code."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.name} still running after {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and its pool."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(10)


def assert_clean(log: str) -> None:
    """No error, warning or traceback in a worker's log (the root-user SecurityWarning aside)."""
    noisy = [
        line
        for line in log.splitlines()
        if any(word in line for word in LOG_ERRORS) and "SecurityWarning" not in line
    ]
    assert not noisy, "\n".join(noisy)


def executions(log_path: pathlib.Path) -> list[tuple[str, str, int]]:
    """``(what, key, pid)`` for every line the tasks wrote to ``CELERY_TEST_LOG``."""
    if not log_path.exists():
        return []
    lines = log_path.read_text(encoding="utf-8").splitlines()
    return [(what, key, int(pid)) for what, key, pid in (line.split(" ") for line in lines)]


def keys(log_path: pathlib.Path, what: str) -> list[str]:
    """The keys of the executions logged as ``what``, in order, repeats included."""
    return [key for event, key, _ in executions(log_path) if event == what]


def queue_tasks(emulator: Emulator, queue: str) -> list[dict[str, Any]]:
    """The tasks of a pull queue: Celery task id, tag, and whether leased now."""
    found = []
    for item in emulator.service.list_tasks(PROJECT, queue).get("items", []):
        task = emulator.service.get_task(PROJECT, queue, item["id"])
        envelope = json.loads(base64.b64decode(task["payloadBase64"]))
        found.append(
            {
                "celery_id": envelope["headers"].get("id"),
                "tag": task.get("tag"),
                "leased": task["leaseTimestamp"] != "0",
            }
        )
    return found
