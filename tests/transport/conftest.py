"""Fixtures of the transport tests: each runs against the emulator and against
the gateway (App Engine's task queue stub behind the same REST front), see
the root conftest."""

from __future__ import annotations

import pytest

from kombu_appengine.emulator.server import RestServer
from tests.support.helpers import TEST_QUEUES, MakeServer
from tests.support.transport import EMULATOR_HOST_ENV


@pytest.fixture
def emulator(make_server: MakeServer) -> RestServer:
    """A running server with :data:`~tests.support.helpers.TEST_QUEUES`."""
    return make_server(queues=TEST_QUEUES)


@pytest.fixture(autouse=True)
def _no_emulator_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test names its emulator itself; a developer's own setting must not leak in."""
    monkeypatch.delenv(EMULATOR_HOST_ENV, raising=False)
