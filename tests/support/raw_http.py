"""Requests to an emulator as the wire carries them (fresh connections, raw
sockets), and Google's JSON error body checked in full: helpers of the
bad-input tests."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Mapping
from typing import Any, NamedTuple

from kombu_appengine.emulator import Emulator
from tests.support.helpers import b64

#: The queue most tests talk to, below the server's root.
QUEUE_PATH = "/taskqueue/v1beta2/projects/demo/taskqueues/default"
#: Seconds any single socket operation of a test may take.
SOCKET_TIMEOUT = 5.0


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


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
    """One request on a fresh ``http.client`` connection."""
    connection = http.client.HTTPConnection(*address(emulator), timeout=SOCKET_TIMEOUT)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def post_json(emulator: Emulator, path: str, document: Any) -> Answer:
    return request(
        emulator, "POST", path, json.dumps(document).encode(), {"Content-Type": "application/json"}
    )


def raw_exchange(emulator: Emulator, data: bytes) -> bytes:
    """Send ``data``, half-close, and read everything until the server closes."""
    with socket.create_connection(address(emulator), timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def parse_raw(raw: bytes) -> Answer:
    """The first HTTP response in ``raw``."""
    answer, _ = parse_next(raw)
    return answer


def parse_next(raw: bytes) -> tuple[Answer, bytes]:
    """The first HTTP response in ``raw``, and the bytes after it."""
    head, separator, rest = raw.partition(b"\r\n\r\n")
    assert separator, f"no complete response head in {raw[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    version, status, _ = lines[0].split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if int(status) < 200:
        return Answer(int(status), headers, b""), rest  # interim (100 Continue): no body
    length = int(headers["content-length"])
    assert len(rest) >= length, f"response body cut short: {len(rest)} of {length} bytes"
    return Answer(int(status), headers, rest[:length]), rest[length:]


def assert_google_error(answer: Answer, code: int, *words: str) -> dict[str, Any]:
    """``answer`` is Google's JSON error body with ``code``, naming ``words``."""
    assert answer.status == code, (answer.status, answer.body[:300])
    assert answer.headers.get("content-type", "").startswith("application/json")
    document = answer.json()
    assert set(document) == {"error"}
    error = document["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    assert len(error["errors"]) == 1
    detail = error["errors"][0]
    assert set(detail) >= {"domain", "reason", "message"}
    assert detail["domain"] == "global"
    assert isinstance(detail["reason"], str)
    assert detail["reason"]
    for word in words:
        assert word.lower() in error["message"].lower(), (word, error["message"])
    return error


def assert_serving(emulator: Emulator) -> None:
    """A new client can still insert and read back a task."""
    inserted = post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"alive")})
    assert inserted.status == 200, inserted.body
    name = inserted.json()["id"]
    fetched = request(emulator, "GET", f"{QUEUE_PATH}/tasks/{name}")
    assert fetched.status == 200
    assert fetched.json()["payloadBase64"] == b64(b"alive")
