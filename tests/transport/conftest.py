"""Fixtures of the transport tests.

The modules in :data:`BOTH_SERVERS` run against the emulator and against the
gateway (App Engine's task queue stub behind the same REST front): the
everyday paths (publish, consume, ack, requeue, tags on a shared queue,
formats, sizes, purge). The others exercise the transport's own machinery
(retries, injected faults, options, processes, lease keeping), which does
not depend on the server, and run against the emulator only, so the suite
stays quick.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kombu_appengine.emulator.server import RestServer
from tests.support.helpers import TEST_QUEUES
from tests.support.servers import SERVER_KINDS, start_server
from tests.support.transport import EMULATOR_HOST_ENV

#: Test modules run against both servers.
BOTH_SERVERS = frozenset(
    {
        "test_seed_examples",
        "test_ack_and_release",
        "test_consumers",
        "test_queue_names",
        "test_message_formats",
        "test_size_and_purge",
    }
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if (
        "server_kind" in metafunc.fixturenames
        and metafunc.module.__name__.rpartition(".")[2] in BOTH_SERVERS
        and metafunc.definition.get_closest_marker("emulator_only") is None
    ):
        metafunc.parametrize("server_kind", SERVER_KINDS)


@pytest.fixture
def emulator(server_kind: str) -> Iterator[RestServer]:
    """A running server with :data:`~tests.support.helpers.TEST_QUEUES`."""
    with start_server(server_kind, queues=TEST_QUEUES) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_emulator_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test names its emulator itself; a developer's own setting must not leak in."""
    monkeypatch.delenv(EMULATOR_HOST_ENV, raising=False)
