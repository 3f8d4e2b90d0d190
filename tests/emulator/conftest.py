"""Fixtures of the emulator tests: the check that bad input leaves the server serving."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from kombu_appengine.emulator import Emulator
from tests.support.raw_http import assert_serving


@pytest.fixture
def still_serving_and_no_crash(emulator: Emulator, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """After the test the server still answers, and no handler raised
    anything but a socket error (a crash would show as a dropped connection).

    Every bad-input test uses it (``pytestmark`` of those modules)."""
    caplog.set_level(logging.DEBUG, logger="kombu_appengine.emulator.server")
    yield
    assert_serving(emulator)
    crashes = [
        record for record in caplog.records if record.exc_info and not issubclass(record.exc_info[0], OSError)
    ]
    assert not crashes, [record.exc_info for record in crashes]
