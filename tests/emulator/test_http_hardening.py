"""The emulator's HTTP layer holds against hostile clients and browser pages.

Everything goes over real sockets to an in-process emulator: malformed
framing over raw sockets (no client library would send it), the rest with
``http.client``. Waits are bounded by deadlines on the sockets, never sleeps.
"""

from __future__ import annotations

import http.client
import select
import socket
import time
import urllib.parse

import pytest

from kombu_appengine.emulator import Emulator
from tests.support.helpers import MakeEmulator
from tests.support.raw_http import (
    QUEUE_PATH,
    SOCKET_TIMEOUT,
    Answer,
    address,
    assert_google_error,
    batch_answers,
    exchange,
    head,
    open_connection,
    post_json,
    read_answer,
    request,
    request_to,
    task_count,
)

#: A task to insert: 25 bytes, 0x19.
TASK = b'{"payloadBase64": "eA=="}'


# -- 1. chunked bodies ------------------------------------------------------------


@pytest.mark.parametrize("size_line", [b"-3", b"-5", b"+19", b" 19", b"0x19", b"1_9", b""])
def test_chunk_size_that_is_not_plain_hex_is_400(emulator: Emulator, size_line: bytes) -> None:
    data = head(
        emulator,
        f"POST {QUEUE_PATH}/tasks HTTP/1.1",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
    )
    # The connection stays open: a size read "without limit" would wait for
    # more bytes forever instead of answering.
    data += size_line + b"\r\n" + TASK + b"\r\n0\r\n\r\n" + b"x" * 2048
    answer = exchange(emulator, data, wait=2.0)
    assert_google_error(answer, 400, "chunk")
    assert answer is not None
    assert answer.headers.get("connection") == "close"
    assert task_count(emulator) == 0


def test_chunked_body_with_a_chunk_extension_is_accepted(emulator: Emulator) -> None:
    data = head(
        emulator,
        f"POST {QUEUE_PATH}/tasks HTTP/1.1",
        "Content-Type: application/json",
        "Transfer-Encoding: Chunked",
    )
    data += b"1A;name=value\r\n" + TASK + b" \r\n0\r\n\r\n"
    answer = exchange(emulator, data)
    assert answer is not None
    assert answer.status == 200, answer.body
    assert task_count(emulator) == 1


# -- 12. lenient parsing ------------------------------------------------------------


@pytest.mark.parametrize(
    "framing",
    [
        ["Content-Length: 25", "Content-Length: 30"],
        ["Content-Length: 25, 30"],
        ["Transfer-Encoding: chunked", "Content-Length: 30"],
    ],
)
def test_conflicting_framing_is_400(emulator: Emulator, framing: list[str]) -> None:
    body = b"19\r\n" + TASK + b"\r\n0\r\n\r\n" if "chunked" in framing[0] else TASK
    data = head(emulator, f"POST {QUEUE_PATH}/tasks HTTP/1.1", "Content-Type: application/json", *framing)
    answer = exchange(emulator, data + body + b"x" * 64, wait=2.0)
    assert_google_error(answer, 400)
    assert task_count(emulator) == 0


def test_repeated_equal_content_length_is_accepted(emulator: Emulator) -> None:
    data = head(
        emulator,
        f"POST {QUEUE_PATH}/tasks HTTP/1.1",
        "Content-Type: application/json",
        "Content-Length: 25",
        "Content-Length: 25",
    )
    answer = exchange(emulator, data + TASK)
    assert answer is not None
    assert answer.status == 200, answer.body


@pytest.mark.parametrize(
    "coding", ["notchunked", "gzip, chunked", "chunked, chunked", "identity", "xchunked"]
)
def test_transfer_encoding_other_than_chunked_is_refused(emulator: Emulator, coding: str) -> None:
    data = head(
        emulator,
        f"POST {QUEUE_PATH}/tasks HTTP/1.1",
        "Content-Type: application/json",
        f"Transfer-Encoding: {coding}",
    )
    answer = exchange(emulator, data + b"19\r\n" + TASK + b"\r\n0\r\n\r\n", wait=2.0)
    # 400, not the 501 of RFC 9112: a 5xx would be retried as a server failure.
    assert_google_error(answer, 400, "Transfer-Encoding")
    assert task_count(emulator) == 0


