"""The kombu transport against a real emulator, over real HTTP.

Every test talks to an in-process :class:`~kombu_appengine.emulator.Emulator`
through kombu's public API, and checks the outcome in the emulator's own
state (``emulator.service``), never through the transport's internals.
Where a test needs time to pass (a lease to end), it polls with a deadline.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from queue import Empty
from typing import Any

import google.oauth2.credentials
import httplib2
import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from kombu_appengine.emulator import QueueConfig
from kombu_appengine.emulator.errors import ApiError
from kombu_appengine.emulator.model import Task
from kombu_appengine.errors import (
    AuthenticationFailed,
    ConfigurationError,
    PayloadTooLarge,
    QueueNotFound,
    TaskQueueChannelError,
    TaskQueueConnectionError,
)
from kombu_appengine.names import MAX_QUEUE_NAME, pull_queue_name
from kombu_appengine.transport import Transport
from tests.support.helpers import b64, wait_for

#: The project the transport uses with an emulator when none is given.
PROJECT = "emulator"
#: The environment variable that points connections at an emulator.
EMULATOR_HOST_ENV = "TASKQUEUE_EMULATOR_HOST"


@pytest.fixture(autouse=True)
def _no_emulator_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test names its emulator itself; a developer's own setting must not leak in."""
    monkeypatch.delenv(EMULATOR_HOST_ENV, raising=False)


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


def drain(simple: Any, timeout: float = 2.0) -> list[Any]:
    """Every message a SimpleQueue gives until one ``get`` times out."""
    messages = []
    while True:
        try:
            messages.append(simple.get(timeout=timeout))
        except Empty:
            return messages


# -- the seed article's examples ------------------------------------------


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


def test_unreadable_and_empty_payloads_are_raw_bytes_and_never_stop_a_consumer(emulator):
    broken = emulator.service.insert(PROJECT, "default", {"payloadBase64": b64(b"ignored")})
    emulator.service.queue(PROJECT, "default").tasks[broken["id"]].__class__ = _NotBase64Task
    rest_insert(emulator, "")
    with connect(emulator) as connection:
        connection.SimpleQueue("default").put({"after": "the bad ones"})

        received = []

        def on_message(body, message):
            received.append(message.body)
            message.ack()

        with Consumer(connection, Queue("default"), callbacks=[on_message]):
            for _ in range(3):
                connection.drain_events(timeout=5)
    assert received[0] == NOT_BASE64.encode()
    assert received[1] == b""
    assert json.loads(received[2]) == {"after": "the bad ones"}
    assert total_tasks(emulator) == 0


# -- message formats ----------------------------------------------------------


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


# -- delivery tags and redelivery -------------------------------------------


def test_every_delivery_has_a_fresh_tag_and_redelivered_says_whether_leased_before(emulator):
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        queue.put({"n": 1})
        first = queue.get(timeout=5)
        assert first.delivery_info["redelivered"] is False
        first.requeue()
        second = queue.get(timeout=5)
        assert second.payload == {"n": 1}
        assert second.delivery_info["redelivered"] is True
        assert second.delivery_tag != first.delivery_tag
        second.requeue()
        third = queue.get(timeout=5)
        assert len({first.delivery_tag, second.delivery_tag, third.delivery_tag}) == 3
        third.ack()
        queue.close()
    assert total_tasks(emulator) == 0


# -- two consumers, reject, ack, close ---------------------------------------


def test_two_consumers_never_hold_the_same_task(emulator):
    prefill(emulator, 12)
    with connect(emulator, num_tasks=3) as one, connect(emulator, num_tasks=3) as two:
        queue_one, queue_two = one.SimpleQueue("default"), two.SimpleQueue("default")
        held: dict[str, list[int]] = {"one": [], "two": []}
        for _ in range(6):
            held["one"].append(queue_one.get(timeout=5).payload["n"])
            held["two"].append(queue_two.get(timeout=5).payload["n"])
        with pytest.raises(Empty):
            queue_one.get(block=False)
        with pytest.raises(Empty):
            queue_two.get(block=False)
        assert not set(held["one"]) & set(held["two"])
        assert sorted(held["one"] + held["two"]) == list(range(12))
        assert total_tasks(emulator) == 12
        queue_one.close()
        queue_two.close()


