"""Leases: every lease a channel holds, buffered or delivered, is kept while its
consumer lives; a lease that ran out is never changed again (another consumer
may hold the task); and the keeping never holds up an ack."""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from queue import Empty
from typing import Any

import google.auth.credentials
import pytest

from kombu_appengine import api
from kombu_appengine.emulator import Emulator, QueueConfig
from tests.support.helpers import TEST_QUEUES, MakeServer, wait_for
from tests.support.transport import PROJECT, connect, listed, only_task, payload_of, prefill, total_tasks


def lease_of(emulator: Emulator, name: str) -> str:
    """The task's lease as the emulator reports it (``"0"`` when not leased)."""
    return emulator.service.get_task(PROJECT, "default", name)["leaseTimestamp"]


def test_a_consumer_whose_lease_ran_out_never_changes_the_lease_another_consumer_holds(
    make_server: MakeServer,
) -> None:
    skew = [0.0]
    server = make_server(queues=TEST_QUEUES, clock=lambda: time.time() + skew[0])
    prefill(server, 2)
    stale = connect(server, lease_secs=60)
    stale_queue = stale.SimpleQueue("default")
    released, shortened = stale_queue.get(timeout=5), stale_queue.get(timeout=5)
    skew[0] += 61  # the service's time: both leases of the stale consumer ran out
    with connect(server, lease_secs=60) as fresh:
        queue = fresh.SimpleQueue("default")
        taken = [queue.get(timeout=5), queue.get(timeout=5)]
        held = {task["id"]: task["leaseTimestamp"] for task in listed(server)}
        assert "0" not in held.values()

        # The stale consumer still believes it holds both tasks.
        released.requeue()
        stale.default_channel.retry_later(shortened.delivery_tag, 1)
        stale.close()  # sends what is pending, and gives back the rest

        assert {task["id"]: task["leaseTimestamp"] for task in listed(server)} == held
        for message in taken:
            message.ack()
        queue.close()
    assert total_tasks(server) == 0


@pytest.mark.slow  # holds a message over the first lease, of 2 s, of a buffered one
def test_a_buffered_task_keeps_its_lease_and_is_delivered_without_a_second_lease(
    make_server: MakeServer,
) -> None:
    # With task_retry_limit 1, a second lease of a task would delete it.
    server = make_server(queues=[QueueConfig("default", max_leases=1)])
    prefill(server, 3)
    with connect(server, num_tasks=2, lease_secs=2) as connection:
        queue = connection.SimpleQueue("default")
        # Leases of one task, then of two: the third waits in the buffer.
        zeroth = queue.get(timeout=5)
        first = queue.get(timeout=5)
        assert [zeroth.payload, first.payload] == [{"n": 0}, {"n": 1}]
        zeroth.ack()
        # Leased together, tasks share an ETA and are listed by name: found by payload.
        buffered = next(
            task["id"]
            for task in listed(server)
            if payload_of(server.service.get_task(PROJECT, "default", task["id"])) == b'{"n": 2}'
        )
        first_lease_end = int(lease_of(server, buffered))
        wait_for(
            lambda: time.time() * 1_000_000 > first_lease_end + 500_000,
            timeout=10,
            what="the end of the buffered task's first lease",
        )
        assert lease_of(server, buffered) != "0"
        second = queue.get(timeout=5)
        assert second.payload == {"n": 2}
        assert second.delivery_info["retry_count"] == 1
        assert second.delivery_info["redelivered"] is False
        first.ack()
        second.ack()
        queue.close()
    assert total_tasks(server) == 0


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
        holder_queue.close()
        other_queue.close()
    assert total_tasks(emulator) == 0


@pytest.mark.slow  # waits for a renewal, due after 1 s
def test_a_lease_given_back_is_never_renewed(emulator):
    prefill(emulator, 2)
    with connect(emulator, lease_secs=2, num_tasks=1) as holder, connect(emulator) as other:
        holder_queue = holder.SimpleQueue("default")
        given_back, kept = holder_queue.get(timeout=5), holder_queue.get(timeout=5)
        kept_lease = lease_of(emulator, kept.delivery_info["task_id"])
        given_back.requeue()
        holder.default_channel.flush()
        taken = other.SimpleQueue("default").get(timeout=5)
        assert taken.delivery_info["task_id"] == given_back.delivery_info["task_id"]
        taken_lease = lease_of(emulator, taken.delivery_info["task_id"])
        wait_for(
            lambda: lease_of(emulator, kept.delivery_info["task_id"]) != kept_lease,
            what="the holder to renew the lease it kept",
        )
        assert lease_of(emulator, taken.delivery_info["task_id"]) == taken_lease
        kept.ack()
        taken.ack()
    assert total_tasks(emulator) == 0


