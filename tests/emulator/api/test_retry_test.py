"""Fault injection over HTTP: ``/retry_test`` resources and the ``x-retry-test-id`` header.

As Google's storage-testbench does it: a test creates a resource listing,
per API method id, the failures to inject; each request carrying the
resource's id consumes the next failure listed for its method.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Mapping
from typing import Any

import pytest

from kombu_appengine import api
from kombu_appengine.emulator.server import RestServer
from tests.support.helpers import TEST_QUEUES, FakeClock, MakeServer
from tests.support.raw_http import (
    QUEUE_PATH,
    Answer,
    assert_google_error,
    head,
    open_connection,
    post_json,
    request,
    task_count,
)

#: A lease of every task, for the tests' failures to hit.
LEASE = f"{QUEUE_PATH}/tasks/lease?numTasks=10&leaseSecs=60"


def create(emulator: RestServer, instructions: Mapping[str, list[str]]) -> dict[str, Any]:
    answer = post_json(emulator, "/retry_test", {"instructions": instructions})
    assert answer.status == 200, answer.body
    return answer.json()


def insert(emulator: RestServer, name: str, headers: Mapping[str, str] | None = None) -> Answer:
    return post_json(emulator, QUEUE_PATH + "/tasks", {"id": name, "payloadBase64": "eA=="}, headers)


def test_create_show_and_delete_a_retry_test(emulator: RestServer) -> None:
    instructions = {
        api.TASKS_LEASE.id: ["return-503", "return-reset-connection"],
        api.TASKS_DELETE.id: ["stall-for-2s"],
    }
    created = create(emulator, instructions)
    assert set(created) == {"id", "instructions", "completed"}
    assert created["instructions"] == instructions
    assert created["completed"] is False
    test_id = created["id"]
    assert isinstance(test_id, str)
    assert test_id

    shown = request(emulator, "GET", f"/retry_test/{test_id}")
    assert shown.status == 200
    assert shown.json() == created

    assert request(emulator, "DELETE", f"/retry_test/{test_id}").status in (200, 204)
    assert_google_error(request(emulator, "GET", f"/retry_test/{test_id}"), 404, test_id)
    assert_google_error(request(emulator, "DELETE", f"/retry_test/{test_id}"), 404, test_id)


def test_each_request_consumes_the_next_instruction_of_its_method(emulator: RestServer) -> None:
    assert insert(emulator, "t1").status == 200
    instructions = {api.TASKS_LEASE.id: ["return-503", "return-reset-connection", "return-429"]}
    test_id = create(emulator, instructions)["id"]
    header = {"x-retry-test-id": test_id}

    # Other methods, and requests without the header, are untouched.
    assert request(emulator, "GET", QUEUE_PATH, headers=header).status == 200
    assert request(emulator, "GET", f"/retry_test/{test_id}").json()["instructions"][api.TASKS_LEASE.id] == [
        "return-503",
        "return-reset-connection",
        "return-429",
    ]

    error = assert_google_error(request(emulator, "POST", LEASE, headers=header), 503)
    assert error["errors"][0]["reason"] == "backendError"

    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        request(emulator, "POST", LEASE, headers=header)

    assert_google_error(request(emulator, "POST", LEASE, headers=header), 429)
    shown = request(emulator, "GET", f"/retry_test/{test_id}").json()
    assert shown["completed"] is True
    assert shown["instructions"] == {api.TASKS_LEASE.id: []}

    # Nothing was leased by the failed calls; the next one works.
    leased = request(emulator, "POST", LEASE, headers=header)
    assert leased.status == 200
    (task,) = leased.json()["items"]
    assert task["retry_count"] == 1


def test_a_stall_delays_the_request_then_carries_it_out(emulator: RestServer) -> None:
    test_id = create(emulator, {api.TASKS_INSERT.id: ["stall-for-0.4s"]})["id"]
    started = time.monotonic()
    assert insert(emulator, "slow", {"x-retry-test-id": test_id}).status == 200
    assert time.monotonic() - started >= 0.4
    assert task_count(emulator) == 1
    started = time.monotonic()
    assert insert(emulator, "fast", {"x-retry-test-id": test_id}).status == 200
    assert time.monotonic() - started < 0.4


def test_reset_connection_happens_before_the_request_takes_effect(emulator: RestServer) -> None:
    test_id = create(emulator, {api.TASKS_INSERT.id: ["return-reset-connection"]})["id"]
    body = b'{"payloadBase64": "eA=="}'
    data = head(
        emulator,
        f"POST {QUEUE_PATH}/tasks HTTP/1.1",
        "Content-Type: application/json",
        f"x-retry-test-id: {test_id}",
        f"Content-Length: {len(body)}",
    )
    with open_connection(emulator, data + body) as sock:
        try:
            received = sock.recv(65536)
        except ConnectionResetError:
            received = b""
        assert received == b""
    assert task_count(emulator) == 0


def test_instructions_inside_a_batch_apply_to_each_part_by_its_method(emulator: RestServer) -> None:
    test_id = create(emulator, {api.TASKS_INSERT.id: ["return-503"], api.TASKS_GET.id: ["return-500"]})["id"]
    parts = []
    for n, (method, path, body) in enumerate(
        [
            ("POST", QUEUE_PATH + "/tasks", '{"id": "a", "payloadBase64": "eA=="}'),
            ("POST", QUEUE_PATH + "/tasks", '{"id": "b", "payloadBase64": "eA=="}'),
            ("GET", QUEUE_PATH + "/tasks/b", ""),
            ("GET", QUEUE_PATH, ""),
        ]
    ):
        inner = f"{method} {path} HTTP/1.1\r\n"
        if body:
            inner += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        mime = f"--b\r\nContent-Type: application/http\r\nContent-ID: <{n}>\r\n\r\n"
        parts.append(f"{mime}{inner}\r\n{body}\r\n".encode())
    answer = request(
        emulator,
        "POST",
        "/batch",
        b"".join(parts) + b"--b--\r\n",
        {"Content-Type": "multipart/mixed; boundary=b", "x-retry-test-id": test_id},
    )
    assert answer.status == 200, answer.body[:300]
    statuses = [
        int(line.split()[1])
        for line in answer.body.split(b"\r\n")
        if line.startswith(b"HTTP/1.1 ") and line.split()[1].isdigit()
    ]
    assert statuses == [503, 200, 500, 200]
    assert task_count(emulator) == 1
    assert request(emulator, "GET", f"/retry_test/{test_id}").json()["completed"] is True


def test_a_reset_inside_a_batch_drops_the_batch_connection(emulator: RestServer) -> None:
    test_id = create(emulator, {api.TASKS_LEASE.id: ["return-reset-connection"]})["id"]
    part = f"--b\r\nContent-Type: application/http\r\n\r\nPOST {LEASE} HTTP/1.1\r\n\r\n\r\n".encode()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        request(
            emulator,
            "POST",
            "/batch",
            part + b"--b--\r\n",
            {"Content-Type": "multipart/mixed; boundary=b", "x-retry-test-id": test_id},
        )
    assert request(emulator, "GET", f"/retry_test/{test_id}").json()["completed"] is True


def test_retry_tests_are_independent(emulator: RestServer) -> None:
    first = create(emulator, {api.TASKS_INSERT.id: ["return-500"]})["id"]
    second = create(emulator, {api.TASKS_INSERT.id: ["return-502"]})["id"]
    assert first != second
    assert insert(emulator, "x", {"x-retry-test-id": second}).status == 502
    assert insert(emulator, "x", {"x-retry-test-id": first}).status == 500
    assert insert(emulator, "x", {"x-retry-test-id": first}).status == 200


def test_an_unknown_retry_test_id_in_the_header_is_404(emulator: RestServer) -> None:
    assert_google_error(insert(emulator, "x", {"x-retry-test-id": "no-such-test"}), 404, "no-such-test")
    assert task_count(emulator) == 0


@pytest.mark.parametrize(
    "document",
    [
        {"instructions": {"taskqueue.tasks.explode": ["return-503"]}},
        {"instructions": {api.TASKS_LEASE.id: ["return-teapot"]}},
        {"instructions": {api.TASKS_LEASE.id: ["return-200"]}},
        {"instructions": {api.TASKS_LEASE.id: ["return-5030"]}},
        {"instructions": {api.TASKS_LEASE.id: ["stall-for-s"]}},
        {"instructions": {api.TASKS_LEASE.id: ["stall-for--1s"]}},
        {"instructions": {api.TASKS_LEASE.id: ["explode"]}},
        {"instructions": {api.TASKS_LEASE.id: "return-503"}},
        {"instructions": {api.TASKS_LEASE.id: [503]}},
        {"instructions": ["return-503"]},
        {},
        [],
    ],
)
def test_bad_retry_test_documents_are_400(emulator: RestServer, document: Any) -> None:
    assert_google_error(post_json(emulator, "/retry_test", document), 400)


def test_a_retry_test_document_needs_application_json(emulator: RestServer) -> None:
    body = json.dumps({"instructions": {api.TASKS_LEASE.id: ["return-503"]}}).encode()
    answer = request(emulator, "POST", "/retry_test", body, {"Content-Type": "text/plain"})
    assert_google_error(answer, 400, "application/json")


@pytest.mark.parametrize(
    ("method", "path"), [("PUT", "/retry_test"), ("GET", "/retry_test"), ("POST", "/retry_test/x")]
)
def test_other_verbs_on_retry_tests_are_405(emulator: RestServer, method: str, path: str) -> None:
    assert_google_error(request(emulator, method, path), 405, method)


def test_python_level_failures_still_work_alongside(emulator: RestServer) -> None:
    emulator.inject_failures(1, status=503, method="POST", path_contains="/tasks")
    test_id = create(emulator, {api.TASKS_INSERT.id: ["return-500"]})["id"]
    assert insert(emulator, "x", {"x-retry-test-id": test_id}).status == 503
    assert insert(emulator, "x", {"x-retry-test-id": test_id}).status == 500
    assert insert(emulator, "x", {"x-retry-test-id": test_id}).status == 200


def test_a_server_that_asks_for_tokens_injects_failures_for_authenticated_callers_only(
    make_server: MakeServer, clock: FakeClock
) -> None:
    server = make_server(queues=TEST_QUEUES, require_auth=True, clock=clock)
    token = {"Authorization": "Bearer token-1"}
    instructions = {api.TASKS_LEASE.id: ["return-503"]}

    assert_google_error(post_json(server, "/retry_test", {"instructions": instructions}), 401)
    answer = post_json(server, "/retry_test", {"instructions": instructions}, token)
    assert answer.status == 200, answer.body
    test_id = answer.json()["id"]
    assert_google_error(request(server, "GET", f"/retry_test/{test_id}"), 401)
    assert_google_error(request(server, "DELETE", f"/retry_test/{test_id}"), 401)

    # Refused for want of a token, the request consumes nothing.
    joined = {"x-retry-test-id": test_id}
    assert_google_error(request(server, "POST", LEASE, headers=joined), 401)
    shown = request(server, "GET", f"/retry_test/{test_id}", headers=token)
    assert shown.json()["instructions"] == instructions
    assert_google_error(request(server, "POST", LEASE, headers={**joined, **token}), 503)
    assert request(server, "GET", f"/retry_test/{test_id}", headers=token).json()["completed"]
