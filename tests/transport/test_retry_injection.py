"""The transport's retries against failures injected over HTTP (``/retry_test``).

The emulator's retry test makes the transport's lease and delete fail
transiently (a 503, then a dropped connection); the message must still be
delivered once and acknowledged, with no copy left behind.
"""

from __future__ import annotations

import queue
from typing import Any

import google.auth.credentials
import pytest

from kombu_appengine import api
from kombu_appengine.emulator import Emulator
from tests.support.raw_http import post_json, request
from tests.support.transport import connect, total_tasks

#: Longest any single exchange of a test may take, in seconds.
DEADLINE = 5.0


class RetryTestCredentials(google.auth.credentials.Credentials):
    """Credentials that also name a retry test on every request the transport sends,
    batches and their parts included: how a client joins a retry test."""

    def __init__(self, test_id: str) -> None:
        super().__init__()
        self.token = "retry-test-token"
        self.test_id = test_id

    def refresh(self, request: Any) -> None:
        """Nothing to refresh: the emulator takes any token."""

    def apply(self, headers: dict[str, str], token: str | None = None) -> None:
        headers["authorization"] = f"Bearer {self.token}"
        headers["x-retry-test-id"] = self.test_id


def test_lease_and_delete_failing_transiently_deliver_once_and_ack(emulator: Emulator) -> None:
    created = post_json(
        emulator,
        "/retry_test",
        {
            "instructions": {
                api.TASKS_LEASE.id: ["return-503", "return-reset-connection"],
                api.TASKS_DELETE.id: ["return-503", "return-reset-connection"],
            }
        },
    )
    assert created.status == 200, created.body
    retry_test = created.json()
    credentials = RetryTestCredentials(retry_test["id"])
    with connect(emulator, project_name="my-app", credentials=credentials) as connection:
        simple = connection.SimpleQueue("default")
        simple.put({"n": 1})
        message = simple.get(timeout=DEADLINE)
        assert message.payload == {"n": 1}
        message.ack()
        assert total_tasks(emulator, project="my-app") == 0
        with pytest.raises(queue.Empty):
            simple.get(timeout=0.3)
        simple.close()

    shown = request(emulator, "GET", f"/retry_test/{retry_test['id']}")
    assert shown.status == 200, shown.body
    assert shown.json()["completed"] is True, shown.body
    assert emulator.tokens
    assert set(emulator.tokens) == {"retry-test-token"}
