"""The emulator bound to the IPv6 loopback, ``::1``: its URL brackets the
address, and kombu, google-api-python-client and raw HTTP all reach it.

(This machine has IPv6 loopback; these tests need it, as they need 127.0.0.1.)"""

from __future__ import annotations

import socket

from kombu import Connection

from kombu_appengine.emulator import Emulator
from tests.support.helpers import MakeEmulator
from tests.support.raw_http import QUEUE_PATH, address, assert_google_error, request


def test_an_emulator_on_the_ipv6_loopback_has_a_bracketed_url(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(queues=["default"], host="::1")
    port = address(emulator)[1]
    assert emulator.host == f"[::1]:{port}"
    assert emulator.url == f"http://[::1]:{port}"
    with socket.create_connection(("::1", port), timeout=5) as sock:
        assert sock.family == socket.AF_INET6


def test_kombu_and_raw_http_reach_it(make_emulator: MakeEmulator) -> None:
    emulator: Emulator = make_emulator(queues=["default"], host="::1")
    with Connection(
        transport="kombu_appengine:Transport", transport_options={"api_endpoint": emulator.url}
    ) as conn:
        queue = conn.SimpleQueue("default")
        queue.put({"over": "IPv6"})
        message = queue.get(timeout=10)
        assert message.payload == {"over": "IPv6"}
        message.ack()
    port = address(emulator)[1]
    for host in (f"[::1]:{port}", f"localhost:{port}", f"127.0.0.1:{port}"):
        assert request(emulator, "GET", QUEUE_PATH, headers={"Host": host}).status == 200, host
    assert_google_error(
        request(emulator, "GET", QUEUE_PATH, headers={"Host": f"rebound.example:{port}"}), 403
    )
