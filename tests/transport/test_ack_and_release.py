"""Ack and reject delete or release a task, never copy it; closing a channel or
connection gives back at once every task it holds. Acks, rejects and requeues
are sent in batches (``channel.flush()`` sends them at once)."""

from __future__ import annotations

from queue import Empty

import pytest

from kombu_appengine.emulator.errors import ApiError
from tests.support.helpers import wait_for
from tests.support.transport import PROJECT, connect, listed, only_task, prefill, total_tasks


def test_reject_with_requeue_releases_the_lease_without_a_copy(emulator):
    with connect(emulator) as one, connect(emulator) as two:
        one.SimpleQueue("default").put({"n": 1})
        queue_one, queue_two = one.SimpleQueue("default"), two.SimpleQueue("default")
        message = queue_one.get(timeout=5)
        assert only_task(emulator)["retry_count"] == 1
        with pytest.raises(Empty):
            queue_two.get(block=False)

        message.reject(requeue=True)
        one.default_channel.flush()
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
        wait_for(lambda: total_tasks(emulator) == 0, what="the rejected task deleted")
        with pytest.raises(Empty):
            queue.get(block=False)
        queue.close()


def test_ack_deletes_the_task(emulator):
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        queue.put({"n": 1})
        name = listed(emulator)[0]["id"]
        queue.get(timeout=5).ack()
        connection.default_channel.flush()
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
        connection.default_channel.flush()
        assert total_tasks(emulator) == 0
        queue.close()


# -- close ---------------------------------------------------------------------


def test_close_releases_buffered_tasks_at_once(emulator):
    prefill(emulator, 5)
    with connect(emulator, num_tasks=5, lease_secs=600) as one:
        queue = one.SimpleQueue("default")
        # Leases of one task, then of two: one of those waits in the buffer.
        taken = [queue.get(timeout=5), queue.get(timeout=5)]
        for message in taken:
            message.ack()
        one.default_channel.flush()
        assert sorted(task["leaseTimestamp"] != "0" for task in listed(emulator)) == [False, False, True]
        queue.close()
    assert [task["leaseTimestamp"] for task in listed(emulator)] == ["0"] * 3

    with connect(emulator, num_tasks=5) as two:
        queue = two.SimpleQueue("default")
        rest = [queue.get(block=False) for _ in range(3)]
        assert sorted(message.payload["n"] for message in rest) == [2, 3, 4]
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


def test_closing_releases_every_unacked_message_in_one_batch_call(emulator):
    prefill(emulator, 6)
    connection = connect(emulator, num_tasks=10)  # one lease brings all six, and asks for no more
    queue = connection.SimpleQueue("default")
    held = [queue.get(timeout=5) for _ in range(6)]
    assert len({message.delivery_tag for message in held}) == 6
    before = emulator.requests
    connection.close()
    assert emulator.requests - before == 1
    assert [task["leaseTimestamp"] for task in listed(emulator)] == ["0"] * 6


def test_a_release_that_fails_at_close_only_costs_the_lease_time(emulator, caplog):
    prefill(emulator, 3)
    connection = connect(emulator, num_tasks=3, request_retries=0)
    queue = connection.SimpleQueue("default")
    queue.get(timeout=5)  # a lease of one task, then of two: two unacked, one buffered
    queue.get(timeout=5)
    emulator.inject_failures(10, status=503, path_contains="/batch")
    connection.close()  # no error: nothing is lost
    assert "could not release 3 tasks of queue 'default'" in caplog.text
    assert "they come back when their leases end" in caplog.text
    assert total_tasks(emulator) == 3
    assert all(task["leaseTimestamp"] != "0" for task in listed(emulator))
