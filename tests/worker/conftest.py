"""Fixtures of the worker tests: the worker's queues, and worker processes."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kombu_appengine.emulator import QueueConfig
from kombu_appengine.emulator.server import RestServer
from tests.support.helpers import MakeServer
from tests.support.transport import connect
from tests.support.worker_run import Run


@pytest.fixture
def emulator(make_server: MakeServer) -> RestServer:
    """The worker's queues (on either server): one to work on, one for dead
    letters, and one that allows three leases."""
    return make_server(queues=["jobs", "dead", QueueConfig("limited", max_leases=3)])


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
        run.kill()  # its children too, even when the worker itself has exited


@pytest.fixture
def channel(emulator: RestServer) -> Iterator[Any]:
    """A kombu channel on the emulator, with one task on the queue ``jobs``."""
    with connect(emulator) as conn:
        conn.SimpleQueue("jobs").put({"image": "cat.png"})
        yield conn.default_channel
