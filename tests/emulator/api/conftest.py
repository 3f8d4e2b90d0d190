"""Fixtures of the API conformance tests: each runs against the emulator and
against the gateway (App Engine's task queue stub behind the same REST
front), both on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kombu_appengine.emulator.server import RestServer
from tests.support.api import START
from tests.support.helpers import TEST_QUEUES, FakeClock
from tests.support.servers import SERVER_KINDS, start_server


@pytest.fixture
def clock() -> FakeClock:
    """Time for the server, moved only by the test."""
    return FakeClock(START)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test runs against both servers, but a test marked
    ``emulator_only`` (the marker's reason says why) has no gateway variant at
    all: not a skip, which would count for nothing."""
    if "emulator" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("emulator_only")
        metafunc.parametrize("emulator", ("emulator",) if only else SERVER_KINDS, indirect=True)


@pytest.fixture
def emulator(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[RestServer]:
    """The usual queues on the emulator or the gateway (``request.param``, from
    :func:`pytest_generate_tests`), on :func:`clock` (the root conftest's
    ``service`` uses it too)."""
    with start_server(request.param, queues=TEST_QUEUES, clock=clock) as server:
        yield server
