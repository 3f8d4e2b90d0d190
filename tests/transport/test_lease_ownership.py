"""A consumer whose lease ran out no longer holds the task: what it gives back,
or renews, must not be the lease of the consumer that leased the task next.

Found by the chaos test's reasoning (tests/test_chaos.py): a duplicate is
explained only by a lease that ran out. A late consumer that released (or
shortened) the next holder's lease would let a third consumer lease the task
while the holder still works on it: a duplicate under a lease that held.
The REST API guards against exactly this with ``leaseTimestamp`` in the body
of ``tasks.update``: a change to a lease that is not the one named is refused.
"""

from __future__ import annotations

import time
from queue import Empty
from typing import Any

import pytest

from kombu_appengine.errors import LeaseLost
from tests.support.api import FakeClock
from tests.support.fault_proxy import FaultProxy
from tests.support.helpers import MakeEmulator
from tests.support.transport import connect, only_task, prefill


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def emulator(make_emulator: MakeEmulator, clock: FakeClock) -> Any:
    """An emulator whose clock moves only when a test says so; one task on ``default``."""
    running = make_emulator(queues=["default"], clock=clock)
    prefill(running, 1)
    return running


def test_a_late_requeue_leaves_the_next_holder_s_lease_alone(emulator: Any, clock: FakeClock) -> None:
    with connect(emulator, lease_secs=10) as late, connect(emulator, lease_secs=60) as holder:
        stale = late.SimpleQueue("default").get(timeout=5)
        clock.now += 11  # the late consumer's lease runs out
        held = holder.SimpleQueue("default").get(timeout=5)
        lease = only_task(emulator)["leaseTimestamp"]

        stale.requeue()

        assert only_task(emulator)["leaseTimestamp"] == lease
        with connect(emulator) as third, pytest.raises(Empty):
            third.SimpleQueue("default").get(block=False)
        held.ack()


def test_a_late_close_leaves_the_next_holder_s_lease_alone(emulator: Any, clock: FakeClock) -> None:
    with connect(emulator, lease_secs=60) as holder:
        with connect(emulator, lease_secs=10) as late:
            late.SimpleQueue("default").get(timeout=5)
            clock.now += 11
            held = holder.SimpleQueue("default").get(timeout=5)
            lease = only_task(emulator)["leaseTimestamp"]
        # Closing gave back the unacknowledged message's lease: the late one's.

        assert only_task(emulator)["leaseTimestamp"] == lease
        held.ack()


def test_a_late_renewal_does_not_shorten_the_next_holder_s_lease(emulator: Any, clock: FakeClock) -> None:
    with connect(emulator, lease_secs=10) as late, connect(emulator, lease_secs=600) as holder:
        channel = late.default_channel
        stale = channel.basic_get("default")
        clock.now += 11
        held = holder.SimpleQueue("default").get(timeout=5)
        lease = only_task(emulator)["leaseTimestamp"]
        # The late consumer still counts on its lease (its own clock did not
        # move): force the renewal point.
        channel._unacked[stale.delivery_tag].expires = time.monotonic()

        channel.extend_leases()

        assert only_task(emulator)["leaseTimestamp"] == lease
        held.ack()


def test_a_late_retry_later_leaves_the_next_holder_s_lease_alone(emulator: Any, clock: FakeClock) -> None:
    with connect(emulator, lease_secs=10) as late, connect(emulator, lease_secs=60) as holder:
        channel = late.default_channel
        stale = channel.basic_get("default")
        clock.now += 11
        held = holder.SimpleQueue("default").get(timeout=5)
        lease = only_task(emulator)["leaseTimestamp"]

        with pytest.raises(LeaseLost):
            channel.retry_later(stale.delivery_tag, 1)

        assert only_task(emulator)["leaseTimestamp"] == lease
        held.ack()


def test_a_renewal_whose_answer_was_lost_still_holds_the_lease(emulator: Any, clock: FakeClock) -> None:
    with (
        FaultProxy(emulator.host, fault_rate=0.0, seed=1) as proxy,
        connect(proxy, lease_secs=10) as connection,
    ):
        channel = connection.default_channel
        message = channel.basic_get("default")
        channel._unacked[message.delivery_tag].expires = time.monotonic()
        clock.now += 1
        # Carried out, unanswered: sent again, it names the lease it renewed.
        proxy.inject("lost-answer")

        assert channel.extend_leases() == 1

        assert int(only_task(emulator)["leaseTimestamp"]) == int((clock.now + 10) * 1_000_000)
        message.requeue()  # names the renewed lease, so it is given back
        assert only_task(emulator)["leaseTimestamp"] == "0"
    assert proxy.faults == {"lost-answer": 1}
