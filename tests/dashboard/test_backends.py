"""What the dashboard reads from both backends beside the API (queues, tasks with payloads,
leases held now), and the emulator's purge, which its journal keeps."""

from __future__ import annotations

import pathlib

from kombu_appengine.emulator import Emulator
from kombu_appengine.emulator.server import RestServer
from tests.dashboard.conftest import APP
from tests.support.api import api_path
from tests.support.dashboard import insert, lease
from tests.support.helpers import MakeEmulator
from tests.support.raw_http import post_json


def test_queue_names_are_the_pull_queues_by_name(server: RestServer):
    assert server.service.queue_names() == ["guarded", "limited", "pull-queue"]
    assert server.service.projects() == [APP]


def test_peek_gives_the_first_tasks_in_lease_order_with_payloads_and_changes_nothing(server: RestServer):
    names = [insert(server, b"payload %d" % n, APP, "pull-queue")["id"] for n in range(5)]
    lease(server, APP, "pull-queue", 1)
    peeked = server.service.peek_tasks(APP, "pull-queue", 3, 1000)
    # The leased task's ETA is its lease expiry: it goes last.
    assert [task.resource["id"] for task in peeked] == names[1:4]
    assert [task.payload for task in peeked] == [b"payload %d" % n for n in (1, 2, 3)]
    assert all("payloadBase64" not in task.resource for task in peeked)
    everything = server.service.peek_tasks(APP, "pull-queue", 10, 4)
    assert [task.resource["id"] for task in everything] == [*names[1:], names[0]]
    assert [(task.payload, task.size) for task in everything] == [(b"payl", 9)] * 5
    assert lease(server, APP, "pull-queue", 10) == names[1:]


def test_leased_count_counts_the_leases_held_now(server: RestServer):
    for n in range(4):
        insert(server, b"%d" % n, APP, "pull-queue")
    assert server.service.leased_count(APP, "pull-queue") == 0
    first, _ = lease(server, APP, "pull-queue", 2)
    assert server.service.leased_count(APP, "pull-queue") == 2
    released = post_json(
        server,
        api_path("tasks", f"{first}?newLeaseSeconds=0", project=APP, queue="pull-queue"),
        {"queueName": "pull-queue"},
    )
    assert released.status == 200, released.body
    assert server.service.leased_count(APP, "pull-queue") == 1
    assert server.service.leased_count(APP, "limited") == 0


def test_a_purge_survives_a_restart(make_emulator: MakeEmulator, tmp_path: pathlib.Path):
    emulator: Emulator = make_emulator(queues=["pull-queue", "other"], data_dir=str(tmp_path))
    for n in range(3):
        insert(emulator, b"%d" % n, "app", "pull-queue")
    kept = insert(emulator, b"kept", "app", "other")["id"]
    lease(emulator, "app", "pull-queue", 1)
    assert emulator.service.purge_queue("app", "pull-queue") == 3
    emulator.stop()
    again = make_emulator(queues=["pull-queue", "other"], data_dir=str(tmp_path))
    assert again.service.peek_tasks("app", "pull-queue", 10, 10) == []
    assert [task.resource["id"] for task in again.service.peek_tasks("app", "other", 10, 10)] == [kept]
