"""Fixtures of the API conformance tests: the emulator runs on a fake clock."""

from __future__ import annotations

import pytest

from kombu_appengine.emulator import Emulator
from tests.support.api import START
from tests.support.helpers import TEST_QUEUES, FakeClock, MakeEmulator


@pytest.fixture
def clock() -> FakeClock:
    """Time for the emulator, moved only by the test."""
    return FakeClock(START)


@pytest.fixture
def emulator(make_emulator: MakeEmulator, clock: FakeClock) -> Emulator:
    """The usual emulator, on :func:`clock` (the root conftest's ``service`` uses it too)."""
    return make_emulator(queues=TEST_QUEUES, clock=clock)