def test_two_consumers_in_threads_get_every_task_exactly_once(emulator):
    prefill(emulator, 60)
    received: dict[str, list[int]] = {"one": [], "two": []}
    errors: list[BaseException] = []

    def consume(name: str) -> None:
        try:
            with connect(emulator, num_tasks=5) as connection:
                queue = connection.SimpleQueue("default")
                while True:
                    try:
                        message = queue.get(timeout=0.5)
                    except Empty:
                        break
                    received[name].append(message.payload["n"])
                    message.ack()
                queue.close()
        except BaseException as error:  # noqa: BLE001 - reported to the test thread
            errors.append(error)

    threads = [threading.Thread(target=consume, args=(name,)) for name in received]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert received["one"]
    assert received["two"]
    assert sorted(received["one"] + received["two"]) == list(range(60))
    assert total_tasks(emulator) == 0


def test_reject_with_requeue_releases_the_lease_without_a_copy(emulator):
    with connect(emulator) as one, connect(emulator) as two:
        one.SimpleQueue("default").put({"n": 1})
        queue_one, queue_two = one.SimpleQueue("default"), two.SimpleQueue("default")
        message = queue_one.get(timeout=5)
        assert only_task(emulator)["retry_count"] == 1
        with pytest.raises(Empty):
            queue_two.get(block=False)

        message.reject(requeue=True)
        task = only_task(emulator)
        assert task["leaseTimestamp"] == "0"
        assert task["retry_count"] == 1
        assert total_tasks(emulator) == 1

        again = queue_two.get(block=False)
        assert again.payload == {"n": 1}
        assert again.delivery_info["redelivered"] is True
        assert only_task(emulator)["retry_count"] == 2
        assert total_tasks(emulator) == 1
        again.ack()
        queue_one.close()
        queue_two.close()
    assert total_tasks(emulator) == 0


def test_reject_without_requeue_deletes(emulator):
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        message.reject()
        assert total_tasks(emulator) == 0
        with pytest.raises(Empty):
            queue.get(block=False)
        queue.close()


def test_ack_deletes_the_task(emulator):
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        queue.put({"n": 1})
        name = listed(emulator)[0]["id"]
        queue.get(timeout=5).ack()
        with pytest.raises(ApiError) as gone:
            emulator.service.get_task(PROJECT, "default", name)
        assert gone.value.code == 404
        queue.close()


def test_ack_or_requeue_of_a_task_gone_elsewhere_is_not_an_error(emulator):
    prefill(emulator, 2)
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        first, second = queue.get(timeout=5), queue.get(timeout=5)
        for task in listed(emulator):
            emulator.service.delete_task(PROJECT, "default", task["id"])
        first.ack()
        second.requeue()
        assert total_tasks(emulator) == 0
        queue.close()


def test_close_releases_buffered_tasks_at_once(emulator):
    prefill(emulator, 5)
    with connect(emulator, num_tasks=5, lease_secs=600) as one:
        queue = one.SimpleQueue("default")
        first = queue.get(timeout=5)
        first.ack()
        assert all(task["leaseTimestamp"] != "0" for task in listed(emulator))
        queue.close()
    assert [task["leaseTimestamp"] for task in listed(emulator)] == ["0"] * 4

    with connect(emulator, num_tasks=5) as two:
        queue = two.SimpleQueue("default")
        before = emulator.requests
        rest = [queue.get(block=False) for _ in range(4)]
        assert emulator.requests - before == 1  # one lease brought back all four
        assert sorted(message.payload["n"] for message in rest) == [1, 2, 3, 4]
        for message in rest:
            message.ack()
        queue.close()
    assert total_tasks(emulator) == 0


def test_close_releases_unacked_messages_at_once(emulator):
    prefill(emulator, 2)
    with connect(emulator, num_tasks=1, lease_secs=600) as one:
        queue = one.SimpleQueue("default")
        held = [queue.get(timeout=5), queue.get(timeout=5)]
        assert {message.payload["n"] for message in held} == {0, 1}
        queue.close()
    assert [task["leaseTimestamp"] for task in listed(emulator)] == ["0", "0"]
    with connect(emulator) as two:
        queue = two.SimpleQueue("default")
        again = [queue.get(block=False), queue.get(block=False)]
        assert {message.payload["n"] for message in again} == {0, 1}
        assert all(message.delivery_info["redelivered"] for message in again)
        for message in again:
            message.ack()
        queue.close()
    assert total_tasks(emulator) == 0


