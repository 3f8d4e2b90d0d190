"""Fixtures shared by the test suite: a real emulator on loopback, and
google-api-python-client built from the shipped discovery document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kombu_appengine.emulator import Emulator
from tests.support.helpers import TEST_QUEUES, build_service


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A running in-process emulator with :data:`~tests.support.helpers.TEST_QUEUES`."""
    with Emulator(queues=TEST_QUEUES) as running:
        yield running


@pytest.fixture
def service(emulator: Emulator) -> Any:
    """The TaskQueue API client for :func:`emulator`."""
    return build_service(emulator.url)
