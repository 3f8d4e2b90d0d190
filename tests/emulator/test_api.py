"""Conformance of the emulator to TASKQUEUE_API.md, method by method.

Requests go through google-api-python-client, as users send them, and
through plain HTTP where the client hides what the wire carries (status
codes, headers, exact JSON). Time is a fake clock the tests move, so lease
expiry is tested without sleeping.
"""

import base64
import http.client
import json

import google.oauth2.credentials
import httplib2
import pytest
from googleapiclient.discovery import build, build_from_document
from googleapiclient.errors import HttpError

from kombu_appengine.discovery import load_document
from kombu_appengine.emulator import QueueConfig
from tests.support.helpers import TEST_QUEUES, b64, build_service

#: The project most tests use, in the ``s~`` form the service reported.
PROJECT = "s~test-app"
#: The queue most tests use.
QUEUE = "pull-queue"
#: ``queueName`` as the service reports it for :data:`QUEUE`.
LONG_QUEUE_NAME = f"projects/{PROJECT}/taskqueues/{QUEUE}"
#: Where the fake clock starts, in seconds; a fraction that floats hold exactly.
START = 1_700_000_000.75
#: Where the API lives on the emulator.
SERVICE_PATH = "/taskqueue/v1beta2/projects/"
#: Where the emulator serves its discovery document.
DISCOVERY_PATH = "/discovery/v1/apis/taskqueue/v1beta2/rest"


class FakeClock:
    """Seconds since the epoch that move only when a test says so."""

    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def micros(seconds):
    """A time in seconds as the API's microsecond string."""
    return str(round(seconds * 1_000_000))


@pytest.fixture
def clock():
    return FakeClock(START)


@pytest.fixture
def emulator(make_emulator, clock):
    """conftest's emulator, on the fake clock (conftest's ``service`` uses it)."""
    return make_emulator(queues=TEST_QUEUES, clock=clock)


# -- requests through google-api-python-client ------------------------------


def insert(service, payload=b"payload", project=PROJECT, queue=QUEUE, **fields):
    body = {"payloadBase64": b64(payload), **fields}
    return service.tasks().insert(project=project, taskqueue=queue, body=body).execute()


def lease(service, num_tasks=10, lease_secs=60, project=PROJECT, queue=QUEUE, **params):
    return (
        service.tasks()
        .lease(project=project, taskqueue=queue, numTasks=num_tasks, leaseSecs=lease_secs, **params)
        .execute()
    )


def leased_ids(service, num_tasks=10, lease_secs=60, **params):
    return [task["id"] for task in lease(service, num_tasks, lease_secs, **params).get("items", [])]


def get_task(service, task, project=PROJECT, queue=QUEUE):
    return service.tasks().get(project=project, taskqueue=queue, task=task).execute()


def list_ids(service, project=PROJECT, queue=QUEUE):
    listed = service.tasks().list(project=project, taskqueue=queue).execute()
    return [task["id"] for task in listed.get("items", [])]


def stats(service, queue=QUEUE):
    return service.taskqueues().get(project=PROJECT, taskqueue=queue, getStats=True).execute()["stats"]


def change_lease(service, method, task, seconds, body=None):
    """``tasks.update`` or ``tasks.patch`` (``method``) of ``task``."""
    if body is None:
        body = {"queueName": QUEUE}
    return getattr(service.tasks(), method)(
        project=PROJECT, taskqueue=QUEUE, task=task, newLeaseSeconds=seconds, body=body
    )


def expect_error(request, status, reason=None):
    """Execute ``request``, expecting Google's error body with ``status``.

    ``reason`` is checked when given (the API does not fix the reason of a
    400). Returns the error's message.
    """
    with pytest.raises(HttpError) as info:
        request.execute()
    assert info.value.resp.status == status
    return assert_google_error(json.loads(info.value.content), status, reason)


def assert_google_error(document, status, reason=None):
    error = document["error"]
    assert set(error) == {"code", "message", "errors"}
    assert error["code"] == status
    assert error["message"]
    [detail] = error["errors"]
    assert detail["domain"] == "global"
    assert detail["message"] == error["message"]
    assert detail["reason"]
    if reason is not None:
        assert detail["reason"] == reason
    return error["message"]


