"""Queue size (qsize, passive queue_declare) and purge."""

from __future__ import annotations

from queue import Empty

import pytest

from tests.support.transport import connect, listed, prefill, total_tasks


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