def test_release_of_a_connection_releases_what_it_holds(emulator):
    prefill(emulator, 3)
    connection = connect(emulator, num_tasks=3, lease_secs=600)
    queue = connection.SimpleQueue("default")
    queue.get(timeout=5)
    connection.release()
    assert [task["leaseTimestamp"] for task in listed(emulator)] == ["0"] * 3


# -- size and purge ---------------------------------------------------------


def test_size_and_queue_declare_count_every_task(emulator):
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        assert queue.qsize() == 0
        for number in range(3):
            queue.put({"n": number})
        assert queue.qsize() == 3
        declared = connection.default_channel.queue_declare("default", passive=True)
        assert declared.message_count == 3
        held = queue.get(timeout=5)
        assert queue.qsize() == 3  # leased tasks are still in the queue
        held.ack()
        assert queue.qsize() == 2
        queue.close()


def test_purge_returns_the_count_and_empties_the_queue(emulator):
    prefill(emulator, 7)
    with connect(emulator) as holder, connect(emulator) as connection:
        # A task leased by another consumer is purged too.
        holder_queue = holder.SimpleQueue("default")
        holder_queue.get(timeout=5)
        queue = connection.SimpleQueue("default")
        assert queue.clear() == 7
        assert total_tasks(emulator) == 0
        assert connection.default_channel.queue_purge("default") == 0
        with pytest.raises(Empty):
            queue.get(block=False)
        queue.close()
        holder_queue.close()


def test_purge_of_more_than_one_page(emulator):
    prefill(emulator, 230)
    with connect(emulator) as connection:
        assert connection.default_channel.queue_purge("default") == 230
    assert total_tasks(emulator) == 0


def test_purge_of_a_queue_on_shared_queue_takes_its_held_tasks_and_no_others(emulator):
    with (
        connect(emulator, shared_queue="pull-queue") as holder,
        connect(emulator, shared_queue="pull-queue") as connection,
    ):
        mine, theirs = connection.SimpleQueue("mine.q"), connection.SimpleQueue("theirs.q")
        for number in range(5):
            mine.put({"n": number})
            theirs.put({"n": number})
        holder_queue = holder.SimpleQueue("mine.q")
        held = holder_queue.get(timeout=5)  # held (and buffered) by another consumer
        assert mine.clear() == 5
        assert [task["tag"] for task in listed(emulator, "pull-queue")] == ["theirs.q"] * 5
        held.ack()  # the task is gone already: not an error
        for simple in (mine, theirs, holder_queue):
            simple.close()


# -- queue names: shared_queue, translation, hrd ----------------------------


def test_queue_without_pull_queue_lives_as_tagged_tasks_on_shared_queue(emulator):
    with connect(emulator, shared_queue="pull-queue") as connection:
        reply = connection.SimpleQueue("celery.reply.abc123")
        reply.put({"result": 42})
        items = listed(emulator, "pull-queue")
        assert [task.get("tag") for task in items] == ["celery.reply.abc123"]
        assert total_tasks(emulator, "default") == 0
        assert reply.qsize() == 1
        message = reply.get(timeout=5)
        assert message.payload == {"result": 42}
        assert message.delivery_info["routing_key"] == "celery.reply.abc123"
        message.ack()
        assert total_tasks(emulator, "pull-queue") == 0
        reply.close()


def test_two_kombu_queues_on_one_shared_queue_do_not_see_each_other(emulator):
    with connect(emulator, shared_queue="pull-queue") as connection:
        first = connection.SimpleQueue("first_queue.x")
        second = connection.SimpleQueue("second_queue.y")
        first.put({"for": "first", "n": 1})
        second.put({"for": "second"})
        first.put({"for": "first", "n": 2})
        assert first.qsize() == 2
        assert second.qsize() == 1

        got_first = [first.get(timeout=5), first.get(timeout=5)]
        assert [message.payload for message in got_first] == [
            {"for": "first", "n": 1},
            {"for": "first", "n": 2},
        ]
        with pytest.raises(Empty):
            first.get(block=False)
        got_second = second.get(timeout=5)
        assert got_second.payload == {"for": "second"}
        with pytest.raises(Empty):
            second.get(block=False)

        for message in got_first:
            message.ack()
        got_second.requeue()
        second_on_shared = listed(emulator, "pull-queue")
        assert [task["tag"] for task in second_on_shared] == ["second_queue.y"]
        assert second.clear() == 1
        assert total_tasks(emulator, "pull-queue") == 0
        first.close()
        second.close()


