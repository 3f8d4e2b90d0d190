"""The emulator's HTTP server, and :class:`Emulator` to run it in-process.

One thread a connection (HTTP/1.1 keep-alive, ``TCP_NODELAY`` so small
answers never wait for a delayed ACK); every request goes through
:class:`~kombu_appengine.emulator.rest.RestApi`.

It holds up against clients that misbehave, on purpose or not:

* At most ``max_connections`` connections at once
  (:data:`DEFAULT_MAX_CONNECTIONS`). At the cap, the connection idle longest
  is closed to make room, as any server may close an idle keep-alive
  connection; with none idle, new connections wait in the listen backlog
  until one closes. When the process runs out of file descriptors, the same
  happens instead of a busy loop on ``accept``.
* Each request must arrive in full, from its first byte to the end of its
  body, within ``request_timeout`` (:data:`REQUEST_TIMEOUT`): a client that
  trickles it is answered 408 and cut off. A keep-alive connection idle for
  ``idle_timeout`` (:data:`IDLE_TIMEOUT`) is closed.
* Framing is strict (:mod:`.wire`) and bodies are bounded per endpoint
  (:meth:`RestApi.body_limit <kombu_appengine.emulator.rest.RestApi.body_limit>`).
* ``latency`` delays every answer, for clients that test their timeouts. A
  delayed answer waits in its own connection's thread and holds no lock, so
  it delays no other connection's.
* Only requests addressed to the server itself are served: a ``Host`` that
  is not its own address, or an ``Origin`` that is not its own origin, is
  refused with 403, so a page of another site (through DNS rebinding, too)
  cannot drive it. Bound to loopback, its own names are its address,
  ``localhost``, ``127.0.0.1`` and ``[::1]`` with its port; bound to a
  wildcard address, ``localhost`` and any IP address with its port; bound
  to another address, that address.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import ipaddress
import logging
import math
import select
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable, TypeVar

from ..api import PROJECT_ID_RE, bare_project
from ..rest import batch
from ..rest.backend import QueueAdmin, TaskQueueBackend
from ..rest.errors import ApiError
from ..rest.faults import Fault, ResetConnection
from ..rest.front import Authenticator, RestApi, error_response, loggable_target
from . import wire
from .model import QueueConfig, TaskQueueService
from .queue_yaml import queue_configs
from .storage import FileJournal

logger = logging.getLogger(__name__)

#: Most connections served at once, unless ``max_connections`` says otherwise.
DEFAULT_MAX_CONNECTIONS = 256
#: Seconds a request may take to arrive, from its first byte to the end of its body.
REQUEST_TIMEOUT = 30.0
#: Seconds a keep-alive connection may wait for its next request (or a write may block).
IDLE_TIMEOUT = 60.0
#: Longest wait, in seconds, before trying to accept again when there is no room.
ACCEPT_RETRY_SECONDS = 0.25
#: Seconds spent reading and dropping a refused request's body, so its
#: client reads the answer instead of a reset.
LINGER_SECONDS = 2.0
#: ``accept`` errors that mean the process or system is out of descriptors or memory.
_NO_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class OwnAddress:
    """The names by which clients address this server: what ``Host`` and ``Origin`` must say.

    Parameters:
        host: the address the server is bound to.
        port: the port it is bound to.
    """

    def __init__(self, host: str, port: int) -> None:
        self.port = port
        ip = _ip(host)
        self._names = {f"[{host.lower()}]" if ip is not None and ip.version == 6 else host.lower()}
        #: Bound to a wildcard address: any IP address names it (a DNS
        #: rebinding page always uses a domain name).
        self.any_ip = ip is not None and ip.is_unspecified
        if host.lower() == "localhost" or (ip is not None and (ip.is_loopback or ip.is_unspecified)):
            self._names |= {"localhost", "127.0.0.1", "[::1]"}

    def allows_host(self, authority: str) -> bool:
        """Whether a ``Host`` header (``host[:port]``) names this server."""
        authority = authority.strip().lower()
        if authority.endswith("]") or ":" not in authority:
            name, port = authority, "80"  # no port: HTTP's own
        else:
            name, _, port = authority.rpartition(":")
        # Compared as text: int() refuses thousands of digits (ValueError).
        if not port.isdigit() or not port.isascii() or (port.lstrip("0") or "0") != str(self.port):
            return False
        return name in self._names or (self.any_ip and _ip(name.strip("[]")) is not None)

    def allows_origin(self, origin: str) -> bool:
        """Whether an ``Origin`` header is this server's own origin (``http://`` and a name of it)."""
        scheme, separator, authority = origin.strip().lower().partition("://")
        return scheme == "http" and bool(separator) and "/" not in authority and self.allows_host(authority)

    def check(self, host: list[str], origin: list[str], host_required: bool = True) -> None:
        """Refuse a request not addressed to this server.

        Parameters:
            host: the request's ``Host`` headers.
            origin: its ``Origin`` headers.
            host_required: whether the request must name its host (HTTP/1.1
                requests must, RFC 9112; HTTP/1.0 ones may not).

        Raises:
            ApiError: 400 for several ``Host`` headers, or none where one is
                required; 403 for a foreign ``Host`` or ``Origin``.
        """
        if len(host) > 1 or len(origin) > 1:
            raise ApiError(400, "badRequest", "A request may carry one Host header and one Origin header")
        if not host and host_required:
            raise ApiError(400, "badRequest", "An HTTP/1.1 request must carry a Host header")
        if host and not self.allows_host(host[0]):
            raise ApiError(
                403,
                "forbidden",
                f"Host {host[0][:100]!r} does not name this server: requests for another host are "
                "refused (a page of another site could reach the server through DNS rebinding)",
            )
        if origin and not self.allows_origin(origin[0]):
            raise ApiError(
                403,
                "forbidden",
                f"Origin {origin[0][:100]!r} is not this server's own: "
                "requests from pages of other sites are refused",
            )


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _input_waiting(connection: socket.socket) -> bool:
    """Whether bytes wait on ``connection``, without blocking (and for any descriptor number)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(connection, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([connection], [], [], 0)[0])


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TaskQueueEmulator"
    disable_nagle_algorithm = True
    server: _Server
    rfile: wire.RequestReader
    #: Seconds the answer to the current request waits before it is sent.
    latency = 0.0

    def setup(self) -> None:
        super().setup()
        # Every read goes through the reader that holds requests to their deadline.
        self.rfile.close()
        self.rfile = wire.RequestReader(self.connection, self.server.idle_timeout)

    def log_message(self, format: str, *args: Any) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s", self.address_string(), format % args)

    def handle_one_request(self) -> None:
        if not self._await_request():
            self.close_connection = True
            return
        # Read once, as the request begins: a change of the latency applies
        # to the requests that begin after it.
        self.latency = self.server.latency
        self.rfile.start_deadline(self.server.request_timeout)
        super().handle_one_request()
        if self.rfile.expired:
            # The stdlib gave up on the request quietly: say why, then close.
            self.close_connection = True
            error = ApiError(
                408,
                "requestTimeout",
                f"The request did not arrive within {self.server.request_timeout} seconds of its first byte",
            )
            with contextlib.suppress(OSError):
                self._send(error_response(error))

    def _await_request(self) -> bool:
        """Wait for the next request's first byte; ``False`` when the connection is done."""
        # Idle (so it may be closed to make room) only with nothing received
        # yet: a request already on its way is never dropped for another.
        waiting = not self.rfile.buffered and not _input_waiting(self.connection)
        if waiting:
            self.server.set_idle(self.connection, True)
        try:
            return self.rfile.wait_for_input()
        except OSError:  # the idle timeout, a reset, or closed to make room
            return False
        finally:
            if waiting:
                self.server.set_idle(self.connection, False)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found by the stdlib parser, rendered as Google's error body."""
        self.close_connection = True
        # The stdlib's 5xx are the client's mistakes, not server failures
        # that clients would retry.
        if code == 501:  # an HTTP method no route knows
            code, message = 405, f"Method {self.command} is not allowed"
        elif code == 505:  # a request line of HTTP/2 or later: this server speaks HTTP/1.1
            code = 400
        reason = {405: "httpMethodNotAllowed"}.get(code, "badRequest" if code < 500 else "backendError")
        # The stdlib gives no message for some errors (414): fall back to the status phrase.
        message = message or explain or self.responses.get(code, ("Bad request",))[0]
        self._send(error_response(ApiError(code, reason, message)))

    def _handle(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        body = None
        try:
            framing = wire.body_framing(self.headers)
            limit = self.server.api.body_limit(self.command, self.path, headers)
            # Before the body: a caller without credentials is not read from.
            self.server.api.check_head(self.command, self.path, headers)
            body = wire.read_body(self.rfile, framing, limit)
            # After the body (bounded by the limit): a malformed request is
            # told so whoever sent it.
            self.server.own.check(
                self.headers.get_all("Host") or [],
                self.headers.get_all("Origin") or [],
                host_required=self.request_version != "HTTP/1.0",
            )
        except wire.ClientGone:
            self.close_connection = True
            return
        except ApiError as error:
            self.close_connection = True
            self._send(error_response(error))
            if body is None:
                # What is left of the request cannot be told from a next one.
                self._linger()
            return
        self.rfile.end_deadline()
        if not self.server.api.dashboard.serves(self.path):
            # The dashboard's own polls are not API traffic (the demo counts calls per task).
            self.server.count_request()
        host = self.headers.get("Host") or self.server.address
        try:
            fault = self.server.api.faults.take_fault(self.command, self.path)
            if fault is not None:
                fault.carry_out()
            response = self.server.api.dispatch(self.command, self.path, headers, body, host)
        except ResetConnection:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        except ApiError as error:
            response = error_response(error)
        self._send(response)

    def _linger(self) -> None:
        """Read and drop what the client still sends, for a moment, then close.

        Closing with unread bytes would reset the connection, and the client
        would lose the answer it was sent.
        """
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.connection.settimeout(remaining)
                if not self.connection.recv(wire.RECV_SIZE):
                    return

    def _send(self, response: Any) -> None:
        """Write ``response``; every answer goes through here, and the stdlib's ``log_request`` never runs."""
        if logger.isEnabledFor(logging.DEBUG):
            # The method and target as sent (at most a few hundred characters),
            # without the credentials a query may carry.
            logger.debug(
                "%s %s %s %d",
                self.address_string(),
                (getattr(self, "command", None) or "-")[:20],
                loggable_target(getattr(self, "path", None) or "-"),
                response.status,
            )
        self.rfile.end_deadline()
        if self.latency:
            self.server.delay(self.latency)
        head = [f"{self.protocol_version} {response.status} {self.responses.get(response.status, ('',))[0]}"]
        if response.content_type:
            head.append(f"Content-Type: {response.content_type}")
        head.append(f"Content-Length: {len(response.body)}")
        head += [f"{name}: {value}" for name, value in response.headers]
        if self.close_connection:
            head.append("Connection: close")
        head += ["", ""]
        # One write for head and body, so nothing waits on Nagle's algorithm.
        self.wfile.write("\r\n".join(head).encode("latin-1") + response.body)

    # Other methods reach send_error (501) and close the connection.
    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _handle


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self,
        address: Any,
        api: RestApi,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        latency: float = 0.0,
    ) -> None:
        bound = _ip(address[0])
        if bound is not None and bound.version == 6:
            # socketserver binds AF_INET unless told: "::1" would not resolve.
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.api = api
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        #: Seconds every answer waits before it is sent.
        self.latency = latency
        #: Set when connections are dropped: answers still waiting out their
        #: latency go at once (to closed connections) instead of lingering.
        self._dropped = threading.Event()
        host, port = self.socket.getsockname()[:2]
        #: ``host:port``, an IPv6 address in brackets, as URLs and ``Host`` headers write it.
        self.address = f"[{host}]:{port}" if self.address_family == socket.AF_INET6 else f"{host}:{port}"
        self.own = OwnAddress(host, port)
        #: Open connections, each with the time it began waiting for a
        #: request (``None`` while one is under way).
        self._connections: dict[socket.socket, float | None] = {}
        #: Notified when a connection closes or falls idle, and on shutdown.
        self._room = threading.Condition()
        self._stopping = False
        self._out_of_descriptors = False
        #: HTTP requests answered (a batch counts once).
        self.requests = 0

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection once there is room for it.

        Raises:
            OSError: no room yet (the cap, or no file descriptor left):
                ``serve_forever`` tries again, after a wait rather than at once.
        """
        self._make_room()
        try:
            connection, client = self.socket.accept()
        except OSError as error:
            if error.errno in _NO_DESCRIPTORS:
                if not self._out_of_descriptors:
                    logger.warning(
                        "cannot accept connections: %s; waiting for connections to close", error.strerror
                    )
                    self._out_of_descriptors = True
                self._make_room(full=True)
            raise
        self._out_of_descriptors = False
        with self._room:
            self._connections[connection] = None
        return connection, client

    def _make_room(self, full: bool = False) -> None:
        """Return when a connection may be accepted; with ``full``, make room even below the cap.

        Closes the connection idle longest, if any; else waits (at most
        :data:`ACCEPT_RETRY_SECONDS`) for one to close or fall idle.

        Raises:
            OSError: still at the cap.
        """
        with self._room:
            if not full and len(self._connections) < self.max_connections:
                return
            idle = [(since, c) for c, since in self._connections.items() if since is not None]
            victim = min(idle, key=lambda item: item[0])[1] if idle else None
            if victim is not None and not _input_waiting(victim):
                # No longer counted: its handler sees the end of the stream and closes it.
                del self._connections[victim]
                with contextlib.suppress(OSError):
                    victim.shutdown(socket.SHUT_RDWR)
                if not full:
                    return
            if not self._stopping:
                self._room.wait(ACCEPT_RETRY_SECONDS)
            if not full and len(self._connections) >= self.max_connections:
                raise OSError(errno.EAGAIN, f"at the cap of {self.max_connections} connections")

    def set_idle(self, connection: socket.socket, idle: bool) -> None:
        """Record whether a connection waits for its next request (so it may be closed to make room)."""
        with self._room:
            if connection in self._connections:
                self._connections[connection] = time.monotonic() if idle else None
                if idle:
                    self._room.notify_all()

    def close_request(self, request: Any) -> None:
        with self._room:
            self._connections.pop(request, None)
            self._room.notify_all()
        super().close_request(request)

    def shutdown(self) -> None:
        with self._room:
            self._stopping = True
            self._room.notify_all()
        super().shutdown()

    def delay(self, seconds: float) -> None:
        """Wait ``seconds`` before an answer, holding no lock: other connections go on meanwhile."""
        self._dropped.wait(seconds)

    def drop_connections(self) -> None:
        """Close every open connection, as a stopped server's would be."""
        self._dropped.set()
        with self._room:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def count_request(self) -> None:
        with self._room:
            self.requests += 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Mostly a client gone (a socket error); anything else is a bug of the
        # server, which the traceback shows (and tests look for). Called from
        # socketserver's exception handler, so the exception is the current one.
        logger.debug("connection from %s ended with an error", client_address, exc_info=sys.exc_info())


