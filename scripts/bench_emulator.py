#!/usr/bin/env python3
"""Benchmark the Task Queue emulator: lease cost against queue depth, throughput, stalls, load.

Run from a checkout with the project installed::

    python scripts/bench_emulator.py               # depths 1,000 / 100,000 / 1,000,000
    python scripts/bench_emulator.py --quick       # depths 1,000 / 10,000 / 100,000
    python scripts/bench_emulator.py --fsync-only  # table 4 alone
    python scripts/bench_emulator.py --load-only   # tables 5 and 6 alone

The servers run in this process, on 127.0.0.1, with memory storage except
in table 4, which uses data directories. It prints six tables:

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
5. **Under load**: 64 clients, each with one keep-alive connection to the
   emulator (default connection limits) and one to the trivial server, kept
   for the whole run, send the same fixed number of requests to each, in
   rounds taking turns. Two mixes: ``insert, lease, delete`` (each client
   inserts a task tagged with its name, leases by that tag and deletes the
   task) and ``lease, get queue`` (a lease with ``leaseSecs=0`` and a
   ``taskqueues.get`` with stats, in turn). For each: requests per second,
   p50, p99 and max round trip, and the emulator's figures over the trivial
   server's. The clients live in ``--load-processes`` processes (2 by
   default) apart from the servers, so they do not compete for the servers'
   GIL, each driving its clients from one selector over raw sockets; the
   CPU the load processes and the servers' process used under load is
   printed, to show which one was the bottleneck. Errors are counted:
   answers that are not 2xx, and requests without one (a reset, a closed
   connection, 30 s of silence); and the connections each server saw
   opened, 64 when none was dropped, idle between rounds or not.
6. **--latency**: the ``lease, get queue`` mix from the same clients to an
   emulator whose answers each wait 50 ms (``latency=0.05``): the requests
   per second as a fraction of the most 64 clients each waiting 50 ms can
   send, 1 when the waits overlap, 1/64 were they taken in turn.

The exit status is 1 when the lease ratio is above 1.5, a round trip took
40 ms or more outside a full garbage collection, or any request of tables 5
and 6 failed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import http.client
import http.server
import json
import math
import multiprocessing
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Optional

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
#: Bytes asked of a socket at a time.
RECV_BYTES = 64 * 1024

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


class _TrivialThreadingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    #: The emulator's listen backlog: with the stdlib's 5, clients that
    #: connect together would wait for SYNs to be sent again.
    request_queue_size = 128


class TrivialServer:
    """The ceiling: a threading HTTP/1.1 server that does nothing but answer."""

    def __init__(self) -> None:
        self._server = _TrivialThreadingServer(("127.0.0.1", 0), _TrivialHandler)
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


def prefill(emulator: Emulator, depth: int, queue: str = QUEUE) -> float:
    """Insert ``depth`` tasks into ``queue`` in-process; returns the seconds it took."""
    insert = emulator.service.insert
    body = {"payloadBase64": PAYLOAD_B64}
    start = time.perf_counter()
    for _ in range(depth):
        insert(PROJECT, queue, body)
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


# -- 5. Under load -------------------------------------------------------------

#: Clients of the load section, each with one keep-alive connection to each server.
LOAD_CLIENTS = 64
#: Seconds a request of the load section may take before it counts as an error.
LOAD_TIMEOUT = 30.0
#: Rounds each mix is split into; the servers take turns, round by round.
LOAD_ROUNDS = 4
#: Requests each client sends to each server before measuring (errors still count).
LOAD_WARMUP = 6
#: The mixes of the load section: every client runs its mix over and over.
LOAD_MIXES = ("insert, lease, delete", "lease, get queue")
#: The queue the read mix leases from and reads, pre-filled with :data:`READ_DEPTH` tasks.
READ_QUEUE = "bench-read"
#: Tasks in :data:`READ_QUEUE`; leases use ``leaseSecs=0``, so it keeps them all.
READ_DEPTH = 1000
#: Seconds every answer waits in table 6 (``--latency 50``).
LATENCY = 0.050
#: Requests each client sends in table 6.
LATENCY_REQUESTS = 12
#: The head of tables 5 and 6.
LOAD_HEADER = (
    f"   {'mix':<23}{'server':<10}{'req/s':>9}{'p50 ms':>10}{'p99 ms':>10}{'p99/p50':>9}"
    f"{'max ms':>10}{'errors':>8}"
)


def raw_request(method: str, path: str, host: str, body: bytes = b"") -> bytes:
    """A whole HTTP/1.1 request, head and body, to send in one write."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if method in ("POST", "PUT", "PATCH"):
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode("latin-1") + body


