"""Queue size (qsize, passive queue_declare) and purge."""

from __future__ import annotations

from queue import Empty

import pytest

from tests.support.helpers import b64
from tests.support.transport import PROJECT, connect, listed, prefill, total_tasks


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
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        assert queue.clear() == 7
        assert total_tasks(emulator) == 0
        assert connection.default_channel.queue_purge("default") == 0
        with pytest.raises(Empty):
            queue.get(block=False)
        queue.close()


def test_purge_takes_the_buffered_tasks_and_leaves_those_other_consumers_hold(emulator):
    prefill(emulator, 8)
    with connect(emulator, num_tasks=1) as holder, connect(emulator, num_tasks=4) as connection:
        held = holder.default_channel.basic_get("default")
        channel = connection.default_channel
        delivered = channel.basic_get("default")  # three more are buffered
        assert channel.queue_purge("default") == 6  # three buffered, three no one held
        assert {task["id"] for task in listed(emulator)} == {
            held.delivery_info["task_id"],
            delivered.delivery_info["task_id"],
        }
        assert channel.basic_get("default") is None
        held.ack()
        delivered.ack()
    assert total_tasks(emulator) == 0


def test_purge_of_more_than_one_page(emulator):
    prefill(emulator, 230)
    with connect(emulator) as connection:
        assert connection.default_channel.queue_purge("default") == 230
    assert total_tasks(emulator) == 0


def test_purge_of_a_queue_on_shared_queue_takes_its_tasks_and_no_others(emulator):
    with connect(emulator, shared_queue="pull-queue") as connection:
        mine, theirs = connection.SimpleQueue("mine.q"), connection.SimpleQueue("theirs.q")
        for number in range(5):
            mine.put({"n": number})
            theirs.put({"n": number})
        assert mine.clear() == 5
        assert [task["tag"] for task in listed(emulator, "pull-queue")] == ["theirs.q"] * 5
        for simple in (mine, theirs):
            simple.close()


def test_deleting_a_queue_on_shared_queue_deletes_its_tasks_and_no_others(emulator):
    for _ in range(100):
        emulator.service.insert(PROJECT, "pull-queue", {"payloadBase64": b64(b"{}"), "tag": "gone.q"})
    with connect(emulator, shared_queue="pull-queue") as connection:
        gone, kept = connection.SimpleQueue("gone.q"), connection.SimpleQueue("kept.q")
        for number in range(3):
            kept.put({"n": number})
        held = gone.get(timeout=5)  # held by a consumer: deleted all the same
        connection.default_channel.queue_delete("gone.q")
        assert [task["tag"] for task in listed(emulator, "pull-queue")] == ["kept.q"] * 3
        assert kept.qsize() == 3
        held.ack()  # the task is gone already: not an error
        for simple in (gone, kept):
            simple.close()
