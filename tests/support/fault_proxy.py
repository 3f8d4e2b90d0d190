"""A fault-injecting HTTP proxy on loopback: ``FaultProxy(upstream, fault_rate, seed)``.

It forwards every request to ``upstream`` (``host:port``, the ``Host``
header rewritten to it) and, with probability ``fault_rate``, injects one
fault instead, of a kind drawn by weight (:data:`FAULT_WEIGHTS`):

* ``"503"``, ``"429"``: answered at once with that status and Google's error
  body; the request is not forwarded.
* ``"reset"``: the connection is reset before the request is forwarded: it
  never arrives.
* ``"lost-answer"``: the request is forwarded and carried out, then the
  connection is reset instead of answered: the client cannot know it was done.
* ``"stall"``: the request waits a few seconds (drawn from ``stall_seconds``),
  then is forwarded and answered normally.

The draws come from one ``random.Random(seed)``: the same order of requests
meets the same faults. :meth:`FaultProxy.inject` puts a given fault on the
next requests, for tests of one exchange. The proxy outlives its upstream: while nothing
listens there it answers 503 (``upstream["down"]``), and a request the
upstream dropped halfway is reset, since it may or may not have been carried
out (``upstream["lost"]``). Point it elsewhere with :attr:`upstream`.

Every exchange is handed to ``observer`` (an :class:`Exchange`), from the
thread that served it, once the client has its answer or lost it.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import http.server
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from kombu_appengine.emulator.errors import ApiError

#: Relative weights of the fault kinds, by default.
FAULT_WEIGHTS: Mapping[str, float] = {"503": 3, "429": 2, "reset": 2, "lost-answer": 2, "stall": 1}
#: Google's ``reason`` for each status the proxy answers itself.
REASONS = {429: "rateLimitExceeded", 503: "backendError"}
#: Seconds the proxy waits for its upstream to answer one request.
UPSTREAM_TIMEOUT = 60.0
#: Headers that belong to one connection, not to the request: never forwarded.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"}
)


@dataclass
class Exchange:
    """One request through the proxy, as the observer is told of it."""

    method: str
    #: The path with its query.
    path: str
    #: The fault injected, or ``None``.
    fault: str | None
    #: When the request had arrived (``time.time()``).
    received: float
    #: The upstream's status, ``None`` when it did not answer.
    status: int | None = None
    #: The upstream's answer.
    body: bytes = b""
    #: When the upstream's answer had arrived (``time.time()``).
    answered: float | None = None
    #: Whether the client was sent the upstream's answer.
    delivered: bool = False
    #: ``"down"`` (nothing listened) or ``"lost"`` (dropped halfway) when the upstream failed.
    upstream_failure: str | None = None
    #: The request's body and its Content-Type (``""`` when it declared none).
    request_body: bytes = b""
    request_type: str = ""
    #: The Content-Type of the upstream's answer (``""`` when it declared none).
    content_type: str = ""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Head and body go out in two writes: without this, the second
        # waits for the client's delayed ACK (Nagle's algorithm), 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        if self._upstream is not None:
            self._upstream.close()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the observer and the counters say what happened."""

    def _relay(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._answer(501, b"", "text/plain")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        proxy = self.server.proxy
        fault, stall = proxy.draw()
        exchange = Exchange(self.command, self.path, fault, time.time())
        exchange.request_body, exchange.request_type = body, self.headers.get("Content-Type", "")
        try:
            if fault in ("503", "429"):
                status = int(fault)
                self._answer(status, ApiError(status, REASONS[status], "injected by FaultProxy").body())
                return
            if fault == "reset":
                self._reset()
                return
            if fault == "stall":
                time.sleep(stall)
            self._forward(exchange, body)
            if exchange.upstream_failure == "down":
                self._answer(503, ApiError(503, "backendError", "upstream down (FaultProxy)").body())
            elif exchange.upstream_failure == "lost" or fault == "lost-answer":
                self._reset()
            else:
                content_type = exchange.content_type or "application/json"
                exchange.delivered = self._answer(exchange.status or 502, exchange.body, content_type)
        finally:
            proxy.observe(exchange)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

    def _forward(self, exchange: Exchange, body: bytes) -> None:
        """Send the request upstream; fill in its answer, or how the upstream failed."""
        headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP}
        headers["Host"] = self.server.proxy.upstream
        headers["Content-Length"] = str(len(body))
        upstream = self._upstream_connection()
        if upstream is None:
            exchange.upstream_failure = "down"
            return
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            exchange.body = response.read()
        except (OSError, http.client.HTTPException):
            upstream.close()
            self._upstream = None
            exchange.upstream_failure = "lost"
            return
        exchange.status, exchange.answered = response.status, time.time()
        exchange.content_type = response.getheader("Content-Type", "")
        if response.will_close:
            upstream.close()
            self._upstream = None

    def _upstream_connection(self) -> http.client.HTTPConnection | None:
        """A connection to the upstream: the kept one if it is still open, else a new one."""
        upstream = self._upstream
        if upstream is not None and upstream.sock is not None:
            # An idle kept connection that reads as ready was closed by its
            # end (an upstream that died): do not send into it.
            readable, _, _ = select.select([upstream.sock], [], [], 0)
            if not readable:
                return upstream
            upstream.close()
        host, _, port = self.server.proxy.upstream.rpartition(":")
        upstream = http.client.HTTPConnection(host, int(port), timeout=UPSTREAM_TIMEOUT)
        try:
            upstream.connect()
        except OSError:
            self._upstream = None
            return None
        self._upstream = upstream
        return upstream

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> bool:
        """Send an answer; whether it was sent."""
        try:
            self.send_response_only(status)
            if body or status not in (204, 304):
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
            return False
        return True

    def _reset(self) -> None:
        """Drop the connection with a TCP reset, answering nothing."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, proxy: FaultProxy) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.proxy = proxy
        self.connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def close_request(self, request: Any) -> None:
        with self._lock:
            self.connections.discard(request)
        super().close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request is no news."""