def test_a_queue_that_is_a_pull_queue_is_used_directly_even_with_shared_queue(emulator):
    with connect(emulator, shared_queue="pull-queue") as connection:
        connection.SimpleQueue("other").put({"n": 1})
    assert total_tasks(emulator, "other") == 1
    assert total_tasks(emulator, "pull-queue") == 0
    assert "tag" not in listed(emulator, "other")[0]


def test_unknown_queue_without_shared_queue_fails_naming_queue_project_and_remedy(emulator):
    with connect(emulator) as connection:
        with pytest.raises(QueueNotFound) as failure:
            connection.SimpleQueue("no_such.queue")
        text = str(failure.value)
        assert "no_such.queue" in text
        assert repr(PROJECT) in text
        assert "queue.yaml" in text
        assert "shared_queue" in text
        assert isinstance(failure.value, tuple(connection.channel_errors))
        with pytest.raises(tuple(connection.channel_errors)) as passive:
            connection.default_channel.queue_declare("no_such.queue", passive=True)
        assert "no_such.queue" in str(passive.value)


def test_hrd_project_sends_the_s_tilde_prefix(emulator):
    # The emulator treats s~app and app as one project; a fault that only a
    # request whose path names s~my-app can meet shows what was sent.
    emulator.inject_failures(1, status=400, reason="invalid", path_contains="/projects/s~my-app/")
    with connect(emulator, project_name="my-app", hrd_project=True) as connection:
        channel = connection.default_channel
        with pytest.raises(TaskQueueChannelError, match="Injected failure"):
            channel.queue_declare("default")
        queue = connection.SimpleQueue("default")
        queue.put({"n": 1})
        assert total_tasks(emulator, project="my-app") == 1
        message = queue.get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()
        queue.close()
    assert total_tasks(emulator, project="my-app") == 0


def test_without_hrd_project_the_bare_project_is_sent(emulator):
    emulator.inject_failures(1, status=400, reason="invalid", path_contains="/projects/my-app/")
    with (
        connect(emulator, project_name="my-app") as connection,
        pytest.raises(TaskQueueChannelError, match="Injected failure"),
    ):
        connection.default_channel.queue_declare("default")


def test_pull_queue_name_translation():
    assert pull_queue_name("my_app.tasks") == "my-app-tasks"
    assert pull_queue_name("celery.pidbox") == "celery-pidbox"
    assert pull_queue_name("already-legal-Name-09") == "already-legal-Name-09"
    long_one, long_two = "q" * 100 + ".one", "q" * 100 + ".two"
    translated = {pull_queue_name(long_one), pull_queue_name(long_two)}
    assert len(translated) == 2
    assert all(len(name) <= MAX_QUEUE_NAME for name in translated)
    assert all(
        set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
        for name in translated
    )
    assert len(pull_queue_name("x" * 100)) == 100
    assert pull_queue_name("x" * 100) == "x" * 100
    with pytest.raises(ValueError, match="empty"):
        pull_queue_name("")


def test_kombu_queue_names_reach_their_translated_pull_queue(emulator):
    emulator.declare_queue("my-app-tasks")
    long_name = "celery." + "long_" * 30
    emulator.declare_queue(pull_queue_name(long_name))
    with connect(emulator) as connection:
        connection.SimpleQueue("my_app.tasks").put({"n": 1})
        connection.SimpleQueue(long_name).put({"n": 2})
        assert total_tasks(emulator, "my-app-tasks") == 1
        assert total_tasks(emulator, pull_queue_name(long_name)) == 1
        message = connection.SimpleQueue("my_app.tasks").get(timeout=5)
        assert message.payload == {"n": 1}
        assert message.delivery_info["routing_key"] == "my_app.tasks"
        message.ack()


