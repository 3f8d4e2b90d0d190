"""Helpers of the emulator's API conformance tests (tests/emulator/api/) and
batch tests: requests through google-api-python-client, as users send them,
and the paths of plain HTTP requests (sent with :mod:`tests.support.raw_http`)."""

import json

import pytest
from googleapiclient.errors import HttpError

from tests.support.helpers import b64

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


def micros(seconds):
    """A time in seconds as the API's microsecond string."""
    return str(round(seconds * 1_000_000))


def enqueued(seconds):
    """``enqueueTimestamp`` of a task enqueued at ``seconds``: App Engine keeps whole seconds."""
    return micros(int(seconds))


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


# -- paths ------------------------------------------------------------------


def api_path(*segments, project=PROJECT, queue=QUEUE):
    return SERVICE_PATH + "/".join((project, "taskqueues", queue, *segments))
