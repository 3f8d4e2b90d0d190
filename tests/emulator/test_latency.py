"""``latency``: every answer waits, in its own connection, holding up no other.

The tests observe the order of events (which answers have arrived while
which are still held back), never how long anything took, except the one
lower bound that a wait cannot undercut.
"""

from __future__ import annotations

import http.client
import math
import select
import time

import pytest

from kombu_appengine.emulator import Emulator
from tests.support.helpers import MakeEmulator, wait_for
from tests.support.raw_http import QUEUE_PATH, SOCKET_TIMEOUT, address

#: A latency no test waits out: an answer held this long has not come while the test runs.
HELD = 600.0


def send(emulator: Emulator, path: str = QUEUE_PATH) -> http.client.HTTPConnection:
    """Send a GET on a new connection, without reading its answer."""
    connection = http.client.HTTPConnection(*address(emulator), timeout=SOCKET_TIMEOUT)
    connection.request("GET", path)
    return connection


def answered(connection: http.client.HTTPConnection) -> bool:
    """Whether any byte of the answer has arrived, without waiting."""
    assert connection.sock is not None
    return bool(select.select([connection.sock], [], [], 0)[0])


@pytest.mark.parametrize("path", [QUEUE_PATH, QUEUE_PATH + "/tasks/missing"], ids=["200", "404"])
def test_a_delayed_answer_holds_up_no_other_connection(make_emulator: MakeEmulator, path: str) -> None:
    emulator = make_emulator(queues=["default"], latency=HELD)
    held = send(emulator, path)
    try:
        # Counted once its body is read, after its latency was fixed: it is
        # carried out and waits out HELD now.
        wait_for(lambda: emulator.requests == 1, what="the first request to be under way")
        # Other requests wait too, but not for the first one: a lock held
        # during its wait (of the queues, of the connections, or one for
        # delays alone) would hold each of these until HELD passes.
        emulator.latency = 0.01
        for _ in range(3):
            other = send(emulator)
            response = other.getresponse()
            assert response.status == 200
            response.read()
            other.close()
            assert not answered(held)
        assert emulator.requests == 4
    finally:
        held.close()


def test_every_answer_waits_at_least_the_latency(make_emulator: MakeEmulator) -> None:
    emulator = make_emulator(queues=["default"], latency=0.2)
    started = time.monotonic()
    connection = send(emulator)
    response = connection.getresponse()
    assert response.status == 200
    response.read()
    connection.close()
    # A lower bound, which a slow machine cannot break.
    assert time.monotonic() - started >= 0.2


def test_stopping_drops_connections_whose_answers_wait() -> None:
    emulator = Emulator(queues=["default"], latency=HELD).start()
    held = send(emulator)
    try:
        wait_for(lambda: emulator.requests == 1, what="the request to be under way")
        emulator.stop()
        # Closed, not answered HELD seconds later (the socket's timeout
        # would fail the read first).
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            held.getresponse()
    finally:
        held.close()


def test_the_latency_is_checked() -> None:
    assert Emulator(queues=["default"]).latency == 0
    for bad in (-0.001, math.inf, math.nan):
        with pytest.raises(ValueError, match="latency"):
            Emulator(queues=["default"], latency=bad)
    with Emulator(queues=["default"], latency=0.5) as emulator:
        assert emulator.latency == 0.5
        with pytest.raises(ValueError, match="latency"):
            emulator.latency = -1
        assert emulator.latency == 0.5