_S = TypeVar("_S", bound="RestServer")


class RestServer:
    """A server of the REST front (:class:`~kombu_appengine.rest.front.RestApi`), run in a background thread.

    The emulator is one; the gateway's local server
    (:class:`~kombu_appengine.gateway.local.LocalGateway`) is another. Use
    it as a context manager: entering starts it, leaving stops it.

    Parameters:
        backend: the queues (:class:`~kombu_appengine.rest.backend.TaskQueueBackend`).
        host: address to bind; loopback by default.
        port: port to bind; 0 picks a free one.
        max_connections: most connections served at once
            (:data:`DEFAULT_MAX_CONNECTIONS`); at the cap the connection idle
            longest is closed, or new ones wait until one closes.
        request_timeout: seconds a request may take to arrive, from its
            first byte to the end of its body (:data:`REQUEST_TIMEOUT`);
            slower ones are answered 408 and cut off.
        idle_timeout: seconds a keep-alive connection may wait for its next
            request (:data:`IDLE_TIMEOUT`).
        latency: seconds every answer waits before it is sent (``0``, the
            default: none), for clients that test their timeouts. The request
            is carried out at once; only its answer waits, in its own
            connection, so other connections are not held up. Settable
            while running (:attr:`latency`).
        require_auth, accepted_tokens, identities, authenticator: who may
            call, as :class:`~kombu_appengine.rest.front.RestApi` takes them.
        admin: what the dashboard may change (its delete and purge), as
            :class:`~kombu_appengine.rest.front.RestApi` takes it.
        max_body_bytes: a cap on every request body, as
            :class:`~kombu_appengine.rest.front.RestApi` takes it.

    Raises:
        ValueError: a connection option that is not positive and finite, or
            a latency that is negative or not finite.
        OSError: the address cannot be bound.
    """

    def __init__(
        self,
        backend: TaskQueueBackend,
        host: str = "127.0.0.1",
        port: int = 0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        latency: float = 0.0,
        require_auth: bool = False,
        accepted_tokens: Iterable[str] | None = None,
        identities: Mapping[str, str] | None = None,
        authenticator: Authenticator | None = None,
        admin: QueueAdmin | None = None,
        max_body_bytes: int | None = None,
    ) -> None:
        for option, value in (
            ("max_connections", max_connections),
            ("request_timeout", request_timeout),
            ("idle_timeout", idle_timeout),
        ):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{option} must be positive, not {value!r}")
        _check_latency(latency)
        self.api = RestApi(
            backend,
            require_auth=require_auth,
            accepted_tokens=accepted_tokens,
            identities=identities,
            authenticator=authenticator,
            admin=admin,
            max_body_bytes=max_body_bytes,
        )
        self._server = _Server(
            (host, port), self.api, max_connections, request_timeout, idle_timeout, latency
        )
        self.api.batch_handler = lambda headers, body, token: batch.answer_batch(
            self.api, headers, body, self._server.address, token
        )
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        """``host:port``, as ``TASKQUEUE_EMULATOR_HOST`` takes it."""
        return self._server.address

    @property
    def url(self) -> str:
        """The server's base URL, ``http://host:port``."""
        return f"http://{self._server.address}"

    @property
    def tokens(self) -> list[str]:
        """The bearer tokens received, oldest first: the latest
        :data:`~kombu_appengine.rest.front.TOKENS_KEPT` only, so memory stays bounded."""
        return list(self.api.tokens)

    @property
    def latency(self) -> float:
        """Seconds every answer waits before it is sent; set it to change that
        for the requests that begin afterwards."""
        return self._server.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        _check_latency(seconds)
        self._server.latency = seconds

    @property
    def requests(self) -> int:
        """HTTP requests of the API received so far (a batch counts as one; the dashboard's not at all)."""
        return self._server.requests

    def inject_failures(
        self,
        count: int = 1,
        status: int = 503,
        reason: str = "backendError",
        path_contains: str | None = None,
        method: str | None = None,
        reset: bool = False,
    ) -> None:
        """Fail the next ``count`` requests whose verb is ``method`` and whose URL holds ``path_contains``.

        With ``reset`` the connection is dropped without an answer; otherwise
        the answer is ``status`` with Google's error body and ``reason``.
        Retry tests (``POST /retry_test``, see :mod:`kombu_appengine.rest.faults`)
        do the same over HTTP, by API method id.
        """
        self.api.faults.add_fault(Fault(count, status, reason, path_contains, method, reset))

    def start(self: _S) -> _S:
        """Serve in a background thread; returns at once, ready for requests."""
        if self._thread is None:
            # stop() waits up to one poll interval: keep it short, as test
            # suites start and stop a server for every test.
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.01},
                name=f"taskqueue-server-{self.host}",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` is called from another."""
        self._server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        """Stop serving and drop open connections."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self._server.drop_connections()

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


class Emulator(RestServer):
    """A Task Queue REST API server on the emulated queues, run in a background thread.

    Use it as a context manager::

        with Emulator(queues=["default"]) as emulator:
            os.environ["TASKQUEUE_EMULATOR_HOST"] = emulator.host

    Parameters:
        queues: queue names, or :class:`QueueConfig` objects, to declare.
        queue_yaml: path of an App Engine ``queue.yaml`` to read queues from.
        project: serve only this project (with or without ``s~``/``e~``).
        data_dir: durable storage; without it, memory only.
        fsync: with ``data_dir``, sync each change to the disk before answering,
            so it survives power loss, not only the death of the process.
        host, port, max_connections, request_timeout, idle_timeout, latency:
            as :class:`RestServer` takes them.
        require_auth: answer 401 to requests without a bearer token.
        accepted_tokens: when given, the only bearer tokens accepted.
        identities: the account (email) of each bearer token; when given,
            requests are held to the queues' ACLs from ``queue.yaml`` (403).
        clock: seconds since the epoch, as :func:`time.time`.

    Raises:
        ValueError: a connection option that is not positive and finite, a
            latency that is negative or not finite, an empty data_dir, a
            project that is not an application id, or fsync without data_dir.
        DataDirInUse: another emulator runs on ``data_dir``.
        CorruptJournal: the journal in ``data_dir`` holds a line that is not an entry.
        OSError: the address cannot be bound, or ``data_dir`` cannot be used.
    """

    def __init__(
        self,
        queues: Iterable[str | QueueConfig] = (),
        queue_yaml: str | None = None,
        project: str | None = None,
        data_dir: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        require_auth: bool = False,
        accepted_tokens: Iterable[str] | None = None,
        identities: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        fsync: bool = False,
        latency: float = 0.0,
    ) -> None:
        if data_dir is not None and not data_dir:
            raise ValueError("data_dir must name a directory, not '': give None for memory only")
        check_project_option(project)
        if fsync and not data_dir:
            raise ValueError("fsync=True needs a data_dir: without one nothing is written to disk")
        configs = queue_configs(queues, queue_yaml)
        self.service = TaskQueueService(configs, project=project, clock=clock)
        self._journal: FileJournal | None = None
        super().__init__(
            self.service,
            host,
            port,
            max_connections,
            request_timeout,
            idle_timeout,
            latency,
            require_auth=require_auth,
            accepted_tokens=accepted_tokens,
            identities=identities,
            admin=self.service,
        )
        try:
            self._journal = FileJournal(data_dir, self.service, fsync=fsync) if data_dir else None
        except BaseException:
            self._server.server_close()
            raise

    def declare_queue(self, name: str, **settings: Any) -> None:
        """Declare a pull queue at run time (what editing queue.yaml does)."""
        self.service.declare_queue(QueueConfig(name, **settings))

    def stop(self) -> None:
        """Stop serving, drop open connections and close storage."""
        super().stop()
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def check_project_option(project: str | None) -> None:
    """A server's ``project`` option: ``None`` (any), or an application id.

    Raises:
        ValueError: it is not an application id (with or without ``s~``/``e~``).
    """
    if project is not None and not PROJECT_ID_RE.match(bare_project(project)):
        raise ValueError(f"project {project!r} is not an application id: no request could name it")


def _check_latency(seconds: float) -> None:
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ValueError(f"latency must be zero or a positive number of seconds, not {seconds!r}")


@contextlib.contextmanager
def emulator(queues: Sequence[str | QueueConfig] = ("default",), **options: Any) -> Iterator[str]:
    """Run an :class:`Emulator` for the ``with`` block and give its base URL.

    ``options`` are those of :class:`Emulator`.
    """
    with Emulator(queues, **options) as running:
        yield running.url
