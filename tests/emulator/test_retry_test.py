"""Fault injection over HTTP: ``/retry_test`` resources and the ``x-retry-test-id`` header.

As Google's storage-testbench does it: a test creates a resource listing,
per API method id, the failures to inject; each request carrying the
resource's id consumes the next failure listed for its method.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import pytest

from kombu_appengine import api
from kombu_appengine.emulator import Emulator

#: The queue the tests talk to, below the server's root.
QUEUE_PATH = "/taskqueue/v1beta2/projects/demo/taskqueues/default"
#: Longest any single exchange of a test may take, in seconds.
DEADLINE = 5.0
LEASE = f"{QUEUE_PATH}/tasks/lease?numTasks=10&leaseSecs=60"


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@pytest.fixture
def em() -> Iterator[Emulator]:
    with Emulator(queues=["default"]) as running:
        yield running


def address(emulator: Emulator) -> tuple[str, int]:
    host, port = emulator.host.rsplit(":", 1)
    return host, int(port)


def request(
    emulator: Emulator,
    method: str,
    path: str,
    document: Any = None,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    """One request on a fresh connection; JSON ``document`` as an application/json body."""
    given = dict(headers or {})
    if document is not None:
        body = json.dumps(document).encode()
        given.setdefault("Content-Type", "application/json")
    connection = http.client.HTTPConnection(*address(emulator), timeout=DEADLINE)
    try:
        connection.request(method, path, body=body, headers=given)
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def create(emulator: Emulator, instructions: Mapping[str, list[str]]) -> dict[str, Any]:
    answer = request(emulator, "POST", "/retry_test", {"instructions": instructions})
    assert answer.status == 200, answer.body
    return answer.json()


def insert(emulator: Emulator, name: str, headers: Mapping[str, str] | None = None) -> Answer:
    return request(emulator, "POST", QUEUE_PATH + "/tasks", {"id": name, "payloadBase64": "eA=="}, headers)


def task_count(emulator: Emulator) -> int:
    return int(emulator.service.get_queue("demo", "default", get_stats=True)["stats"]["totalTasks"])


def assert_google_error(answer: Answer, code: int, *words: str) -> dict[str, Any]:
    assert answer.status == code, (answer.status, answer.body[:300])
    assert answer.headers.get("content-type", "").startswith("application/json")
    error = answer.json()["error"]
    assert error["code"] == code
    assert error["errors"][0]["domain"] == "global"
    assert error["errors"][0]["reason"]
    for word in words:
        assert word.lower() in error["message"].lower(), (word, error["message"])
    return error


def test_create_show_and_delete_a_retry_test(em: Emulator) -> None:
    instructions = {
        api.TASKS_LEASE.id: ["return-503", "return-reset-connection"],
        api.TASKS_DELETE.id: ["stall-for-2s"],
    }
    created = create(em, instructions)
    assert set(created) == {"id", "instructions", "completed"}
    assert created["instructions"] == instructions
    assert created["completed"] is False
    test_id = created["id"]
    assert isinstance(test_id, str)
    assert test_id

    shown = request(em, "GET", f"/retry_test/{test_id}")
    assert shown.status == 200
    assert shown.json() == created

    assert request(em, "DELETE", f"/retry_test/{test_id}").status in (200, 204)
    assert_google_error(request(em, "GET", f"/retry_test/{test_id}"), 404, test_id)
    assert_google_error(request(em, "DELETE", f"/retry_test/{test_id}"), 404, test_id)


def test_each_request_consumes_the_next_instruction_of_its_method(em: Emulator) -> None:
    assert insert(em, "t1").status == 200
    test_id = create(em, {api.TASKS_LEASE.id: ["return-503", "return-reset-connection", "return-429"]})["id"]
    header = {"x-retry-test-id": test_id}

    # Other methods, and requests without the header, are untouched.
    assert request(em, "GET", QUEUE_PATH, headers=header).status == 200
    assert request(em, "GET", f"/retry_test/{test_id}").json()["instructions"][api.TASKS_LEASE.id] == [
        "return-503",
        "return-reset-connection",
        "return-429",
    ]

    error = assert_google_error(request(em, "POST", LEASE, headers=header), 503)
    assert error["errors"][0]["reason"] == "backendError"

    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        request(em, "POST", LEASE, headers=header)

    assert_google_error(request(em, "POST", LEASE, headers=header), 429)
    shown = request(em, "GET", f"/retry_test/{test_id}").json()
    assert shown["completed"] is True
    assert shown["instructions"] == {api.TASKS_LEASE.id: []}

    # Nothing was leased by the failed calls; the next one works.
    leased = request(em, "POST", LEASE, headers=header)
    assert leased.status == 200
    (task,) = leased.json()["items"]
    assert task["retry_count"] == 1


def test_a_stall_delays_the_request_then_carries_it_out(em: Emulator) -> None:
    test_id = create(em, {api.TASKS_INSERT.id: ["stall-for-0.4s"]})["id"]
    started = time.monotonic()
    assert insert(em, "slow", {"x-retry-test-id": test_id}).status == 200
    assert time.monotonic() - started >= 0.4
    assert task_count(em) == 1
    started = time.monotonic()
    assert insert(em, "fast", {"x-retry-test-id": test_id}).status == 200
    assert time.monotonic() - started < 0.4


def test_reset_connection_happens_before_the_request_takes_effect(em: Emulator) -> None:
    test_id = create(em, {api.TASKS_INSERT.id: ["return-reset-connection"]})["id"]
    with socket.create_connection(address(em), timeout=DEADLINE) as sock:
        body = b'{"payloadBase64": "eA=="}'
        sock.sendall(
            (
                f"POST {QUEUE_PATH}/tasks HTTP/1.1\r\nHost: {em.host}\r\nContent-Type: application/json\r\n"
                f"x-retry-test-id: {test_id}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        try:
            received = sock.recv(65536)
        except ConnectionResetError:
            received = b""
        assert received == b""
    assert task_count(em) == 0


def test_instructions_inside_a_batch_apply_to_each_part_by_its_method(em: Emulator) -> None:
    test_id = create(em, {api.TASKS_INSERT.id: ["return-503"], api.TASKS_GET.id: ["return-500"]})["id"]
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
        em,
        "POST",
        "/batch",
        headers={"Content-Type": "multipart/mixed; boundary=b", "x-retry-test-id": test_id},
        body=b"".join(parts) + b"--b--\r\n",
    )
    assert answer.status == 200, answer.body[:300]
    statuses = [
        int(line.split()[1])
        for line in answer.body.split(b"\r\n")
        if line.startswith(b"HTTP/1.1 ") and line.split()[1].isdigit()
    ]
    assert statuses == [503, 200, 500, 200]
    assert task_count(em) == 1
    assert request(em, "GET", f"/retry_test/{test_id}").json()["completed"] is True


def test_a_reset_inside_a_batch_drops_the_batch_connection(em: Emulator) -> None:
    test_id = create(em, {api.TASKS_LEASE.id: ["return-reset-connection"]})["id"]
    part = f"--b\r\nContent-Type: application/http\r\n\r\nPOST {LEASE} HTTP/1.1\r\n\r\n\r\n".encode()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        request(
            em,
            "POST",
            "/batch",
            headers={"Content-Type": "multipart/mixed; boundary=b", "x-retry-test-id": test_id},
            body=part + b"--b--\r\n",
        )
    assert request(em, "GET", f"/retry_test/{test_id}").json()["completed"] is True


def test_retry_tests_are_independent(em: Emulator) -> None:
    first = create(em, {api.TASKS_INSERT.id: ["return-500"]})["id"]
    second = create(em, {api.TASKS_INSERT.id: ["return-502"]})["id"]
    assert first != second
    assert insert(em, "x", {"x-retry-test-id": second}).status == 502
    assert insert(em, "x", {"x-retry-test-id": first}).status == 500
    assert insert(em, "x", {"x-retry-test-id": first}).status == 200


def test_an_unknown_retry_test_id_in_the_header_is_404(em: Emulator) -> None:
    assert_google_error(insert(em, "x", {"x-retry-test-id": "no-such-test"}), 404, "no-such-test")
    assert task_count(em) == 0


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
def test_bad_retry_test_documents_are_400(em: Emulator, document: Any) -> None:
    assert_google_error(request(em, "POST", "/retry_test", document), 400)


def test_a_retry_test_document_needs_application_json(em: Emulator) -> None:
    body = json.dumps({"instructions": {api.TASKS_LEASE.id: ["return-503"]}}).encode()
    answer = request(em, "POST", "/retry_test", headers={"Content-Type": "text/plain"}, body=body)
    assert_google_error(answer, 400, "application/json")


@pytest.mark.parametrize(
    ("method", "path"), [("PUT", "/retry_test"), ("GET", "/retry_test"), ("POST", "/retry_test/x")]
)
def test_other_verbs_on_retry_tests_are_405(em: Emulator, method: str, path: str) -> None:
    assert_google_error(request(em, method, path), 405, method)


def test_python_level_failures_still_work_alongside(em: Emulator) -> None:
    em.inject_failures(1, status=503, method="POST", path_contains="/tasks")
    test_id = create(em, {api.TASKS_INSERT.id: ["return-500"]})["id"]
    assert insert(em, "x", {"x-retry-test-id": test_id}).status == 503
    assert insert(em, "x", {"x-retry-test-id": test_id}).status == 500
    assert insert(em, "x", {"x-retry-test-id": test_id}).status == 200
