#!/usr/bin/env python3
"""Benchmark the Task Queue emulator: lease cost against queue depth, throughput, stalls.

Run from a checkout with the project installed::

    python scripts/bench_emulator.py            # depths 1,000 / 100,000 / 1,000,000
    python scripts/bench_emulator.py --quick    # depths 1,000 / 10,000 / 100,000

Everything runs in this process, on 127.0.0.1, with memory storage. It prints
three tables:

1. **Lease latency by depth**: the median round trip of ``tasks.lease``
   (``numTasks`` 1 and 10) over one keep-alive HTTP connection, with the
   queue pre-filled in-process to each depth, and the ratio of the largest
   median to the smallest (the emulator aims at 1.5 or less: leasing must not
   grow with depth). Leases use ``leaseSecs=0``: each leased task is due again
   at once and goes to the back of the queue, so the queue keeps its depth
   and every lease does the same work however many are measured.
2. **Throughput**: requests per second of ``insert``, ``lease`` and
   ``delete`` from one keep-alive client, next to the same requests sent to
   a trivial HTTP/1.1 server that only answers (the ceiling of this machine
   and of Python's ``http.server``), and their ratio.
3. **Round trips**: p50, p99 and max of every request of tables 1 and 2, and
   how many took 40 ms or more (the signature of Nagle's algorithm meeting a
   delayed ACK). On loopback p99 should be well under a millisecond.

The exit status is 1 when the lease ratio is above 1.5 or a stall was seen.
"""

from __future__ import annotations

import argparse
import base64
import gc
import http.client
import http.server
import json
import socket
import statistics
import sys
import threading
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

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

Request = Tuple[str, str, Optional[bytes]]


class Connection:
    """One keep-alive HTTP/1.1 connection that records each round trip."""

    def __init__(self, address: Tuple[str, int]) -> None:
        self._http = http.client.HTTPConnection(*address, timeout=30)
        self.round_trips: List[float] = []

    def request(self, method: str, path: str, body: Optional[bytes] = None) -> Tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        start = time.perf_counter()
        self._http.request(method, path, body=body, headers=headers)
        response = self._http.getresponse()
        data = response.read()
        self.round_trips.append(time.perf_counter() - start)
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

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        pass

    do_GET = do_POST = do_DELETE = _answer


class TrivialServer:
    """The ceiling: a threading HTTP/1.1 server that does nothing but answer."""

    def __init__(self) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TrivialHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> Tuple[str, int]:
        return self._server.server_address[:2]

    def __enter__(self) -> "TrivialServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def address_of(emulator: Emulator) -> Tuple[str, int]:
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


def checked(connection: Connection, method: str, path: str, body: Optional[bytes] = None,
            expect: int = 200) -> bytes:
    status, data = connection.request(method, path, body)
    if status != expect:
        raise SystemExit(f"{method} {path}: HTTP {status}, expected {expect}: {data[:300]!r}")
    return data


def lease_latency(depth: int, samples: int, num_tasks_options: Sequence[int],
                  all_round_trips: List[float]) -> Dict[int, float]:
    """Median lease round trip (seconds) for each ``numTasks``, at ``depth`` tasks."""
    medians: Dict[int, float] = {}
    with Emulator(queues=[QUEUE]) as emulator:
        seconds = prefill(emulator, depth)
        print(f"  pre-filled {depth:>9,} tasks in {seconds:6.1f} s", flush=True)
        gc.collect()
        connection = Connection(address_of(emulator))
        try:
            for num_tasks in num_tasks_options:
                path = lease_path(num_tasks, lease_secs=0)
                for _ in range(WARMUP):
                    checked(connection, "POST", path)
                connection.round_trips.clear()
                for _ in range(samples):
                    data = checked(connection, "POST", path)
                    if len(json.loads(data)["items"]) != num_tasks:
                        raise SystemExit(f"lease at depth {depth} returned too few tasks")
                medians[num_tasks] = statistics.median(connection.round_trips)
                all_round_trips.extend(connection.round_trips)
            stats = json.loads(checked(connection, "GET", TASKS_PATH.rsplit("/", 1)[0] + "?getStats=true"))
            if stats["stats"]["totalTasks"] != depth:
                raise SystemExit(f"the queue lost its depth: {stats['stats']}")
        finally:
            connection.close()
    return medians


def emulator_requests(count: int) -> Dict[str, Callable[[Connection], Iterator[Request]]]:
    """The requests of each measured operation, in an order that keeps them valid."""

    def inserts(_: Connection) -> Iterator[Request]:
        for number in range(count):
            yield "POST", TASKS_PATH, json.dumps({"id": f"task-{number}", "payloadBase64": PAYLOAD_B64}).encode()

    def leases(_: Connection) -> Iterator[Request]:
        for _ in range(count):
            yield "POST", lease_path(1, lease_secs=3600), None

    def deletes(_: Connection) -> Iterator[Request]:
        for number in range(count):
            yield "DELETE", f"{TASKS_PATH}/task-{number}", None

    return {"insert": inserts, "lease": leases, "delete": deletes}


