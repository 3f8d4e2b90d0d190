"""What the emulator does when its own code fails: a 500 with Google's error
body, logged with its traceback, never a dropped connection; in a batch, the
failing part alone. And the one line per request that ``--log-level DEBUG``
shows, with no token in it."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from kombu_appengine.emulator import Emulator
from tests.support.helpers import b64
from tests.support.raw_http import (
    QUEUE_PATH,
    assert_google_error,
    assert_serving,
    batch_answers,
    post_json,
    request,
)

#: Where the HTTP layer logs.
SERVER_LOGGER = "kombu_appengine.emulator.server"


class Bug(Exception):
    """A failure of the emulator's own code, as a bug would raise."""


@pytest.fixture
def broken_get_queue(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """``taskqueues.get`` of the emulator's domain fails as a bug would; everything else works."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise Bug("a bug in the domain code")

    monkeypatch.setattr(emulator.service, "get_queue", fail)


@pytest.mark.usefixtures("broken_get_queue")
def test_an_unexpected_exception_is_a_500_with_googles_error_body_and_a_logged_traceback(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    answer = request(emulator, "GET", QUEUE_PATH)
    error = assert_google_error(answer, 500)
    assert error["errors"][0]["reason"] == "backendError"
    assert "a bug in the domain code" not in answer.body.decode()
    [record] = [record for record in caplog.records if record.exc_info]
    assert record.exc_info is not None
    assert record.exc_info[0] is Bug
    assert "GET" in record.getMessage()
    assert_serving(emulator)


@pytest.mark.usefixtures("broken_get_queue")
def test_an_unexpected_exception_in_a_batch_part_is_that_parts_500_and_the_batch_is_answered(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    insert = (
        f"POST {QUEUE_PATH}/tasks HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
        f'{{"payloadBase64": "{b64(b"x")}"}}'
    )
    parts = [insert, f"GET {QUEUE_PATH} HTTP/1.1\r\n\r\n", insert]
    body = "".join(
        f"--b\r\nContent-Type: application/http\r\nContent-ID: <{number}>\r\n\r\n{part}\r\n"
        for number, part in enumerate(parts, 1)
    )
    answer = request(
        emulator,
        "POST",
        "/batch",
        (body + "--b--\r\n").encode(),
        {"Content-Type": "multipart/mixed; boundary=b"},
    )
    assert answer.status == 200, answer.body[:300]
    answers = batch_answers(answer)
    assert answers["<response-1>"].status == 200
    assert_google_error(answers["<response-2>"], 500)
    assert answers["<response-3>"].status == 200
    assert len(request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"]) == 2
    assert [record.exc_info[0] for record in caplog.records if record.exc_info] == [Bug]


def test_debug_logs_one_line_per_request_with_method_path_and_status_and_no_token(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SERVER_LOGGER)
    token = "ya29.a-token-that-must-not-be-logged"
    assert request(emulator, "GET", f"{QUEUE_PATH}?getStats=true&oauth_token={token}").status == 200
    assert post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"x")}).status == 200
    assert request(
        emulator, "GET", QUEUE_PATH + "/tasks/nosuchtask", headers={"Authorization": f"Bearer {token}"}
    )
    lines = [record.getMessage() for record in caplog.records if record.name == SERVER_LOGGER]
    assert len(lines) == 3, lines
    assert lines[0].endswith(f"GET {QUEUE_PATH}?getStats=true 200")
    assert lines[1].endswith(f"POST {QUEUE_PATH}/tasks 200")
    assert lines[2].endswith(f"GET {QUEUE_PATH}/tasks/nosuchtask 404")
    assert token not in caplog.text
