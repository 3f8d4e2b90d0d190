"""Requests to an emulator as the wire carries them: fresh ``http.client``
connections, raw sockets, answers read within deadlines, batch answers taken
apart, and Google's JSON error body checked in full. Every helper takes any
server with a ``host`` of the form ``host:port``: an :class:`Emulator`, an
:class:`~tests.support.emulator_process.EmulatorProcess`."""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from kombu_appengine.emulator import Emulator
from tests.support.helpers import b64
from tests.support.transport import total_tasks

#: The queue most tests talk to, below the server's root.
QUEUE_PATH = "/taskqueue/v1beta2/projects/demo/taskqueues/default"
#: Seconds any single socket operation of a test may take.
SOCKET_TIMEOUT = 5.0


class Server(Protocol):
    """What the helpers need of a server."""

    @property
    def host(self) -> str:
        """``host:port``, where it listens."""
        ...


class Answer(NamedTuple):
    """An HTTP response; header names in lower case."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body, which must be declared JSON."""
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        return json.loads(self.body)


def address(server: Server) -> tuple[str, int]:
    host, port = server.host.rsplit(":", 1)
    return host, int(port)


# -- http.client, one fresh connection a request ---------------------------------


def request(
    server: Server,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """One request on a fresh connection, with the server's own Host unless ``headers`` name one."""
    return request_to(address(server), method, path, body, headers)


def request_to(
    where: tuple[str, int],
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """:func:`request` to the address ``where`` (a server bound to every address, say)."""
    connection = http.client.HTTPConnection(*where, timeout=SOCKET_TIMEOUT)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def post_json(server: Server, path: str, document: Any, headers: Mapping[str, str] | None = None) -> Answer:
    """POST ``document`` as an application/json body (more ``headers`` if given)."""
    return request(
        server,
        "POST",
        path,
        json.dumps(document).encode(),
        {"Content-Type": "application/json", **(headers or {})},
    )


# -- raw sockets ----------------------------------------------------------------


def head(server: Server, request_line: str, *headers: str) -> bytes:
    """A request head carrying the server's own Host, then ``headers``."""
    lines = [request_line, f"Host: {server.host}", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def open_connection(server: Server, data: bytes = b"") -> socket.socket:
    """A new connection to ``server``, ``data`` sent on it."""
    sock = socket.create_connection(address(server), timeout=SOCKET_TIMEOUT)
    if data:
        sock.sendall(data)
    return sock


def raw_exchange(server: Server, data: bytes) -> bytes:
    """Send ``data``, half-close, and read everything until the server closes."""
    with socket.create_connection(address(server), timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def exchange(server: Server, data: bytes, wait: float = SOCKET_TIMEOUT) -> Answer | None:
    """Send ``data`` on a new connection (left open) and read one answer within
    ``wait`` seconds; ``None`` when the server closes the connection without one
    (or resets it while ``data`` is still being sent)."""
    with socket.create_connection(address(server), timeout=max(wait, SOCKET_TIMEOUT)) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        return read_answer(sock, time.monotonic() + wait)


def read_answer(sock: socket.socket, deadline: float) -> Answer | None:
    """The next HTTP response on ``sock``; ``None`` when the server closes without one.

    Raises:
        AssertionError: nothing complete arrived before ``deadline`` (a monotonic time).
    """
    data = b""
    while True:
        response_head, separator, rest = data.partition(b"\r\n\r\n")
        if separator:
            _, status, headers = _parse_head(response_head)
            length = int(headers.get("content-length", "0"))
            if len(rest) >= length:
                return Answer(status, headers, rest[:length])
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


def parse_raw(raw: bytes) -> Answer:
    """The first HTTP/1.1 response in ``raw``, which must declare its length."""
    response_head, separator, rest = raw.partition(b"\r\n\r\n")
    assert separator, f"no complete response head in {raw[:200]!r}"
    version, status, headers = _parse_head(response_head)
    assert version == "HTTP/1.1"
    length = int(headers["content-length"])
    assert len(rest) >= length
    return Answer(status, headers, rest[:length])


def _parse_head(response_head: bytes) -> tuple[str, int, dict[str, str]]:
    """HTTP version, status and headers (names in lower case) of a response head."""
    lines = response_head.decode("latin-1").split("\r\n")
    version, status, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return version, int(status), headers


def batch_answers(answer: Answer) -> dict[str, Answer]:
    """The parts of a batch answer by Content-ID (``""`` for a part without one)."""
    boundary = answer.headers["content-type"].split("boundary=", 1)[1].strip('"')
    parts = answer.body.split(b"--" + boundary.encode())
    assert parts[-1].strip() == b"--"
    found = {}
    for part in parts[1:-1]:
        outer, _, inner = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        content_id = [
            line.split(b":", 1)[1].strip().decode()
            for line in outer.split(b"\r\n")
            if line.lower().startswith(b"content-id:")
        ]
        found[content_id[0] if content_id else ""] = parse_raw(inner)
    return found


# -- what the answers must be -----------------------------------------------------


def assert_google_error(answer: Answer | None, code: int | Sequence[int], *words: str) -> dict[str, Any]:
    """``answer`` is Google's JSON error body with ``code`` (or one of them), naming ``words``."""
    assert answer is not None, "the server closed the connection without an answer"
    codes = (code,) if isinstance(code, int) else tuple(code)
    assert answer.status in codes, (answer.status, answer.body[:300])
    assert answer.headers.get("content-type", "").startswith("application/json")
    document = answer.json()
    assert set(document) == {"error"}
    error = document["error"]
    assert error["code"] == answer.status
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


def assert_serving(server: Server) -> None:
    """A new client can still insert and read back a task."""
    inserted = post_json(server, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"alive")})
    assert inserted.status == 200, inserted.body
    name = inserted.json()["id"]
    fetched = request(server, "GET", f"{QUEUE_PATH}/tasks/{name}")
    assert fetched.status == 200
    assert fetched.json()["payloadBase64"] == b64(b"alive")


def task_count(emulator: Emulator) -> int:
    """The tasks of the queue at :data:`QUEUE_PATH`, leased or not, as the emulator counts them."""
    return int(total_tasks(emulator, "default", project="demo"))