@pytest.mark.parametrize("value", ["\uff11", "1_0", " +1 ", "+1", "1.0", "0x1", "1 ", "\u0661"])
@pytest.mark.parametrize("name", ["numTasks", "leaseSecs"])
def test_integer_query_parameter_must_be_ascii_digits(emulator: Emulator, name: str, value: str) -> None:
    query = {"numTasks": "1", "leaseSecs": "10", name: value}
    answer = request(emulator, "POST", f"{QUEUE_PATH}/tasks/lease?{urllib.parse.urlencode(query)}")
    assert_google_error(answer, 400, name)


def test_negative_and_zero_padded_integers_parse(emulator: Emulator) -> None:
    answer = request(emulator, "POST", f"{QUEUE_PATH}/tasks/lease?numTasks=007&leaseSecs=010")
    assert answer.status == 200, answer.body
    answer = request(emulator, "POST", f"{QUEUE_PATH}/tasks/lease?numTasks=1&leaseSecs=-1")
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


@pytest.mark.parametrize("content_id", [b"<caf\xc3\xa9>", b"<\xe2\x82\xac>", b"<a\x01b>", b"<\xff>"])
def test_batch_with_a_content_id_that_cannot_be_echoed_is_400_before_any_part_runs(
    emulator: Emulator, content_id: bytes
) -> None:
    answer = post_batch(emulator, batch_part(b"<first>"), batch_part(content_id))
    assert_google_error(answer, 400, "Content-ID")
    assert task_count(emulator) == 0


def test_batch_content_id_that_is_an_encoded_word_is_echoed_as_sent(emulator: Emulator) -> None:
    answer = post_batch(emulator, batch_part(b"<=?utf-8?b?4oKs?=>"), batch_part(b"<plain>"))
    assert answer is not None
    assert answer.status == 200, answer.body[:300]
    parts = batch_answers(answer)
    assert set(parts) == {"<response-=?utf-8?b?4oKs?=>", "<response-plain>"}
    assert all(part.status == 200 for part in parts.values())
    assert task_count(emulator) == 2


# -- 7. unbounded growth -----------------------------------------------------------


