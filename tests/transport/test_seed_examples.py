"""The seed article's examples: a SimpleQueue, an exchange with a consumer, and
tasks that kombu did not put there (raw JSON, bytes, other base64), delivered raw."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kombu import Consumer, Exchange, Producer, Queue

from kombu_appengine.emulator.errors import ApiError
from kombu_appengine.emulator.model import Task
from tests.support.helpers import b64
from tests.support.transport import PROJECT, connect, rest_insert, total_tasks


def test_simple_queue_producer_and_consumer(emulator):
    with connect(emulator) as producer_connection:
        queue = producer_connection.SimpleQueue("default")
        queue.put({"hello": "world"})
        queue.close()
    assert total_tasks(emulator) == 1

    with connect(emulator) as consumer_connection:
        queue = consumer_connection.SimpleQueue("default")
        message = queue.get(timeout=5)
        assert message.payload == {"hello": "world"}
        assert message.content_type == "application/json"
        message.ack()
        queue.close()
    assert total_tasks(emulator) == 0


def test_exchange_queue_producer_consumer_with_drain_events(emulator):
    media = Exchange("media", "direct", durable=True)
    video = Queue("default", exchange=media, routing_key="video")

    with connect(emulator) as connection:
        producer = Producer(connection.default_channel, exchange=media, serializer="json")
        producer.publish({"name": "/tmp/lolcat1.avi", "size": 1301013}, routing_key="video", declare=[video])
    assert total_tasks(emulator) == 1

    received = []

    def process_media(body, message):
        received.append((body, message.delivery_info["routing_key"]))
        message.ack()

    with connect(emulator) as connection, Consumer(connection, video, callbacks=[process_media]):
        connection.drain_events(timeout=5)
    assert received == [({"name": "/tmp/lolcat1.avi", "size": 1301013}, "video")]
    assert total_tasks(emulator) == 0


def test_raw_json_task_inserted_by_rest_is_consumed(emulator):
    document = {"image": "gs://bucket/cat.png", "sizes": [64, 128]}
    inserted = rest_insert(emulator, b64(json.dumps(document).encode()))

    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        message = queue.get(timeout=5)
        assert json.loads(message.body) == document
        assert message.decode() == document
        assert message.payload == document
        assert message.content_type == "application/json"
        assert message.delivery_info["routing_key"] == "default"
        assert message.delivery_info["redelivered"] is False
        message.ack()
        queue.close()
    with pytest.raises(ApiError) as gone:
        emulator.service.get_task(PROJECT, "default", inserted["id"])
    assert gone.value.code == 404


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_raw_json_with_a_byte_order_mark_or_in_utf16_or_utf32_is_json(emulator, encoding):
    document = {"image": "gs://bucket/caf\u00e9.png", "sizes": [64, 128]}
    payload = json.dumps(document, ensure_ascii=False).encode(encoding)
    rest_insert(emulator, b64(payload))
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        message = queue.get(timeout=5)
        assert message.body == payload
        assert message.content_type == "application/json"
        assert json.loads(message.body) == document
        assert message.decode() == document
        message.ack()
        queue.close()
    assert total_tasks(emulator) == 0


def test_raw_json_that_merely_resembles_kombus_envelope_is_delivered_raw(emulator):
    document = {"body": "not a kombu body", "properties": {"size": 3}}
    rest_insert(emulator, b64(json.dumps(document).encode()))
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        message = queue.get(timeout=5)
        assert message.decode() == document
        message.ack()
        queue.close()


def test_raw_binary_task_is_delivered_as_bytes(emulator):
    payload = b"\x00\xffnot json\x80"
    rest_insert(emulator, b64(payload))
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        message = queue.get(timeout=5)
        assert message.body == payload
        assert message.content_type != "application/json"
        assert message.decode() == payload
        message.ack()
        queue.close()
    assert total_tasks(emulator) == 0


def test_url_safe_unpadded_base64_from_another_client_is_decoded(emulator):
    payload = b"\xfb\xff\xfe?>"
    rest_insert(emulator, base64.urlsafe_b64encode(payload).decode().rstrip("="))
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        message = queue.get(timeout=5)
        assert message.body == payload
        message.ack()
        queue.close()


#: payloadBase64 text that is not base64 at all.
NOT_BASE64 = "%% this is not base64 %%"


class _NotBase64Task(Task):
    """A task that the emulator renders with a payloadBase64 that is not base64.

    The emulator (rightly) refuses such a payload on insert, and always renders
    the payloads it holds as valid base64, so the only way to make a server
    send one is to change how it renders one task: after a normal insert, the
    task's class is swapped for this one (same slots, only ``resource``
    differs). This stands for a broken third-party server or proxy.
    """

    __slots__ = ()

    def resource(self, queue_name: str, now: int, with_payload: bool = True) -> dict[str, Any]:
        resource = super().resource(queue_name, now, with_payload)
        if with_payload:
            resource["payloadBase64"] = NOT_BASE64
        return resource


@pytest.mark.emulator_only(
    "only a broken server sends a payload that is not base64: one is made by breaking a task "
    "inside the emulator's model (test_an_empty_payload_is_empty_bytes runs on both servers)"
)
def test_an_unreadable_payload_is_raw_bytes_and_never_stops_a_consumer(emulator):
    broken = emulator.service.insert(PROJECT, "default", {"payloadBase64": b64(b"ignored")})
    emulator.service.queue(PROJECT, "default").tasks[broken["id"]].__class__ = _NotBase64Task
    assert consume_all_payloads(emulator) == [NOT_BASE64.encode(), {"after": "the bad ones"}]


def test_an_empty_payload_is_empty_bytes_and_never_stops_a_consumer(emulator):
    rest_insert(emulator, "")
    assert consume_all_payloads(emulator) == [b"", {"after": "the bad ones"}]


def consume_all_payloads(emulator: Any) -> list[Any]:
    """Publish one kombu message behind the tasks already queued, consume
    them all, and give their bodies (the kombu one decoded from JSON)."""
    with connect(emulator) as connection:
        connection.SimpleQueue("default").put({"after": "the bad ones"})

        received = []

        def on_message(body, message):
            received.append(message.body)
            message.ack()

        with Consumer(connection, Queue("default"), callbacks=[on_message]):
            for _ in range(2):
                connection.drain_events(timeout=5)
    assert total_tasks(emulator) == 0
    return [*received[:-1], json.loads(received[-1])]