def load_requests(mix: str, client: int, round_name: str, count: int, host: str) -> list[bytes]:
    """The ``count`` requests one client sends in one round of ``mix``.

    ``insert, lease, delete`` is a producer and a consumer in one: the client
    inserts a task tagged with its own name, leases by that tag (so it gets
    that task, as a consumer would get its next one) and deletes it. Names
    carry the client and the round, so none is used twice (a deleted name
    stays reserved). ``lease, get queue`` alternates a lease of one task
    with ``leaseSecs=0`` (the queue keeps its depth) and ``taskqueues.get``
    with stats, as pollers and monitors do.
    """
    tasks = TASKS_PATH
    read = f"/taskqueue/v1beta2/projects/{PROJECT}/taskqueues/{READ_QUEUE}"
    tag = f"load-{client}"
    requests = []
    for number in range(count):
        if mix == LOAD_MIXES[0]:
            name = f"load-{client}-{round_name}-{number // 3}"
            step = number % 3
            if step == 0:
                body = json.dumps({"id": name, "tag": tag, "payloadBase64": PAYLOAD_B64}).encode()
                requests.append(raw_request("POST", tasks, host, body))
            elif step == 1:
                lease = f"{tasks}/lease?numTasks=1&leaseSecs=60&groupByTag=true&tag={tag}"
                requests.append(raw_request("POST", lease, host))
            else:
                requests.append(raw_request("DELETE", f"{tasks}/{name}", host))
        elif number % 2 == 0:
            requests.append(raw_request("POST", f"{read}/tasks/lease?numTasks=1&leaseSecs=0", host))
        else:
            requests.append(raw_request("GET", f"{read}?getStats=true", host))
    return requests