# -- retries and errors -------------------------------------------------------


def test_lease_and_insert_succeed_through_two_server_failures_each(emulator):
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        emulator.inject_failures(2, status=503, method="POST", path_contains="/tasks?")
        before = emulator.requests
        queue.put({"n": 1})
        assert emulator.requests - before == 3
        assert total_tasks(emulator) == 1

        emulator.inject_failures(2, status=503, path_contains="/tasks/lease")
        before = emulator.requests
        message = queue.get(timeout=5)
        assert emulator.requests - before == 3
        assert message.payload == {"n": 1}

        emulator.inject_failures(2, status=429, reason="rateLimitExceeded", method="DELETE")
        before = emulator.requests
        message.ack()
        assert emulator.requests - before == 3
        assert total_tasks(emulator) == 0
        queue.close()


def test_rate_limit_403_is_retried(emulator):
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        emulator.inject_failures(1, status=403, reason="userRateLimitExceeded", method="POST")
        before = emulator.requests
        queue.put({"n": 1})
        assert emulator.requests - before == 2
        assert total_tasks(emulator) == 1
        queue.close()


def test_insert_retried_after_a_dropped_connection_makes_no_copy(emulator):
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        emulator.inject_failures(1, method="POST", path_contains="/tasks?", reset=True)
        before = emulator.requests
        queue.put({"n": 1})
        assert emulator.requests - before == 2
        assert total_tasks(emulator) == 1
        queue.close()


def test_insert_whose_answer_was_lost_after_it_took_effect_makes_no_copy(emulator):
    # The emulator's faults strike before a request is carried out; here the
    # insert must take effect and its answer be lost, as when a connection
    # drops on the way back. Wrap the emulator's dispatcher so that the first
    # insert is carried out and then fails the connection.
    real_dispatch = emulator.api.dispatch
    lost = []

    def dispatch_then_drop(method: str, target: str, *args: Any) -> Any:
        response = real_dispatch(method, target, *args)
        if method == "POST" and target.split("?")[0].endswith("/tasks") and not lost:
            lost.append(target)
            raise ConnectionResetError("answer lost on the way back")
        return response

    emulator.api.dispatch = dispatch_then_drop
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        queue.put({"n": 1})
        assert lost
        assert total_tasks(emulator) == 1
        message = queue.get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()
        queue.close()


def test_more_failures_than_max_retries_is_a_connection_error(emulator):
    with connect(emulator, max_retries=2) as connection:
        queue = connection.SimpleQueue("default")
        emulator.inject_failures(3, status=503, method="POST", path_contains="/tasks?")
        with pytest.raises(TaskQueueConnectionError) as failure:
            queue.put({"n": 1})
        assert isinstance(failure.value, tuple(connection.connection_errors))
        assert not isinstance(failure.value, tuple(connection.channel_errors))
        assert "'default'" in str(failure.value)
        assert total_tasks(emulator) == 0
        queue.put({"n": 2})  # the faults are used up: the next call works
        assert total_tasks(emulator) == 1
        queue.close()


def test_unreachable_server_is_a_connection_error(emulator):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    connection = Connection(
        transport="kombu_appengine:Transport",
        transport_options={"api_endpoint": f"http://127.0.0.1:{dead_port}", "max_retries": 1},
    )
    with pytest.raises(tuple(connection.connection_errors)):
        connection.default_channel.queue_declare("default")
    connection.release()


def test_client_errors_are_not_retried(emulator):
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        emulator.inject_failures(1, status=400, reason="invalid", method="POST", path_contains="/tasks?")
        before = emulator.requests
        with pytest.raises(TaskQueueChannelError):
            queue.put({"n": 1})
        assert emulator.requests - before == 1
        queue.close()


def test_payload_over_one_mebibyte_is_refused_on_put_naming_the_queue(emulator):
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        with pytest.raises(PayloadTooLarge) as failure:
            queue.put("x" * (1024 * 1024))
        assert "'default'" in str(failure.value)
        assert total_tasks(emulator) == 0
        queue.close()


