"""Fixtures shared by the test suite: real emulators on loopback, and
google-api-python-client built from the shipped discovery document."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from kombu_appengine.emulator import Emulator
from tests.support.helpers import TEST_QUEUES, MakeEmulator, build_service


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
def service(emulator: Emulator) -> Any:
    """The TaskQueue API client for :func:`emulator`."""
    return build_service(emulator.url)
