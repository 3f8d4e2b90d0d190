"""Helpers of the transport tests: kombu connections to an emulator, and the
emulator's own view of its queues (``emulator.service``), which the tests
check outcomes against instead of the transport's internals."""

from __future__ import annotations

import base64
import json
from typing import Any

import httplib2
from kombu import Connection

from tests.support.helpers import b64

#: The project the transport uses with an emulator when none is given.
PROJECT = "emulator"
#: The environment variable that points connections at an emulator.
EMULATOR_HOST_ENV = "TASKQUEUE_EMULATOR_HOST"


def connect(emulator: Any, **options: Any) -> Connection:
    """A kombu connection to ``emulator``, polling fast unless told otherwise."""
    options.setdefault("polling_interval", 0.05)
    return Connection(
        transport="kombu_appengine:Transport", transport_options={"api_endpoint": emulator.url, **options}
    )


def total_tasks(emulator: Any, queue: str = "default", project: str = PROJECT) -> int:
    """Every task of the queue, leased or not, as the emulator counts them."""
    return emulator.service.get_queue(project, queue, get_stats=True)["stats"]["totalTasks"]


def listed(emulator: Any, queue: str = "default", project: str = PROJECT) -> list[dict[str, Any]]:
    """The queue's tasks (without payloads), in lease order."""
    return emulator.service.list_tasks(project, queue).get("items", [])


def only_task(emulator: Any, queue: str = "default") -> dict[str, Any]:
    """The one task of the queue, with its payload."""
    items = listed(emulator, queue)
    assert len(items) == 1, items
    return emulator.service.get_task(PROJECT, queue, items[0]["id"])


def payload_of(task: dict[str, Any]) -> bytes:
    """The task's payload, decoded."""
    return base64.b64decode(task["payloadBase64"])


def rest_insert(emulator: Any, payload_base64: str, queue: str = "default") -> dict[str, Any]:
    """Insert a task with a plain REST call, as App Engine code or a shell script would."""
    response, content = httplib2.Http().request(
        f"{emulator.url}/taskqueue/v1beta2/projects/{PROJECT}/taskqueues/{queue}/tasks",
        "POST",
        body=json.dumps({"queueName": queue, "payloadBase64": payload_base64}),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 200, content
    return json.loads(content)


def prefill(emulator: Any, count: int, queue: str = "default") -> None:
    """Insert ``count`` raw JSON tasks through the emulator's domain (no HTTP)."""
    for number in range(count):
        emulator.service.insert(PROJECT, queue, {"payloadBase64": b64(json.dumps({"n": number}).encode())})
