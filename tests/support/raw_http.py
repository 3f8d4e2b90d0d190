"""Requests to an emulator as the wire carries them: fresh ``http.client``
connections, raw sockets, answers read within deadlines, batch answers taken
apart, and Google's JSON error body checked in full. Every helper takes any
server with a ``host`` of the form ``host:port``: an :class:`Emulator`, an
:class:`~tests.support.emulator_process.EmulatorProcess`."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
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
    """Where ``server`` listens, as sockets take it (an IPv6 address without its brackets)."""
    host, port = server.host.rsplit(":", 1)
    return host.strip("[]"), int(port)


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
    answer, _ = parse_next(raw)
    return answer


def parse_next(raw: bytes) -> tuple[Answer, bytes]:
    """The first HTTP/1.1 response in ``raw``, and the bytes after it.

    A final response must declare its length; an interim one (100 Continue)
    has no body.
    """
    response_head, separator, rest = raw.partition(b"\r\n\r\n")
    assert separator, f"no complete response head in {raw[:200]!r}"
    version, status, headers = _parse_head(response_head)
    assert version == "HTTP/1.1"
    if status < 200:
        return Answer(status, headers, b""), rest
    length = int(headers["content-length"])
    assert len(rest) >= length, f"response body cut short: {len(rest)} of {length} bytes"
    return Answer(status, headers, rest[:length]), rest[length:]


def _parse_head(response_head: bytes) -> tuple[str, int, dict[str, str]]:
    """HTTP version, status and headers (names in lower case) of a response head."""
    lines = response_head.decode("latin-1").split("\r\n")
    version, status, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return version, int(status), headers


class Part(NamedTuple):
    """One part of a ``multipart/mixed`` body: its Content-ID (``""`` without one) and its content."""

    content_id: str
    content: bytes


class PartRequest(NamedTuple):
    """The HTTP request a batch part holds; ``target`` is the path with its query."""

    method: str
    target: str
    body: bytes


_HEAD_END = re.compile(rb"\r?\n\r?\n")


def multipart_parts(content_type: str, body: bytes) -> list[Part]:
    """The parts of a ``multipart/mixed`` body, in order; lines may end in CRLF or LF alone
    (google-api-python-client writes LF). The body must be closed by its last delimiter."""
    assert content_type.lower().startswith("multipart/mixed"), content_type
    boundary = content_type.split("boundary=", 1)[1].split(";", 1)[0].strip().strip('"')
    chunks = re.split(rb"(?:\A|\r?\n)--" + re.escape(boundary.encode("ascii")), body)
    assert len(chunks) >= 3, f"no part in multipart: {body[:200]!r}"
    assert chunks[-1].strip() == b"--", f"not closed multipart: {body[-200:]!r}"
    found = []
    for chunk in chunks[1:-1]:
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk[1:] if chunk.startswith(b"\n") else chunk
        end = _HEAD_END.search(chunk)
        assert end is not None, f"a part without a head: {chunk[:200]!r}"
        # A long header (google-api-python-client's Content-ID) may be folded.
        lines = re.sub(rb"\r?\n[ \t]+", b" ", chunk[: end.start()]).splitlines()
        content_id = [
            line.split(b":", 1)[1].strip().decode("ascii")
            for line in lines
            if line.lower().startswith(b"content-id:")
        ]
        found.append(Part(content_id[0] if content_id else "", chunk[end.end() :]))
    return found


def response_id(content_id: str) -> str:
    """The Content-ID a batch answer gives the part answering request part ``content_id``."""
    inner = content_id[1:-1] if content_id.startswith("<") and content_id.endswith(">") else content_id
    return f"<response-{inner}>"


def batch_requests(content_type: str, body: bytes) -> dict[str, PartRequest]:
    """The requests of a batch request's body by Content-ID (``""`` for a part without one)."""
    found = {}
    for part in multipart_parts(content_type, body):
        head, content = part.content, b""
        end = _HEAD_END.search(part.content)
        if end is not None:
            head, content = part.content[: end.start()], part.content[end.end() :]
        method, target, _ = head.splitlines()[0].decode("latin-1").split(" ", 2)
        if "://" in target:
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        assert part.content_id not in found, f"two parts with Content-ID {part.content_id!r}"
        found[part.content_id] = PartRequest(method, target, content.rstrip(b"\r\n"))
    return found


def batch_parts_answered(content_type: str, body: bytes) -> dict[str, Answer]:
    """The answers of a batch answer's body by Content-ID (``""`` for a part without one)."""
    found = {}
    for part in multipart_parts(content_type, body):
        assert part.content_id not in found, f"two parts with Content-ID {part.content_id!r}"
        found[part.content_id] = parse_raw(part.content)
    return found


def batch_answers(answer: Answer) -> dict[str, Answer]:
    """The parts of a batch answer by Content-ID (``""`` for a part without one)."""
    return batch_parts_answered(answer.headers["content-type"], answer.body)


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
