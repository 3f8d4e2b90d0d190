"""tasks.lease, and lease changes by tasks.update and tasks.patch."""

import base64

import pytest

from tests.support import raw_http
from tests.support.api import (
    LONG_QUEUE_NAME,
    PROJECT,
    QUEUE,
    START,
    api_path,
    change_lease,
    enqueued,
    expect_error,
    get_task,
    insert,
    lease,
    leased_ids,
    list_ids,
    micros,
    stats,
)
from tests.support.helpers import b64

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
                "enqueueTimestamp": enqueued(START),
                "leaseTimestamp": micros(START + 2 + 300),
                "retry_count": 1,
                "tag": "red",
            }
        ],
    }


def test_a_lease_of_zero_seconds_answers_the_lease_it_made_and_is_over_at_once(service, clock):
    insert(service, id="t1")
    [task] = lease(service, lease_secs=0)["items"]
    # As App Engine: the task's ETA is now, which is when its lease ends.
    assert (task["leaseTimestamp"], task["retry_count"]) == (micros(START), 1)
    assert get_task(service, "t1")["leaseTimestamp"] == "0"
    expect_error(change_lease(service, "update", "t1", 60), 400)
    clock.advance(1)
    assert [(task["id"], task["retry_count"]) for task in lease(service)["items"]] == [("t1", 2)]


def test_lease_of_an_empty_queue(service):
    assert lease(service) == {"kind": "taskqueue#tasks"}


def test_lease_takes_the_oldest_first_and_caps_at_num_tasks(service, clock):
    for name in ("a", "b", "c", "d", "e"):
        insert(service, id=name)
        clock.advance(1)
    assert leased_ids(service, num_tasks=3) == ["a", "b", "c"]
    assert leased_ids(service, num_tasks=10) == ["d", "e"]


def test_ties_go_by_name(service):
    names = ["zeta", "alpha", "task10", "mid", "task9", "beta", "omega"]
    for name in names:
        insert(service, id=name)
    # As App Engine orders them: by name, not by insertion ("task10" before "task9").
    assert list_ids(service) == sorted(names)
    assert leased_ids(service, num_tasks=len(names)) == sorted(names)


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
    # Not at the very microsecond its lease ends: due strictly after its ETA, as App Engine has it.
    assert lease(service) == {"kind": "taskqueue#tasks"}
    clock.advance(1)
    [task] = lease(service, lease_secs=30)["items"]
    assert (task["id"], task["retry_count"], task["leaseTimestamp"]) == ("t1", 2, micros(START + 91))


def test_group_by_tag_with_a_tag(service):
    insert(service, id="plain")
    insert(service, id="a1", tag="a")
    insert(service, id="b1", tag="b")
    insert(service, id="a2", tag="a")
    assert leased_ids(service, groupByTag=True, tag="a") == ["a1", "a2"]
    assert leased_ids(service, groupByTag=True, tag="a") == []


def test_group_by_tag_takes_the_tag_of_the_oldest_task(service, clock):
    for name, tag in (("b1", "b"), ("a1", "a"), ("plain", None), ("b2", "b")):
        insert(service, id=name, tag=tag)
        clock.advance(1)
    assert leased_ids(service, groupByTag=True) == ["b1", "b2"]
    assert leased_ids(service, groupByTag=True) == ["a1"]


def test_group_by_tag_with_an_untagged_oldest_task_takes_untagged_only(service, clock):
    for name, tag in (("plain1", None), ("a1", "a"), ("plain2", None)):
        insert(service, id=name, tag=tag)
        clock.advance(1)
    assert leased_ids(service, groupByTag=True) == ["plain1", "plain2"]


def test_group_by_tag_with_an_untagged_oldest_task_looks_at_the_oldest_num_tasks_only(service, clock):
    for name, tag in (("u0", None), ("t1", "a"), ("u2", None)):
        insert(service, id=name, tag=tag)
        clock.advance(1)
    # As App Engine: the untagged among the oldest numTasks due tasks, not every untagged task.
    assert leased_ids(service, num_tasks=2, groupByTag=True) == ["u0"]
    assert leased_ids(service, num_tasks=2, groupByTag=True) == ["t1"]
    assert leased_ids(service, num_tasks=2, groupByTag=True) == ["u2"]


def test_group_by_tag_with_a_tagged_oldest_task_takes_every_task_of_its_tag(service, clock):
    for name, tag in (("a0", "a"), ("u1", None), ("u2", None), ("a3", "a")):
        insert(service, id=name, tag=tag)
        clock.advance(1)
    assert leased_ids(service, num_tasks=2, groupByTag=True) == ["a0", "a3"]


