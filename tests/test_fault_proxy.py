"""The chaos test's FaultProxy (tests/support/fault_proxy.py) does what it counts:
each kind of fault, stalls, an upstream that is down, and seeded draws."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import pytest

from kombu_appengine.emulator import Emulator
from tests.support.fault_proxy import FAULT_WEIGHTS, Exchange, FaultProxy
from tests.support.helpers import b64

PROJECT = "emulator"


def through(proxy: FaultProxy, method: str, path: str, document: Any = None) -> tuple[int, bytes]:
    """One request through the proxy on a fresh connection."""
    host, port = proxy.host.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        body = None if document is None else json.dumps(document).encode()
        connection.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def insert_path(queue: str = "default") -> str:
    return f"/taskqueue/v1beta2/projects/{PROJECT}/taskqueues/{queue}/tasks"


@pytest.fixture
def upstream(make_emulator: Any) -> Emulator:
    return make_emulator(queues=["default"])


def test_the_proxy_forwards_to_its_upstream_as_its_own_host(upstream: Emulator) -> None:
    seen: list[Exchange] = []
    with FaultProxy(upstream.host, fault_rate=0.0, seed=1, observer=seen.append) as proxy:
        status, body = through(proxy, "POST", insert_path(), {"id": "one", "payloadBase64": b64(b"1")})
        assert status == 200, body
        status, body = through(proxy, "DELETE", insert_path() + "/one")
        assert status == 204, body
    assert proxy.requests == 2
    assert not proxy.faults
    assert [(e.method, e.status, e.delivered, e.fault) for e in seen] == [
        ("POST", 200, True, None),
        ("DELETE", 204, True, None),
    ]
    # The request's body and both content types are recorded too (the chaos test reads batches).
    assert json.loads(seen[0].request_body)["id"] == "one"
    assert seen[0].request_type == "application/json"
    assert seen[0].content_type.startswith("application/json")
    assert (seen[1].request_body, seen[1].request_type) == (b"", "")


@pytest.mark.parametrize(
    ("kind", "carried_out"), [("503", False), ("429", False), ("reset", False), ("lost-answer", True)]
)
def test_each_fault_does_what_it_says(upstream: Emulator, kind: str, carried_out: bool) -> None:
    with FaultProxy(upstream.host, fault_rate=1.0, seed=1, weights={kind: 1}) as proxy:
        body = {"id": "t", "payloadBase64": b64(b"x")}
        if kind in ("503", "429"):
            status, answer = through(proxy, "POST", insert_path(), body)
            assert status == int(kind)
            assert json.loads(answer)["error"]["code"] == int(kind)
        else:
            with pytest.raises((ConnectionError, http.client.HTTPException)):
                through(proxy, "POST", insert_path(), body)
    assert proxy.faults == {kind: 1}
    assert len(upstream.service.list_tasks(PROJECT, "default").get("items", [])) == int(carried_out)


def test_a_stall_delays_the_request_then_carries_it_out(upstream: Emulator) -> None:
    with FaultProxy(upstream.host, 1.0, seed=1, weights={"stall": 1}, stall_seconds=(0.3, 0.3)) as proxy:
        started = time.monotonic()
        status, _ = through(proxy, "POST", insert_path(), {"payloadBase64": b64(b"x")})
        assert status == 200
        assert time.monotonic() - started >= 0.3
    assert proxy.faults == {"stall": 1}


def test_a_proxy_without_upstream_answers_503_and_counts_it(upstream: Emulator) -> None:
    with FaultProxy(upstream.host, fault_rate=0.0, seed=1) as proxy:
        upstream.stop()
        status, answer = through(proxy, "GET", f"/taskqueue/v1beta2/projects/{PROJECT}/taskqueues/default")
    assert status == 503
    assert json.loads(answer)["error"]["errors"][0]["reason"] == "backendError"
    assert proxy.upstream_failures == {"down": 1}


def test_the_same_seed_draws_the_same_faults() -> None:
    def draws(seed: int) -> list[tuple[str | None, float]]:
        proxy = FaultProxy("127.0.0.1:9", 0.5, seed)
        try:
            return [proxy.draw() for _ in range(200)]
        finally:
            proxy.close()

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
    assert {kind for kind, _ in draws(7)} == {None, *FAULT_WEIGHTS}


def test_injected_faults_come_first_whatever_the_draws(upstream: Emulator) -> None:
    seen: list[Exchange] = []
    with FaultProxy(upstream.host, fault_rate=0.0, seed=1, observer=seen.append) as proxy:
        proxy.inject("503", 2)
        proxy.inject("lost-answer")
        path = f"/taskqueue/v1beta2/projects/{PROJECT}/taskqueues/default"
        assert [through(proxy, "GET", path)[0] for _ in range(2)] == [503, 503]
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            through(proxy, "GET", path)
        assert through(proxy, "GET", path)[0] == 200
    assert proxy.faults == {"503": 2, "lost-answer": 1}
    assert [(e.fault, e.status, e.delivered) for e in seen] == [
        ("503", None, False),
        ("503", None, False),
        ("lost-answer", 200, False),
        (None, 200, True),
    ]