def parse_response(buffer: bytearray) -> tuple[int, int, bool] | None:
    """``(status, length, closing)`` of the response that starts ``buffer``; ``None`` until it is whole."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buffer[:end]).decode("latin-1").lower().split("\r\n")
    length, closing = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            closing = "close" in value
    if len(buffer) < end + 4 + length:
        return None
    return int(lines[0].split()[1]), end + 4 + length, closing


class LoadResult(NamedTuple):
    """What one load process saw in one round against one server."""

    #: Seconds of each round trip that was answered.
    latencies: list[float]
    #: Answers whose status was not 2xx.
    non_2xx: int
    #: Requests that got no answer: a reset, a close, a timeout, a refused connection.
    connection_errors: int
    #: Connections opened in the round (each client opens one the first time; more are reopened after errors).
    opened: int
    #: Longest ``connect`` of the round, in seconds.
    slowest_connect: float
    #: The first few errors, described.
    samples: list[str]
    #: ``time.monotonic()`` when the round began and ended (one clock for all processes).
    start: float
    end: float
    #: CPU seconds the load process used in the round.
    cpu: float


class _LoadRound:
    """One round of one load process: its clients' requests, all driven by one selector.

    Parameters:
        address: the server.
        sockets: the process's connections to it, one per client (``None``:
            not open); kept across rounds, and replaced after an error.
        requests: each client's requests.
    """

    def __init__(
        self, address: tuple[str, int], sockets: list[socket.socket | None], requests: list[list[bytes]]
    ) -> None:
        self.address = address
        self.sockets = sockets
        self.requests = requests
        self.next = [0] * len(requests)
        self.buffers = [bytearray() for _ in requests]
        #: ``perf_counter()`` when each client's request under way was sent; 0 for none.
        self.sent_at = [0.0] * len(requests)
        self.latencies: list[float] = []
        self.non_2xx = self.connection_errors = self.opened = 0
        self.slowest_connect = 0.0
        self.samples: list[str] = []
        self.selector = selectors.DefaultSelector()
        self.running = 0

    def run(self) -> LoadResult:
        """Send every request, each once its client's previous one was answered; what happened."""
        cpu, start = time.process_time(), time.monotonic()
        for client, sock in enumerate(self.sockets):
            if sock is not None:
                self.selector.register(sock, selectors.EVENT_READ, client)
            self.running += 1
            self._send_next(client)
        checked = time.perf_counter()
        while self.running:
            for key, _ in self.selector.select(1.0):
                self._receive(key.data)
            now = time.perf_counter()
            if now - checked >= 1.0:
                checked = now
                for client, sent in enumerate(self.sent_at):
                    if sent and now - sent > LOAD_TIMEOUT:
                        self._drop(client, f"no answer within {LOAD_TIMEOUT} s")
                        self._request_done(client)
        end = time.monotonic()
        for sock in self.sockets:
            if sock is not None:
                self.selector.unregister(sock)
        self.selector.close()
        return LoadResult(
            self.latencies,
            self.non_2xx,
            self.connection_errors,
            self.opened,
            self.slowest_connect,
            self.samples,
            start,
            end,
            time.process_time() - cpu,
        )

    def _send_next(self, client: int) -> None:
        """Send the client's next request, reconnecting if need be; with none left, the client is done."""
        requests = self.requests[client]
        while self.next[client] < len(requests):
            sock = self.sockets[client] or self._connect(client)
            if sock is None:
                lost = len(requests) - self.next[client]
                self.connection_errors += lost
                self._sample(f"{lost} requests not sent: no connection")
                break
            self.sent_at[client] = time.perf_counter()
            try:
                # Blocking, yet it never waits: the server has read the previous request.
                sock.sendall(requests[self.next[client]])
                return
            except OSError as error:
                self._drop(client, f"send: {error}")
                self.next[client] += 1
        self.sent_at[client] = 0.0
        self.running -= 1

    def _receive(self, client: int) -> None:
        sock = self.sockets[client]
        assert sock is not None
        try:
            chunk = sock.recv(RECV_BYTES)
        except OSError as error:
            chunk, reason = b"", f"receive: {error}"
        else:
            reason = "the server closed the connection before answering"
        if not chunk:
            self._drop(client, reason)
            self._request_done(client)
            return
        buffer = self.buffers[client]
        buffer += chunk
        parsed = parse_response(buffer)
        if parsed is None:
            return
        status, length, closing = parsed
        self.latencies.append(time.perf_counter() - self.sent_at[client])
        if not 200 <= status < 300:
            self.non_2xx += 1
            self._sample(f"HTTP {status}: {bytes(buffer[:length])[-160:]!r}")
        del buffer[:length]
        if closing:
            self._drop(client, f"the server closed a keep-alive connection (after HTTP {status})")
        self._request_done(client)

    def _request_done(self, client: int) -> None:
        self.next[client] += 1
        self._send_next(client)

    def _connect(self, client: int) -> socket.socket | None:
        started = time.perf_counter()
        try:
            sock = socket.create_connection(self.address, timeout=LOAD_TIMEOUT)
        except OSError as error:
            self._sample(f"connect: {error}")
            return None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.slowest_connect = max(self.slowest_connect, time.perf_counter() - started)
        self.opened += 1
        self.sockets[client] = sock
        self.selector.register(sock, selectors.EVENT_READ, client)
        return sock

    def _drop(self, client: int, reason: str) -> None:
        """Count a connection error and close the client's connection (the next request reopens one)."""
        self.connection_errors += 1
        self._sample(reason)
        sock = self.sockets[client]
        if sock is not None:
            self.selector.unregister(sock)
            sock.close()
            self.sockets[client] = None
        self.buffers[client].clear()
        self.sent_at[client] = 0.0

    def _sample(self, what: str) -> None:
        if len(self.samples) < 5:
            self.samples.append(what)


