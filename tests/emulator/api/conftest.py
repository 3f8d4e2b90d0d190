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


@pytest.fixture(params=SERVER_KINDS)
def emulator(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[RestServer]:
    """The usual queues on the emulator or the gateway, on :func:`clock` (the
    root conftest's ``service`` uses it too). A test marked ``emulator_only``
    is skipped on the gateway, with the marker's reason."""
    only = request.node.get_closest_marker("emulator_only")
    if only is not None and request.param != "emulator":
        pytest.skip(only.args[0])
    with start_server(request.param, queues=TEST_QUEUES, clock=clock) as server:
        yield server
