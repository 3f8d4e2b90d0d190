"""The emulator's HTTP layer holds against hostile clients and browser pages.

Everything goes over real sockets to an in-process emulator: malformed
framing over raw sockets (no client library would send it), the rest with
``http.client``. Waits are bounded by deadlines on the sockets, never sleeps.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import pytest

from kombu_appengine.emulator import Emulator

#: The queue the tests talk to, below the server's root.
QUEUE_PATH = "/taskqueue/v1beta2/projects/demo/taskqueues/default"
#: Longest any single exchange of a test may take, in seconds.
DEADLINE = 5.0
#: A task to insert: 25 bytes, 0x19.
TASK = b'{"payloadBase64": "eA=="}'


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
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """One request on a fresh ``http.client`` connection (which sends the emulator's own Host)."""
    connection = http.client.HTTPConnection(*address(emulator), timeout=DEADLINE)
    try:
        given = dict(headers or {})
        connection.putrequest(method, path, skip_host="Host" in given, skip_accept_encoding=True)
        if body is not None:
            given.setdefault("Content-Length", str(len(body)))
        for name, value in given.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def insert_json(emulator: Emulator, document: Any, headers: Mapping[str, str] | None = None) -> Answer:
    return request(
        emulator,
        "POST",
        QUEUE_PATH + "/tasks",
        json.dumps(document).encode(),
        {"Content-Type": "application/json", **(headers or {})},
    )


def task_count(emulator: Emulator) -> int:
    return int(emulator.service.get_queue("demo", "default", get_stats=True)["stats"]["totalTasks"])


def read_answer(sock: socket.socket, deadline: float) -> Answer | None:
    """The next HTTP response on ``sock``; ``None`` when the server closes without one.

    Raises:
        AssertionError: nothing complete arrived before ``deadline`` (a monotonic time).
    """
    data = b""
    while True:
        head, separator, rest = data.partition(b"\r\n\r\n")
        if separator:
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(rest) >= length:
                return Answer(int(lines[0].split(" ", 2)[1]), headers, rest[:length])
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no complete answer in time; got {data[:200]!r}")
        readable, _, _ = select.select([sock], [], [], remaining)
        if not readable:
            continue
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            if data:
                raise AssertionError(f"connection closed mid-answer: {data[:200]!r}")
            return None
        data += chunk


def exchange(emulator: Emulator, data: bytes, wait: float = DEADLINE) -> Answer | None:
    """Send ``data`` on a new connection (left open) and read one answer."""
    with socket.create_connection(address(emulator), timeout=DEADLINE) as sock:
        sock.sendall(data)
        return read_answer(sock, time.monotonic() + wait)


def head(emulator: Emulator, request_line: str, *headers: str) -> bytes:
    """A request head carrying the emulator's own Host."""
    lines = [request_line, f"Host: {emulator.host}", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def assert_google_error(answer: Answer | None, code: int | Sequence[int], *words: str) -> dict[str, Any]:
    """``answer`` is Google's JSON error body with ``code`` (or one of them), naming ``words``."""
    assert answer is not None, "the server closed the connection without an answer"
    codes = (code,) if isinstance(code, int) else tuple(code)
    assert answer.status in codes, (answer.status, answer.body[:300])
    assert answer.headers.get("content-type", "").startswith("application/json")
    error = answer.json()["error"]
    assert error["code"] == answer.status
    detail = error["errors"][0]
    assert detail["domain"] == "global"
    assert detail["reason"]
    for word in words:
        assert word.lower() in error["message"].lower(), (word, error["message"])
    return error


# -- 7. unbounded growth -----------------------------------------------------------


def test_tokens_kept_are_bounded_and_the_latest(em: Emulator) -> None:
    from kombu_appengine.emulator.rest import TOKENS_KEPT

    connection = http.client.HTTPConnection(*address(em), timeout=DEADLINE)
    try:
        for n in range(TOKENS_KEPT + 5):
            connection.request("GET", QUEUE_PATH, headers={"Authorization": f"Bearer token-{n}"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200
    finally:
        connection.close()
    assert len(em.tokens) == TOKENS_KEPT
    assert em.tokens[0] == "token-5"
    assert em.tokens[-1] == f"token-{TOKENS_KEPT + 4}"


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("GET", "?getStats=true"),
        ("GET", "/tasks"),
        ("POST", "/tasks/lease?numTasks=5&leaseSecs=10"),
        ("POST", "/tasks/lease?numTasks=5&leaseSecs=10&groupByTag=true&tag=t"),
        ("GET", "/tasks/t1"),
        ("DELETE", "/tasks/t1"),
    ],
)
def test_reading_an_unknown_project_creates_no_state(em: Emulator, method: str, suffix: str) -> None:
    for n in range(20):
        request(em, method, f"/taskqueue/v1beta2/projects/stranger-{n}/taskqueues/default{suffix}")
        request(em, method, f"/taskqueue/v1beta2/projects/stranger-{n}/taskqueues/unknown{suffix}")
    assert not any(project.startswith("stranger") for project in em.service._projects)


def test_inserting_into_a_new_project_still_works(em: Emulator) -> None:
    path = "/taskqueue/v1beta2/projects/newcomer/taskqueues/default"
    answer = request(em, "POST", path + "/tasks", TASK, {"Content-Type": "application/json"})
    assert answer.status == 200, answer.body
    stats = request(em, "GET", path + "?getStats=true").json()["stats"]
    assert stats["totalTasks"] == 1
