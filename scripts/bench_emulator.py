#!/usr/bin/env python3
"""Benchmark the Task Queue emulator: lease cost against queue depth, throughput, stalls.

Run from a checkout with the project installed::

    python scripts/bench_emulator.py               # depths 1,000 / 100,000 / 1,000,000
    python scripts/bench_emulator.py --quick       # depths 1,000 / 10,000 / 100,000
    python scripts/bench_emulator.py --fsync-only  # table 4 alone

Everything runs in this process, on 127.0.0.1, with memory storage for
tables 1 to 3 and a data directory for table 4. It prints four tables:

1. **Lease latency by depth**: the median round trip of ``tasks.lease``
   (``numTasks`` 1 and 10), one emulator and one keep-alive HTTP connection
   per depth, each queue pre-filled in-process, and the ratio of the largest
   median to the smallest (the emulator aims at 1.5 or less: leasing must not
   grow with depth). The depths take turns, one lease each, so that other
   load on the machine weighs on all of them alike. Leases use
   ``leaseSecs=0``: each leased task is due again at once and goes to the
   back of the queue, so the queue keeps its depth and every lease does the
   same work however many are measured.
2. **Throughput**: requests per second of ``insert``, ``lease`` and
   ``delete`` from one keep-alive client, next to the same requests sent to
   a trivial HTTP/1.1 server that only answers (the ceiling of this machine
   and of Python's ``http.server``), taking turns likewise, and their ratio.
3. **Round trips**: p50, p99 and max of every request of tables 1 and 2, how
   many took 40 ms or more (the signature of Nagle's algorithm meeting a
   delayed ACK), and how many of those overlapped one of Python's full
   garbage collections (which take a large fraction of a second with a
   million tasks in memory). On an idle machine p99 is under a millisecond.
4. **The cost of --fsync**: inserts per second from one keep-alive client
   to two emulators with a data directory (under ``--tmp-dir``, the
   system's temporary directory by default: put it on the disk you mean to
   measure), one with ``fsync=True``, taking turns likewise, and their
   ratio. The figure belongs to the disk: a tmpfs makes fsync free, a
   laptop's SSD costs a fraction of a millisecond, a network disk more.

The exit status is 1 when the lease ratio is above 1.5 or a round trip took
40 ms or more outside a full garbage collection.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import http.client
import http.server
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple, Optional

from kombu_appengine.emulator import Emulator

#: Project and queue every measurement uses.
PROJECT, QUEUE = "bench", "bench"
#: Path of the queue's tasks below the server's root.
TASKS_PATH = f"/taskqueue/v1beta2/projects/{PROJECT}/taskqueues/{QUEUE}/tasks"
#: A small payload, like a kombu message's envelope would be.
PAYLOAD_B64 = base64.b64encode(b"x" * 256).decode("ascii")
#: Lease latency target: largest median over smallest.
TARGET_RATIO = 1.5
#: A round trip this long (seconds) is a stall, not a slow request.
STALL_SECONDS = 0.040
#: Requests sent before measuring, to warm connections and caches.
WARMUP = 50
#: Requests in a row to one server before the next one takes its turn: one, so
#: that bursts of other load on the machine fall on every server alike.
TURN = 1

Request = tuple[str, str, Optional[bytes]]


class GcWatch:
    """Records when Python's full (generation 2) garbage collections ran.

    With a million tasks in memory one takes a good fraction of a second: a
    slow round trip that overlaps one is a GC pause, not a network stall.
    """

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float]] = []
        self._started = 0.0

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif info["generation"] == 2:
            self.pauses.append((self._started, time.perf_counter()))

    def overlaps(self, start: float, end: float) -> bool:
        return any(gc_start < end and start < gc_end for gc_start, gc_end in self.pauses)


class RoundTrip(NamedTuple):
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Connection:
    """One keep-alive HTTP/1.1 connection that records each round trip."""

    def __init__(self, address: tuple[str, int]) -> None:
        self._http = http.client.HTTPConnection(*address, timeout=30)
        self.round_trips: list[RoundTrip] = []

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        start = time.perf_counter()
        self._http.request(method, path, body=body, headers=headers)
        response = self._http.getresponse()
        data = response.read()
        self.round_trips.append(RoundTrip(start, time.perf_counter()))
        return response.status, data

    def close(self) -> None:
        self._http.close()


class _TrivialHandler(http.server.BaseHTTPRequestHandler):
    """Reads the request, answers a fixed small JSON document in one write."""

    protocol_version = "HTTP/1.1"
    answer = b'{"kind": "taskqueue#tasks"}'
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=UTF-8\r\n"
        f"Content-Length: {len(answer)}\r\n\r\n"
    ).encode("latin-1")

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.wfile.write(self.head + self.answer)

    def log_message(self, format: str, *args: object) -> None:
        pass

    do_GET = do_POST = do_DELETE = _answer


class TrivialServer:
    """The ceiling: a threading HTTP/1.1 server that does nothing but answer."""

    def __init__(self) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TrivialHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self._server.server_address[:2]

    def __enter__(self) -> TrivialServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def address_of(emulator: Emulator) -> tuple[str, int]:
    host, port = emulator.host.rsplit(":", 1)
    return host, int(port)


def prefill(emulator: Emulator, depth: int) -> float:
    """Insert ``depth`` tasks in-process; returns the seconds it took."""
    insert = emulator.service.insert
    body = {"payloadBase64": PAYLOAD_B64}
    start = time.perf_counter()
    for _ in range(depth):
        insert(PROJECT, QUEUE, body)
    return time.perf_counter() - start


def lease_path(num_tasks: int, lease_secs: int) -> str:
    return f"{TASKS_PATH}/lease?numTasks={num_tasks}&leaseSecs={lease_secs}"


def checked(
    connection: Connection, method: str, path: str, body: bytes | None = None, expect: int = 200
) -> bytes:
    status, data = connection.request(method, path, body)
    if status != expect:
        raise SystemExit(f"{method} {path}: HTTP {status}, expected {expect}: {data[:300]!r}")
    return data


def lease_round_trips(
    depths: Sequence[int], samples: int, num_tasks: int, connections: dict[int, Connection]
) -> dict[int, list[RoundTrip]]:
    """``samples`` lease round trips at each depth.

    The depths take turns, :data:`TURN` leases each, so that whatever else
    the machine is doing meanwhile weighs on all of them alike.
    """
    path = lease_path(num_tasks, lease_secs=0)
    for depth in depths:
        for _ in range(WARMUP):
            checked(connections[depth], "POST", path)
        connections[depth].round_trips.clear()
    for _ in range(0, samples, TURN):
        for depth in depths:
            for _ in range(TURN):
                data = checked(connections[depth], "POST", path)
                if len(json.loads(data)["items"]) != num_tasks:
                    raise SystemExit(f"a lease at depth {depth} returned too few tasks")
    return {depth: connections[depth].round_trips[:] for depth in depths}


def operation_requests(count: int) -> dict[str, list[Request]]:
    """The requests of each measured operation, in an order that keeps them valid."""
    return {
        "insert": [
            ("POST", TASKS_PATH, json.dumps({"id": f"task-{n}", "payloadBase64": PAYLOAD_B64}).encode())
            for n in range(count)
        ],
        "lease": [("POST", lease_path(1, lease_secs=3600), None)] * count,
        "delete": [("DELETE", f"{TASKS_PATH}/task-{n}", None) for n in range(count)],
    }


def throughput(
    count: int, emulator: Connection, trivial: Connection, round_trips: dict[str, list[RoundTrip]]
) -> dict[str, tuple[float, float]]:
    """Requests per second of each operation on the emulator and on the trivial server.

    The two servers take turns, :data:`TURN` requests each, for the same
    reason as in :func:`lease_round_trips`.
    """
    rates: dict[str, tuple[float, float]] = {}
    for operation, requests in operation_requests(count).items():
        expect = 204 if operation == "delete" else 200
        servers = ((emulator, expect), (trivial, 200))
        elapsed = {emulator: 0.0, trivial: 0.0}
        for connection in elapsed:
            connection.round_trips.clear()
        for first in range(0, count, TURN):
            for connection, status in servers:
                start = time.perf_counter()
                for method, path, body in requests[first : first + TURN]:
                    checked(connection, method, path, body, status)
                elapsed[connection] += time.perf_counter() - start
        rates[operation] = (count / elapsed[emulator], count / elapsed[trivial])
        round_trips[f"emulator {operation}"] = emulator.round_trips[:]
        round_trips[f"trivial {operation}"] = trivial.round_trips[:]
    return rates


def fsync_cost(count: int, plain: Connection, synced: Connection) -> tuple[float, float]:
    """Inserts per second to an emulator with a data dir, without and with fsync.

    The two take turns, :data:`TURN` requests each, for the same reason as in
    :func:`lease_round_trips`.
    """
    inserts = operation_requests(count)["insert"]
    elapsed = {plain: 0.0, synced: 0.0}
    for first in range(0, count, TURN):
        for connection in elapsed:
            start = time.perf_counter()
            for method, path, body in inserts[first : first + TURN]:
                checked(connection, method, path, body)
            elapsed[connection] += time.perf_counter() - start
    return count / elapsed[plain], count / elapsed[synced]


def print_fsync_cost(count: int, tmp_dir: str | None) -> None:
    """Table 4: the cost of ``--fsync``, in emulators with data dirs under ``tmp_dir``."""
    with contextlib.ExitStack() as stack:
        parent = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-fsync-", dir=tmp_dir))
        print(f"\n4. The cost of --fsync: {count:,} inserts each, one keep-alive client, data dirs in")
        print(f"   {parent}")
        connections = []
        for fsync in (False, True):
            emulator = stack.enter_context(
                Emulator(queues=[QUEUE], data_dir=f"{parent}/fsync-{fsync}", fsync=fsync)
            )
            connections.append(Connection(address_of(emulator)))
            stack.callback(connections[-1].close)
        plain, synced = fsync_cost(count, *connections)
    print(f"   {'requests':<32}{'req/s':>10}")
    print(f"   {'insert, data dir':<32}{plain:>10,.0f}")
    print(f"   {'insert, data dir with --fsync':<32}{synced:>10,.0f}")
    print(f"   --fsync costs: {plain / synced:.2f}x fewer inserts per second")


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:9.3f}"


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="depths 1k/10k/100k instead of 1k/100k/1M, and fewer requests"
    )
    parser.add_argument(
        "--samples", type=int, default=None, help="leases measured per depth and numTasks (default 500)"
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="requests per operation for throughput (default 5000, quick 2000)",
    )
    parser.add_argument(
        "--fsync-requests",
        type=int,
        default=None,
        help="inserts to each emulator for the cost of --fsync (default 2000, quick 500)",
    )
    parser.add_argument(
        "--fsync-only", action="store_true", help="measure only the cost of --fsync (table 4)"
    )
    parser.add_argument(
        "--tmp-dir", default=None, help="where table 4 makes its data dirs (default: the system's temp dir)"
    )
    options = parser.parse_args(argv)
    fsync_count = options.fsync_requests or (500 if options.quick else 2000)
    if options.fsync_only:
        print_fsync_cost(fsync_count, options.tmp_dir)
        return 0
    depths = (1_000, 10_000, 100_000) if options.quick else (1_000, 100_000, 1_000_000)
    samples = options.samples or 500
    count = options.requests or (2000 if options.quick else 5000)
    round_trips: dict[str, list[RoundTrip]] = {}

    with contextlib.ExitStack() as stack:
        watch = stack.enter_context(GcWatch())
        print(
            f"1. Lease latency by queue depth (memory storage, one keep-alive connection per"
            f" queue, {samples} leases per cell, leaseSecs=0)"
        )
        connections: dict[int, Connection] = {}
        for depth in depths:
            emulator = stack.enter_context(Emulator(queues=[QUEUE]))
            seconds = prefill(emulator, depth)
            print(f"   pre-filled {depth:>9,} tasks in {seconds:5.1f} s", flush=True)
            connections[depth] = Connection(address_of(emulator))
            stack.callback(connections[depth].close)
        gc.collect()
        medians: dict[int, dict[int, float]] = {}
        for num_tasks in (1, 10):
            by_depth = lease_round_trips(depths, samples, num_tasks, connections)
            medians[num_tasks] = {
                depth: statistics.median(t.seconds for t in trips) for depth, trips in by_depth.items()
            }
            for depth, trips in by_depth.items():
                round_trips[f"lease {num_tasks:>2} @ {depth:,}"] = trips
        print(f"\n   {'depth':>9}   {'numTasks=1':>12}   {'numTasks=10':>12}")
        for depth in depths:
            one, ten = milliseconds(medians[1][depth]), milliseconds(medians[10][depth])
            print(f"   {depth:>9,}   {one} ms   {ten} ms")
        ratios = {n: max(by_depth.values()) / min(by_depth.values()) for n, by_depth in medians.items()}
        print(
            f"   {'ratio':>9}   {ratios[1]:12.2f}   {ratios[10]:12.2f}"
            f"   largest/smallest median (target <= {TARGET_RATIO})"
        )

        print(f"\n2. Throughput, one keep-alive client, {count:,} requests per operation")
        emulator = stack.enter_context(Emulator(queues=[QUEUE]))
        trivial = stack.enter_context(TrivialServer())
        emulator_connection = Connection(address_of(emulator))
        trivial_connection = Connection(trivial.address)
        stack.callback(emulator_connection.close)
        stack.callback(trivial_connection.close)
        rates = throughput(count, emulator_connection, trivial_connection, round_trips)
        print(f"   {'operation':<10}{'emulator req/s':>16}{'trivial req/s':>16}{'ratio':>8}")
        for operation, (emulator_rate, trivial_rate) in rates.items():
            print(
                f"   {operation:<10}{emulator_rate:>16,.0f}{trivial_rate:>16,.0f}"
                f"{emulator_rate / trivial_rate:>8.2f}"
            )

        print("\n3. Round trips (ms); 'GC' counts those that overlapped a full garbage collection")
        print(f"   {'requests':<22}{'count':>7}{'p50':>10}{'p99':>10}{'max':>10}{'>= 40 ms':>10}{'GC':>5}")
        stalls = 0
        for name, trips in round_trips.items():
            seconds = [trip.seconds for trip in trips]
            slow = [trip for trip in trips if trip.seconds >= STALL_SECONDS]
            during_gc = sum(1 for trip in slow if watch.overlaps(trip.start, trip.end))
            if not name.startswith("trivial"):
                stalls += len(slow) - during_gc
            print(
                f"   {name:<22}{len(trips):>7}{milliseconds(statistics.median(seconds))} "
                f"{milliseconds(percentile(seconds, 0.99))} {milliseconds(max(seconds))}"
                f"{len(slow):>10}{during_gc:>5}"
            )
        pauses = [end - start for start, end in watch.pauses]
        if pauses:
            print(f"   full garbage collections: {len(pauses)}, longest {max(pauses) * 1000:.0f} ms")

    print_fsync_cost(fsync_count, options.tmp_dir)

    failed = max(ratios.values()) > TARGET_RATIO or stalls > 0
    print(
        "\nverdict:",
        "FAIL" if failed else "ok",
        f"(lease ratio {max(ratios.values()):.2f}; {stalls} emulator round trips >= 40 ms"
        " outside garbage collections)",
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
