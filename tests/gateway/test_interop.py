"""Both ways between App Engine code (the bundled taskqueue API) and kombu, through the gateway."""

from __future__ import annotations

import json

from google.appengine.api import taskqueue
from kombu import Connection

from tests.gateway.conftest import APP_ID
from tests.support.helpers import wait_for


def connect(gateway, **options):
    return Connection(
        transport="kombu_appengine:Transport",
        transport_options={
            "api_endpoint": gateway.url,
            "project_name": APP_ID,
            "polling_interval": 0.05,
            **options,
        },
    )


def test_tasks_app_engine_code_adds_are_consumed_through_kombu(gateway):
    queue = taskqueue.Queue("pull-queue")
    queue.add(taskqueue.Task(payload=json.dumps({"image": "cat.png"}), method="PULL"))
    queue.add(taskqueue.Task(payload=b"\x00raw bytes", method="PULL", countdown=1))
    with connect(gateway) as connection:
        simple = connection.SimpleQueue("pull-queue")
        first = simple.get(timeout=10)
        assert json.loads(first.body) == first.decode() == {"image": "cat.png"}
        first.ack()
        # The countdown holds the second one back, then it comes.
        second = simple.get(timeout=10)
        assert second.body == b"\x00raw bytes"
        second.ack()
        simple.close()
    assert queue.fetch_statistics().tasks == 0


def test_tagged_tasks_app_engine_code_adds_reach_a_kombu_queue_on_the_shared_queue(gateway):
    taskqueue.Queue("tagged").add(taskqueue.Task(payload=b'{"n": 1}', method="PULL", tag="replies"))
    taskqueue.Queue("tagged").add(taskqueue.Task(payload=b'{"n": 2}', method="PULL", tag="other"))
    with connect(gateway, shared_queue="tagged") as connection:
        replies = connection.SimpleQueue("replies")
        message = replies.get(timeout=10)
        assert message.decode() == {"n": 1}
        message.ack()
        replies.close()
    [left] = taskqueue.Queue("tagged").lease_tasks(60, 10)
    assert left.tag == "other"


def test_tasks_kombu_publishes_are_leased_by_app_engine_code(gateway):
    with connect(gateway, message_format="raw") as connection:
        connection.SimpleQueue("pull-queue").put(
            b"from kombu", serializer=None, content_type="application/data"
        )
    with connect(gateway) as connection:
        connection.SimpleQueue("pull-queue").put({"kombu": True})
    leased = wait_for(lambda: taskqueue.Queue("pull-queue").lease_tasks(60, 10), what="two tasks")
    payloads = sorted(task.payload for task in leased)
    assert payloads[0] == b"from kombu"
    assert json.loads(payloads[1])["body"]
    taskqueue.Queue("pull-queue").delete_tasks(leased)