# -- plain HTTP ---------------------------------------------------------------


class RawResponse:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        assert self.headers["Content-Type"].startswith("application/json")
        return json.loads(self.body)


def raw(emulator, method, target, body=None, headers=None):
    """One request over a fresh connection, answered as it is on the wire."""
    connection = http.client.HTTPConnection(emulator.host, timeout=10)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return RawResponse(response.status, response.headers, response.read())
    finally:
        connection.close()


def api_path(*segments, project=PROJECT, queue=QUEUE):
    return SERVICE_PATH + "/".join((project, "taskqueues", queue, *segments))


def raw_insert(emulator, document, project=PROJECT, queue=QUEUE):
    return raw(
        emulator,
        "POST",
        api_path("tasks", project=project, queue=queue),
        json.dumps(document),
        {"Content-Type": "application/json"},
    )


# -- taskqueues.get -----------------------------------------------------------


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


def test_queue_config_max_leases_reaches_the_resource(make_emulator, clock):
    running = make_emulator(queues=[QueueConfig("limited", max_leases=0)], clock=clock)
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
    assert stats(service) == {
        "totalTasks": 3,
        "oldestTask": str(int(START)),
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


# -- tasks.insert -------------------------------------------------------------


def test_insert_generates_a_unique_name(service):
    first = insert(service, b"first")
    second = insert(service, b"second")
    assert first["id"]
    assert second["id"]
    assert first["id"] != second["id"]
    assert first == {
        "kind": "taskqueues#task",
        "id": first["id"],
        "queueName": LONG_QUEUE_NAME,
        "payloadBase64": b64(b"first"),
        "enqueueTimestamp": micros(START),
        "leaseTimestamp": "0",
        "retry_count": 0,
    }


def test_insert_keeps_the_given_name_and_tag(service):
    task = insert(service, id="task-1_A", tag="images")
    assert (task["id"], task["tag"]) == ("task-1_A", "images")
    assert get_task(service, "task-1_A")["tag"] == "images"


def test_insert_of_an_existing_name_is_409(service):
    insert(service, id="twice")
    message = expect_error(
        service.tasks().insert(project=PROJECT, taskqueue=QUEUE, body={"id": "twice", "payloadBase64": ""}),
        409,
        "alreadyExists",
    )
    assert "twice" in message


def test_insert_of_a_deleted_name_is_409(service):
    insert(service, id="tombstoned")
    service.tasks().delete(project=PROJECT, taskqueue=QUEUE, task="tombstoned").execute()
    expect_error(
        service.tasks().insert(project=PROJECT, taskqueue=QUEUE, body={"id": "tombstoned"}),
        409,
        "alreadyExists",
    )


def test_a_deleted_name_is_free_again_after_the_tombstone_period(service, clock):
    insert(service, id="reused")
    service.tasks().delete(project=PROJECT, taskqueue=QUEUE, task="reused").execute()
    clock.advance(8 * 24 * 3600)
    assert insert(service, id="reused")["id"] == "reused"


def test_the_same_name_in_another_queue_is_no_conflict(service):
    insert(service, id="shared")
    assert insert(service, queue="other", id="shared")["queueName"] == f"projects/{PROJECT}/taskqueues/other"


@pytest.mark.parametrize(
    "queue_name",
    [
        QUEUE,
        LONG_QUEUE_NAME,
        "projects/test-app/taskqueues/pull-queue",
        "projects/e~test-app/taskqueues/pull-queue",
    ],
)
def test_insert_accepts_queue_name_in_either_form(service, queue_name):
    assert insert(service, queueName=queue_name)["queueName"] == LONG_QUEUE_NAME


def test_insert_accepts_a_body_without_queue_name(emulator):
    response = raw_insert(emulator, {"payloadBase64": b64(b"x")})
    assert response.status == 200
    assert response.json()["queueName"] == LONG_QUEUE_NAME


@pytest.mark.parametrize(
    "queue_name",
    [
        "other",
        "projects/s~test-app/taskqueues/other",
        "projects/another-app/taskqueues/pull-queue",
    ],
)
def test_insert_naming_another_queue_is_400(service, queue_name):
    expect_error(
        service.tasks().insert(project=PROJECT, taskqueue=QUEUE, body={"queueName": queue_name}),
        400,
    )
    assert list_ids(service) == []


#: Bytes whose standard base64 has ``+``, ``/`` and padding: ``+/7+/w==``.
AWKWARD_PAYLOAD = b"\xfb\xfe\xfe\xff"


@pytest.mark.parametrize("encoded", ["+/7+/w==", "+/7+/w", "-_7-_w==", "-_7-_w"])
def test_insert_accepts_url_safe_and_unpadded_base64(emulator, service, encoded):
    assert base64.b64encode(AWKWARD_PAYLOAD).decode() == "+/7+/w=="
    response = raw_insert(emulator, {"payloadBase64": encoded})
    assert response.status == 200
    task = response.json()
    assert task["payloadBase64"] == "+/7+/w=="
    assert get_task(service, task["id"])["payloadBase64"] == "+/7+/w=="


def test_insert_without_a_tag_reports_none(service):
    task = insert(service)
    assert "tag" not in task
    assert "tag" not in get_task(service, task["id"])


# -- tasks.lease --------------------------------------------------------------


def test_lease_returns_the_task_with_its_lease(service, clock):
    insert(service, b"work", id="t1", tag="red")
    clock.advance(2)
    response = lease(service, num_tasks=5, lease_secs=300)
    assert response == {
        "kind": "taskqueue#tasks",
        "items": [
            {
                "kind": "taskqueues#task",
                "id": "t1",
                "queueName": LONG_QUEUE_NAME,
                "payloadBase64": b64(b"work"),
                "enqueueTimestamp": micros(START),
                "leaseTimestamp": micros(START + 2 + 300),
                "retry_count": 1,
                "tag": "red",
            }
        ],
    }


def test_lease_of_an_empty_queue(service):
    assert lease(service) == {"kind": "taskqueue#tasks"}


def test_lease_takes_the_oldest_first_and_caps_at_num_tasks(service, clock):
    for name in ("a", "b", "c", "d", "e"):
        insert(service, id=name)
        clock.advance(1)
    assert leased_ids(service, num_tasks=3) == ["a", "b", "c"]
    assert leased_ids(service, num_tasks=10) == ["d", "e"]


def test_ties_go_by_insertion_order(service):
    names = ["zeta", "alpha", "mid", "beta", "omega"]
    for name in names:
        insert(service, id=name)
    assert list_ids(service) == names
    assert leased_ids(service, num_tasks=5) == names


def test_an_expired_lease_queues_the_task_by_its_new_eta(service, clock):
    insert(service, id="early")
    clock.advance(1)
    insert(service, id="second")
    assert leased_ids(service, num_tasks=1, lease_secs=10) == ["early"]
    clock.advance(1)
    insert(service, id="third")
    clock.advance(20)
    assert leased_ids(service) == ["second", "third", "early"]


def test_a_leased_task_is_not_leased_again_until_the_lease_expires(service, clock):
    insert(service, id="t1")
    assert leased_ids(service, lease_secs=60) == ["t1"]
    assert lease(service) == {"kind": "taskqueue#tasks"}
    clock.advance(59)
    assert lease(service) == {"kind": "taskqueue#tasks"}
    clock.advance(1)
    [task] = lease(service, lease_secs=30)["items"]
    assert (task["id"], task["retry_count"], task["leaseTimestamp"]) == ("t1", 2, micros(START + 90))


def test_group_by_tag_with_a_tag(service):
    insert(service, id="plain")
    insert(service, id="a1", tag="a")
    insert(service, id="b1", tag="b")
    insert(service, id="a2", tag="a")
    assert leased_ids(service, groupByTag=True, tag="a") == ["a1", "a2"]
    assert leased_ids(service, groupByTag=True, tag="a") == []


def test_group_by_tag_takes_the_tag_of_the_oldest_task(service):
    insert(service, id="b1", tag="b")
    insert(service, id="a1", tag="a")
    insert(service, id="plain")
    insert(service, id="b2", tag="b")
    assert leased_ids(service, groupByTag=True) == ["b1", "b2"]
    assert leased_ids(service, groupByTag=True) == ["a1"]


def test_group_by_tag_with_an_untagged_oldest_task_takes_untagged_only(service):
    insert(service, id="plain1")
    insert(service, id="a1", tag="a")
    insert(service, id="plain2")
    assert leased_ids(service, groupByTag=True) == ["plain1", "plain2"]


def test_group_by_tag_skips_leased_tasks_when_choosing_the_tag(service):
    insert(service, id="a1", tag="a")
    insert(service, id="b1", tag="b")
    insert(service, id="a2", tag="a")
    assert leased_ids(service, num_tasks=1) == ["a1"]
    assert leased_ids(service, groupByTag=True) == ["b1"]


@pytest.mark.parametrize("params", [{"tag": "a"}, {"tag": "a", "groupByTag": False}])
def test_tag_without_group_by_tag_is_400(service, params):
    insert(service, tag="a")
    expect_error(
        service.tasks().lease(project=PROJECT, taskqueue=QUEUE, numTasks=1, leaseSecs=60, **params),
        400,
    )
    assert stats(service)["leasedLastMinute"] == "0"


#: Payload size of which two exceed the lease's 1 MiB total.
LARGE = 600 * 1000


def test_a_lease_returns_about_one_mib_of_payload_at_most(service):
    for name in ("big1", "big2", "big3"):
        insert(service, b"x" * LARGE, id=name)
    assert leased_ids(service, num_tasks=3) == ["big1"]
    assert leased_ids(service, num_tasks=3) == ["big2"]
    assert leased_ids(service, num_tasks=3) == ["big3"]


def test_a_lease_fills_up_to_one_mib(service):
    for name in ("half1", "half2", "half3"):
        insert(service, b"x" * (512 * 1024), id=name)
    assert leased_ids(service, num_tasks=3) == ["half1", "half2"]


def test_a_task_of_one_mib_is_leased_alone(service):
    insert(service, b"x" * (1024 * 1024), id="full")
    insert(service, b"y", id="small")
    [task] = lease(service, num_tasks=2)["items"]
    assert task["id"] == "full"
    assert base64.b64decode(task["payloadBase64"]) == b"x" * (1024 * 1024)


def test_max_leases_deletes_a_task_instead_of_leasing_it_again(service, emulator, clock):
    emulator.declare_queue("limited", max_leases=2)
    insert(service, queue="limited", id="doomed")
    for _ in range(2):
        assert leased_ids(service, num_tasks=1, queue="limited") == ["doomed"]
        clock.advance(60)
    insert(service, queue="limited", id="fresh")
    assert leased_ids(service, num_tasks=1, queue="limited") == ["fresh"]
    expect_error(service.tasks().get(project=PROJECT, taskqueue="limited", task="doomed"), 404, "notFound")
    assert list_ids(service, queue="limited") == ["fresh"]
    expect_error(service.tasks().insert(project=PROJECT, taskqueue="limited", body={"id": "doomed"}), 409)


def test_without_max_leases_a_task_is_leased_forever(service, clock):
    insert(service, id="t1")
    for count in range(1, 21):
        [task] = lease(service)["items"]
        assert task["retry_count"] == count
        clock.advance(60)


# -- tasks.get ----------------------------------------------------------------


def test_get_reflects_the_lease_and_its_expiry(service, clock):
    insert(service, b"data", id="t1", tag="x")
    lease(service, lease_secs=60)
    task = get_task(service, "t1")
    assert task == {
        "kind": "taskqueues#task",
        "id": "t1",
        "queueName": LONG_QUEUE_NAME,
        "payloadBase64": b64(b"data"),
        "enqueueTimestamp": micros(START),
        "leaseTimestamp": micros(START + 60),
        "retry_count": 1,
        "tag": "x",
    }
    clock.advance(60)
    assert (get_task(service, "t1")["leaseTimestamp"], get_task(service, "t1")["retry_count"]) == ("0", 1)


def test_get_of_an_unknown_task_is_404(service):
    expect_error(service.tasks().get(project=PROJECT, taskqueue=QUEUE, task="missing"), 404, "notFound")


# -- tasks.list ---------------------------------------------------------------


def test_list_includes_leased_tasks_without_payloads(service):
    insert(service, b"one", id="first")
    insert(service, b"two", id="second", tag="t")
    lease(service, num_tasks=1, lease_secs=30)
    listed = service.tasks().list(project=PROJECT, taskqueue=QUEUE).execute()
    assert listed == {
        "kind": "taskqueues#tasks",
        "items": [
            {
                "kind": "taskqueues#task",
                "id": "second",
                "queueName": LONG_QUEUE_NAME,
                "enqueueTimestamp": micros(START),
                "leaseTimestamp": "0",
                "retry_count": 0,
                "tag": "t",
            },
            {
                "kind": "taskqueues#task",
                "id": "first",
                "queueName": LONG_QUEUE_NAME,
                "enqueueTimestamp": micros(START),
                "leaseTimestamp": micros(START + 30),
                "retry_count": 1,
            },
        ],
    }


def test_list_of_an_empty_queue(emulator):
    response = raw(emulator, "GET", api_path("tasks"))
    assert response.status == 200
    document = response.json()
    assert document["kind"] == "taskqueues#tasks"
    assert document.get("items", []) == []


def test_list_returns_at_most_100_tasks_in_order(service):
    names = [f"task-{number:03d}" for number in range(105)]
    for name in names:
        insert(service, id=name)
    assert list_ids(service) == names[:100]


# -- tasks.delete -------------------------------------------------------------


def test_delete_over_http_is_204_without_a_body(emulator, service):
    insert(service, id="t1")
    response = raw(emulator, "DELETE", api_path("tasks", "t1"))
    assert (response.status, response.body, response.headers["Content-Length"]) == (204, b"", "0")
    expect_error(service.tasks().get(project=PROJECT, taskqueue=QUEUE, task="t1"), 404, "notFound")


def test_delete_needs_no_lease(service):
    insert(service, id="leased")
    insert(service, id="idle", tag="t")
    lease(service, num_tasks=1)
    for name in ("leased", "idle"):
        assert service.tasks().delete(project=PROJECT, taskqueue=QUEUE, task=name).execute() == ""
    assert list_ids(service) == []
    assert stats(service)["totalTasks"] == 0


def test_delete_of_an_unknown_or_deleted_task_is_404(service):
    expect_error(service.tasks().delete(project=PROJECT, taskqueue=QUEUE, task="never"), 404, "notFound")
    insert(service, id="once")
    service.tasks().delete(project=PROJECT, taskqueue=QUEUE, task="once").execute()
    expect_error(service.tasks().delete(project=PROJECT, taskqueue=QUEUE, task="once"), 404, "notFound")


def test_post_with_method_override_delete(emulator, service):
    insert(service, id="t1")
    response = raw(emulator, "POST", api_path("tasks", "t1"), b"", {"X-HTTP-Method-Override": "DELETE"})
    assert response.status == 204
    assert list_ids(service) == []


# -- tasks.update and tasks.patch ---------------------------------------------

LEASE_METHODS = ["update", "patch"]


@pytest.mark.parametrize("method", LEASE_METHODS)
def test_new_lease_seconds_extends_the_lease(service, clock, method):
    insert(service, id="t1")
    lease(service, lease_secs=60)
    clock.advance(30)
    task = change_lease(service, method, "t1", 120).execute()
    assert (task["id"], task["leaseTimestamp"], task["retry_count"]) == ("t1", micros(START + 150), 1)
    assert task["payloadBase64"] == b64(b"payload")
    clock.advance(100)
    assert leased_ids(service) == []
    clock.advance(20)
    assert leased_ids(service) == ["t1"]


@pytest.mark.parametrize("method", LEASE_METHODS)
def test_new_lease_seconds_zero_releases_the_task(service, clock, method):
    insert(service, id="t1")
    lease(service, lease_secs=600)
    clock.advance(5)
    task = change_lease(service, method, "t1", 0).execute()
    assert (task["leaseTimestamp"], task["retry_count"]) == ("0", 1)
    assert get_task(service, "t1")["leaseTimestamp"] == "0"
    [again] = lease(service)["items"]
    assert (again["id"], again["retry_count"]) == ("t1", 2)


def test_a_released_task_is_queued_at_the_time_of_release(service, clock):
    insert(service, id="released")
    lease(service, lease_secs=600)
    clock.advance(10)
    insert(service, id="waiting")
    clock.advance(10)
    change_lease(service, "patch", "released", 0).execute()
    insert(service, id="latest")
    assert leased_ids(service) == ["waiting", "released", "latest"]


@pytest.mark.parametrize("method", LEASE_METHODS)
def test_the_body_must_carry_queue_name(service, method):
    insert(service, id="t1")
    lease(service)
    expect_error(change_lease(service, method, "t1", 30, body={"id": "t1"}), 400)


@pytest.mark.parametrize("method", LEASE_METHODS)
def test_the_body_may_give_the_long_queue_name_and_the_current_lease(service, method):
    insert(service, id="t1")
    [task] = lease(service)["items"]
    body = {"queueName": LONG_QUEUE_NAME, "leaseTimestamp": task["leaseTimestamp"]}
    assert change_lease(service, method, "t1", 30, body=body).execute()["leaseTimestamp"] == micros(
        START + 30
    )


@pytest.mark.parametrize("method", LEASE_METHODS)
def test_the_body_naming_another_queue_is_400(service, method):
    insert(service, id="t1")
    lease(service)
    expect_error(change_lease(service, method, "t1", 30, body={"queueName": "other"}), 400)


@pytest.mark.parametrize("method", LEASE_METHODS)
def test_a_stale_lease_timestamp_is_400(service, method):
    insert(service, id="t1")
    [task] = lease(service)["items"]
    stale = str(int(task["leaseTimestamp"]) - 1)
    expect_error(
        change_lease(service, method, "t1", 30, body={"queueName": QUEUE, "leaseTimestamp": stale}), 400
    )
    assert get_task(service, "t1")["leaseTimestamp"] == task["leaseTimestamp"]


@pytest.mark.parametrize("method", LEASE_METHODS)
def test_changing_the_lease_of_a_task_not_leased_is_400(service, method):
    insert(service, id="t1")
    expect_error(change_lease(service, method, "t1", 30), 400)


@pytest.mark.parametrize("method", LEASE_METHODS)
def test_changing_an_expired_lease_is_400(service, clock, method):
    insert(service, id="t1")
    lease(service, lease_secs=60)
    clock.advance(60)
    expect_error(change_lease(service, method, "t1", 30), 400)


@pytest.mark.parametrize("method", LEASE_METHODS)
def test_changing_the_lease_of_an_unknown_task_is_404(service, method):
    expect_error(change_lease(service, method, "missing", 30), 404, "notFound")


def test_post_with_method_override_patch(emulator, service):
    insert(service, id="t1")
    lease(service)
    response = raw(
        emulator,
        "POST",
        api_path("tasks", "t1") + "?newLeaseSeconds=90",
        json.dumps({"queueName": QUEUE}),
        {"Content-Type": "application/json", "X-HTTP-Method-Override": "PATCH"},
    )
    assert response.status == 200
    assert response.json()["leaseTimestamp"] == micros(START + 90)


# -- projects and queues ------------------------------------------------------


def test_prefixed_and_bare_ids_are_one_project(service):
    insert(service, project="s~app", id="t1")
    for project in ("app", "e~app", "s~app"):
        assert (
            get_task(service, "t1", project=project)["queueName"] == f"projects/{project}/taskqueues/{QUEUE}"
        )
        assert list_ids(service, project=project) == ["t1"]
    assert list_ids(service, project="another-app") == []


@pytest.mark.parametrize("project", ["s%7Etest-app", "test%2Dapp"])
def test_percent_encoded_project_ids_are_decoded(emulator, service, project):
    insert(service, id="t1")
    response = raw(emulator, "GET", api_path("tasks", "t1", project=project))
    assert response.status == 200
    assert response.json()["id"] == "t1"


def test_a_domain_scoped_project(service):
    project = "s~example.com:my-app"
    insert(service, project=project, id="t1")
    assert get_task(service, "t1", project=project)["queueName"] == f"projects/{project}/taskqueues/{QUEUE}"
    assert list_ids(service, project="example.com:my-app") == ["t1"]


def test_a_server_for_one_project_refuses_others(make_emulator, clock):
    running = make_emulator(queues=[QUEUE], project="myapp", clock=clock)
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


def test_a_push_queue_from_queue_config_is_400(make_emulator, clock):
    running = make_emulator(queues=[QueueConfig("pushy", mode="push")], clock=clock)
    service = build_service(running.url)
    expect_error(service.taskqueues().get(project=PROJECT, taskqueue="pushy"), 400)


# -- discovery and standard parameters ----------------------------------------


def test_discovery_document_points_at_the_emulator(emulator):
    response = raw(emulator, "GET", DISCOVERY_PATH)
    assert response.status == 200
    document = response.json()
    root = emulator.url + "/"
    assert (document["name"], document["version"]) == ("taskqueue", "v1beta2")
    assert document["rootUrl"] == root
    assert document["baseUrl"] == root + "taskqueue/v1beta2/projects/"
    assert document["batchPath"] == "batch"
    assert document["resources"].keys() == load_document()["resources"].keys()


def test_a_client_built_from_the_served_document_works(emulator):
    service = build(
        "taskqueue",
        "v1beta2",
        discoveryServiceUrl=emulator.url + "/discovery/v1/apis/{api}/{apiVersion}/rest",
        http=httplib2.Http(),
        static_discovery=False,
        cache_discovery=False,
    )
    insert(service, b"hello", id="t1")
    [task] = lease(service)["items"]
    assert (task["id"], base64.b64decode(task["payloadBase64"])) == ("t1", b"hello")


def test_standard_parameters_do_not_break_client_requests(service):
    standard = {"fields": "id,kind", "prettyPrint": False, "quotaUser": "someone", "key": "api-key"}
    task = (
        service.tasks()
        .insert(project=PROJECT, taskqueue=QUEUE, body={"payloadBase64": b64(b"x"), "id": "t1"}, **standard)
        .execute()
    )
    assert task["id"] == "t1"
    assert [t["id"] for t in lease(service, **standard)["items"]] == ["t1"]


def test_standard_and_unknown_query_parameters_are_ignored(emulator, service):
    insert(service, id="t1")
    query = "alt=json&fields=items(id)&prettyPrint=false&quotaUser=u&key=k&oauth_token=t&unknownParam=1"
    response = raw(emulator, "GET", api_path("tasks") + "?" + query)
    assert response.status == 200
    assert [task["id"] for task in response.json()["items"]] == ["t1"]


# -- authentication ----------------------------------------------------------


def authorized_service(url, token):
    credentials = google.oauth2.credentials.Credentials(token=token)
    return build_from_document(load_document(url + "/"), credentials=credentials)


def test_require_auth_refuses_requests_without_a_token(make_emulator, clock):
    running = make_emulator(queues=[QUEUE], require_auth=True, clock=clock)
    response = raw(running, "GET", api_path())
    assert response.status == 401
    assert_google_error(response.json(), 401, "required")
    expect_error(
        build_service(running.url).taskqueues().get(project=PROJECT, taskqueue=QUEUE), 401, "required"
    )
    assert running.tokens == []


def test_require_auth_accepts_a_bearer_token_and_records_it(make_emulator, clock):
    running = make_emulator(queues=[QUEUE], require_auth=True, clock=clock)
    service = authorized_service(running.url, "token-1")
    assert service.taskqueues().get(project=PROJECT, taskqueue=QUEUE).execute()["id"] == QUEUE
    response = raw(running, "GET", api_path(), headers={"Authorization": "Bearer token-2"})
    assert response.status == 200
    assert running.tokens == ["token-1", "token-2"]


def test_accepted_tokens_refuse_other_tokens(make_emulator, clock):
    running = make_emulator(queues=[QUEUE], accepted_tokens=["good"], clock=clock)
    response = raw(running, "GET", api_path(), headers={"Authorization": "Bearer bad"})
    assert response.status == 401
    assert_google_error(response.json(), 401, "authError")
    assert (
        authorized_service(running.url, "good").taskqueues().get(project=PROJECT, taskqueue=QUEUE).execute()
    )
    assert running.tokens == ["bad", "good"]


# -- injected failures --------------------------------------------------------


def test_an_injected_status_answers_with_googles_error_body_once(emulator):
    emulator.inject_failures(status=500)
    response = raw(emulator, "GET", api_path())
    assert response.status == 500
    assert_google_error(response.json(), 500, "backendError")
    assert raw(emulator, "GET", api_path()).status == 200


def test_an_injected_reset_drops_the_connection(emulator):
    emulator.inject_failures(reset=True)
    with pytest.raises((http.client.HTTPException, OSError)):
        raw(emulator, "GET", api_path())
    assert raw(emulator, "GET", api_path()).status == 200


def test_httplib2_raises_on_injected_resets(emulator):
    # httplib2 retries a dropped connection once on its own, so drop two.
    emulator.inject_failures(count=2, reset=True)
    with pytest.raises((http.client.HTTPException, OSError, httplib2.HttpLib2Error)):
        httplib2.Http().request(emulator.url + api_path(), "GET")
    response, _ = httplib2.Http().request(emulator.url + api_path(), "GET")
    assert response.status == 200


def test_execute_retries_through_injected_503s(service, emulator):
    emulator.inject_failures(count=2, status=503)
    request = service.tasks().insert(project=PROJECT, taskqueue=QUEUE, body={"id": "t1"})
    # The client's own hook for its backoff sleeps: record them instead.
    backoffs = []
    request._sleep = backoffs.append
    assert request.execute(num_retries=3)["id"] == "t1"
    assert len(backoffs) == 2
    assert list_ids(service) == ["t1"]


def test_injected_failures_match_path_and_method(emulator, service):
    emulator.inject_failures(status=503, path_contains="/lease", method="POST")
    insert(service, id="t1")
    assert get_task(service, "t1")["id"] == "t1"
    expect_error(service.tasks().lease(project=PROJECT, taskqueue=QUEUE, numTasks=1, leaseSecs=1), 503)
    assert leased_ids(service) == ["t1"]


def test_a_long_get_sent_as_post_with_method_override_keeps_its_query(service):
    # google-api-python-client turns a GET longer than 2048 characters into
    # a POST with X-HTTP-Method-Override: GET and the query as a form body.
    request = service.taskqueues().get(project=PROJECT, taskqueue=QUEUE, getStats=True, quotaUser="x" * 2100)
    document = request.execute()
    assert request.method == "POST"
    assert request.headers["x-http-method-override"] == "GET"
    assert document["stats"]["totalTasks"] == 0


def test_identities_hold_requests_to_the_queue_acl(make_emulator):
    acl_queue = QueueConfig(
        "guarded", consumer_emails=["worker@example.com"], producer_emails=["app@example.com"]
    )
    identities = {"worker-token": "worker@example.com", "app-token": "app@example.com"}
    server = make_emulator(queues=[acl_queue], identities=identities)

    def call(token, method, path, body=None):
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        response, content = httplib2.Http().request(
            f"{server.url}/taskqueue/v1beta2/projects/{PROJECT}/taskqueues/guarded{path}",
            method,
            body=json.dumps(body) if body is not None else None,
            headers=headers,
        )
        return response.status, json.loads(content) if content else None

    assert call("app-token", "POST", "/tasks", {"payloadBase64": "aGk="})[0] == 200
    status, document = call("worker-token", "POST", "/tasks", {"payloadBase64": "aGk="})
    assert status == 403
    assert document["error"]["errors"][0]["reason"] == "forbidden"
    assert "worker@example.com" in document["error"]["message"]
    assert call("app-token", "POST", "/tasks/lease?numTasks=1&leaseSecs=10")[0] == 403
    status, leased = call("worker-token", "POST", "/tasks/lease?numTasks=1&leaseSecs=10")
    assert status == 200
    assert len(leased["items"]) == 1
    assert call("stranger-token", "GET", "")[0] == 403
    assert call("app-token", "GET", "")[0] == 200
