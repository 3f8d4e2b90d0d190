"""Fixtures shared by the test suite: real emulators (in this process and as
processes of their own) and an OAuth 2.0 server on loopback, and
google-api-python-client built from the shipped discovery document. Fixtures
only one directory uses live in its own conftest.py."""

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
from tests.support.emulator_process import EmulatorProcess, Spawn
from tests.support.helpers import TEST_QUEUES, MakeEmulator, build_service
from tests.support.oauth_server import OAuthServer


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
    """Start emulator processes: ``spawn(*args, port=0, wait=True, cwd=None, env=None)``
    runs ``python -m kombu_appengine.emulator --port PORT ARGS`` and, unless
    ``wait`` is false, waits for its listening line. Every one is killed at teardown."""
    started: list[EmulatorProcess] = []

    def start(
        *args: str,
        port: int = 0,
        wait: bool = True,
        cwd: pathlib.Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> EmulatorProcess:
        stderr_path = tmp_path / f"stderr-{len(started)}.txt"
        emulator = EmulatorProcess(["--port", str(port), *args], stderr_path, cwd=cwd, env=env)
        started.append(emulator)
        if not wait:
            return emulator
        emulator.wait_listening()
        assert port in (0, emulator.port), emulator.line
        return emulator

    yield start
    for emulator in started:
        emulator.kill()


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


@pytest.fixture
def server_kind() -> str:
    """The server a test runs against, unless a directory's conftest runs it
    against both (``tests.support.servers.parametrize_servers``)."""
    return "emulator"
