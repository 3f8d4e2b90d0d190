"""What a published message becomes on the queue: kombu's envelope or the raw
body, what survives the round trip, and the size limit of a task."""

from __future__ import annotations

import json

import pytest
from kombu import Queue

from kombu_appengine.errors import PayloadTooLarge
from tests.support.transport import PROJECT, connect, only_task, payload_of, total_tasks


def test_raw_message_format_publishes_only_the_body(emulator):
    with connect(emulator, message_format="raw") as connection:
        queue = connection.SimpleQueue("default")
        queue.put({"a": 1, "b": [True, None]})
        task = only_task(emulator)
        assert json.loads(payload_of(task)) == {"a": 1, "b": [True, None]}

        emulator.service.delete_task(PROJECT, "default", task["id"])
        queue.put(
            b"\x00\x01binary", serializer=None, content_type="application/data", content_encoding="binary"
        )
        assert payload_of(only_task(emulator)) == b"\x00\x01binary"

        emulator.service.delete_task(PROJECT, "default", only_task(emulator)["id"])
        queue.put("caf\u00e9", serializer=None, content_type="text/plain", content_encoding="utf-8")
        assert payload_of(only_task(emulator)) == "caf\u00e9".encode("utf-8")
        queue.close()


def test_raw_message_format_round_trip_through_a_kombu_consumer(emulator):
    with connect(emulator, message_format="raw") as connection:
        queue = connection.SimpleQueue("default")
        queue.put({"job": 7})
        message = queue.get(timeout=5)
        assert message.decode() == {"job": 7}
        message.ack()
        queue.close()


def test_headers_and_properties_survive_the_round_trip(emulator):
    with connect(emulator) as connection:
        producer = connection.Producer(serializer="json")
        producer.publish(
            {"x": 1},
            routing_key="default",
            declare=[Queue("default")],
            headers={"x-trace": "abc", "attempt": 3, "nested": {"k": [1, 2]}},
            correlation_id="corr-1",
            reply_to="reply.queue",
            priority=5,
            expiration=None,
        )
        queue = connection.SimpleQueue("default")
        message = queue.get(timeout=5)
        assert message.payload == {"x": 1}
        assert message.headers == {"x-trace": "abc", "attempt": 3, "nested": {"k": [1, 2]}}
        assert message.properties["correlation_id"] == "corr-1"
        assert message.properties["reply_to"] == "reply.queue"
        assert message.properties["priority"] == 5
        assert message.content_type == "application/json"
        assert message.content_encoding == "utf-8"
        message.ack()
        queue.close()


def test_binary_body_survives_the_kombu_envelope(emulator):
    body = bytes(range(256))
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        queue.put(body, serializer=None, content_type="application/octet-stream", content_encoding="binary")
        message = queue.get(timeout=5)
        assert message.body == body
        message.ack()
        queue.close()


# -- the size limit ---------------------------------------------------------


def test_payload_over_one_mebibyte_is_refused_on_put_naming_the_queue(emulator):
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        with pytest.raises(PayloadTooLarge) as failure:
            queue.put("x" * (1024 * 1024))
        assert "'default'" in str(failure.value)
        assert total_tasks(emulator) == 0
        queue.close()


def test_a_raw_payload_fits_until_the_whole_task_reaches_one_mebibyte(emulator):
    with connect(emulator, message_format="raw") as connection:
        queue = connection.SimpleQueue("default")
        body = b"y" * (1024 * 1024 - 200)
        queue.put(body, serializer=None, content_type="application/data", content_encoding="binary")
        # App Engine counts the whole task, not the payload alone, against 1 MiB.
        with pytest.raises(PayloadTooLarge):
            queue.put(
                b"y" * (1024 * 1024),
                serializer=None,
                content_type="application/data",
                content_encoding="binary",
            )
        message = queue.get(timeout=5)
        assert message.body == body
        message.ack()
        queue.close()
