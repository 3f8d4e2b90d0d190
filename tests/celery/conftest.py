"""Fixtures of the Celery tests: the test project's queues, the environment
of workers and client, worker processes, and a client app in this process."""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Iterator
from typing import Callable

import celery
import pytest

from kombu_appengine.emulator.server import RestServer
from tests.support import celery_app
from tests.support.celery_worker import PULL_QUEUES, WORKER_QUEUES, Worker
from tests.support.helpers import ROOT, MakeServer


@pytest.fixture
def emulator(make_server: MakeServer) -> RestServer:
    """A server (of either kind) with the test project's pull queues."""
    return make_server(queues=PULL_QUEUES)


@pytest.fixture
def exec_log(tmp_path: pathlib.Path) -> pathlib.Path:
    """The file the tasks log their executions to."""
    return tmp_path / "executions.log"


@pytest.fixture
def settings(emulator: RestServer, exec_log: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of workers and client: edit it before starting them."""
    monkeypatch.setenv("TASKQUEUE_EMULATOR_HOST", emulator.host)
    env = dict(os.environ)
    env.update(
        {
            "TASKQUEUE_EMULATOR_HOST": emulator.host,
            "CELERY_TEST_LOG": str(exec_log),
            "CELERY_TEST_LEASE_SECS": "3",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            "C_FORCE_ROOT": "1",
        }
    )
    return env


@pytest.fixture
def start_worker(settings: dict[str, str], tmp_path: pathlib.Path) -> Iterator[Callable[..., Worker]]:
    """Start a worker (``start_worker("a", queues=..., **env)``); all are killed at teardown."""
    started: list[Worker] = []

    def start(name: str, queues: str = WORKER_QUEUES, ready: bool = True, **env: str) -> Worker:
        worker = Worker(name, {**settings, **env}, tmp_path / f"worker-{name}.log", queues)
        started.append(worker)
        return worker.wait_ready() if ready else worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture
def client(settings: dict[str, str]) -> Iterator[celery.Celery]:
    """A Celery app in this process, configured like the workers, that sends tasks and reads results."""
    app = celery.Celery("client", set_as_current=False)
    app.config_from_object(celery_app.config_from_env(settings))
    yield app
    # The result consumer's connection sends its batched acks as it closes,
    # while the emulator still runs (app.close() leaves it open).
    with contextlib.suppress(AttributeError):  # never started: no consumer
        app.backend.result_consumer.stop()
    app.close()
