"""Injected failures: an error status with Google's body, a dropped connection,
matched by path and method, and what the client library does with them."""

import http.client

import httplib2
import pytest

from tests.support import raw_http
from tests.support.api import (
    PROJECT,
    QUEUE,
    api_path,
    assert_google_error,
    expect_error,
    get_task,
    insert,
    leased_ids,
    list_ids,
)


def test_an_injected_status_answers_with_googles_error_body_once(emulator):
    emulator.inject_failures(status=500)
    response = raw_http.request(emulator, "GET", api_path())
    assert response.status == 500
    assert_google_error(response.json(), 500, "backendError")
    assert raw_http.request(emulator, "GET", api_path()).status == 200


def test_an_injected_reset_drops_the_connection(emulator):
    emulator.inject_failures(reset=True)
    with pytest.raises((http.client.HTTPException, OSError)):
        raw_http.request(emulator, "GET", api_path())
    assert raw_http.request(emulator, "GET", api_path()).status == 200


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