def test_group_by_tag_with_an_empty_tag_takes_the_tag_of_the_oldest_task(service, clock):
    # As App Engine: an empty tag is no tag, on a lease as on an insert.
    for name, tag in (("b1", "b"), ("plain", ""), ("b2", "b")):
        insert(service, id=name, tag=tag)
        clock.advance(1)
    assert leased_ids(service, groupByTag=True, tag="") == ["b1", "b2"]
    assert leased_ids(service, groupByTag=True, tag="") == ["plain"]


def test_group_by_tag_skips_leased_tasks_when_choosing_the_tag(service, clock):
    for name, tag in (("a1", "a"), ("b1", "b"), ("a2", "a")):
        insert(service, id=name, tag=tag)
        clock.advance(1)
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


#: Why the gateway's leases return what App Engine's return.
NO_LEASE_CAP = "App Engine's lease has no 1 MiB cap: the gateway returns what it leased"


@pytest.mark.emulator_only(NO_LEASE_CAP)
def test_a_lease_returns_about_one_mib_of_payload_at_most(service):
    for name in ("big1", "big2", "big3"):
        insert(service, b"x" * LARGE, id=name)
    assert leased_ids(service, num_tasks=3) == ["big1"]
    assert leased_ids(service, num_tasks=3) == ["big2"]
    assert leased_ids(service, num_tasks=3) == ["big3"]


@pytest.mark.emulator_only(NO_LEASE_CAP)
def test_a_lease_fills_up_to_one_mib(service):
    for name in ("half1", "half2", "half3"):
        insert(service, b"x" * (512 * 1024), id=name)
    assert leased_ids(service, num_tasks=3) == ["half1", "half2"]


@pytest.mark.emulator_only(NO_LEASE_CAP)
def test_a_task_of_one_mib_is_leased_alone(service):
    largest = b"x" * (1024 * 1024 - 200)
    insert(service, largest, id="full")
    insert(service, b"y" * 300, id="small")
    [task] = lease(service, num_tasks=2)["items"]
    assert task["id"] == "full"
    assert base64.b64decode(task["payloadBase64"]) == largest


def test_max_leases_deletes_a_task_instead_of_leasing_it_again(service, emulator, clock):
    emulator.declare_queue("limited", max_leases=2)
    insert(service, queue="limited", id="doomed")
    for _ in range(2):
        assert leased_ids(service, num_tasks=1, queue="limited") == ["doomed"]
        clock.advance(61)
    insert(service, queue="limited", id="fresh")
    # As App Engine: the deleted task takes its place among the numTasks.
    assert leased_ids(service, num_tasks=1, queue="limited") == []
    assert leased_ids(service, num_tasks=1, queue="limited") == ["fresh"]
    expect_error(service.tasks().get(project=PROJECT, taskqueue="limited", task="doomed"), 404, "notFound")
    assert list_ids(service, queue="limited") == ["fresh"]
    expect_error(service.tasks().insert(project=PROJECT, taskqueue="limited", body={"id": "doomed"}), 409)


def test_without_max_leases_a_task_is_leased_forever(service, clock):
    insert(service, id="t1")
    for count in range(1, 21):
        [task] = lease(service)["items"]
        assert task["retry_count"] == count
        clock.advance(61)


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
    clock.advance(21)
    assert leased_ids(service) == ["t1"]


@pytest.mark.parametrize("method", LEASE_METHODS)
def test_new_lease_seconds_zero_releases_the_task(service, clock, method):
    insert(service, id="t1")
    lease(service, lease_secs=600)
    clock.advance(5)
    task = change_lease(service, method, "t1", 0).execute()
    assert (task["leaseTimestamp"], task["retry_count"]) == ("0", 1)
    assert get_task(service, "t1")["leaseTimestamp"] == "0"
    # Due from the release on: strictly after its instant, as App Engine has it.
    clock.advance(1)
    [again] = lease(service)["items"]
    assert (again["id"], again["retry_count"]) == ("t1", 2)


def test_a_released_task_is_queued_at_the_time_of_release(service, clock):
    insert(service, id="released")
    lease(service, lease_secs=600)
    clock.advance(10)
    insert(service, id="waiting")
    clock.advance(10)
    change_lease(service, "patch", "released", 0).execute()
    clock.advance(1)
    insert(service, id="latest")
    clock.advance(1)
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
    clock.advance(61)
    expect_error(change_lease(service, method, "t1", 30), 400)


@pytest.mark.parametrize("method", LEASE_METHODS)
def test_changing_the_lease_of_an_unknown_task_is_404(service, method):
    expect_error(change_lease(service, method, "missing", 30), 404, "notFound")


def test_post_with_method_override_patch(emulator, service):
    insert(service, id="t1")
    lease(service)
    response = raw_http.post_json(
        emulator,
        api_path("tasks", "t1") + "?newLeaseSeconds=90",
        {"queueName": QUEUE},
        {"X-HTTP-Method-Override": "PATCH"},
    )
    assert response.status == 200
    assert response.json()["leaseTimestamp"] == micros(START + 90)
