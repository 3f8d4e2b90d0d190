"""Fixtures of the worker tests: the worker's queues, and worker processes."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kombu_appengine.emulator import QueueConfig
from kombu_appengine.emulator.server import RestServer
from tests.support.servers import parametrize_servers, start_server
from tests.support.transport import connect
from tests.support.worker_run import Run

#: Tests that run against the gateway too (App Engine's task queue stub): the
#: worker's main job, payload kinds, and the queue's own lease limit. The
#: rest exercise the worker's process handling, which does not depend on the server.
BOTH_SERVERS = frozenset(
    {
        "test_every_task_processed_exactly_once_over_four_processes",
        "test_raw_json_and_binary_payloads_reach_the_function_decoded",
        "test_the_queues_max_leases_is_respected",
    }
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_servers(metafunc, BOTH_SERVERS)


@pytest.fixture
def emulator(server_kind: str) -> Iterator[RestServer]:
    """The worker's queues: one to work on, one for dead letters, and one that allows three leases."""
    with start_server(server_kind, queues=["jobs", "dead", QueueConfig("limited", max_leases=3)]) as server:
        yield server


@pytest.fixture
def run_worker(emulator: RestServer, tmp_path: pathlib.Path) -> Iterator[Callable[..., Run]]:
    """Start pullqueue_worker (``run_worker(FUNCTION, *options, queue=...)``); all are killed at teardown."""
    runs = []

    def start(function, *options, queue="jobs"):
        run = Run(emulator, tmp_path, function, *options, queue=queue)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.process.kill()
            run.process.communicate()


@pytest.fixture
def channel(emulator: RestServer) -> Iterator[Any]:
    """A kombu channel on the emulator, with one task on the queue ``jobs``."""
    with connect(emulator) as conn:
        conn.SimpleQueue("jobs").put({"image": "cat.png"})
        yield conn.default_channel
