"""Fixtures of the API conformance tests: each runs against the emulator and
against the gateway (App Engine's task queue stub behind the same REST
front), both on a fake clock; see the root conftest."""

from __future__ import annotations

import pytest

from kombu_appengine.emulator.server import RestServer
from tests.support.api import START
from tests.support.helpers import TEST_QUEUES, FakeClock, MakeServer


@pytest.fixture
def clock() -> FakeClock:
    """Time for the server, moved only by the test."""
    return FakeClock(START)


@pytest.fixture
def emulator(make_server: MakeServer, clock: FakeClock) -> RestServer:
    """The usual queues on the emulator or the gateway, on :func:`clock` (the
    root conftest's ``service`` uses it too)."""
    return make_server(queues=TEST_QUEUES, clock=clock)