class FaultProxy:
    """A loopback HTTP proxy to ``upstream`` that injects faults; a context manager.

    Parameters:
        upstream: ``host:port`` of the server to forward to.
        fault_rate: probability that a request meets a fault.
        seed: seeds the draws of faults and stall lengths.
        weights: relative weight of each fault kind (:data:`FAULT_WEIGHTS`).
        stall_seconds: a stall lasts between these two numbers of seconds.
        observer: called with every :class:`Exchange`.
    """

    def __init__(
        self,
        upstream: str,
        fault_rate: float,
        seed: int,
        weights: Mapping[str, float] = FAULT_WEIGHTS,
        stall_seconds: tuple[float, float] = (0.5, 2.0),
        observer: Callable[[Exchange], None] | None = None,
    ) -> None:
        unknown = set(weights) - set(FAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}")
        #: ``host:port`` requests are forwarded to; may be changed while running.
        self.upstream = upstream
        self.fault_rate = fault_rate
        self.stall_seconds = stall_seconds
        self.observer = observer
        #: Faults injected, by kind.
        self.faults: collections.Counter[str] = collections.Counter()
        #: Requests the upstream failed, by how (``"down"``, ``"lost"``).
        self.upstream_failures: collections.Counter[str] = collections.Counter()
        #: Requests received.
        self.requests = 0
        self._kinds = list(weights)
        self._weights = [weights[kind] for kind in self._kinds]
        self._random = random.Random(seed)
        self._injected: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self._server = _Server(self)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as ``TASKQUEUE_EMULATOR_HOST`` takes it."""
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}"

    def inject(self, kind: str, count: int = 1) -> None:
        """The next ``count`` requests meet ``kind``, whatever the draws say."""
        if kind not in FAULT_WEIGHTS:
            raise ValueError(f"unknown fault kind {kind!r}")
        with self._lock:
            self._injected.extend([kind] * count)

    def draw(self) -> tuple[str | None, float]:
        """Count a request and draw its fault (``None`` for none) and, for a stall, its length."""
        with self._lock:
            self.requests += 1
            if self._injected:
                kind = self._injected.popleft()
            elif self._random.random() < self.fault_rate:
                kind = self._random.choices(self._kinds, self._weights)[0]
            else:
                return None, 0.0
            self.faults[kind] += 1
            return kind, self._random.uniform(*self.stall_seconds) if kind == "stall" else 0.0

    def observe(self, exchange: Exchange) -> None:
        """Count an upstream failure, and tell the observer."""
        if exchange.upstream_failure is not None:
            with self._lock:
                self.upstream_failures[exchange.upstream_failure] += 1
        if self.observer is not None:
            self.observer(exchange)

    def start(self) -> FaultProxy:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fault-proxy", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and drop every client connection."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        with self._server._lock:
            connections = list(self._server.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