def test_raw_payload_of_exactly_one_mebibyte_fits(emulator):
    with connect(emulator, message_format="raw") as connection:
        queue = connection.SimpleQueue("default")
        body = b"y" * (1024 * 1024)
        queue.put(body, serializer=None, content_type="application/data", content_encoding="binary")
        with pytest.raises(PayloadTooLarge):
            queue.put(
                body + b"y", serializer=None, content_type="application/data", content_encoding="binary"
            )
        message = queue.get(timeout=5)
        assert message.body == body
        message.ack()
        queue.close()


# -- kombu's expectations of a transport ------------------------------------


def test_basic_get(emulator):
    with connect(emulator) as connection:
        channel = connection.channel()
        channel.queue_declare("default")
        assert channel.basic_get("default") is None
        Producer(channel).publish({"n": 1}, routing_key="default")
        message = channel.basic_get("default")
        assert message.payload == {"n": 1}
        assert channel.basic_get("default") is None
        message.ack()
        assert total_tasks(emulator) == 0

        Producer(channel).publish({"n": 2}, routing_key="default")
        auto = channel.basic_get("default", no_ack=True)
        assert auto.payload == {"n": 2}
        assert total_tasks(emulator) == 0
        channel.close()


def test_drain_events_times_out_on_an_empty_queue(emulator):
    with (
        connect(emulator) as connection,
        Consumer(connection, Queue("default"), callbacks=[lambda body, message: None]),
    ):
        started = time.monotonic()
        with pytest.raises(socket.timeout):
            connection.drain_events(timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 3


def test_consumer_with_no_ack_deletes_on_delivery(emulator):
    prefill(emulator, 2)
    received = []
    with (
        connect(emulator) as connection,
        Consumer(
            connection, Queue("default"), no_ack=True, callbacks=[lambda body, message: received.append(body)]
        ),
    ):
        connection.drain_events(timeout=5)
        connection.drain_events(timeout=5)
    assert received == [{"n": 0}, {"n": 1}]
    assert total_tasks(emulator) == 0


def test_prefetch_limit_caps_the_lease(emulator):
    prefill(emulator, 10)
    with connect(emulator, num_tasks=10) as connection:
        channel = connection.default_channel
        received = []
        consumer = Consumer(
            channel, Queue("default"), callbacks=[lambda body, message: received.append(message)]
        )
        consumer.qos(prefetch_count=2)
        with consumer:
            connection.drain_events(timeout=5)
            leased = [task for task in listed(emulator) if task["leaseTimestamp"] != "0"]
            assert len(leased) == 2
            for message in received:
                message.ack()


# -- leases: expiry of buffered tasks, extension of delivered ones ----------


def test_buffered_task_whose_lease_ended_is_not_delivered(emulator):
    prefill(emulator, 2)
    with connect(emulator, num_tasks=2, lease_secs=2) as connection:
        queue = connection.SimpleQueue("default")
        first = queue.get(timeout=5)
        assert first.payload == {"n": 0}
        second_name = listed(emulator)[1]["id"]

        def second_lease_ended() -> bool:
            return emulator.service.get_task(PROJECT, "default", second_name)["leaseTimestamp"] == "0"

        wait_for(second_lease_ended, timeout=10, what="the buffered task's lease to end")
        second = queue.get(timeout=5)
        assert second.payload == {"n": 1}
        assert second.delivery_info["redelivered"] is True
        assert emulator.service.get_task(PROJECT, "default", second_name)["retry_count"] == 2
        first.ack()
        second.ack()
        queue.close()
    assert total_tasks(emulator) == 0


def test_lease_of_an_unacked_message_is_extended_while_its_consumer_lives(emulator):
    with connect(emulator, lease_secs=2) as holder, connect(emulator, lease_secs=2) as other:
        holder_queue, other_queue = holder.SimpleQueue("default"), other.SimpleQueue("default")
        holder_queue.put({"long": "job"})
        message = holder_queue.get(timeout=5)
        first_lease = int(only_task(emulator)["leaseTimestamp"])
        started = time.monotonic()
        while time.monotonic() - started < 5:  # over twice the lease
            with pytest.raises(Empty):
                other_queue.get(block=False)
            assert only_task(emulator)["leaseTimestamp"] != "0"
            time.sleep(0.1)
        task = only_task(emulator)
        assert int(task["leaseTimestamp"]) > first_lease + 2_000_000
        assert task["retry_count"] == 1
        message.ack()
        assert total_tasks(emulator) == 0
        holder_queue.close()
        other_queue.close()


# -- threads ------------------------------------------------------------------


def test_acks_from_another_thread(emulator):
    prefill(emulator, 20)
    acked: list[int] = []
    errors: list[BaseException] = []
    handed_over: list[Any] = []
    ready = threading.Condition()

    def acker() -> None:
        try:
            while len(acked) < 20:
                with ready:
                    ready.wait_for(lambda: handed_over, timeout=10)
                    batch = list(handed_over)
                    handed_over.clear()
                if not batch:
                    raise AssertionError("no message handed over in 10 s")
                for message in batch:
                    message.ack()
                    acked.append(message.payload["n"])
        except BaseException as error:  # noqa: BLE001 - reported to the test thread
            errors.append(error)

    with connect(emulator, num_tasks=4) as connection:
        queue = connection.SimpleQueue("default")
        thread = threading.Thread(target=acker)
        thread.start()
        for _ in range(20):
            message = queue.get(timeout=5)
            with ready:
                handed_over.append(message)
                ready.notify()
        thread.join(timeout=20)
        assert not thread.is_alive()
        assert not errors, errors
        queue.close()
    assert sorted(acked) == list(range(20))
    assert total_tasks(emulator) == 0


# -- configuration errors ---------------------------------------------------


def _transport_of(options: dict[str, Any]) -> Transport:
    connection = Connection(transport="kombu_appengine:Transport", transport_options=options)
    return connection.transport


def test_missing_project_name_without_an_emulator_is_a_clear_error(monkeypatch):
    monkeypatch.delenv(EMULATOR_HOST_ENV, raising=False)
    connection = Connection(transport="kombu_appengine:Transport")
    with pytest.raises(ConfigurationError) as failure:
        connection.connect()
    text = str(failure.value)
    assert "project_name" in text
    assert EMULATOR_HOST_ENV in text


def test_emulator_from_the_environment_needs_no_project_or_credentials(emulator, monkeypatch):
    monkeypatch.setenv(EMULATOR_HOST_ENV, emulator.host)
    with Connection(
        transport="kombu_appengine:Transport", transport_options={"polling_interval": 0.05}
    ) as connection:
        queue = connection.SimpleQueue("default")
        queue.put({"via": "environment"})
        assert total_tasks(emulator) == 1
        queue.get(timeout=5).ack()
        queue.close()
    assert total_tasks(emulator) == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("num_tasks", 0),
        ("num_tasks", 1001),
        ("num_tasks", "many"),
        ("lease_secs", "abc"),
        ("lease_secs", 0),
        ("message_format", "xml"),
        ("hrd_project", "maybe"),
        ("shared_queue", ""),
        ("polling_interval", -1),
        ("polling_interval", "soon"),
        ("max_retries", -1),
    ],
)
def test_bad_option_values_are_clear_errors_naming_the_option(emulator, option, value):
    with pytest.raises(ConfigurationError) as failure:
        _transport_of({"api_endpoint": emulator.url, option: value})
    text = str(failure.value)
    assert option in text
    assert repr(value) in text
    assert isinstance(failure.value, ValueError)