def throughput(address: Tuple[str, int], count: int, check: bool,
               all_round_trips: Dict[str, List[float]]) -> Dict[str, float]:
    """Requests per second of each operation, ``count`` each, on one connection."""
    rates: Dict[str, float] = {}
    connection = Connection(address)
    try:
        for operation, requests in emulator_requests(count).items():
            expect = 204 if (check and operation == "delete") else 200
            connection.round_trips.clear()
            start = time.perf_counter()
            for method, path, body in requests(connection):
                checked(connection, method, path, body, expect)
            rates[operation] = count / (time.perf_counter() - start)
            all_round_trips.setdefault(operation, []).extend(connection.round_trips)
    finally:
        connection.close()
    return rates


def warm_up(address: Tuple[str, int]) -> None:
    connection = Connection(address)
    try:
        for _ in range(WARMUP):
            connection.request("GET", "/")
    finally:
        connection.close()


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:8.3f}"


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="depths 1k/10k/100k instead of 1k/100k/1M, and fewer requests")
    parser.add_argument("--samples", type=int, default=None,
                        help="leases measured per depth and numTasks (default 500, quick 200)")
    parser.add_argument("--requests", type=int, default=None,
                        help="requests per operation for throughput (default 5000, quick 2000)")
    options = parser.parse_args(argv)
    depths = (1_000, 10_000, 100_000) if options.quick else (1_000, 100_000, 1_000_000)
    samples = options.samples or (200 if options.quick else 500)
    count = options.requests or (2000 if options.quick else 5000)
    num_tasks_options = (1, 10)
    round_trips: Dict[str, List[float]] = {}

    print(f"1. Lease latency by queue depth (memory storage, one keep-alive connection,"
          f" {samples} leases per cell, leaseSecs=0)")
    by_depth: Dict[int, Dict[int, float]] = {}
    for depth in depths:
        by_depth[depth] = lease_latency(depth, samples, num_tasks_options,
                                        round_trips.setdefault("lease by depth", []))
        gc.collect()
    print()
    header = "".join(f"   numTasks={n:<2} median" for n in num_tasks_options)
    print(f"  {'depth':>9}{header}")
    for depth, medians in by_depth.items():
        print(f"  {depth:>9,}" + "".join(f"   {milliseconds(medians[n])} ms     " for n in num_tasks_options))
    ratios = {}
    for n in num_tasks_options:
        values = [medians[n] for medians in by_depth.values()]
        ratios[n] = max(values) / min(values)
    print(f"  {'ratio':>9}" + "".join(f"   {ratios[n]:8.2f}  largest/smallest" for n in num_tasks_options)
          + f"   (target <= {TARGET_RATIO})")

    print(f"\n2. Throughput, one keep-alive client, {count} requests per operation")
    trivial_trips: Dict[str, List[float]] = {}
    with Emulator(queues=[QUEUE]) as emulator:
        warm_up(address_of(emulator))
        emulator_rates = throughput(address_of(emulator), count, True, round_trips)
    with TrivialServer() as trivial:
        warm_up(trivial.address)
        trivial_rates = throughput(trivial.address, count, False, trivial_trips)
    print(f"  {'operation':<10}{'emulator req/s':>16}{'trivial req/s':>16}{'ratio':>8}")
    for operation in emulator_rates:
        ratio = emulator_rates[operation] / trivial_rates[operation]
        print(f"  {operation:<10}{emulator_rates[operation]:>16,.0f}{trivial_rates[operation]:>16,.0f}{ratio:>8.2f}")

    print("\n3. Round trips (ms)")
    print(f"  {'requests':<22}{'count':>7}{'p50':>9}{'p99':>9}{'max':>9}   >= 40 ms")
    stalls = 0
    rows = [(f"emulator {name}", trips) for name, trips in round_trips.items()]
    rows += [(f"trivial {name}", trips) for name, trips in trivial_trips.items()]
    for name, trips in rows:
        slow = sum(1 for trip in trips if trip >= STALL_SECONDS)
        if name.startswith("emulator"):
            stalls += slow
        print(f"  {name:<22}{len(trips):>7}{milliseconds(statistics.median(trips))}"
              f"{milliseconds(percentile(trips, 0.99))}{milliseconds(max(trips))}   {slow:>8}")

    failed = max(ratios.values()) > TARGET_RATIO or stalls > 0
    print("\nverdict:", "FAIL" if failed else "ok",
          f"(lease ratio {max(ratios.values()):.2f}, {stalls} emulator round trips >= 40 ms)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