def test_tokens_kept_are_bounded_and_the_latest(emulator: Emulator) -> None:
    from kombu_appengine.emulator.rest import TOKENS_KEPT

    connection = http.client.HTTPConnection(*address(emulator), timeout=SOCKET_TIMEOUT)
    try:
        for n in range(TOKENS_KEPT + 5):
            connection.request("GET", QUEUE_PATH, headers={"Authorization": f"Bearer token-{n}"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200
    finally:
        connection.close()
    assert len(emulator.tokens) == TOKENS_KEPT
    assert emulator.tokens[0] == "token-5"
    assert emulator.tokens[-1] == f"token-{TOKENS_KEPT + 4}"


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
def test_reading_an_unknown_project_creates_no_state(emulator: Emulator, method: str, suffix: str) -> None:
    for n in range(20):
        request(emulator, method, f"/taskqueue/v1beta2/projects/stranger-{n}/taskqueues/default{suffix}")
        request(emulator, method, f"/taskqueue/v1beta2/projects/stranger-{n}/taskqueues/unknown{suffix}")
    assert not any(project.startswith("stranger") for project in emulator.service._projects)


def test_inserting_into_a_new_project_still_works(emulator: Emulator) -> None:
    path = "/taskqueue/v1beta2/projects/newcomer/taskqueues/default"
    answer = request(emulator, "POST", path + "/tasks", TASK, {"Content-Type": "application/json"})
    assert answer.status == 200, answer.body
    stats = request(emulator, "GET", path + "?getStats=true").json()["stats"]
    assert stats["totalTasks"] == 1


# -- 8. browser pages -------------------------------------------------------------------


def test_foreign_host_is_403_and_never_echoed(emulator: Emulator) -> None:
    port = address(emulator)[1]
    answer = request(
        emulator, "GET", "/discovery/v1/apis/taskqueue/v1beta2/rest", headers={"Host": f"evil.example:{port}"}
    )
    error = assert_google_error(answer, 403, "Host")
    assert error["errors"][0]["reason"] == "forbidden"
    assert b"evil.example" not in answer.body or b"rootUrl" not in answer.body


@pytest.mark.parametrize("header", ["Host", "Origin"])
def test_a_port_of_thousands_of_digits_is_403(emulator: Emulator, header: str) -> None:
    """More digits than int() converts: refused like any other port, not a crash."""
    authority = "localhost:" + "9" * 5000
    value = authority if header == "Host" else f"http://{authority}"
    answer = request(emulator, "GET", QUEUE_PATH, headers={header: value})
    assert_google_error(answer, 403, header)


def test_own_port_with_leading_zeros_is_accepted(emulator: Emulator) -> None:
    answer = request(emulator, "GET", QUEUE_PATH, headers={"Host": f"localhost:00{address(emulator)[1]}"})
    assert answer.status == 200, answer.body


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1", "https://localhost"])
def test_foreign_origin_is_403_and_nothing_runs(emulator: Emulator, origin: str) -> None:
    answer = post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": "eA=="}, {"Origin": origin})
    assert_google_error(answer, 403, "Origin")
    lease = request(
        emulator, "POST", f"{QUEUE_PATH}/tasks/lease?numTasks=1&leaseSecs=10", headers={"Origin": origin}
    )
    assert_google_error(lease, 403, "Origin")
    assert task_count(emulator) == 0


def test_cross_origin_text_plain_post_is_refused(emulator: Emulator) -> None:
    """What a page on another site can send without a CORS preflight."""
    port = address(emulator)[1]
    answer = request(
        emulator,
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
    assert task_count(emulator) == 0


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonp"]
)
@pytest.mark.parametrize("method", ["insert", "update", "patch"])
def test_json_bodies_need_application_json(emulator: Emulator, content_type: str | None, method: str) -> None:
    assert post_json(emulator, QUEUE_PATH + "/tasks", {"id": "t1", "payloadBase64": "eA=="}).status == 200
    leased = request(emulator, "POST", f"{QUEUE_PATH}/tasks/lease?numTasks=1&leaseSecs=60")
    assert leased.status == 200
    headers = {} if content_type is None else {"Content-Type": content_type}
    if method == "insert":
        answer = request(emulator, "POST", QUEUE_PATH + "/tasks", TASK, headers)
    else:
        verb = "POST" if method == "update" else "PATCH"
        body = b'{"queueName": "default"}'
        answer = request(emulator, verb, f"{QUEUE_PATH}/tasks/t1?newLeaseSeconds=0", body, headers)
    assert_google_error(answer, 400, "application/json")
    assert task_count(emulator) == 1
    assert emulator.service.get_task("demo", "default", "t1")["leaseTimestamp"] != "0"


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=UTF-8", "Application/JSON"]
)
def test_application_json_with_parameters_is_accepted(emulator: Emulator, content_type: str) -> None:
    answer = request(emulator, "POST", QUEUE_PATH + "/tasks", TASK, {"Content-Type": content_type})
    assert answer.status == 200, answer.body


def test_own_host_names_and_origins_are_accepted(emulator: Emulator) -> None:
    port = address(emulator)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        answer = request(emulator, "GET", "/discovery/v1/apis/taskqueue/v1beta2/rest", headers={"Host": host})
        assert answer.status == 200, (host, answer.body[:200])
        assert answer.json()["rootUrl"] == f"http://{host}/"
        inserted = post_json(
            emulator,
            QUEUE_PATH + "/tasks",
            {"payloadBase64": "eA=="},
            {"Host": host, "Origin": f"http://{host}"},
        )
        assert inserted.status == 200, (host, inserted.body)
    assert request(emulator, "GET", QUEUE_PATH, headers={"Host": f"LocalHost:{port}"}).status == 200


def test_bound_to_every_address_any_ip_address_names_it_but_no_domain_name(
    make_emulator: MakeEmulator,
) -> None:
    emulator = make_emulator(queues=["default"], host="0.0.0.0")
    port = address(emulator)[1]
    connection = ("127.0.0.1", port)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"10.1.2.3:{port}", f"[fe80::1]:{port}"):
        answer = request_to(connection, "GET", QUEUE_PATH, headers={"Host": host})
        assert answer.status == 200, (host, answer.body[:200])
    for host in (f"rebound.example:{port}", f"10.1.2.3:{port + 1}"):
        assert_google_error(request_to(connection, "GET", QUEUE_PATH, headers={"Host": host}), 403, "Host")


