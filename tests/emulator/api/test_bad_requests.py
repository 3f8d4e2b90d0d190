"""Bad requests never crash, hang or 500 the server (emulator or gateway): malformed JSON bodies,
lease and update parameters, task and queue names, paths and methods each get
the documented 4xx with Google's JSON error body naming what is wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kombu_appengine.emulator.server import RestServer
from tests.support.helpers import b64
from tests.support.raw_http import (
    QUEUE_PATH,
    assert_google_error,
    parse_raw,
    post_json,
    raw_exchange,
    request,
)

#: Every test must leave the server serving, and no handler may crash.
pytestmark = pytest.mark.usefixtures("still_serving_and_no_crash")


#: The payload limit, in decoded bytes.
ONE_MIB = 1024 * 1024


def leased_task(emulator: RestServer) -> dict[str, Any]:
    """Insert one task into ``default`` and lease it for an hour."""
    assert post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"x")}).status == 200
    leased = request(emulator, "POST", QUEUE_PATH + "/tasks/lease?numTasks=1&leaseSecs=3600")
    assert leased.status == 200
    (task,) = leased.json()["items"]
    return task


# -- JSON bodies ---------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{", b"{'id': 1}", b"\xff\xfe", b"not json", b'{"a": }'])
def test_malformed_json_body_is_400(emulator: RestServer, body: bytes) -> None:
    answer = request(emulator, "POST", QUEUE_PATH + "/tasks", body, {"Content-Type": "application/json"})
    error = assert_google_error(answer, 400, "JSON")
    assert error["errors"][0]["reason"] == "parseError"


@pytest.mark.parametrize(
    "body",
    [
        b'{"payloadBase64": "", "tag": "\\ud800"}',
        b'{"payloadBase64": "", "tag": "a\\udfffb"}',
        b'{"payloadBase64": "", "id": "\\udc00"}',
        b'{"payloadBase64": "", "queueName": "default\\ud83d"}',
        b'{"payloadBase64": "", "\\ud800": 1}',
        b'{"payloadBase64": "", "x": [{"y": "\\ud800"}]}',
        b'{"payloadBase64": "", "tag": "\xed\xa0\x80"}',  # encoded as bytes: json.loads lets them pass
    ],
)
def test_json_string_with_an_unpaired_surrogate_is_400(emulator: RestServer, body: bytes) -> None:
    """JSON may escape half a character (\\ud800); no text holds one."""
    answer = request(emulator, "POST", QUEUE_PATH + "/tasks", body, {"Content-Type": "application/json"})
    assert_google_error(answer, 400, "not valid Unicode")
    assert request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"] == []


def test_json_string_with_a_surrogate_pair_is_its_character(emulator: RestServer) -> None:
    body = b'{"payloadBase64": "", "tag": "\\ud83d\\ude00"}'
    answer = request(emulator, "POST", QUEUE_PATH + "/tasks", body, {"Content-Type": "application/json"})
    assert answer.status == 200, answer.body
    assert answer.json()["tag"] == "\U0001f600"


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 50_000])
def test_deeply_nested_json_body_is_400(emulator: RestServer, body: bytes) -> None:
    answer = request(emulator, "POST", QUEUE_PATH + "/tasks", body, {"Content-Type": "application/json"})
    assert_google_error(answer, 400, "JSON")


#: JSON texts of a lone surrogate, which no UTF-8 can encode.
LONE_SURROGATES = ["\\udc00", "\\ud800", "a\\udfffb"]


@pytest.mark.parametrize("surrogate", LONE_SURROGATES)
@pytest.mark.parametrize(
    ("field", "template"),
    [
        ("tag", '{"payloadBase64": "aGk=", "tag": "%s"}'),
        ("id", '{"payloadBase64": "aGk=", "id": "%s"}'),
        ("queueName", '{"payloadBase64": "aGk=", "queueName": "%s"}'),
        ("payloadBase64", '{"payloadBase64": "%s"}'),
        ("a key", '{"payloadBase64": "aGk=", "%s": 1}'),
    ],
)
def test_a_string_that_is_not_unicode_is_400_naming_the_field(
    emulator: RestServer, field: str, template: str, surrogate: str
) -> None:
    body = (template % surrogate).encode("ascii")
    answer = request(emulator, "POST", QUEUE_PATH + "/tasks", body, {"Content-Type": "application/json"})
    error = assert_google_error(answer, 400, "not valid Unicode")
    if field != "a key":
        assert repr(field) in error["message"]
    assert request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"] == []


def test_a_surrogate_in_the_body_of_an_update_is_400(emulator: RestServer) -> None:
    task = leased_task(emulator)
    body = json.dumps({"queueName": "default", "leaseTimestamp": task["leaseTimestamp"]})
    body = body.replace('"default"', '"default\\udc00"')
    answer = request(
        emulator,
        "POST",
        f"{QUEUE_PATH}/tasks/{task['id']}?newLeaseSeconds=0",
        body.encode("ascii"),
        {"Content-Type": "application/json"},
    )
    assert_google_error(answer, 400, "queueName", "not valid Unicode")


def test_empty_insert_body_is_400(emulator: RestServer) -> None:
    answer = request(emulator, "POST", QUEUE_PATH + "/tasks", b"", {"Content-Type": "application/json"})
    assert_google_error(answer, 400, "body")


@pytest.mark.parametrize("document", [[1, 2], "task", 42, None, True])
def test_non_object_json_body_is_400(emulator: RestServer, document: Any) -> None:
    assert_google_error(post_json(emulator, QUEUE_PATH + "/tasks", document), 400, "Task")


@pytest.mark.parametrize("document", [[], "x", 7, None])
def test_non_object_update_body_is_400(emulator: RestServer, document: Any) -> None:
    task = leased_task(emulator)
    answer = post_json(emulator, f"{QUEUE_PATH}/tasks/{task['id']}?newLeaseSeconds=10", document)
    assert_google_error(answer, 400, "Task")


@pytest.mark.parametrize("payload", ["*@#$", "a", "abc$def", 12, ["YQ=="], {"x": 1}])
def test_bad_base64_is_400(emulator: RestServer, payload: Any) -> None:
    answer = post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": payload})
    assert_google_error(answer, 400, "payloadBase64")
    assert request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"] == []


def test_payload_over_one_mib_is_400_and_the_whole_task_counts(emulator: RestServer) -> None:
    too_big = post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"x" * (ONE_MIB + 1))})
    assert_google_error(too_big, 400, str(ONE_MIB))
    # As App Engine: the payload, the name, the tag, the queue name and the task's other fields count.
    exactly = post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"x" * ONE_MIB)})
    assert_google_error(exactly, 400, "1048647")
    tagged = post_json(
        emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"x" * (ONE_MIB - 100)), "tag": "t" * 40}
    )
    assert_google_error(tagged, 400, "Task size")
    assert request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"] == []

    payload = bytes(range(256)) * (ONE_MIB // 256 - 1)
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
def test_bad_num_tasks_is_400(emulator: RestServer, query: str) -> None:
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
def test_bad_lease_secs_is_400(emulator: RestServer, query: str) -> None:
    assert post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"x")}).status == 200
    answer = request(emulator, "POST", f"{QUEUE_PATH}/tasks/lease?{query}")
    assert_google_error(answer, 400, "leaseSecs")
    # Nothing was leased by the refused call.
    (listed,) = request(emulator, "GET", QUEUE_PATH + "/tasks").json()["items"]
    assert listed["retry_count"] == 0


def test_lease_limits_themselves_are_accepted(emulator: RestServer) -> None:
    for query in ("numTasks=1&leaseSecs=0", "numTasks=1000&leaseSecs=604800"):
        answer = request(emulator, "POST", f"{QUEUE_PATH}/tasks/lease?{query}")
        assert answer.status == 200, answer.body


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("value", ["-1", "604801", "soon", "", None])
def test_bad_new_lease_seconds_is_400(emulator: RestServer, method: str, value: str | None) -> None:
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
def test_bad_lease_timestamp_in_update_is_400(emulator: RestServer, stamp: str) -> None:
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
def test_tag_without_group_by_tag_is_400(emulator: RestServer, query: str) -> None:
    answer = request(emulator, "POST", f"{QUEUE_PATH}/tasks/lease?numTasks=1&leaseSecs=10&{query}")
    assert_google_error(answer, 400, "groupByTag")


def test_group_by_tag_that_is_not_a_boolean_is_400(emulator: RestServer) -> None:
    answer = request(emulator, "POST", f"{QUEUE_PATH}/tasks/lease?numTasks=1&leaseSecs=10&groupByTag=maybe")
    assert_google_error(answer, 400, "groupByTag")


@pytest.mark.parametrize("tag", ["t" * 501, "\u20ac" * 167])
def test_tag_over_500_bytes_is_400(emulator: RestServer, tag: str) -> None:
    answer = post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"x"), "tag": tag})
    assert_google_error(answer, 400, "tag", "500")


def test_tag_of_500_bytes_is_accepted(emulator: RestServer) -> None:
    tag = "\u20ac" * 166 + "xx"
    assert len(tag.encode()) == 500
    answer = post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"x"), "tag": tag})
    assert answer.status == 200
    assert answer.json()["tag"] == tag


def test_tag_that_is_not_a_string_is_400(emulator: RestServer) -> None:
    answer = post_json(emulator, QUEUE_PATH + "/tasks", {"payloadBase64": b64(b"x"), "tag": 5})
    assert_google_error(answer, 400, "tag")


# -- names ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a" * 501, "a/b", "a.b", "caf\u00e9", "a b", "", 17])
def test_illegal_task_name_in_insert_is_400(emulator: RestServer, name: Any) -> None:
    answer = post_json(emulator, QUEUE_PATH + "/tasks", {"id": name, "payloadBase64": b64(b"x")})
    assert_google_error(answer, 400, "task name")


def test_longest_legal_task_name_is_accepted(emulator: RestServer) -> None:
    name = "A_z-9" * 100
    answer = post_json(emulator, QUEUE_PATH + "/tasks", {"id": name, "payloadBase64": b64(b"x")})
    assert answer.status == 200
    assert answer.json()["id"] == name


@pytest.mark.parametrize("quoted", ["a" * 501, "a%2Fb", "a.b", "caf%C3%A9", "a%20b"])
@pytest.mark.parametrize("method", ["GET", "DELETE", "POST", "PATCH"])
def test_illegal_task_name_in_url_is_400(emulator: RestServer, quoted: str, method: str) -> None:
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
def test_illegal_queue_name_in_url_is_400(emulator: RestServer, quoted: str, suffix: str) -> None:
    method = "POST" if "lease" in suffix else "GET"
    answer = request(emulator, method, f"/taskqueue/v1beta2/projects/demo/taskqueues/{quoted}{suffix}")
    assert_google_error(answer, 400, "queue name")


def test_legal_but_unknown_queue_is_404(emulator: RestServer) -> None:
    answer = request(emulator, "GET", "/taskqueue/v1beta2/projects/demo/taskqueues/nosuchqueue")
    assert_google_error(answer, 404, "nosuchqueue")


# -- paths and methods -------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/nothing/here",
        "/dashboard/nothing/here",
        "/taskqueue/v1beta2/projects/",
        "/taskqueue/v1beta2/projects/demo",
        "/taskqueue/v1beta2/projects/demo/queues/default",
        "/taskqueue/v1beta2/projects/demo/taskqueues/default/jobs",
        "/taskqueue/v1beta2/projects/demo/taskqueues/default/tasks/t1/extra",
        "/taskqueue/v1beta2/projects//taskqueues/default",
        "/taskqueue/v1/projects/demo/taskqueues/default",
    ],
)
def test_unknown_path_is_404(emulator: RestServer, path: str) -> None:
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
def test_method_not_allowed_is_405(emulator: RestServer, method: str, path: str) -> None:
    assert_google_error(request(emulator, method, path), 405, method)


@pytest.mark.parametrize("method", ["FOO", "PROPFIND", "TRACE"])
def test_unknown_verb_gets_a_json_error(emulator: RestServer, method: str) -> None:
    answer = parse_raw(raw_exchange(emulator, f"{method} {QUEUE_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode()))
    assert_google_error(answer, 405, method)
