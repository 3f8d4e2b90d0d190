"""Consumers as kombu expects them: basic_get, drain_events, no_ack, prefetch,
cancel, delivery tags; two consumers at once, and acks from another thread."""

from __future__ import annotations

import contextlib
import gc
import socket
import threading
import time
import warnings
from queue import Empty
from typing import Any

import pytest
from kombu import Consumer, Producer, Queue

from tests.support.helpers import TEST_QUEUES
from tests.support.transport import connect, listed, prefill, total_tasks


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


# -- two consumers -----------------------------------------------------------


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
    # Each holds its first message until the other has one too: otherwise
    # one consumer may drain the queue before the other has started.
    both_started = threading.Barrier(2, timeout=30)

    def consume(name: str) -> None:
        try:
            with connect(emulator, num_tasks=5) as connection:
                queue = connection.SimpleQueue("default")
                while True:
                    try:
                        # A slow first lease is no reason to stop: only a queue found empty is.
                        message = queue.get(timeout=0.5 if received[name] else 30)
                    except Empty:
                        break
                    received[name].append(message.payload["n"])
                    if len(received[name]) == 1:
                        both_started.wait()
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
        channel.flush()
        assert total_tasks(emulator) == 0

        Producer(channel).publish({"n": 2}, routing_key="default")
        auto = channel.basic_get("default", no_ack=True)
        assert auto.payload == {"n": 2}
        channel.flush()
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
        assert time.monotonic() - started >= 0.3


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
            connection.drain_events(timeout=5)
            with pytest.raises(socket.timeout):
                connection.drain_events(timeout=0.2)  # no room for a third
            leased = [task for task in listed(emulator) if task["leaseTimestamp"] != "0"]
            assert len(leased) == 2
            assert len(received) == 2
            for message in received:
                message.ack()


def test_prefetch_limit_counts_every_queue_together(emulator):
    for queue in TEST_QUEUES:
        prefill(emulator, 5, queue)
    with connect(emulator, num_tasks=10) as connection:
        received = []
        consumer = Consumer(
            connection.default_channel,
            [Queue(queue) for queue in TEST_QUEUES],
            callbacks=[lambda body, message: received.append(message)],
        )
        consumer.qos(prefetch_count=4)
        with consumer:
            for _ in range(3):
                connection.drain_events(timeout=5)
            leased = [
                task
                for queue in TEST_QUEUES
                for task in listed(emulator, queue)
                if task["leaseTimestamp"] != "0"
            ]
            assert len(received) == 3
            assert len(leased) <= 4
            for message in received:
                message.ack()


def test_a_requeue_whose_release_fails_still_frees_its_prefetch_slot(emulator):
    prefill(emulator, 2)
    with connect(emulator, num_tasks=1, request_retries=0) as connection:
        received = []
        consumer = Consumer(
            connection.default_channel,
            Queue("default"),
            callbacks=[lambda body, message: received.append(message)],
        )
        consumer.qos(prefetch_count=1)
        with consumer:
            connection.drain_events(timeout=5)
            # The release fails once on the network, sent alone or in a batch.
            emulator.inject_failures(1, status=503, path_contains="newLeaseSeconds=0")
            emulator.inject_failures(1, status=503, path_contains="/batch")
            with contextlib.suppress(*connection.connection_errors):
                received[0].requeue()
            connection.drain_events(timeout=5)
            assert len(received) == 2
            received[1].ack()


def test_cancelling_the_last_consumer_releases_its_buffered_tasks(emulator):
    prefill(emulator, 5)
    with connect(emulator, num_tasks=5) as connection:
        got = []
        consumer = connection.Consumer(
            Queue("default"), callbacks=[lambda body, message: got.append(message)]
        )
        consumer.consume()
        # Leases of one task, then of two: one of those waits in the buffer.
        connection.drain_events(timeout=5)
        connection.drain_events(timeout=5)
        assert len(got) == 2
        assert sum(task["leaseTimestamp"] != "0" for task in listed(emulator)) == 3
        consumer.cancel()
        # The connection is still open: the delivered messages keep their
        # leases, the one never delivered is free for others at once.
        leases = {task["id"]: task["leaseTimestamp"] for task in listed(emulator)}
        for message in got:
            assert leases.pop(message.delivery_info["task_id"]) != "0"
        assert list(leases.values()) == ["0"] * 3
        for message in got:
            message.ack()
    assert total_tasks(emulator) == 3


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


def test_a_closed_connection_leaves_no_socket_open(emulator):
    prefill(emulator, 3)
    # Other tests' garbage (their unclosed sockets) is collected first, so
    # that what is collected in the block below is this test's own.
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        connection = connect(emulator, num_tasks=2)
        queue = connection.SimpleQueue("default")
        for _ in range(3):
            queue.get(timeout=5).ack()
        queue.close()
        connection.close()
        del queue, connection
        gc.collect()
    assert [str(warning.message) for warning in caught if warning.category is ResourceWarning] == []
    assert total_tasks(emulator) == 0