@pytest.mark.parametrize("content_type", [b"text/plain", b"application/x-www-form-urlencoded"])
def test_a_batch_part_whose_json_body_is_not_application_json_refuses_the_batch_before_any_part_runs(
    emulator: Emulator, content_type: bytes
) -> None:
    answer = post_batch(emulator, batch_part(b"<json>"), batch_part(b"<plain>", content_type=content_type))
    assert_google_error(answer, 400, "part 2", "application/json")
    assert task_count(emulator) == 0


def test_batch_from_a_foreign_origin_is_403(emulator: Emulator) -> None:
    body = batch_part(b"<1>") + b"--b--\r\n"
    answer = request(
        emulator,
        "POST",
        "/batch",
        body,
        {"Content-Type": "multipart/mixed; boundary=b", "Origin": "http://evil.example"},
    )
    assert_google_error(answer, 403, "Origin")
    assert task_count(emulator) == 0


# -- 4. connection floods -------------------------------------------------------------


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
def test_a_request_trickled_slower_than_its_deadline_is_cut_off(
    make_emulator: MakeEmulator, stage: str
) -> None:
    emulator = make_emulator(queues=["default"], request_timeout=0.5)
    sock = open_connection(emulator)
    try:
        if stage == "head":
            sock.sendall(f"GET {QUEUE_PATH} HTTP/1.1\r\nHost: {emulator.host}\r\n".encode())
            trickle = b"X-Slow: yes\r\n"
        else:
            sock.sendall(
                head(
                    emulator,
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
        while time.monotonic() - started < SOCKET_TIMEOUT:
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
    assert request(emulator, "GET", QUEUE_PATH).status == 200


def test_an_idle_keep_alive_connection_outlives_the_request_deadline(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(queues=["default"], request_timeout=0.3)
    connection = http.client.HTTPConnection(*address(emulator), timeout=SOCKET_TIMEOUT)
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


def test_connections_beyond_the_cap_wait_until_one_frees(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(queues=["default"], max_connections=2)
    partial = f"GET {QUEUE_PATH} HTTP/1.1\r\nHost: {emulator.host}\r\n".encode()
    busy = [open_connection(emulator, partial) for _ in range(2)]
    waiting = open_connection(emulator, head(emulator, f"GET {QUEUE_PATH} HTTP/1.1"))
    try:
        with pytest.raises(AssertionError, match="no complete answer"):
            read_answer(waiting, time.monotonic() + 0.5)
        busy.pop().close()
        answer = read_answer(waiting, time.monotonic() + SOCKET_TIMEOUT)
        assert answer is not None
        assert answer.status == 200
    finally:
        for sock in [*busy, waiting]:
            sock.close()


def test_at_the_cap_an_idle_connection_makes_room(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(queues=["default"], max_connections=2)
    idle = [open_connection(emulator) for _ in range(2)]
    try:
        answer = exchange(emulator, head(emulator, f"GET {QUEUE_PATH} HTTP/1.1"))
        assert answer is not None
        assert answer.status == 200
        assert any(closed_by_server(sock, within=SOCKET_TIMEOUT) for sock in idle)
    finally:
        for sock in idle:
            sock.close()


def test_connection_options_are_checked() -> None:
    for options in (
        {"max_connections": 0},
        {"request_timeout": 0},
        {"idle_timeout": -1},
        {"idle_timeout": float("inf")},
    ):
        with pytest.raises(ValueError, match=next(iter(options))):
            Emulator(queues=["default"], **options)
