"""The seed article's examples: a SimpleQueue, an exchange with a consumer, and
tasks that kombu did not put there (raw JSON, bytes, other base64), delivered raw."""

from __future__ import annotations

import base64
import json
import logging
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


def test_json_nested_deeper_than_python_parses_is_delivered_as_bytes(emulator):
    payload = b"[" * 50_000 + b"]" * 50_000
    rest_insert(emulator, b64(payload))
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        message = queue.get(timeout=5)
        assert message.body == payload
        assert message.content_type == "application/data"  # as any payload that is not JSON
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


def _broken(**changes: Any) -> dict[str, Any]:
    """kombu's envelope of ``{}``, with ``changes`` (``properties`` replaced whole)."""
    envelope = {
        "body": base64.b64encode(b"{}").decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {},
        "properties": {"body_encoding": "base64", "delivery_mode": 2},
    }
    envelope.update({key.replace("_", "-"): value for key, value in changes.items()})
    return envelope


#: Envelopes kombu cannot make a message of, as another producer might write them.
BROKEN_ENVELOPES = {
    "body not base64": _broken(body="not base64!!"),
    "unknown body_encoding": _broken(properties={"body_encoding": "rot13"}),
    "body_encoding not text": _broken(properties={"body_encoding": 64}),
    "body not text": _broken(body=5),
    "headers not a mapping": _broken(headers=["x-retries"]),
    "content type not text": _broken(content_type=["application/json"]),
    "delivery_info not a mapping": _broken(properties={"delivery_info": "default"}),
}


@pytest.mark.parametrize("envelope", BROKEN_ENVELOPES.values(), ids=BROKEN_ENVELOPES.keys())
def test_an_envelope_kombu_cannot_read_is_delivered_raw_with_one_warning(emulator, caplog, envelope):
    # It raised out of drain_events on every consumer, the task held by each
    # until its connection closed, never delivered.
    payload = json.dumps(envelope).encode()
    task = rest_insert(emulator, b64(payload))
    rest_insert(emulator, b64(b'{"fine": 1}'))
    received: list[Any] = []
    caplog.set_level(logging.WARNING, logger="kombu_appengine.transport.codec")

    with (
        connect(emulator, num_tasks=1) as connection,
        Consumer(connection, [Queue("default")], callbacks=[lambda body, message: received.append(message)]),
    ):
        poisoned = 0
        for _ in range(3):  # the poison task, the fine one, the poison task again
            connection.drain_events(timeout=5)
            message = received[-1]
            if message.body != payload:
                message.ack()
                continue
            poisoned += 1
            assert message.decode() == envelope
            # Given back once (delivered again, not warned about again), then rejected.
            message.requeue() if poisoned == 1 else message.reject()

    assert poisoned == 2
    assert total_tasks(emulator) == 0
    warnings = [record.getMessage() for record in caplog.records if record.name.endswith(".codec")]
    assert len(warnings) == 1, warnings
    assert task["id"] in warnings[0]
    assert "'default'" in warnings[0]


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
