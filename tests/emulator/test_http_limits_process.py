"""The emulator's resource use under floods, measured in an emulator process of its own.

The child process runs an in-process emulator and, for each line the test
writes to its stdin, answers with its own CPU time and peak resident size,
so the measures are the server's alone. The peak is Linux's ``VmHWM``, which
the line ``reset`` sets back to the present size (``/proc/self/clear_refs``);
elsewhere it is ``ru_maxrss``, the peak since the process began.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from tests.support.raw_http import QUEUE_PATH, Answer, exchange, head, open_connection

pytestmark = pytest.mark.slow

#: Longest any single step may take, in seconds.
DEADLINE = 10.0
MIB = 1024 * 1024

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    limit = int(sys.argv[1])
    if limit:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    from kombu_appengine.emulator import Emulator
    emulator = Emulator(queues=["default"]).start()
    print(emulator.url, flush=True)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is KiB on Linux, bytes on macOS

    def peak():
        try:
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    for line in sys.stdin:
        if line.strip() == "reset":
            try:
                with open("/proc/self/clear_refs", "w") as clear:
                    clear.write("5")
            except OSError:
                pass
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"cpu": usage.ru_utime + usage.ru_stime, "peak": peak()}), flush=True)
    """
)


class Stats(NamedTuple):
    #: CPU seconds used, user and system.
    cpu: float
    #: Peak resident size in bytes.
    peak: int


class Child:
    """An emulator process, and its measures on demand."""

    def __init__(self, fd_limit: int = 0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(fd_limit)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        url = self._line()
        assert url.startswith("http://"), url
        #: ``host:port``, as the helpers of :mod:`tests.support.raw_http` take it.
        self.host = urllib.parse.urlsplit(url).netloc

    def _line(self) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + DEADLINE
        data = b""
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the emulator process said nothing in time: {data!r}"
            readable, _, _ = select.select([self.process.stdout], [], [], remaining)
            if readable:
                chunk = os.read(self.process.stdout.fileno(), 4096)
                assert chunk, f"the emulator process ended: {data!r}"
                data += chunk
        return data.decode().strip()

    def stats(self, reset_peak: bool = False) -> Stats:
        assert self.process.stdin is not None
        self.process.stdin.write(b"reset\n" if reset_peak else b"stats\n")
        self.process.stdin.flush()
        return Stats(**json.loads(self._line()))

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def child(fd_limit: int = 0) -> Iterator[Child]:
    running = Child(fd_limit)
    try:
        yield running
    finally:
        running.close()


def post(target: Child, path: str, content_type: str, body: bytes) -> Answer | None:
    data = head(
        target,
        f"POST {path} HTTP/1.1",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    )
    return exchange(target, data + body, wait=DEADLINE)


def get(target: Child, path: str) -> tuple[int, Any]:
    answer = exchange(target, head(target, f"GET {path} HTTP/1.1", "Connection: close"), wait=DEADLINE)
    assert answer is not None
    return answer.status, json.loads(answer.body)


def inner_insert(body: bytes) -> bytes:
    return (
        b"POST " + QUEUE_PATH.encode() + b"/tasks HTTP/1.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


# -- 6. amplification --------------------------------------------------------------


def insert_of(body: bytes) -> tuple[str, str, bytes]:
    return QUEUE_PATH + "/tasks", "application/json", body


def batch_of(parts: list[bytes]) -> tuple[str, str, bytes]:
    body = b"".join(b"--b\r\nContent-Type: application/http\r\n\r\n" + part + b"\r\n" for part in parts)
    return "/batch", "multipart/mixed; boundary=b", body + b"--b--\r\n"


ARRAY_8_MIB = b"[" + b"{}," * (8 * MIB // 3) + b"{}]"
ARRAY_1300_KIB = b"[" + b"{}," * (1300 * 1024 // 3) + b"{}]"


@pytest.mark.parametrize(
    ("request_", "statuses"),
    [
        pytest.param(insert_of(ARRAY_8_MIB), (413, None), id="8 MiB of [{},{},...] as an insert"),
        pytest.param(
            insert_of(b'{"payloadBase64": "eA==", "x": [' + b"{}," * (MIB // 3) + b"{}]}"),
            (400,),
            id="[{},{},...] inside a Task",
        ),
        pytest.param(batch_of([inner_insert(b"{}")] * 60_000), (400,), id="a batch of 60,000 parts"),
        pytest.param(
            batch_of([inner_insert(ARRAY_1300_KIB)] * 6), (200,), id="a batch of six parts of [{},{},...]"
        ),
        pytest.param(batch_of([inner_insert(b"{}" + b"\n" * (6 * MIB))]), (200,), id="a batch of newlines"),
    ],
)
def test_a_hostile_body_costs_a_small_multiple_of_its_size(
    request: pytest.FixtureRequest, request_: tuple[str, str, bytes], statuses: tuple[int | None, ...]
) -> None:
    what = request.node.callspec.id
    path, content_type, body = request_
    with child() as emulator:
        # Warm up every code path the hostile bodies take, so the baseline
        # holds the imports and caches.
        assert post(emulator, *insert_of(b'{"payloadBase64": "eA=="}'))
        assert post(emulator, *batch_of([inner_insert(b'{"payloadBase64": "eA=="}')]))
        before = emulator.stats(reset_peak=True)
        answer = post(emulator, path, content_type, body)
        growth = emulator.stats().peak - before.peak
        assert growth < 5 * len(body), (
            f"{what}: peak memory grew {growth / MIB:.0f} MiB for {len(body) / MIB:.1f} MiB"
        )
        assert (answer and answer.status) in statuses, answer and answer.body[:300]
        assert get(emulator, QUEUE_PATH + "?getStats=true")[1]["stats"]["totalTasks"] == 2


# -- 4. a flood of connections beyond the process's file descriptors -------------------


def test_running_out_of_file_descriptors_does_not_spin_and_recovers() -> None:
    with child(fd_limit=64) as emulator:
        assert get(emulator, QUEUE_PATH)[0] == 200
        flood: list[socket.socket] = []
        try:
            partial = f"GET {QUEUE_PATH} HTTP/1.1\r\nHost: {emulator.host}\r\n".encode()
            for _ in range(80):
                flood.append(open_connection(emulator, partial))
            start = emulator.stats()
            # A window of time to measure the CPU the server uses while the
            # flood holds (not a wait for some state): it should wait for a
            # free descriptor, not retry accept in a busy loop.
            window = 1.5
            select.select([], [], [], window)
            used = emulator.stats().cpu - start.cpu
            assert used < 0.3 * window, f"the emulator used {used:.2f}s of CPU in {window}s"
        finally:
            for sock in flood:
                sock.close()
        # Once the flood is gone, a new request is answered.
        assert get(emulator, QUEUE_PATH)[0] == 200
