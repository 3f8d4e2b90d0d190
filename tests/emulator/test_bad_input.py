"""Bad input never crashes, hangs or 500s the emulator.

Every malformed request gets the documented 4xx with Google's JSON error
body (or, where no answer is possible, a dropped connection), its message
names what is wrong, and the server keeps serving other clients meanwhile.
Malformed HTTP is sent over raw sockets: no client library would send it.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import struct
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import pytest

from kombu_appengine.emulator import Emulator
from tests.support.helpers import b64

#: The queue most tests talk to, below the server's root.
QUEUE_PATH = "/taskqueue/v1beta2/projects/demo/taskqueues/default"
#: Seconds any single socket operation of a test may take.
SOCKET_TIMEOUT = 5.0
#: The payload limit, in decoded bytes.
ONE_MIB = 1024 * 1024


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
    head, separator, rest = raw.partition(b"\r\n\r\n")
    assert separator, f"no complete response head in {raw[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    version, status, _ = lines[0].split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    assert len(rest) >= length
    return Answer(int(status), headers, rest[:length])


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


@pytest.fixture(autouse=True)
def still_serving_and_no_crash(emulator: Emulator, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """After every test the server still answers, and no handler raised
    anything but a socket error (a crash would show as a dropped connection)."""
    caplog.set_level(logging.DEBUG, logger="kombu_appengine.emulator.server")
    yield
    assert_serving(emulator)
    crashes = [
        record for record in caplog.records if record.exc_info and not issubclass(record.exc_info[0], OSError)
    ]
    assert not crashes, [record.exc_info for record in crashes]


def leased_task(emulator: Emulator) -> dict[str, Any]:
    """Insert one task into ``default`` and lease it for an hour."""
    assert post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"x")}).status == 200
    leased = request(emulator, "POST", QUEUE_PATH + "/tasks/lease?numTasks=1&leaseSecs=3600")
    assert leased.status == 200
    (task,) = leased.json()["items"]
    return task


# -- JSON bodies ---------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{", b"{'id': 1}", b"\xff\xfe", b"not json", b'{"a": }'])
def test_malformed_json_body_is_400(emulator: Emulator, body: bytes) -> None:
    answer = request(emulator, "POST", QUEUE_PATH + "/tasks", body, {"Content-Type": "application/json"})
    error = assert_google_error(answer, 400, "JSON")
    assert error["errors"][0]["reason"] == "parseError"


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 50_000])
def test_deeply_nested_json_body_is_400(emulator: Emulator, body: bytes) -> None:
    answer = request(emulator, "POST", QUEUE_PATH + "/tasks", body, {"Content-Type": "application/json"})
    assert_google_error(answer, 400, "JSON")


def test_empty_insert_body_is_400(emulator: Emulator) -> None:
    answer = request(emulator, "POST", QUEUE_PATH + "/tasks", b"", {"Content-Type": "application/json"})
    assert_google_error(answer, 400, "body")


@pytest.mark.parametrize("document", [[1, 2], "task", 42, None, True])
def test_non_object_json_body_is_400(emulator: Emulator, document: Any) -> None:
    assert_google_error(post_json(emulator, QUEUE_PATH + "/tasks", document), 400, "Task")


@pytest.mark.parametrize("document", [[], "x", 7, None])
def test_non_object_update_body_is_400(emulator: Emulator, document: Any) -> None:
    task = leased_task(emulator)
    answer = post_json(emulator, f"{QUEUE_PATH}/tasks/{task['id']}?newLeaseSeconds=10", document)
    assert_google_error(answer, 400, "Task")


@pytest.mark.parametrize("payload", ["*@#$", "a", "abc$def", 12, ["YQ=="], {"x": 1}])
def test_bad_base64_is_400(emulator: Emulator, payload: Any) -> None:
    answer = post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": payload})
    assert_google_error(answer, 400, "payloadBase64")
    assert request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"] == []


def test_payload_over_one_mib_is_400_and_exactly_one_mib_is_accepted(emulator: Emulator) -> None:
    too_big = post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"x" * (ONE_MIB + 1))})
    assert_google_error(too_big, 400, str(ONE_MIB))
    assert request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"] == []

    payload = bytes(range(256)) * (ONE_MIB // 256)
    accepted = post_json(emulator, QUEUE_PATH + "/tasks", {"id": "max", "payloadBase64": b64(payload)})
    assert accepted.status == 200, accepted.body[:300]
    leased = request(emulator, "POST", QUEUE_PATH + "/tasks/lease?numTasks=10&leaseSecs=60")
    (task,) = leased.json()["items"]
    assert task["id"] == "max"
    assert task["payloadBase64"] == b64(payload)


# -- lease and update parameters -------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "numTasks=0&leaseSecs=10",
        "numTasks=1001&leaseSecs=10",
        "numTasks=-1&leaseSecs=10",
        "numTasks=abc&leaseSecs=10",
        "numTasks=1.5&leaseSecs=10",
        "numTasks=&leaseSecs=10",
        "leaseSecs=10",
    ],
)
def test_bad_num_tasks_is_400(emulator: Emulator, query: str) -> None:
    answer = request(emulator, "POST", f"{QUEUE_PATH}/tasks/lease?{query}")
    assert_google_error(answer, 400, "numTasks")


@pytest.mark.parametrize(
    "query",
    [
        "numTasks=1&leaseSecs=-1",
        "numTasks=1&leaseSecs=604801",
        "numTasks=1&leaseSecs=ten",
        "numTasks=1&leaseSecs=",
        "numTasks=1",
    ],
)
def test_bad_lease_secs_is_400(emulator: Emulator, query: str) -> None:
    assert post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"x")}).status == 200
    answer = request(emulator, "POST", f"{QUEUE_PATH}/tasks/lease?{query}")
    assert_google_error(answer, 400, "leaseSecs")
    # Nothing was leased by the refused call.
    (listed,) = request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"]
    assert listed["retry_count"] == 0


def test_lease_limits_themselves_are_accepted(emulator: Emulator) -> None:
    for query in ("numTasks=1&leaseSecs=0", "numTasks=1000&leaseSecs=604800"):
        answer = request(emulator, "POST", f"{QUEUE_PATH}/tasks/lease?{query}")
        assert answer.status == 200, answer.body


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("value", ["-1", "604801", "soon", "", None])
def test_bad_new_lease_seconds_is_400(emulator: Emulator, method: str, value: str | None) -> None:
    task = leased_task(emulator)
    query = "" if value is None else f"?newLeaseSeconds={value}"
    body = json.dumps({"queueName": "default"}).encode()
    answer = request(
        emulator,
        method,
        f"{QUEUE_PATH}/tasks/{task['id']}{query}",
        body,
        {"Content-Type": "application/json"},
    )
    assert_google_error(answer, 400, "newLeaseSeconds")
    current = request(emulator, "GET", f"{QUEUE_PATH}/tasks/{task['id']}").json()
    assert current["leaseTimestamp"] == task["leaseTimestamp"]


@pytest.mark.parametrize("stamp", ["1e400", "NaN", "-Infinity", '"soon"', "[1]", "{}"])
def test_bad_lease_timestamp_in_update_is_400(emulator: Emulator, stamp: str) -> None:
    task = leased_task(emulator)
    body = (f'{{"queueName": "default", "leaseTimestamp": {stamp}}}').encode()
    answer = request(
        emulator,
        "POST",
        f"{QUEUE_PATH}/tasks/{task['id']}?newLeaseSeconds=10",
        body,
        {"Content-Type": "application/json"},
    )
    assert_google_error(answer, 400, "leaseTimestamp")


@pytest.mark.parametrize("query", ["tag=a", "groupByTag=false&tag=a"])
def test_tag_without_group_by_tag_is_400(emulator: Emulator, query: str) -> None:
    answer = request(emulator, "POST", f"{QUEUE_PATH}/tasks/lease?numTasks=1&leaseSecs=10&{query}")
    assert_google_error(answer, 400, "groupByTag")


def test_group_by_tag_that_is_not_a_boolean_is_400(emulator: Emulator) -> None:
    answer = request(emulator, "POST", f"{QUEUE_PATH}/tasks/lease?numTasks=1&leaseSecs=10&groupByTag=maybe")
    assert_google_error(answer, 400, "groupByTag")


@pytest.mark.parametrize("tag", ["t" * 501, "\u20ac" * 167])
def test_tag_over_500_bytes_is_400(emulator: Emulator, tag: str) -> None:
    answer = post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"x"), "tag": tag})
    assert_google_error(answer, 400, "tag", "500")


def test_tag_of_500_bytes_is_accepted(emulator: Emulator) -> None:
    tag = "\u20ac" * 166 + "xx"
    assert len(tag.encode()) == 500
    answer = post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"x"), "tag": tag})
    assert answer.status == 200
    assert answer.json()["tag"] == tag


def test_tag_that_is_not_a_string_is_400(emulator: Emulator) -> None:
    answer = post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"x"), "tag": 5})
    assert_google_error(answer, 400, "tag")


# -- names ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a" * 501, "a/b", "a.b", "caf\u00e9", "a b", "", 17])
def test_illegal_task_name_in_insert_is_400(emulator: Emulator, name: Any) -> None:
    answer = post_json(emulator, QUEUE_PATH + "/tasks", {"id": name, "payloadBase64": b64(b"x")})
    assert_google_error(answer, 400, "task name")


def test_longest_legal_task_name_is_accepted(emulator: Emulator) -> None:
    name = "A_z-9" * 100
    answer = post_json(emulator, QUEUE_PATH + "/tasks", {"id": name, "payloadBase64": b64(b"x")})
    assert answer.status == 200
    assert answer.json()["id"] == name


@pytest.mark.parametrize("quoted", ["a" * 501, "a%2Fb", "a.b", "caf%C3%A9", "a%20b"])
@pytest.mark.parametrize("method", ["GET", "DELETE", "POST", "PATCH"])
def test_illegal_task_name_in_url_is_400(emulator: Emulator, quoted: str, method: str) -> None:
    body = None
    if method in ("POST", "PATCH"):
        body = json.dumps({"queueName": "default"}).encode()
    answer = request(
        emulator,
        method,
        f"{QUEUE_PATH}/tasks/{quoted}?newLeaseSeconds=10",
        body,
        {"Content-Type": "application/json"},
    )
    assert_google_error(answer, 400, "task name")


@pytest.mark.parametrize("quoted", ["under_score", "a.b", "q" * 101, "caf%C3%A9", "a%2Fb"])
@pytest.mark.parametrize("suffix", ["", "/tasks", "/tasks/lease?numTasks=1&leaseSecs=1", "/tasks/t1"])
def test_illegal_queue_name_in_url_is_400(emulator: Emulator, quoted: str, suffix: str) -> None:
    method = "POST" if "lease" in suffix else "GET"
    answer = request(emulator, method, f"/taskqueue/v1beta2/projects/demo/taskqueues/{quoted}{suffix}")
    assert_google_error(answer, 400, "queue name")


def test_legal_but_unknown_queue_is_404(emulator: Emulator) -> None:
    answer = request(emulator, "GET", "/taskqueue/v1beta2/projects/demo/taskqueues/nosuchqueue")
    assert_google_error(answer, 404, "nosuchqueue")


# -- paths and methods -------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/nothing/here",
        "/taskqueue/v1beta2/projects/",
        "/taskqueue/v1beta2/projects/demo",
        "/taskqueue/v1beta2/projects/demo/queues/default",
        "/taskqueue/v1beta2/projects/demo/taskqueues/default/jobs",
        "/taskqueue/v1beta2/projects/demo/taskqueues/default/tasks/t1/extra",
        "/taskqueue/v1beta2/projects//taskqueues/default",
        "/taskqueue/v1/projects/demo/taskqueues/default",
    ],
)
def test_unknown_path_is_404(emulator: Emulator, path: str) -> None:
    answer = request(emulator, "GET", path)
    error = assert_google_error(answer, 404)
    assert error["errors"][0]["reason"] == "notFound"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", QUEUE_PATH + "/tasks"),
        ("DELETE", QUEUE_PATH),
        ("POST", QUEUE_PATH),
        ("PUT", QUEUE_PATH + "/tasks/t1"),
        ("GET", "/batch"),
        ("DELETE", "/discovery/v1/apis/taskqueue/v1beta2/rest"),
    ],
)
def test_method_not_allowed_is_405(emulator: Emulator, method: str, path: str) -> None:
    assert_google_error(request(emulator, method, path), 405, method)


@pytest.mark.parametrize("method", ["FOO", "PROPFIND", "TRACE"])
def test_unknown_verb_gets_a_json_error(emulator: Emulator, method: str) -> None:
    answer = parse_raw(raw_exchange(emulator, f"{method} {QUEUE_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode()))
    assert_google_error(answer, 405, method)


# -- malformed HTTP ----------------------------------------------------------------


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


# -- batch bodies ------------------------------------------------------------------


def batch(emulator: Emulator, content_type: str | None, body: bytes) -> Answer:
    headers = {"Content-Type": content_type} if content_type else {}
    return request(emulator, "POST", "/batch", body, headers)


INSERT_PART = (
    b"Content-Type: application/http\r\nContent-ID: <1>\r\n\r\n"
    b"POST " + QUEUE_PATH.encode() + b"/tasks HTTP/1.1\r\nContent-Type: application/json\r\n\r\n"
    b'{"payloadBase64": "eA=="}\r\n'
)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "text/plain",
        "multipart/mixed",
        "multipart/form-data; boundary=b",
    ],
)
def test_batch_without_multipart_mixed_boundary_is_400(emulator: Emulator, content_type: str | None) -> None:
    answer = batch(emulator, content_type, b"--b\r\n" + INSERT_PART + b"--b--\r\n")
    assert_google_error(answer, 400, "multipart/mixed")
    assert request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"] == []


@pytest.mark.parametrize(
    "body",
    [
        b"--b\r\n" + INSERT_PART,  # no closing delimiter
        b"--b\r\n" + INSERT_PART[:40],  # truncated inside the first part
        b"garbage, not multipart at all",
        b"",
        b"--other\r\n" + INSERT_PART + b"--other--\r\n",  # not the declared boundary
        b"--b--\r\n",  # no parts
        b"\x00\xff" * 100,
    ],
)
def test_garbage_or_truncated_batch_is_400(emulator: Emulator, body: bytes) -> None:
    answer = batch(emulator, "multipart/mixed; boundary=b", body)
    assert_google_error(answer, 400)
    assert request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"] == []


def test_batch_with_too_many_parts_is_400(emulator: Emulator) -> None:
    body = b"".join(b"--b\r\n" + INSERT_PART for _ in range(1001)) + b"--b--\r\n"
    assert_google_error(batch(emulator, "multipart/mixed; boundary=b", body), 400, "1000")
    assert request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"] == []


def sub_responses(answer: Answer) -> dict[str, Answer]:
    """The batch answer's parts by Content-ID."""
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