class StallingCredentials(google.auth.credentials.Credentials):
    """Credentials that put every request the transport sends into a retry test."""

    def __init__(self, test_id: str) -> None:
        super().__init__()
        self.token = "stall-token"
        self.test_id = test_id

    def refresh(self, request: Any) -> None:
        """Nothing to refresh: the emulator takes any token."""

    def apply(self, headers: dict[str, str], token: str | None = None) -> None:
        headers["authorization"] = f"Bearer {self.token}"
        headers["x-retry-test-id"] = self.test_id


def retry_test(emulator: Emulator, method: str, path: str, document: Any = None) -> Any:
    host, port = emulator.host.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        body = None if document is None else json.dumps(document).encode()
        headers = {"Content-Type": "application/json"} if body else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.slow  # a renewal, due after 2 s, stalls for 5 s
def test_an_ack_neither_waits_for_a_stalled_renewal_nor_is_sent_behind_it(emulator):
    stall = retry_test(
        emulator, "POST", "/retry_test", {"instructions": {api.TASKS_UPDATE.id: ["stall-for-5s"]}}
    )
    credentials = StallingCredentials(stall["id"])
    prefill(emulator, 2)
    with connect(emulator, lease_secs=4, num_tasks=1, credentials=credentials) as connection:
        queue = connection.SimpleQueue("default")
        kept, acked = queue.get(timeout=5), queue.get(timeout=5)
        kept_lease = lease_of(emulator, kept.delivery_info["task_id"])
        wait_for(
            lambda: retry_test(emulator, "GET", f"/retry_test/{stall['id']}")["completed"],
            what="a renewal to be on its way, stalled",
        )
        acked.ack()
        # The renewal, stalled before it is carried out, has not changed the
        # lease yet: the ack did not wait for it.
        assert lease_of(emulator, kept.delivery_info["task_id"]) == kept_lease
        connection.default_channel.flush()
        # The delete went out while the renewal, stalled before it is carried
        # out, has not changed the lease yet: deletes never queue behind it.
        assert [task["id"] for task in listed(emulator)] == [kept.delivery_info["task_id"]]
        assert lease_of(emulator, kept.delivery_info["task_id"]) == kept_lease
        kept.ack()
        queue.close()
    assert total_tasks(emulator) == 0


def test_an_acknowledged_task_keeps_its_lease_until_its_delete_is_sent(emulator):
    # The release of one message stalls; an ack made meanwhile waits for the
    # settler. Before the fix, the acknowledged task's lease was no longer
    # renewed and ran out, and another consumer ran the task again.
    stall = retry_test(
        emulator, "POST", "/retry_test", {"instructions": {api.TASKS_UPDATE.id: ["stall-for-6s"]}}
    )
    prefill(emulator, 2)
    with connect(emulator, lease_secs=2, num_tasks=1, credentials=StallingCredentials(stall["id"])) as first:
        queue = first.SimpleQueue("default")
        requeued, acked = queue.get(timeout=5), queue.get(timeout=5)
        requeued.requeue()
        wait_for(
            lambda: retry_test(emulator, "GET", f"/retry_test/{stall['id']}")["completed"],
            what="the release to be on its way, stalled",
        )
        acked.ack()
        acked_id = acked.delivery_info["task_id"]
        with connect(emulator, lease_secs=60, num_tasks=1) as second:
            other = second.SimpleQueue("default")
            # Until the acknowledged task is deleted, a second consumer takes
            # what it can: the requeued task (its release stalled, its lease
            # ran out), never the acknowledged one.
            seen = []
            deadline = time.monotonic() + 60  # a hang guard: the delete follows the 6 s stall
            while any(task["id"] == acked_id for task in listed(emulator)):
                assert time.monotonic() < deadline, "the acknowledged task was never deleted"
                with contextlib.suppress(Empty):
                    seen.append(other.get(timeout=0.5))
            assert acked_id not in [message.delivery_info["task_id"] for message in seen]
            for message in seen:
                message.ack()
            other.close()
        queue.close()
    assert total_tasks(emulator) == 0
