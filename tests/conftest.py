"""Fixtures shared by the test suite: real emulators (in this process and as
processes of their own), servers of either kind (emulator or gateway), an
OAuth 2.0 server on loopback, and google-api-python-client built from the
shipped discovery document. Fixtures only one directory uses live in its own
conftest.py.

A test that depends on ``server_kind`` (through ``make_server`` or a
directory's ``emulator`` fixture) runs against both servers: the transport,
worker, Celery and API conformance suites do
(:func:`tests.support.servers.parametrize_servers`)."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import httplib2
import pytest
from googleapiclient.discovery import build_from_document

from kombu_appengine.discovery import load_document
from kombu_appengine.emulator import Emulator
from kombu_appengine.emulator.server import RestServer
from tests.support.emulator_process import COMMANDS, EmulatorProcess, Spawn
from tests.support.helpers import TEST_QUEUES, MakeEmulator, MakeServer, build_service
from tests.support.oauth_server import OAuthServer
from tests.support.servers import parametrize_servers, start_server


@pytest.fixture
def make_emulator() -> Iterator[MakeEmulator]:
    """Start in-process emulators: ``make_emulator(**options)`` takes the options
    of :class:`~kombu_appengine.emulator.Emulator` and gives the running
    server. Every emulator started is stopped at teardown."""
    with contextlib.ExitStack() as started:

        def make(**options: Any) -> Emulator:
            return started.enter_context(Emulator(**options))

        yield make


@pytest.fixture
def emulator(make_emulator: MakeEmulator) -> Emulator:
    """A running emulator with :data:`~tests.support.helpers.TEST_QUEUES`."""
    return make_emulator(queues=TEST_QUEUES)


@pytest.fixture
def spawn(tmp_path: pathlib.Path) -> Iterator[Spawn]:
    """Start server processes: ``spawn(*args, port=0, wait=True, cwd=None, env=None, kind="emulator")``
    runs ``python -m kombu_appengine.emulator --port PORT ARGS`` (with
    ``kind="gateway"``, ``pullqueue_gateway serve --port PORT ARGS``) and,
    unless ``wait`` is false, waits for its listening line. Every one is killed at teardown."""
    started: list[EmulatorProcess] = []

    def start(
        *args: str,
        port: int = 0,
        wait: bool = True,
        cwd: pathlib.Path | None = None,
        env: Mapping[str, str] | None = None,
        kind: str = "emulator",
    ) -> EmulatorProcess:
        stderr_path = tmp_path / f"stderr-{len(started)}.txt"
        server = EmulatorProcess(
            ["--port", str(port), *args], stderr_path, cwd=cwd, env=env, command=COMMANDS[kind]
        )
        started.append(server)
        if not wait:
            return server
        server.wait_listening()
        assert port in (0, server.port), server.line
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def oauth() -> Iterator[OAuthServer]:
    """A running OAuth 2.0 server (:mod:`tests.support.oauth_server`)."""
    with OAuthServer() as server:
        yield server


@pytest.fixture
def service(emulator: Emulator) -> Any:
    """The TaskQueue API client for :func:`emulator`."""
    return build_service(emulator.url)


@pytest.fixture(scope="module")
def shipped_service() -> Any:
    """The TaskQueue API client built from the shipped discovery document as it
    is, pointing at Google: for tests that build requests and never send them."""
    return build_from_document(load_document(), http=httplib2.Http())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that depends on ``server_kind`` runs against the emulator and the gateway."""
    parametrize_servers(metafunc)


@pytest.fixture
def make_server(server_kind: str) -> Iterator[MakeServer]:
    """Start servers of the test's kind (``server_kind``: the emulator, then the
    gateway): ``make_server(**options)`` takes the emulator's options (the
    gateway takes those it has) and gives the running server. Every server
    started is stopped at teardown."""
    with contextlib.ExitStack() as started:

        def make(**options: Any) -> RestServer:
            return started.enter_context(start_server(server_kind, **options))

        yield make
