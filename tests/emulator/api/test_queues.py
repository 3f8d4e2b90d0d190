"""taskqueues.get and its stats; projects (prefixed, bare, domain-scoped) and
queues (unknown, push)."""

import pytest

from kombu_appengine.emulator import QueueConfig
from tests.support import raw_http
from tests.support.api import (
    PROJECT,
    QUEUE,
    START,
    api_path,
    expect_error,
    get_task,
    insert,
    lease,
    list_ids,
    stats,
)
from tests.support.helpers import build_service


@pytest.mark.parametrize("params", [{}, {"getStats": False}])
def test_get_queue_without_settings(service, params):
    queue = service.taskqueues().get(project=PROJECT, taskqueue=QUEUE, **params).execute()
    assert queue == {
        "kind": "taskqueues#taskqueue",
        "id": QUEUE,
        "acl": {"consumerEmails": [], "producerEmails": [], "adminEmails": []},
    }


def test_get_queue_reports_max_leases_and_acl(service, emulator):
    emulator.declare_queue(
        "limited",
        max_leases=7,
        consumer_emails=["worker@example.com"],
        producer_emails=["app@example.com"],
    )
    queue = service.taskqueues().get(project=PROJECT, taskqueue="limited").execute()
    assert queue == {
        "kind": "taskqueues#taskqueue",
        "id": "limited",
        "maxLeases": 7,
        "acl": {
            "consumerEmails": ["worker@example.com"],
            "producerEmails": ["app@example.com"],
            "adminEmails": [],
        },
    }


def test_redeclaring_a_queue_in_use_changes_it(service, emulator):
    insert(service, id="kept")
    emulator.declare_queue(QUEUE, max_leases=3)
    assert service.taskqueues().get(project=PROJECT, taskqueue=QUEUE).execute()["maxLeases"] == 3
    assert list_ids(service) == ["kept"]


def test_queue_config_max_leases_reaches_the_resource(make_server, clock):
    running = make_server(queues=[QueueConfig("limited", max_leases=0)], clock=clock)
    queue = build_service(running.url).taskqueues().get(project=PROJECT, taskqueue="limited").execute()
    assert queue["maxLeases"] == 0


def test_stats_of_an_empty_queue(service):
    assert stats(service) == {
        "totalTasks": 0,
        "oldestTask": "0",
        "leasedLastMinute": "0",
        "leasedLastHour": "0",
    }


def test_stats_count_leased_tasks_and_give_the_oldest_in_seconds(service, clock):
    for _ in range(3):
        insert(service)
        clock.advance(5)
    lease(service, num_tasks=2)
    # The earliest ETA, as App Engine's statistics give it: the two leased
    # tasks' is their lease expiry, so the third task is the oldest.
    assert stats(service) == {
        "totalTasks": 3,
        "oldestTask": str(int(START + 10)),
        "leasedLastMinute": "2",
        "leasedLastHour": "2",
    }


def test_oldest_task_follows_deletion(service, clock):
    first = insert(service)
    clock.advance(10)
    insert(service)
    service.tasks().delete(project=PROJECT, taskqueue=QUEUE, task=first["id"]).execute()
    assert stats(service)["oldestTask"] == str(int(START + 10))


def test_lease_counts_age_out_of_their_windows(service, clock):
    insert(service)
    insert(service)
    lease(service, num_tasks=1)
    clock.advance(30)
    lease(service, num_tasks=1)
    clock.advance(31)
    counts = stats(service)
    assert (counts["leasedLastMinute"], counts["leasedLastHour"]) == ("1", "2")
    clock.advance(3600 - 61)
    counts = stats(service)
    assert (counts["leasedLastMinute"], counts["leasedLastHour"]) == ("0", "1")
    clock.advance(30)
    counts = stats(service)
    assert (counts["leasedLastMinute"], counts["leasedLastHour"]) == ("0", "0")


def test_a_long_get_sent_as_post_with_method_override_keeps_its_query(service):
    # google-api-python-client turns a GET longer than 2048 characters into
    # a POST with X-HTTP-Method-Override: GET and the query as a form body.
    request = service.taskqueues().get(project=PROJECT, taskqueue=QUEUE, getStats=True, quotaUser="x" * 2100)
    document = request.execute()
    assert request.method == "POST"
    assert request.headers["x-http-method-override"] == "GET"
    assert document["stats"]["totalTasks"] == 0


# -- projects and queues ------------------------------------------------------


def test_prefixed_and_bare_ids_are_one_project(service):
    insert(service, project="s~app", id="t1")
    for project in ("app", "e~app", "s~app"):
        assert (
            get_task(service, "t1", project=project)["queueName"] == f"projects/{project}/taskqueues/{QUEUE}"
        )
        assert list_ids(service, project=project) == ["t1"]


@pytest.mark.emulator_only(
    "the emulator keeps the queues of any number of projects apart; the gateway serves its own "
    "application only, and other ids are 404 (test_a_server_for_one_project_refuses_others)"
)
def test_each_project_has_queues_of_its_own(service):
    insert(service, project="s~app", id="t1")
    assert list_ids(service, project="another-app") == []


@pytest.mark.parametrize("project", ["s%7Etest-app", "test%2Dapp"])
def test_percent_encoded_project_ids_are_decoded(emulator, service, project):
    insert(service, id="t1")
    response = raw_http.request(emulator, "GET", api_path("tasks", "t1", project=project))
    assert response.status == 200
    assert response.json()["id"] == "t1"


def test_a_domain_scoped_project(service):
    project = "s~example.com:my-app"
    insert(service, project=project, id="t1")
    assert get_task(service, "t1", project=project)["queueName"] == f"projects/{project}/taskqueues/{QUEUE}"
    assert list_ids(service, project="example.com:my-app") == ["t1"]


def test_a_server_for_one_project_refuses_others(make_server, clock):
    running = make_server(queues=[QUEUE], project="myapp", clock=clock)
    service = build_service(running.url)
    for project in ("myapp", "s~myapp", "e~myapp"):
        insert(service, project=project)
    assert len(list_ids(service, project="myapp")) == 3
    for project in ("otherapp", "s~otherapp"):
        expect_error(service.taskqueues().get(project=project, taskqueue=QUEUE), 404, "notFound")
        expect_error(service.tasks().insert(project=project, taskqueue=QUEUE, body={}), 404, "notFound")


def test_an_unknown_queue_is_404_pointing_at_queue_yaml(service):
    message = expect_error(service.taskqueues().get(project=PROJECT, taskqueue="nosuch"), 404, "notFound")
    assert "nosuch" in message
    assert "queue.yaml" in message
    expect_error(service.tasks().lease(project=PROJECT, taskqueue="nosuch", numTasks=1, leaseSecs=1), 404)


def test_a_push_queue_is_400(service, emulator):
    emulator.declare_queue("pushy", mode="push")
    requests = [
        service.taskqueues().get(project=PROJECT, taskqueue="pushy"),
        service.tasks().insert(project=PROJECT, taskqueue="pushy", body={}),
        service.tasks().lease(project=PROJECT, taskqueue="pushy", numTasks=1, leaseSecs=1),
        service.tasks().list(project=PROJECT, taskqueue="pushy"),
    ]
    for request in requests:
        assert "pull queue" in expect_error(request, 400)


def test_a_push_queue_from_queue_config_is_400(make_server, clock):
    running = make_server(queues=[QueueConfig("pushy", mode="push")], clock=clock)
    service = build_service(running.url)
    expect_error(service.taskqueues().get(project=PROJECT, taskqueue="pushy"), 400)