def test_good_option_values_given_as_strings_are_accepted(emulator):
    transport = _transport_of(
        {
            "api_endpoint": emulator.url,
            "num_tasks": "7",
            "lease_secs": "30",
            "hrd_project": "true",
            "project_name": "app",
        }
    )
    assert (transport.settings.num_tasks, transport.settings.lease_secs) == (7, 30)
    assert transport.settings.project == "s~app"


def test_polling_interval_reaches_the_transport(emulator):
    assert _transport_of({"api_endpoint": emulator.url, "polling_interval": "0.25"}).polling_interval == 0.25
    assert _transport_of({"api_endpoint": emulator.url}).polling_interval == 1.0


def test_a_missing_shared_queue_is_named_as_such(emulator):
    with (
        connect(emulator, shared_queue="no-such-shared") as connection,
        pytest.raises(QueueNotFound) as failure,
    ):
        connection.SimpleQueue("reply.queue").put({"n": 1})
    text = str(failure.value)
    assert "shared_queue 'no-such-shared' does not exist" in text
    assert "queue.yaml" in text


# -- cost -------------------------------------------------------------------


@pytest.mark.parametrize("num_tasks", [1, 5, 10])
def test_http_calls_per_consumed_message(emulator, num_tasks):
    count = 30
    prefill(emulator, count)
    with connect(emulator, num_tasks=num_tasks) as connection:
        queue = connection.SimpleQueue("default")
        before = emulator.requests
        for _ in range(count):
            queue.get(block=False).ack()
        calls = emulator.requests - before
        queue.close()
    assert calls / count <= 1 + 1 / num_tasks
    assert total_tasks(emulator) == 0


