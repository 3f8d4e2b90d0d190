"""Fixtures shared by the test suite: real emulators and an OAuth 2.0 server
on loopback, and google-api-python-client built from the shipped discovery
document. Fixtures only one directory uses live in its own conftest.py."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httplib2
import pytest
from googleapiclient.discovery import build_from_document

from kombu_appengine.discovery import load_document
from kombu_appengine.emulator import Emulator
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
