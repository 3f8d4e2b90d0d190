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
import urllib.parse
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
    """One request on a fresh connection, with the emulator's own Host unless ``headers`` name one."""
    return request_to(address(emulator), method, path, body, headers)


def request_to(
    where: tuple[str, int],
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    connection = http.client.HTTPConnection(*where, timeout=DEADLINE)
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


# -- 1. chunked bodies ------------------------------------------------------------


@pytest.mark.parametrize("size_line", [b"-3", b"-5", b"+19", b" 19", b"0x19", b"1_9", b""])
def test_chunk_size_that_is_not_plain_hex_is_400(em: Emulator, size_line: bytes) -> None:
    data = head(
        em,
        f"POST {QUEUE_PATH}/tasks HTTP/1.1",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
    )
    # The connection stays open: a size read "without limit" would wait for
    # more bytes forever instead of answering.
    data += size_line + b"\r\n" + TASK + b"\r\n0\r\n\r\n" + b"x" * 2048
    answer = exchange(em, data, wait=2.0)
    assert_google_error(answer, 400, "chunk")
    assert answer is not None
    assert answer.headers.get("connection") == "close"
    assert task_count(em) == 0


def test_chunked_body_with_a_chunk_extension_is_accepted(em: Emulator) -> None:
    data = head(
        em,
        f"POST {QUEUE_PATH}/tasks HTTP/1.1",
        "Content-Type: application/json",
        "Transfer-Encoding: Chunked",
    )
    data += b"1A;name=value\r\n" + TASK + b" \r\n0\r\n\r\n"
    answer = exchange(em, data)
    assert answer is not None
    assert answer.status == 200, answer.body
    assert task_count(em) == 1


# -- 12. lenient parsing ------------------------------------------------------------


@pytest.mark.parametrize(
    "framing",
    [
        ["Content-Length: 25", "Content-Length: 30"],
        ["Content-Length: 25, 30"],
        ["Transfer-Encoding: chunked", "Content-Length: 30"],
    ],
)
def test_conflicting_framing_is_400(em: Emulator, framing: list[str]) -> None:
    body = b"19\r\n" + TASK + b"\r\n0\r\n\r\n" if "chunked" in framing[0] else TASK
    data = head(em, f"POST {QUEUE_PATH}/tasks HTTP/1.1", "Content-Type: application/json", *framing)
    answer = exchange(em, data + body + b"x" * 64, wait=2.0)
    assert_google_error(answer, 400)
    assert task_count(em) == 0


def test_repeated_equal_content_length_is_accepted(em: Emulator) -> None:
    data = head(
        em,
        f"POST {QUEUE_PATH}/tasks HTTP/1.1",
        "Content-Type: application/json",
        "Content-Length: 25",
        "Content-Length: 25",
    )
    answer = exchange(em, data + TASK)
    assert answer is not None
    assert answer.status == 200, answer.body


@pytest.mark.parametrize(
    "coding", ["notchunked", "gzip, chunked", "chunked, chunked", "identity", "xchunked"]
)
def test_transfer_encoding_other_than_chunked_is_refused(em: Emulator, coding: str) -> None:
    data = head(
        em,
        f"POST {QUEUE_PATH}/tasks HTTP/1.1",
        "Content-Type: application/json",
        f"Transfer-Encoding: {coding}",
    )
    answer = exchange(em, data + b"19\r\n" + TASK + b"\r\n0\r\n\r\n", wait=2.0)
    # 400, not the 501 of RFC 9112: a 5xx would be retried as a server failure.
    assert_google_error(answer, 400, "Transfer-Encoding")
    assert task_count(em) == 0


@pytest.mark.parametrize("value", ["\uff11", "1_0", " +1 ", "+1", "1.0", "0x1", "1 ", "\u0661"])
@pytest.mark.parametrize("name", ["numTasks", "leaseSecs"])
def test_integer_query_parameter_must_be_ascii_digits(em: Emulator, name: str, value: str) -> None:
    query = {"numTasks": "1", "leaseSecs": "10", name: value}
    answer = request(em, "POST", f"{QUEUE_PATH}/tasks/lease?{urllib.parse.urlencode(query)}")
    assert_google_error(answer, 400, name)


def test_negative_and_zero_padded_integers_parse(em: Emulator) -> None:
    answer = request(em, "POST", f"{QUEUE_PATH}/tasks/lease?numTasks=007&leaseSecs=010")
    assert answer.status == 200, answer.body
    answer = request(em, "POST", f"{QUEUE_PATH}/tasks/lease?numTasks=1&leaseSecs=-1")
    assert_google_error(answer, 400, "leaseSecs", "between")


# -- 5. batch Content-ID -----------------------------------------------------------------


def batch_part(content_id: bytes, body: bytes = TASK, content_type: bytes = b"application/json") -> bytes:
    return (
        b"--b\r\nContent-Type: application/http\r\nContent-ID: " + content_id + b"\r\n\r\n"
        b"POST "
        + QUEUE_PATH.encode()
        + b"/tasks HTTP/1.1\r\nContent-Type: "
        + content_type
        + b"\r\n\r\n"
        + body
        + b"\r\n"
    )


def post_batch(emulator: Emulator, *parts: bytes) -> Answer | None:
    body = b"".join(parts) + b"--b--\r\n"
    data = head(
        emulator,
        "POST /batch HTTP/1.1",
        "Content-Type: multipart/mixed; boundary=b",
        f"Content-Length: {len(body)}",
    )
    return exchange(emulator, data + body)


def sub_answers(answer: Answer) -> dict[str, Answer]:
    """The batch answer's parts by Content-ID."""
    boundary = answer.headers["content-type"].split("boundary=", 1)[1].strip('"').encode()
    found = {}
    for part in answer.body.split(b"--" + boundary)[1:-1]:
        outer, _, inner = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        ids = [
            line.split(b":", 1)[1].strip().decode("latin-1")
            for line in outer.split(b"\r\n")
            if line.lower().startswith(b"content-id:")
        ]
        status_line, _, rest = inner.partition(b"\r\n")
        inner_head, _, body = rest.partition(b"\r\n\r\n")
        headers = {}
        for line in inner_head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        found[ids[0] if ids else ""] = Answer(int(status_line.split()[1]), headers, body.rstrip(b"\r\n"))
    return found


@pytest.mark.parametrize("content_id", [b"<caf\xc3\xa9>", b"<\xe2\x82\xac>", b"<a\x01b>", b"<\xff>"])
def test_batch_with_a_content_id_that_cannot_be_echoed_is_400_before_any_part_runs(
    em: Emulator, content_id: bytes
) -> None:
    answer = post_batch(em, batch_part(b"<first>"), batch_part(content_id))
    assert_google_error(answer, 400, "Content-ID")
    assert task_count(em) == 0


def test_batch_content_id_that_is_an_encoded_word_is_echoed_as_sent(em: Emulator) -> None:
    answer = post_batch(em, batch_part(b"<=?utf-8?b?4oKs?=>"), batch_part(b"<plain>"))
    assert answer is not None
    assert answer.status == 200, answer.body[:300]
    parts = sub_answers(answer)
    assert set(parts) == {"<response-=?utf-8?b?4oKs?=>", "<response-plain>"}
    assert all(part.status == 200 for part in parts.values())
    assert task_count(em) == 2


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


# -- 8. browser pages -------------------------------------------------------------------


def test_foreign_host_is_403_and_never_echoed(em: Emulator) -> None:
    port = address(em)[1]
    answer = request(
        em, "GET", "/discovery/v1/apis/taskqueue/v1beta2/rest", headers={"Host": f"evil.example:{port}"}
    )
    error = assert_google_error(answer, 403, "Host")
    assert error["errors"][0]["reason"] == "forbidden"
    assert b"evil.example" not in answer.body or b"rootUrl" not in answer.body


@pytest.mark.parametrize("header", ["Host", "Origin"])
def test_a_port_of_thousands_of_digits_is_403(em: Emulator, header: str) -> None:
    """More digits than int() converts: refused like any other port, not a crash."""
    authority = "localhost:" + "9" * 5000
    value = authority if header == "Host" else f"http://{authority}"
    answer = request(em, "GET", QUEUE_PATH, headers={header: value})
    assert_google_error(answer, 403, header)


def test_own_port_with_leading_zeros_is_accepted(em: Emulator) -> None:
    answer = request(em, "GET", QUEUE_PATH, headers={"Host": f"localhost:00{address(em)[1]}"})
    assert answer.status == 200, answer.body


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1", "https://localhost"])
def test_foreign_origin_is_403_and_nothing_runs(em: Emulator, origin: str) -> None:
    answer = insert_json(em, {"payloadBase64": "eA=="}, {"Origin": origin})
    assert_google_error(answer, 403, "Origin")
    lease = request(
        em, "POST", f"{QUEUE_PATH}/tasks/lease?numTasks=1&leaseSecs=10", headers={"Origin": origin}
    )
    assert_google_error(lease, 403, "Origin")
    assert task_count(em) == 0


def test_cross_origin_text_plain_post_is_refused(em: Emulator) -> None:
    """What a page on another site can send without a CORS preflight."""
    port = address(em)[1]
    answer = request(
        em,
        "POST",
        QUEUE_PATH + "/tasks",
        TASK,
        {
            "Host": f"rebound.example:{port}",
            "Origin": f"http://rebound.example:{port}",
            "Content-Type": "text/plain",
        },
    )
    assert_google_error(answer, 403)
    assert task_count(em) == 0


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonp"]
)
@pytest.mark.parametrize("method", ["insert", "update", "patch"])
def test_json_bodies_need_application_json(em: Emulator, content_type: str | None, method: str) -> None:
    assert insert_json(em, {"id": "t1", "payloadBase64": "eA=="}).status == 200
    leased = request(em, "POST", f"{QUEUE_PATH}/tasks/lease?numTasks=1&leaseSecs=60")
    assert leased.status == 200
    headers = {} if content_type is None else {"Content-Type": content_type}
    if method == "insert":
        answer = request(em, "POST", QUEUE_PATH + "/tasks", TASK, headers)
    else:
        verb = "POST" if method == "update" else "PATCH"
        body = b'{"queueName": "default"}'
        answer = request(em, verb, f"{QUEUE_PATH}/tasks/t1?newLeaseSeconds=0", body, headers)
    assert_google_error(answer, 400, "application/json")
    assert task_count(em) == 1
    assert em.service.get_task("demo", "default", "t1")["leaseTimestamp"] != "0"


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=UTF-8", "Application/JSON"]
)
def test_application_json_with_parameters_is_accepted(em: Emulator, content_type: str) -> None:
    answer = request(em, "POST", QUEUE_PATH + "/tasks", TASK, {"Content-Type": content_type})
    assert answer.status == 200, answer.body