def load_process(pipe: Any, addresses: dict[str, tuple[str, int]], clients: Sequence[int]) -> None:
    """A load process: runs the rounds its pipe asks for, its connections kept open between them.

    Each message is ``(server, mix, round_name, per_client)`` and is answered
    with a :class:`LoadResult`; ``None`` ends the process.
    """
    sockets: dict[str, list[socket.socket | None]] = {name: [None] * len(clients) for name in addresses}
    while True:
        command = pipe.recv()
        if command is None:
            break
        server, mix, round_name, per_client = command
        host = "{}:{}".format(*addresses[server])
        requests = [load_requests(mix, client, round_name, per_client, host) for client in clients]
        pipe.send(_LoadRound(addresses[server], sockets[server], requests).run())
    for connections in sockets.values():
        for sock in connections:
            if sock is not None:
                sock.close()


class LoadFigures(NamedTuple):
    """One mix against one server, over every round."""

    requests: int
    #: Seconds under load: each round from its first request to its last answer, summed.
    seconds: float
    latencies: list[float]
    non_2xx: int
    connection_errors: int
    opened: int
    slowest_connect: float
    samples: list[str]
    #: CPU seconds of the load processes, and of this process (the servers'), while under load.
    client_cpu: float
    server_cpu: float

    @property
    def errors(self) -> int:
        return self.non_2xx + self.connection_errors

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 0.5)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)


class LoadGenerator:
    """Processes that share :data:`LOAD_CLIENTS` clients between them, each client
    with one keep-alive connection to each server, kept for the whole run.

    The clients live in other processes than the servers, so that they do not
    compete for this process's GIL; each process drives its clients from one
    selector over raw sockets, cheap next to what a server does per request.

    Parameters:
        addresses: the servers, by name.
        processes: how many load processes.
        clients: how many clients in all.
    """

    def __init__(
        self, addresses: dict[str, tuple[str, int]], processes: int = 2, clients: int = LOAD_CLIENTS
    ) -> None:
        self.addresses = addresses
        self.clients = clients
        context = multiprocessing.get_context("spawn")
        self._pipes = []
        self._processes = []
        for number in range(processes):
            mine, theirs = context.Pipe()
            process = context.Process(
                target=load_process,
                args=(theirs, addresses, range(number, clients, processes)),
                name=f"bench-load-{number}",
                daemon=True,
            )
            process.start()
            theirs.close()
            self._pipes.append(mine)
            self._processes.append(process)

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self._processes:
            process.join(LOAD_TIMEOUT)
            if process.is_alive():
                process.kill()

    def round(
        self, server: str, mix: str, round_name: str, per_client: int
    ) -> tuple[list[LoadResult], float]:
        """Every client sends ``per_client`` requests of ``mix`` to ``server``, all at once.

        Returns what each process saw, and the CPU seconds this process used meanwhile.
        """
        cpu = time.process_time()
        for pipe in self._pipes:
            pipe.send((server, mix, round_name, per_client))
        results = [pipe.recv() for pipe in self._pipes]
        return results, time.process_time() - cpu

    def measure(self, mix: str, per_client: int, rounds: int, servers: list[str]) -> dict[str, LoadFigures]:
        """``rounds`` rounds of ``mix``, the ``servers`` taking turns (each round
        in the other order), after a warm-up; the figures of each server."""
        collected: dict[str, list[tuple[list[LoadResult], float]]] = {name: [] for name in servers}
        for server in servers:
            collected[server].append(self.round(server, mix, "warmup", LOAD_WARMUP))
        for number in range(rounds):
            for server in servers if number % 2 == 0 else servers[::-1]:
                collected[server].append(self.round(server, mix, f"r{number}", per_client))
        return {server: self._figures(collected[server]) for server in servers}

    @staticmethod
    def _figures(rounds: list[tuple[list[LoadResult], float]]) -> LoadFigures:
        """Figures over the measured rounds; errors and connections over all, the warm-up included."""
        everything = [result for results, _ in rounds for result in results]
        measured = rounds[1:]
        latencies = [seconds for results, _ in measured for result in results for seconds in result.latencies]
        seconds = sum(
            max(result.end for result in results) - min(result.start for result in results)
            for results, _ in measured
        )
        return LoadFigures(
            requests=len(latencies),
            seconds=seconds,
            latencies=latencies,
            non_2xx=sum(result.non_2xx for result in everything),
            connection_errors=sum(result.connection_errors for result in everything),
            opened=sum(result.opened for result in everything),
            slowest_connect=max(result.slowest_connect for result in everything),
            samples=[sample for result in everything for sample in result.samples][:5],
            client_cpu=sum(result.cpu for results, _ in measured for result in results),
            server_cpu=sum(cpu for _, cpu in measured),
        )