# -- cancel and the lease keeper ----------------------------------------------


def test_cancelling_the_last_consumer_releases_its_buffered_tasks(emulator):
    prefill(emulator, 5)
    with connect(emulator, num_tasks=5) as connection:
        got = []
        consumer = connection.Consumer(
            Queue("default"), callbacks=[lambda body, message: got.append(message)]
        )
        consumer.consume()
        connection.drain_events(timeout=5)
        assert len(got) == 1
        assert all(task["leaseTimestamp"] != "0" for task in listed(emulator))
        consumer.cancel()
        # The connection is still open: the delivered message keeps its
        # lease, the four never delivered are free for others at once.
        leases = {task["id"]: task["leaseTimestamp"] for task in listed(emulator)}
        held = got[0].delivery_info["task_id"]
        assert leases.pop(held) != "0"
        assert set(leases.values()) == {"0"}
        got[0].ack()
    assert total_tasks(emulator) == 4


def test_the_lease_keeper_never_renews_a_lease_given_back(emulator):
    prefill(emulator, 1)
    with connect(emulator, lease_secs=100) as connection:
        channel = connection.default_channel
        message = channel.basic_get("default")
        # Force the renewal point: pretend the lease is about to end.
        channel._unacked[message.delivery_tag].expires = time.monotonic()
        assert channel.extend_leases() == 1
        renewed = only_task(emulator)["leaseTimestamp"]
        assert renewed != "0"
        message.requeue()
        assert channel.extend_leases() == 0
        assert only_task(emulator)["leaseTimestamp"] == "0"


def test_a_queue_acl_refusal_is_an_authentication_error_naming_queue_yaml(make_emulator):
    guarded = QueueConfig("guarded", consumer_emails=["worker@example.com"])
    server = make_emulator(queues=[guarded], identities={"worker-token": "worker@example.com"})
    token = google.oauth2.credentials.Credentials(token="worker-token")
    with connect(server, credentials=token) as connection:
        queue = connection.SimpleQueue("guarded")
        with pytest.raises(AuthenticationFailed) as refused:
            queue.put({"n": 1})
        text = str(refused.value)
        assert "'guarded'" in text
        assert "writer_email" in text
        assert "queue.yaml" in text
        assert refused.value.status == 403
        assert isinstance(refused.value, tuple(connection.channel_errors))
        with pytest.raises(Empty):  # consuming is allowed: the queue is just empty
            queue.get(block=False)


def test_closing_releases_every_unacked_message_in_one_batch_call(emulator):
    prefill(emulator, 6)
    connection = connect(emulator, num_tasks=6)
    queue = connection.SimpleQueue("default")
    held = [queue.get(timeout=5) for _ in range(6)]
    assert len({message.delivery_tag for message in held}) == 6
    before = emulator.requests
    connection.close()
    assert emulator.requests - before == 1
    assert [task["leaseTimestamp"] for task in listed(emulator)] == ["0"] * 6


def test_a_release_that_fails_at_close_only_costs_the_lease_time(emulator, caplog):
    prefill(emulator, 3)
    connection = connect(emulator, num_tasks=3, max_retries=0)
    queue = connection.SimpleQueue("default")
    queue.get(timeout=5)  # one unacked, two buffered
    emulator.inject_failures(2, status=503, path_contains="/batch")
    connection.close()  # no error: nothing is lost
    assert "could not release 1 unacknowledged tasks" in caplog.text
    assert "could not release 2 buffered tasks" in caplog.text
    assert total_tasks(emulator) == 3
    assert all(task["leaseTimestamp"] != "0" for task in listed(emulator))