def test_own_host_names_and_origins_are_accepted(em: Emulator) -> None:
    port = address(em)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        answer = request(em, "GET", "/discovery/v1/apis/taskqueue/v1beta2/rest", headers={"Host": host})
        assert answer.status == 200, (host, answer.body[:200])
        assert answer.json()["rootUrl"] == f"http://{host}/"
        inserted = insert_json(em, {"payloadBase64": "eA=="}, {"Host": host, "Origin": f"http://{host}"})
        assert inserted.status == 200, (host, inserted.body)
    assert request(em, "GET", QUEUE_PATH, headers={"Host": f"LocalHost:{port}"}).status == 200


def test_bound_to_every_address_any_ip_address_names_it_but_no_domain_name() -> None:
    with Emulator(queues=["default"], host="0.0.0.0") as em:
        port = address(em)[1]
        connection = ("127.0.0.1", port)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"10.1.2.3:{port}", f"[fe80::1]:{port}"):
            answer = request_to(connection, "GET", QUEUE_PATH, headers={"Host": host})
            assert answer.status == 200, (host, answer.body[:200])
        for host in (f"rebound.example:{port}", f"10.1.2.3:{port + 1}"):
            assert_google_error(
                request_to(connection, "GET", QUEUE_PATH, headers={"Host": host}), 403, "Host"
            )


