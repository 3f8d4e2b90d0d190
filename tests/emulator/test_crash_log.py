"""A handler that crashes leaves its traceback in the log: what the bad-input
tests (``still_serving_and_no_crash``) and the fuzz tests look for, since the
client only sees a 500 ``backendError`` (``test_unexpected_errors``)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from kombu_appengine.emulator import Emulator
from tests.support.helpers import b64
from tests.support.raw_http import QUEUE_PATH, assert_google_error, assert_serving, post_json


class BrokenJournal:
    """A journal with a bug: it raises what no journal may (not an ApiError)."""

    def record(self, *entries: dict[str, Any]) -> None:
        raise RuntimeError("the journal has a bug")


def test_a_handler_that_crashes_logs_its_traceback(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="kombu_appengine")
    emulator.service.journal = BrokenJournal()
    answer = post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"x")})
    assert_google_error(answer, 500)
    crashes = [record for record in caplog.records if record.exc_info]
    assert [record.exc_info[0] for record in crashes if record.exc_info] == [RuntimeError]
    emulator.service.journal = None
    assert_serving(emulator)
