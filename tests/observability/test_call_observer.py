"""``kombu_appengine.client.observe_calls``: every API call of the process,
single or batched, reaches the observers with its name, its time and its
error, against a real emulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kombu_appengine.client import TaskQueueClient, observe_calls
from kombu_appengine.emulator import Emulator
from kombu_appengine.errors import QueueNotFound
from tests.support.transport import PROJECT


@pytest.fixture
def calls() -> Iterator[list[tuple[str, float, Any]]]:
    seen: list[tuple[str, float, Any]] = []
    stop = observe_calls(lambda name, seconds, error: seen.append((name, seconds, error)))
    yield seen
    stop()


def test_calls_and_batches_are_observed_by_name(emulator: Emulator, calls: list[tuple[str, float, Any]]):
    client = TaskQueueClient(PROJECT, emulator.url + "/")
    client.insert("default", b"one")
    client.insert("default", b"two")
    leased = client.lease("default", 2, 60)
    client.change_leases("default", {leased[0]["id"]: leased[0]["leaseTimestamp"]}, 0)
    client.delete_many("default", [task["id"] for task in leased])
    with pytest.raises(QueueNotFound):
        client.get_queue("nope")

    assert [name for name, _, _ in calls] == [
        "insert",
        "insert",
        "lease",
        "change_lease_batch",
        "delete_batch",
        "get_queue",
    ]
    assert all(seconds >= 0 for _, seconds, _ in calls)
    assert [error for _, _, error in calls[:-1]] == [None] * 5
    assert isinstance(calls[-1][2], QueueNotFound)


def test_an_observer_that_fails_does_not_fail_the_call(emulator: Emulator, caplog: pytest.LogCaptureFixture):
    def broken(name: str, seconds: float, error: Any) -> None:
        raise RuntimeError("observer bug")

    stop = observe_calls(broken)
    try:
        client = TaskQueueClient(PROJECT, emulator.url + "/")
        client.insert("default", b"one")
    finally:
        stop()
    assert client.get_queue("default", stats=True)["stats"]["totalTasks"] == 1
    assert "an observer of API calls failed on insert" in caplog.text


def test_a_stopped_observer_hears_nothing_more(emulator: Emulator):
    seen: list[str] = []
    stop = observe_calls(lambda name, seconds, error: seen.append(name))
    client = TaskQueueClient(PROJECT, emulator.url + "/")
    client.get_queue("default")
    stop()
    client.get_queue("default")
    assert seen == ["get_queue"]
