"""What a request on a keep-alive connection costs its server thread, counted.

Under load from many connections (``scripts/bench_emulator.py``, table 5),
every system call a handler makes lets go of the GIL, and the thread then
waits its turn behind every other connection's to take it back. Changing a
socket's timeout is such a call, and one that a request needs only when its
timeout changes: reading a request that arrived whole, answering it, and
waiting for the next one all run under the idle timeout.

The calls are counted by a profile hook on the server's threads (no socket
is replaced), for N and for 2N requests on one connection, so that what
opening and closing the connection costs drops out.
"""

from __future__ import annotations

import collections
import http.client
import threading
from types import FrameType
from typing import Any

from kombu_appengine.emulator import Emulator
from tests.support.raw_http import QUEUE_PATH, SOCKET_TIMEOUT, address

#: Requests of the shorter run; the longer one sends twice as many.
REQUESTS = 20


def socket_calls(requests: int) -> collections.Counter[str]:
    """The socket methods the server's threads call while serving ``requests`` GETs on one connection."""
    calls: collections.Counter[str] = collections.Counter()

    def count(frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call" and getattr(arg, "__self__", None).__class__.__name__ == "socket":
            calls[arg.__name__] += 1

    with Emulator(queues=["default"]) as emulator:
        # Threads started from now on (the connection's handler) are profiled.
        threading.setprofile(count)
        try:
            connection = http.client.HTTPConnection(*address(emulator), timeout=SOCKET_TIMEOUT)
            for _ in range(requests):
                connection.request("GET", QUEUE_PATH)
                response = connection.getresponse()
                assert response.status == 200
                response.read()
            connection.close()
        finally:
            threading.setprofile(None)  # type: ignore[arg-type]
    return calls


def test_a_keep_alive_request_changes_no_socket_timeout() -> None:
    shorter, longer = socket_calls(REQUESTS), socket_calls(2 * REQUESTS)
    per_request = {name: (longer[name] - shorter[name]) / REQUESTS for name in longer}
    # One read and one write each; the timeout is set when the connection opens, not per request.
    assert per_request["recv"] == 1
    assert per_request["sendall"] == 1
    assert per_request.get("settimeout", 0) == 0, per_request
