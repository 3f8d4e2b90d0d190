"""Requests the servers refuse rather than guess at (found by a hostile review).

A request without ``Host`` is addressed to no one; a parameter given twice has
no one value; a query that is not UTF-8, or a tag beyond the API's limit,
would reach the queues altered or unchecked. Each is a 400 that changes
nothing.
"""

from __future__ import annotations

import pytest

from kombu_appengine import api
from kombu_appengine.emulator.server import RestServer
from tests.support.raw_http import QUEUE_PATH, assert_google_error, exchange, post_json, request, task_count

TASK = b'{"payloadBase64": "eA=="}'


def test_an_http11_request_without_host_is_400_and_inserts_nothing(emulator: RestServer) -> None:
    data = (
        f"POST {QUEUE_PATH}/tasks HTTP/1.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(TASK)}\r\n\r\n"
    ).encode() + TASK
    assert_google_error(exchange(emulator, data), 400, "Host")
    assert task_count(emulator) == 0


def test_an_http10_request_may_leave_host_out(emulator: RestServer) -> None:
    answer = exchange(emulator, f"GET {QUEUE_PATH} HTTP/1.0\r\n\r\n".encode())
    assert answer is not None
    assert answer.status == 200, answer.body


@pytest.mark.parametrize(
    "query",
    [
        "numTasks=1&numTasks=2&leaseSecs=10",
        "numTasks=1&leaseSecs=10&leaseSecs=20",
        "numTasks=1&leaseSecs=10&groupByTag=true&tag=a&tag=b",
    ],
)
def test_a_parameter_given_twice_is_400_and_leases_nothing(emulator: RestServer, query: str) -> None:
    assert post_json(emulator, f"{QUEUE_PATH}/tasks", {"payloadBase64": "eA=="}).status == 200
    answer = request(emulator, "POST", f"{QUEUE_PATH}/tasks/lease?{query}")
    assert_google_error(answer, 400, "given 2 times")
    listed = request(emulator, "GET", f"{QUEUE_PATH}/tasks").json()["items"]
    assert [task["leaseTimestamp"] for task in listed] == ["0"]


def test_a_query_that_is_not_utf8_is_400(emulator: RestServer) -> None:
    answer = request(
        emulator, "POST", f"{QUEUE_PATH}/tasks/lease?numTasks=1&leaseSecs=10&groupByTag=true&tag=%ed%b0%80"
    )
    assert_google_error(answer, 400, "UTF-8")


def test_a_lease_tag_over_the_limit_is_400(emulator: RestServer) -> None:
    tag = "t" * (api.MAX_TAG_BYTES + 1)
    answer = request(
        emulator, "POST", f"{QUEUE_PATH}/tasks/lease?numTasks=1&leaseSecs=10&groupByTag=true&tag={tag}"
    )
    assert_google_error(answer, 400, "tag")
    fitting = request(
        emulator, "POST", f"{QUEUE_PATH}/tasks/lease?numTasks=1&leaseSecs=10&groupByTag=true&tag={tag[:-1]}"
    )
    assert fitting.status == 200, fitting.body
