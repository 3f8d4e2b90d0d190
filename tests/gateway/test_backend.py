"""The gateway's mapping onto App Engine's task queue service, beyond the shared conformance tests."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from google.appengine.api import apiproxy_stub_map
from google.appengine.api.taskqueue import taskqueue_service_bytes_pb2 as pb
from google.appengine.runtime import apiproxy_errors
from googleapiclient.http import BatchHttpRequest

from kombu_appengine.rest.backend import LeaseWindow
from tests.gateway.conftest import APP_ID
from tests.support.api import expect_error, insert, leased_ids, list_ids
from tests.support.helpers import build_service


@pytest.mark.parametrize("project", [APP_ID, f"s~{APP_ID}", f"e~{APP_ID}"])
def test_the_applications_own_id_with_or_without_prefix_is_served(gateway, project):
    service = build_service(gateway.url)
    insert(service, project=project, id="t1")
    assert list_ids(service, project=project) == ["t1"]


@pytest.mark.parametrize("project", ["another-app", "s~another-app", "test-ap"])
def test_another_project_is_404(gateway, project):
    service = build_service(gateway.url)
    expect_error(service.tasks().list(project=project, taskqueue="pull-queue"), 404, "notFound")


def test_a_batch_deletes_the_tasks_of_one_queue_in_one_rpc(gateway):
    service = build_service(gateway.url)
    for number in range(5):
        insert(service, project=APP_ID, id=f"t{number}")
    insert(service, project=APP_ID, queue="tagged", id="x")
    calls: list[str] = []
    hooks = apiproxy_stub_map.apiproxy.GetPreCallHooks()
    hooks.Append("count", lambda service_name, call, request, response: calls.append(call), "taskqueue")
    answers = {}
    batch = BatchHttpRequest(
        callback=lambda request_id, response, error: answers.update({request_id: error}),
        batch_uri=gateway.url + "/batch",
    )
    for name in ("t0", "t1", "t2", "t3", "t4", "missing", "t1"):
        batch.add(service.tasks().delete(project=APP_ID, taskqueue="pull-queue", task=name))
    batch.add(service.tasks().delete(project=APP_ID, taskqueue="tagged", task="x"))
    batch.execute()
    assert calls.count("Delete") == 2
    errors = [answers[str(number)] for number in range(1, 9)]
    assert [error.resp.status if error else 204 for error in errors] == [204] * 5 + [404, 404, 204]
    assert list_ids(service, project=APP_ID) == []


def test_leases_count_toward_the_stats_and_expose_the_creation_time(gateway):
    service = build_service(gateway.url)
    insert(service, project=APP_ID, id="t1")
    assert leased_ids(service, project=APP_ID) == ["t1"]
    stats = service.taskqueues().get(project=APP_ID, taskqueue="pull-queue", getStats=True).execute()["stats"]
    assert (stats["totalTasks"], stats["leasedLastMinute"]) == (1, "1")
    task = service.tasks().get(project=APP_ID, taskqueue="pull-queue", task="t1").execute()
    assert task["enqueueTimestamp"].endswith("000000")


def test_a_lease_whose_enqueue_times_cannot_be_read_still_answers_its_tasks(gateway):
    """The lease took effect (one of each task's leases spent): its answer never becomes an error."""
    service = build_service(gateway.url)
    insert(service, project=APP_ID, id="t1")
    failures = [apiproxy_errors.ApplicationError(pb.TaskQueueServiceError.TRANSIENT_ERROR)]

    def fail_once(service_name, call, request, response):
        if call == "QueryTasks" and failures:
            raise failures.pop()

    apiproxy_stub_map.apiproxy.GetPreCallHooks().Append("fail-query", fail_once, "taskqueue")
    before = int(time.time())
    leased = (
        service.tasks().lease(project=APP_ID, taskqueue="pull-queue", numTasks=10, leaseSecs=60).execute()
    )
    assert not failures, "the enqueue times' read was made, and failed"
    [task] = leased["items"]
    assert (task["id"], task["retry_count"]) == ("t1", 1)
    # Approximated by the lease's time, in whole seconds.
    assert before * 1_000_000 <= int(task["enqueueTimestamp"]) <= int(time.time()) * 1_000_000


def test_lease_windows_are_trimmed_once_whatever_the_threads():
    """The deployed gateway reads its lease counts from several threads at once, unlocked."""
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave as often as they can
    try:
        for _ in range(5):
            window = LeaseWindow(1)
            for when in range(20_000):
                window.add(when, 1)
            later = 10 * 1_000_000  # every lease has left the window
            assert read_together(window, later, threads=8) == [0] * 8
            assert window.total(later) == 0
    finally:
        sys.setswitchinterval(switch_interval)


def read_together(window: LeaseWindow, now: int, threads: int) -> list[int]:
    """``window.total(now)`` from ``threads`` threads started together; what each read."""
    start = threading.Barrier(threads)
    totals: list[int] = []

    def read() -> None:
        start.wait()
        totals.append(window.total(now))

    readers = [threading.Thread(target=read) for _ in range(threads)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    return totals


def test_tasks_inserted_without_an_id_never_collide_with_names_clients_chose(gateway):
    """The SDK's stub would name them task1, task2...: the second one collided with "task2" (409)."""
    service = build_service(gateway.url)
    chosen = [insert(service, project=APP_ID, id=f"task{number}")["id"] for number in range(2, 5)]
    generated = [insert(service, project=APP_ID)["id"] for _ in range(4)]
    assert len(set(generated)) == 4
    assert not set(generated) & set(chosen)
    assert sorted(list_ids(service, project=APP_ID)) == sorted(chosen + generated)
