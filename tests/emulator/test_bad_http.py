"""Malformed HTTP, sent over raw sockets (no client library would send it), gets
a 4xx with Google's JSON error body or, where no answer is possible, a dropped
connection; clients that stall or vanish never block the others."""

from __future__ import annotations

import http.client
import json
import socket
import struct

import pytest

from kombu_appengine.emulator import Emulator
from tests.support.raw_http import (
    QUEUE_PATH,
    SOCKET_TIMEOUT,
    Answer,
    address,
    assert_google_error,
    assert_serving,
    parse_raw,
    raw_exchange,
    request,
)

#: Every test must leave the server serving, and no handler may crash.
pytestmark = pytest.mark.usefixtures("still_serving_and_no_crash")


@pytest.mark.parametrize("length", [b"abc", b"-5", b"1e3", b"0x10"])
def test_non_integer_content_length_is_400(emulator: Emulator, length: bytes) -> None:
    raw = raw_exchange(
        emulator,
        b"POST " + QUEUE_PATH.encode() + b"/tasks HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: " + length + b"\r\n\r\n{}",
    )
    answer = parse_raw(raw)
    assert_google_error(answer, 400, "Content-Length")
    assert answer.headers.get("connection") == "close"


def test_content_length_of_thousands_of_digits_is_413(emulator: Emulator) -> None:
    """More digits than int() converts: too long a body, not a crash."""
    raw = raw_exchange(
        emulator,
        b"POST " + QUEUE_PATH.encode() + b"/tasks HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n{}",
    )
    assert_google_error(parse_raw(raw), 413)


def test_content_length_with_thousands_of_leading_zeros_is_its_value(emulator: Emulator) -> None:
    body = b'{"payloadBase64": "eA=="}'
    raw = raw_exchange(
        emulator,
        b"POST " + QUEUE_PATH.encode() + b"/tasks HTTP/1.1\r\nHost: " + emulator.host.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + b"0" * 5000
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body,
    )
    assert parse_raw(raw).status == 200


def test_content_length_beyond_the_bytes_sent_drops_the_connection(emulator: Emulator) -> None:
    raw = raw_exchange(
        emulator,
        b"POST " + QUEUE_PATH.encode() + b"/tasks HTTP/1.1\r\nHost: x\r\n"
        b'Content-Length: 1000\r\n\r\n{"payloadBase64": ""}',
    )
    if raw:
        assert_google_error(parse_raw(raw), 400)
    assert request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"] == []


def test_truncated_chunked_body_drops_the_connection(emulator: Emulator) -> None:
    raw = raw_exchange(
        emulator,
        b"POST " + QUEUE_PATH.encode() + b"/tasks HTTP/1.1\r\nHost: x\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n100\r\n{"payl',
    )
    if raw:
        assert_google_error(parse_raw(raw), 400)
    assert request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"] == []


def test_malformed_chunk_size_is_400(emulator: Emulator) -> None:
    raw = raw_exchange(
        emulator,
        b"POST " + QUEUE_PATH.encode() + b"/tasks HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    )
    assert_google_error(parse_raw(raw), 400, "chunked")


@pytest.mark.parametrize(
    "line",
    [
        b"GARBAGE",
        b"\x00\x01\xff\xfe",
        b"GET / HTTP/1.1 trailing words",
        b"GET / HTTP/abc",
        b"POST " + QUEUE_PATH.encode() + b"/tasks",  # HTTP/0.9 allows only GET
    ],
)
def test_garbage_request_line_is_400(emulator: Emulator, line: bytes) -> None:
    answer = parse_raw(raw_exchange(emulator, line + b"\r\nHost: x\r\n\r\n"))
    assert_google_error(answer, 400)
    assert answer.headers.get("connection") == "close"


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/3.0", b"HTTP/10.1"])
def test_request_line_of_a_later_http_version_is_400_not_a_5xx(emulator: Emulator, version: bytes) -> None:
    """A client's mistake: a 5xx would be retried, as a server failure."""
    answer = parse_raw(raw_exchange(emulator, b"GET " + QUEUE_PATH.encode() + b" " + version + b"\r\n\r\n"))
    assert_google_error(answer, 400, "HTTP version")
    assert answer.headers.get("connection") == "close"


def test_very_long_header_is_431(emulator: Emulator) -> None:
    raw = raw_exchange(
        emulator,
        f"GET {QUEUE_PATH} HTTP/1.1\r\nHost: x\r\n".encode() + b"X-Padding: " + b"p" * 70_000 + b"\r\n\r\n",
    )
    assert_google_error(parse_raw(raw), 431, "too long")


def test_too_many_headers_is_431(emulator: Emulator) -> None:
    raw = raw_exchange(
        emulator,
        f"GET {QUEUE_PATH} HTTP/1.1\r\n".encode()
        + b"".join(b"X-H%d: v\r\n" % i for i in range(150))
        + b"\r\n",
    )
    assert_google_error(parse_raw(raw), 431, "headers")


def test_very_long_request_line_is_414(emulator: Emulator) -> None:
    raw = raw_exchange(emulator, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_google_error(parse_raw(raw), 414, "too long")


def test_client_that_connects_and_closes_without_sending(emulator: Emulator) -> None:
    for _ in range(20):
        socket.create_connection(address(emulator), timeout=SOCKET_TIMEOUT).close()
    assert raw_exchange(emulator, b"") == b""


def test_client_that_resets_mid_request(emulator: Emulator) -> None:
    sock = socket.create_connection(address(emulator), timeout=SOCKET_TIMEOUT)
    sock.sendall(b"POST " + QUEUE_PATH.encode() + b'/tasks HTTP/1.1\r\nContent-Length: 50\r\n\r\n{"pa')
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize(
    "partial",
    [
        b"GET /taskq",
        b"POST " + QUEUE_PATH.encode() + b"/tasks HTTP/1.1\r\nHost: x\r\nContent-Le",
        b"POST " + QUEUE_PATH.encode() + b'/tasks HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"payloadB',
    ],
)
def test_stalled_client_does_not_block_others(emulator: Emulator, partial: bytes) -> None:
    stalled = [socket.create_connection(address(emulator), timeout=SOCKET_TIMEOUT) for _ in range(3)]
    try:
        for sock in stalled:
            sock.sendall(partial)
        # While they stall, other clients are served, several times over.
        for _ in range(3):
            assert_serving(emulator)
        # The stalled clients got no answer: the server still waits for the rest.
        for sock in stalled:
            sock.settimeout(0.05)
            with pytest.raises(socket.timeout):
                sock.recv(1)
    finally:
        for sock in stalled:
            sock.close()


def test_keep_alive_connection_survives_a_4xx(emulator: Emulator) -> None:
    """An API-level error answers and leaves the connection usable."""
    connection = http.client.HTTPConnection(*address(emulator), timeout=SOCKET_TIMEOUT)
    try:
        connection.request("POST", QUEUE_PATH + "/tasks/lease?numTasks=0&leaseSecs=1")
        response = connection.getresponse()
        assert_google_error(
            Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()),
            400,
            "numTasks",
        )
        connection.request("GET", QUEUE_PATH)
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["id"] == "default"
    finally:
        connection.close()
