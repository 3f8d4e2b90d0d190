"""tasks.insert, tasks.get, tasks.list and tasks.delete."""

import base64

import pytest

from kombu_appengine.api import MAX_PAYLOAD_BYTES
from kombu_appengine.rest.backend import TASK_OVERHEAD_BYTES
from tests.support import raw_http
from tests.support.api import (
    LONG_QUEUE_NAME,
    PROJECT,
    QUEUE,
    START,
    api_path,
    enqueued,
    expect_error,
    get_task,
    insert,
    lease,
    list_ids,
    micros,
    stats,
)
from tests.support.helpers import b64

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
        "enqueueTimestamp": enqueued(START),
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


@pytest.mark.emulator_only("the SDK's stub keeps deleted names reserved for ever; App Engine about 7 days")
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
    response = raw_http.post_json(emulator, api_path("tasks"), {"payloadBase64": b64(b"x")})
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
    response = raw_http.post_json(emulator, api_path("tasks"), {"payloadBase64": encoded})
    assert response.status == 200
    task = response.json()
    assert task["payloadBase64"] == "+/7+/w=="
    assert get_task(service, task["id"])["payloadBase64"] == "+/7+/w=="


def test_the_queue_name_counts_against_the_task_size_limit(service, emulator):
    # As App Engine's service, which counts the whole add request: the
    # longer the queue's name, the smaller the largest payload.
    queue = "q" * 100
    emulator.declare_queue(queue)
    largest = MAX_PAYLOAD_BYTES - len(queue) - len("t1") - TASK_OVERHEAD_BYTES
    assert insert(service, b"x" * largest, queue=queue, id="t1")["id"] == "t1"
    expect_error(
        service.tasks().insert(
            project=PROJECT, taskqueue=queue, body={"id": "t2", "payloadBase64": b64(b"x" * (largest + 1))}
        ),
        400,
        "taskTooLarge",
    )


def test_insert_without_a_tag_reports_none(service):
    task = insert(service)
    assert "tag" not in task
    assert "tag" not in get_task(service, task["id"])


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
        "enqueueTimestamp": enqueued(START),
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
                "enqueueTimestamp": enqueued(START),
                "leaseTimestamp": "0",
                "retry_count": 0,
                "tag": "t",
            },
            {
                "kind": "taskqueues#task",
                "id": "first",
                "queueName": LONG_QUEUE_NAME,
                "enqueueTimestamp": enqueued(START),
                "leaseTimestamp": micros(START + 30),
                "retry_count": 1,
            },
        ],
    }


def test_list_of_an_empty_queue(emulator):
    response = raw_http.request(emulator, "GET", api_path("tasks"))
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
    response = raw_http.request(emulator, "DELETE", api_path("tasks", "t1"))
    assert (response.status, response.body, response.headers["content-length"]) == (204, b"", "0")
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
    response = raw_http.request(
        emulator, "POST", api_path("tasks", "t1"), b"", {"X-HTTP-Method-Override": "DELETE"}
    )
    assert response.status == 204
    assert list_ids(service) == []
