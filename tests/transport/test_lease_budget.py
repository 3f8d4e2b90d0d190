"""Every lease counts toward the queue's ``task_retry_limit`` (``maxLeases``):
a connection must not spend leases on tasks it never delivers, or a queue
worked by short-lived connections loses tasks that were never run."""

from __future__ import annotations

import socket

import pytest
from kombu import Consumer, Queue

from kombu_appengine.emulator import QueueConfig
from tests.support.helpers import MakeEmulator, MakeServer, wait_for
from tests.support.transport import PROJECT, connect, listed, prefill, total_tasks


@pytest.mark.parametrize("get", ["consumer", "polling"])
def test_connections_that_each_take_one_message_deliver_every_task(make_server: MakeServer, get: str) -> None:
    # With task_retry_limit 2, a task leased twice without being delivered
    # is deleted by its third lease: before the fix, each connection leased
    # num_tasks tasks, delivered one and gave the rest back.
    server = make_server(queues=[QueueConfig("default", max_leases=2)])
    prefill(server, 5)
    delivered = []
    for _ in range(5):
        with connect(server, num_tasks=10) as connection:
            queue = connection.SimpleQueue("default")
            message = queue.get(timeout=5) if get == "consumer" else queue.get(block=False)
            delivered.append(message.payload["n"])
            message.ack()
            queue.close()
    assert sorted(delivered) == [0, 1, 2, 3, 4]
    assert total_tasks(server) == 0


def test_leases_grow_to_num_tasks_as_a_consumer_keeps_taking_messages(make_server: MakeServer) -> None:
    server = make_server(queues=["default"])
    prefill(server, 40)

    def leased() -> int:
        return sum(1 for task in listed(server) if task["leaseTimestamp"] != "0")

    with connect(server, num_tasks=8) as connection:
        queue = connection.SimpleQueue("default")
        held = []
        seen = []
        # Leases of 1, 2 and 4 tasks, each asked for when the buffer is empty.
        for _ in range(4):
            held.append(queue.get(timeout=5))
            seen.append(leased())
        assert seen == [1, 3, 3, 7]
        # Now at num_tasks, the next lease of 8 is asked ahead, before the buffer runs dry.
        held.append(queue.get(timeout=5))
        wait_for(lambda: leased() == 15, timeout=10, what="a lease of num_tasks asked ahead")
        for message in held:
            message.ack()
        queue.close()
    assert total_tasks(server) == 40 - len(held)


def test_a_connection_that_closed_after_one_message_leaves_the_others_unleased(
    make_server: MakeServer,
) -> None:
    server = make_server(queues=["default"])
    prefill(server, 5)
    with connect(server, num_tasks=10) as connection:
        queue = connection.SimpleQueue("default")
        queue.get(timeout=5).ack()
        queue.close()
    assert total_tasks(server) == 4
    retry_counts = [
        server.service.get_task("emulator", "default", task["id"])["retry_count"] for task in listed(server)
    ]
    assert retry_counts == [0, 0, 0, 0]


def test_a_simple_queue_per_message_on_one_connection_delivers_every_task(make_server: MakeServer) -> None:
    # Opening a SimpleQueue, taking one message and closing it, on one
    # connection: before the fix, leases kept growing across the queues,
    # and each close gave back num_tasks - 1 tasks having spent a lease.
    server = make_server(queues=[QueueConfig("default", max_leases=2)])
    prefill(server, 12)
    delivered = []
    with connect(server, num_tasks=10) as connection:
        for _ in range(12):
            queue = connection.SimpleQueue("default")
            message = queue.get(timeout=5)
            delivered.append(message.payload["n"])
            message.ack()
            queue.close()
    assert sorted(delivered) == list(range(12))
    assert total_tasks(server) == 0


def test_no_lease_is_sent_once_drain_events_timed_out(make_emulator: MakeEmulator) -> None:
    # Each answer takes longer than the drain's timeout: a consumer of many
    # queues may lease the first one before the deadline, never the others
    # after it (their tasks would be given back unused, having spent a lease).
    queues = [f"q{number}" for number in range(6)]
    server = make_emulator(queues=queues, latency=0.3)
    for queue in queues:
        prefill(server, 1, queue)
    with connect(server, num_tasks=10) as connection:
        consumer = Consumer(
            connection, [Queue(queue) for queue in queues], callbacks=[lambda body, message: None]
        )
        with consumer, pytest.raises(socket.timeout):
            connection.drain_events(timeout=0.1)
    leased = sum(
        server.service.get_task(PROJECT, queue, task["id"])["retry_count"]
        for queue in queues
        for task in listed(server, queue)
    )
    assert leased <= 1
