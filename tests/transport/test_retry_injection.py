"""The transport's retries against failures injected over HTTP (``/retry_test``).

The emulator's retry test makes the transport's lease and delete fail
transiently (a 503, then a dropped connection); the message must still be
delivered once and acknowledged, with no copy left behind.
"""

from __future__ import annotations

import http.client
import json
import queue
from collections.abc import Iterator
from typing import Any

import google.auth.credentials
import pytest
from kombu import Connection

from kombu_appengine import api
from kombu_appengine.emulator import Emulator

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


@pytest.fixture
def em() -> Iterator[Emulator]:
    with Emulator(queues=["default"]) as running:
        yield running


def call(emulator: Emulator, method: str, path: str, document: Any = None) -> Any:
    host, port = emulator.host.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=DEADLINE)
    try:
        body = None if document is None else json.dumps(document).encode()
        connection.request(
            method, path, body=body, headers={"Content-Type": "application/json"} if body else {}
        )
        response = connection.getresponse()
        answer = response.read()
        assert response.status == 200, answer
        return json.loads(answer)
    finally:
        connection.close()


def total_tasks(emulator: Emulator) -> int:
    stats = emulator.service.get_queue("my-app", "default", get_stats=True)["stats"]
    return int(stats["totalTasks"])


def test_lease_and_delete_failing_transiently_deliver_once_and_ack(em: Emulator) -> None:
    retry_test = call(
        em,
        "POST",
        "/retry_test",
        {
            "instructions": {
                api.TASKS_LEASE.id: ["return-503", "return-reset-connection"],
                api.TASKS_DELETE.id: ["return-503", "return-reset-connection"],
            }
        },
    )
    options = {
        "api_endpoint": em.url,
        "project_name": "my-app",
        "credentials": RetryTestCredentials(retry_test["id"]),
        "polling_interval": 0.05,
    }
    with Connection(transport="kombu_appengine:Transport", transport_options=options) as connection:
        simple = connection.SimpleQueue("default")
        simple.put({"n": 1})
        message = simple.get(timeout=DEADLINE)
        assert message.payload == {"n": 1}
        message.ack()
        connection.default_channel.flush()  # acks are deleted in batches
        assert total_tasks(em) == 0
        with pytest.raises(queue.Empty):
            simple.get(timeout=0.3)
        simple.close()

    shown = call(em, "GET", f"/retry_test/{retry_test['id']}")
    assert shown["completed"] is True, shown
    assert em.tokens
    assert set(em.tokens) == {"retry-test-token"}