def test_batch_parts_with_json_bodies_need_application_json(em: Emulator) -> None:
    answer = post_batch(em, batch_part(b"<plain>", content_type=b"text/plain"), batch_part(b"<json>"))
    assert answer is not None
    assert answer.status == 200, answer.body[:300]
    parts = sub_answers(answer)
    assert_google_error(parts["<response-plain>"], 400, "application/json")
    assert parts["<response-json>"].status == 200
    assert task_count(em) == 1


def test_batch_from_a_foreign_origin_is_403(em: Emulator) -> None:
    body = batch_part(b"<1>") + b"--b--\r\n"
    answer = request(
        em,
        "POST",
        "/batch",
        body,
        {"Content-Type": "multipart/mixed; boundary=b", "Origin": "http://evil.example"},
    )
    assert_google_error(answer, 403, "Origin")
    assert task_count(em) == 0


# -- 4. connection floods -------------------------------------------------------------


def open_connection(emulator: Emulator, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(address(emulator), timeout=DEADLINE)
    if data:
        sock.sendall(data)
    return sock


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (EOF, reset, or an answer then EOF) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        readable, _, _ = select.select([sock], [], [], remaining)
        if readable:
            try:
                if not sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True


@pytest.mark.parametrize("stage", ["head", "body"])
def test_a_request_trickled_slower_than_its_deadline_is_cut_off(stage: str) -> None:
    with Emulator(queues=["default"], request_timeout=0.5) as em:
        sock = open_connection(em)
        try:
            if stage == "head":
                sock.sendall(f"GET {QUEUE_PATH} HTTP/1.1\r\nHost: {em.host}\r\n".encode())
                trickle = b"X-Slow: yes\r\n"
            else:
                sock.sendall(
                    head(
                        em,
                        f"POST {QUEUE_PATH}/tasks HTTP/1.1",
                        "Content-Type: application/json",
                        "Content-Length: 1000",
                    )
                )
                trickle = b" "
            started = time.monotonic()
            answer_data = b""
            # One piece every 0.1 s: each keeps a per-read timeout happy, so
            # only a deadline for the whole request ends it.
            while time.monotonic() - started < DEADLINE:
                readable, _, _ = select.select([sock], [], [], 0.1)
                if readable:
                    try:
                        chunk = sock.recv(65536)
                    except ConnectionResetError:
                        chunk = b""
                    if not chunk:
                        break
                    answer_data += chunk
                    continue
                try:
                    sock.sendall(trickle)
                except OSError:
                    break
            else:
                pytest.fail("the server kept the trickling request open")
            elapsed = time.monotonic() - started
            assert elapsed >= 0.3, elapsed
            if answer_data:
                assert answer_data.startswith(b"HTTP/1.1 408 "), answer_data[:200]
        finally:
            sock.close()
        # The server still serves.
        assert request(em, "GET", QUEUE_PATH).status == 200


def test_an_idle_keep_alive_connection_outlives_the_request_deadline() -> None:
    with Emulator(queues=["default"], request_timeout=0.3) as em:
        connection = http.client.HTTPConnection(*address(em), timeout=DEADLINE)
        try:
            connection.request("GET", QUEUE_PATH)
            assert connection.getresponse().read()
            assert connection.sock is not None
            assert not closed_by_server(connection.sock, within=0.6)
            connection.request("GET", QUEUE_PATH)
            response = connection.getresponse()
            assert response.status == 200
            response.read()
        finally:
            connection.close()


def test_connections_beyond_the_cap_wait_until_one_frees() -> None:
    with Emulator(queues=["default"], max_connections=2) as em:
        partial = f"GET {QUEUE_PATH} HTTP/1.1\r\nHost: {em.host}\r\n".encode()
        busy = [open_connection(em, partial) for _ in range(2)]
        waiting = open_connection(em, head(em, f"GET {QUEUE_PATH} HTTP/1.1"))
        try:
            with pytest.raises(AssertionError, match="no complete answer"):
                read_answer(waiting, time.monotonic() + 0.5)
            busy.pop().close()
            answer = read_answer(waiting, time.monotonic() + DEADLINE)
            assert answer is not None
            assert answer.status == 200
        finally:
            for sock in [*busy, waiting]:
                sock.close()


def test_at_the_cap_an_idle_connection_makes_room() -> None:
    with Emulator(queues=["default"], max_connections=2) as em:
        idle = [open_connection(em) for _ in range(2)]
        try:
            answer = exchange(em, head(em, f"GET {QUEUE_PATH} HTTP/1.1"))
            assert answer is not None
            assert answer.status == 200
            assert any(closed_by_server(sock, within=DEADLINE) for sock in idle)
        finally:
            for sock in idle:
                sock.close()


def test_connection_options_are_checked() -> None:
    for options in ({"max_connections": 0}, {"request_timeout": 0}, {"idle_timeout": -1}):
        with pytest.raises(ValueError, match=next(iter(options))):
            Emulator(queues=["default"], **options)
