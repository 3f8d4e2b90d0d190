"""Bad batch bodies: a malformed batch is one 4xx, a malformed part fails alone,
and batches do not nest."""

from __future__ import annotations

import pytest

from kombu_appengine.emulator import Emulator
from tests.support.raw_http import QUEUE_PATH, Answer, assert_google_error, batch_answers, request

#: Every test must leave the server serving, and no handler may crash.
pytestmark = pytest.mark.usefixtures("still_serving_and_no_crash")


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
    parts = batch_answers(answer)
    assert set(parts) == {"<response-bad>", "<response-1>"}
    assert_google_error(parts["<response-bad>"], 400)
    assert parts["<response-1>"].status == 200
    assert len(request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"]) == 1


@pytest.mark.parametrize("length", [b"9" * 5000, b"0" * 5000 + b"25"])
def test_batch_part_content_length_of_thousands_of_digits(emulator: Emulator, length: bytes) -> None:
    """More digits than int() converts: the part's body is all there is (as with any length past
    its end), not a crash."""
    part = (
        b"Content-Type: application/http\r\nContent-ID: <long>\r\n\r\n"
        b"POST " + QUEUE_PATH.encode() + b"/tasks HTTP/1.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + length + b'\r\n\r\n{"payloadBase64": "eA=="}\r\n'
    )
    answer = batch(emulator, "multipart/mixed; boundary=b", b"--b\r\n" + part + b"--b--\r\n")
    assert answer.status == 200, answer.body[:300]
    inserted = batch_answers(answer)["<response-long>"]
    assert inserted.status == 200, inserted.body
    assert inserted.json()["payloadBase64"] == "eA=="


def test_batch_part_with_a_bad_request_gets_its_own_4xx(emulator: Emulator) -> None:
    lease = (
        b"Content-Type: application/http\r\nContent-ID: <lease>\r\n\r\n"
        b"POST " + QUEUE_PATH.encode() + b"/tasks/lease?numTasks=0&leaseSecs=1 HTTP/1.1\r\n\r\n"
    )
    answer = batch(
        emulator, "multipart/mixed; boundary=b", b"--b\r\n" + lease + b"--b\r\n" + INSERT_PART + b"--b--\r\n"
    )
    parts = batch_answers(answer)
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
    (part,) = batch_answers(answer).values()
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


def test_a_part_with_a_string_that_is_not_unicode_is_its_own_400_and_the_batch_is_answered(
    emulator: Emulator,
) -> None:
    bad = INSERT_PART.replace(b'{"payloadBase64": "eA=="}', b'{"payloadBase64": "eA==", "tag": "\\udc00"}')
    bad = bad.replace(b"<1>", b"<2>")
    answer = batch(
        emulator, "multipart/mixed; boundary=b", b"--b\r\n" + INSERT_PART + b"--b\r\n" + bad + b"--b--\r\n"
    )
    assert answer.status == 200, answer.body[:300]
    parts = batch_answers(answer)
    assert parts["<response-1>"].status == 200
    assert_google_error(parts["<response-2>"], 400, "'tag'", "not valid Unicode")
    assert len(request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"]) == 1