@pytest.mark.parametrize(
    "inner",
    [
        b"this is not http",
        b"",
        b"GET\r\n\r\n",
        b"POST " + QUEUE_PATH.encode() + b"/tasks HTTP/1.1\r\nno colon here\r\n\r\n{}",
        b"POST " + QUEUE_PATH.encode() + b"/tasks HTTP/1.1\r\nContent-Length: nine\r\n\r\n{}",
    ],
)
def test_batch_part_that_is_not_an_http_request_fails_alone(emulator: Emulator, inner: bytes) -> None:
    bad = b"Content-Type: application/http\r\nContent-ID: <bad>\r\n\r\n" + inner + b"\r\n"
    answer = batch(
        emulator, "multipart/mixed; boundary=b", b"--b\r\n" + bad + b"--b\r\n" + INSERT_PART + b"--b--\r\n"
    )
    assert answer.status == 200, answer.body[:300]
    parts = sub_responses(answer)
    assert set(parts) == {"<response-bad>", "<response-1>"}
    assert_google_error(parts["<response-bad>"], 400)
    assert parts["<response-1>"].status == 200
    assert len(request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"]) == 1


def test_batch_part_with_a_bad_request_gets_its_own_4xx(emulator: Emulator) -> None:
    lease = (
        b"Content-Type: application/http\r\nContent-ID: <lease>\r\n\r\n"
        b"POST " + QUEUE_PATH.encode() + b"/tasks/lease?numTasks=0&leaseSecs=1 HTTP/1.1\r\n\r\n"
    )
    answer = batch(
        emulator, "multipart/mixed; boundary=b", b"--b\r\n" + lease + b"--b\r\n" + INSERT_PART + b"--b--\r\n"
    )
    parts = sub_responses(answer)
    assert_google_error(parts["<response-lease>"], 400, "numTasks")
    assert parts["<response-1>"].status == 200


def nested_batch(depth: int) -> tuple[str, bytes]:
    """A batch whose one part is a batch whose one part is ... an insert."""
    inner = INSERT_PART
    for level in range(depth):
        boundary = f"level{level}".encode()
        body = b"--" + boundary + b"\r\n" + inner + b"--" + boundary + b"--\r\n"
        inner = (
            b"Content-Type: application/http\r\nContent-ID: <1>\r\n\r\n"
            b"POST /batch HTTP/1.1\r\nContent-Type: multipart/mixed; boundary="
            + boundary
            + b"\r\n\r\n"
            + body
            + b"\r\n"
        )
    return f"multipart/mixed; boundary=level{depth - 1}", body


@pytest.mark.parametrize("depth", [2, 3000])
def test_batch_inside_a_batch_is_refused(emulator: Emulator, depth: int) -> None:
    answer = batch(emulator, *nested_batch(depth))
    assert answer.status == 200
    (part,) = sub_responses(answer).values()
    assert_google_error(part, 400, "batch")
    assert request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"] == []


def test_deeply_nested_multipart_batch_is_400(emulator: Emulator) -> None:
    body = b"x"
    for level in range(3000):
        body = (
            b"--n%d\r\nContent-Type: multipart/mixed; boundary=n%d\r\n\r\n" % (level, level - 1)
            + body
            + b"\r\n--n%d--\r\n" % level
        )
    assert_google_error(batch(emulator, "multipart/mixed; boundary=n2999", body), 400)


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