def per_client_requests(requests: int, clients: int = LOAD_CLIENTS, rounds: int = LOAD_ROUNDS) -> int:
    """Requests each client sends in a round so that all send at least ``requests``.

    A multiple of 6, so that every client ends both mixes whole.
    """
    return max(6, math.ceil(requests / (clients * rounds) / 6) * 6)


def measure_load(
    requests: int, processes: int, latency: float
) -> tuple[dict[str, dict[str, LoadFigures]], LoadFigures]:
    """Tables 5 and 6: each mix against the emulator and the trivial server,
    then the read mix against an emulator with ``latency`` seconds."""
    per_client = per_client_requests(requests)
    with contextlib.ExitStack() as stack:
        emulator = stack.enter_context(Emulator(queues=[QUEUE, READ_QUEUE]))
        delayed = stack.enter_context(Emulator(queues=[READ_QUEUE], latency=latency))
        trivial = stack.enter_context(TrivialServer())
        for server in (emulator, delayed):
            prefill(server, READ_DEPTH, READ_QUEUE)
        gc.collect()
        addresses = {"emulator": address_of(emulator), "trivial": trivial.address}
        load = stack.enter_context(LoadGenerator({**addresses, "delayed": address_of(delayed)}, processes))
        results = {mix: load.measure(mix, per_client, LOAD_ROUNDS, list(addresses)) for mix in LOAD_MIXES}
        with_latency = load.measure(LOAD_MIXES[1], LATENCY_REQUESTS, 1, ["delayed"])["delayed"]
    return results, with_latency


