"""Leases: a buffered task whose lease ended is not delivered, a delivered one
keeps its lease while its consumer lives, and a lease given back stays given back."""

from __future__ import annotations

import time
from queue import Empty

import pytest

from tests.support.helpers import wait_for
from tests.support.transport import PROJECT, connect, listed, only_task, payload_of, prefill, total_tasks


@pytest.mark.slow  # waits for a lease of 2 s to end
def test_buffered_task_whose_lease_ended_is_not_delivered(emulator):
    prefill(emulator, 2)
    with connect(emulator, num_tasks=2, lease_secs=2) as connection:
        queue = connection.SimpleQueue("default")
        first = queue.get(timeout=5)
        assert first.payload == {"n": 0}
        # Leased together, the two share an ETA and are listed by name: found by payload.
        second_name = next(
            task["id"]
            for task in listed(emulator)
            if payload_of(emulator.service.get_task(PROJECT, "default", task["id"])) == b'{"n": 1}'
        )

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


@pytest.mark.slow  # holds a message over two leases of 2 s
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
