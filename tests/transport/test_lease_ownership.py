"""A renewal whose answer was lost still holds the lease.

The client sends a request again when its answer is lost. For a renewal
that had been carried out, the second one names the lease it has just
replaced, and the service refuses it (the API's ``leaseTimestamp`` check,
which keeps a consumer whose lease ran out from touching the next holder's,
tests/transport/test_leases.py). The lease is still ours, though: no lease
was granted since. Taken for lost, it would never be renewed again, and
another consumer could lease the task while it runs.
"""

from __future__ import annotations

import pytest

from kombu_appengine.emulator import Emulator
from tests.support.fault_proxy import FaultProxy
from tests.support.helpers import wait_for
from tests.support.transport import connect, only_task

#: Waits for background renewals, due every second.
pytestmark = pytest.mark.slow


def test_a_renewal_whose_answer_was_lost_still_holds_the_lease(emulator: Emulator) -> None:
    with (
        FaultProxy(emulator.host, fault_rate=0.0, seed=1) as proxy,
        connect(proxy, lease_secs=2, num_tasks=1) as connection,
    ):
        queue = connection.SimpleQueue("default")
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        first = only_task(emulator)["leaseTimestamp"]
        # The next request through the proxy is the renewal: carried out, unanswered.
        proxy.inject("lost-answer")
        renewed = wait_for(
            lambda: (lease := only_task(emulator)["leaseTimestamp"]) != first and lease,
            10,
            "the lease to be renewed",
        )
        assert proxy.faults == {"lost-answer": 1}
        # Still ours: renewed again, and given back when asked.
        wait_for(lambda: int(only_task(emulator)["leaseTimestamp"]) > int(renewed), 10, "another renewal")
        assert only_task(emulator)["retry_count"] == 1
        message.requeue()
        connection.default_channel.flush()
        assert only_task(emulator)["leaseTimestamp"] == "0"
        queue.close()