def print_load(requests: int, processes: int) -> int:
    """Tables 5 and 6: the emulator under :data:`LOAD_CLIENTS` clients, and with
    :data:`LATENCY` seconds of latency; returns the errors."""
    total = per_client_requests(requests) * LOAD_CLIENTS * LOAD_ROUNDS
    print(
        f"\n5. Under load: {LOAD_CLIENTS} keep-alive clients in {processes} processes, {total:,} requests"
        f" per mix and server,\n   in {LOAD_ROUNDS} rounds taking turns (memory storage, default"
        " connection limits)"
    )
    results, with_latency = measure_load(requests, processes, LATENCY)
    print(LOAD_HEADER)
    for mix, by_server in results.items():
        for number, (server, figures) in enumerate(by_server.items()):
            print(f"   {mix if number == 0 else '':<23}{server:<10}{load_row(figures)}")
        emulator, trivial = by_server["emulator"], by_server["trivial"]
        print(
            f"   {'':<23}{'ratio':<10}{emulator.rate / trivial.rate:>9.2f}"
            f"{emulator.p50 / trivial.p50:>10.2f}{emulator.p99 / trivial.p99:>10.2f}   emulator / trivial"
        )
    for server in next(iter(results.values())):
        figures = [by_server[server] for by_server in results.values()]
        seconds = sum(each.seconds for each in figures)
        opened = sum(each.opened for each in figures)
        slowest = max(each.slowest_connect for each in figures)
        clients = sum(each.client_cpu for each in figures) / seconds
        served = sum(each.server_cpu for each in figures) / seconds
        print(
            f"   {server}: {opened} connections opened for {LOAD_CLIENTS} clients, slowest connect"
            f" {slowest * 1000:.1f} ms;\n     CPU under load (cores): load processes {clients:.2f},"
            f" the server's process {served:.2f}"
        )

    wait = f"{LATENCY * 1000:.0f}"
    ideal = LOAD_CLIENTS / LATENCY
    print(
        f"\n6. --latency {wait}: the same clients send {with_latency.requests:,} requests of"
        f" '{LOAD_MIXES[1]}'\n   to an emulator whose answers each wait {wait} ms"
    )
    print(LOAD_HEADER)
    print(f"   {'':<23}{'latency':<10}{load_row(with_latency)}")
    print(
        f"   {with_latency.rate / ideal:.2f} of the {ideal:,.0f} req/s that {LOAD_CLIENTS} clients each"
        f" waiting {wait} ms\n   can send at most: 1 when the waits overlap, 1/{LOAD_CLIENTS} were they"
        " taken in turn"
    )

    everything = [figures for by_server in results.values() for figures in by_server.values()]
    everything.append(with_latency)
    non_2xx = sum(figures.non_2xx for figures in everything)
    connection_errors = sum(figures.connection_errors for figures in everything)
    print(f"\n   errors under load: {non_2xx} non-2xx answers, {connection_errors} connection errors")
    for sample in [sample for figures in everything for sample in figures.samples][:5]:
        print(f"   error: {sample}")
    return non_2xx + connection_errors


def load_row(figures: LoadFigures) -> str:
    """req/s, p50, p99, p99/p50, max and errors, as a row of tables 5 and 6."""
    return (
        f"{figures.rate:>9,.0f}{milliseconds(figures.p50)} {milliseconds(figures.p99)}"
        f"{figures.p99 / figures.p50:>9.2f}{milliseconds(max(figures.latencies))}{figures.errors:>8}"
    )


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
    parser.add_argument(
        "--load-requests",
        type=int,
        default=None,
        help="requests per mix and server under load, rounded up to a multiple of"
        f" {LOAD_CLIENTS * LOAD_ROUNDS * 6:,} (default 24,000, quick 6,000)",
    )
    parser.add_argument(
        "--load-processes", type=int, default=2, help="processes the load clients share (default 2)"
    )
    parser.add_argument(
        "--load-only", action="store_true", help="measure only the emulator under load (tables 5 and 6)"
    )
    options = parser.parse_args(argv)
    fsync_count = options.fsync_requests or (500 if options.quick else 2000)
    load_count = options.load_requests or (6000 if options.quick else 24000)
    if options.load_processes < 1:
        parser.error("--load-processes must be positive")
    if options.fsync_only:
        print_fsync_cost(fsync_count, options.tmp_dir)
        return 0
    if options.load_only:
        errors = print_load(load_count, options.load_processes)
        print("\nverdict:", "FAIL" if errors else "ok", f"({errors} errors under load)")
        return 1 if errors else 0
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
    errors = print_load(load_count, options.load_processes)

    failed = max(ratios.values()) > TARGET_RATIO or stalls > 0 or errors > 0
    print(
        "\nverdict:",
        "FAIL" if failed else "ok",
        f"(lease ratio {max(ratios.values()):.2f}; {stalls} emulator round trips >= 40 ms"
        f" outside garbage collections; {errors} errors under load)",
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
