"""The emulator's HTTP server, and :class:`Emulator` to run it in-process.

One thread a connection (HTTP/1.1 keep-alive, ``TCP_NODELAY`` so small
answers never wait for a delayed ACK); every request goes through
:class:`~kombu_appengine.emulator.rest.RestApi`.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable

from . import batch
from .errors import ApiError
from .faults import Fault, ResetConnection
from .model import QueueConfig, TaskQueueService
from .queue_yaml import load_queue_yaml
from .rest import RestApi, error_response
from .storage import FileJournal

logger = logging.getLogger(__name__)

#: Largest request body accepted, in bytes (a batch of big inserts).
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Seconds a connection may sit idle or half-sent before it is closed.
CONNECTION_TIMEOUT = 60.0


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TaskQueueEmulator"
    timeout = CONNECTION_TIMEOUT
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found by the stdlib parser, rendered as Google's error body."""
        self.close_connection = True
        if code == 501:
            # An HTTP method no route knows: the client's mistake, not a
            # server failure that clients would retry.
            code, message = 405, f"Method {self.command} is not allowed"
        reason = {405: "httpMethodNotAllowed"}.get(code, "badRequest" if code < 500 else "backendError")
        # The stdlib gives no message for some errors (414): fall back to the status phrase.
        message = message or explain or self.responses.get(code, ("Bad request",))[0]
        self._send(error_response(ApiError(code, reason, message)))

    def _read_body(self) -> bytes | None:
        """The request body; ``None`` when the client went away mid-body."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0:
            self.send_error(400, f"Invalid Content-Length {length_header!r}")
            return None
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(
                error_response(ApiError(413, "uploadTooLarge", f"Request body over {MAX_BODY_BYTES} bytes"))
            )
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            return None
        return body

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                self.send_error(400, "Malformed chunked body")
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                self.send_error(413, f"Request body over {MAX_BODY_BYTES} bytes")
                return None
            chunk = self.rfile.read(size + 2)
            if len(chunk) < size + 2:
                self.close_connection = True
                return None
            chunks.append(chunk[:size])

    def _handle(self) -> None:
        body = self._read_body()
        if body is None:
            return
        self.server.count_request()
        headers = {name.lower(): value for name, value in self.headers.items()}
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

    def _send(self, response: Any) -> None:
        head = [f"{self.protocol_version} {response.status} {self.responses.get(response.status, ('',))[0]}"]
        if response.content_type:
            head.append(f"Content-Type: {response.content_type}")
        head.append(f"Content-Length: {len(response.body)}")
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

    def __init__(self, address: Any, api: RestApi) -> None:
        super().__init__(address, _Handler)
        self.api = api
        host, port = self.socket.getsockname()[:2]
        self.address = f"{host}:{port}"
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        #: HTTP requests answered (a batch counts once).
        self.requests = 0

    def track(self, connection: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def drop_connections(self) -> None:
        """Close every open connection, as a stopped server's would be."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address)


class Emulator:
    """A Task Queue REST API server, run in a background thread.

    Use it as a context manager::

        with Emulator(queues=["default"]) as emulator:
            os.environ["TASKQUEUE_EMULATOR_HOST"] = emulator.host

    Parameters:
        queues: queue names, or :class:`QueueConfig` objects, to declare.
        queue_yaml: path of an App Engine ``queue.yaml`` to read queues from.
        project: serve only this project (with or without ``s~``/``e~``).
        data_dir: durable storage; without it, memory only.
        host: address to bind; loopback by default.
        port: port to bind; 0 picks a free one.
        require_auth: answer 401 to requests without a bearer token.
        accepted_tokens: when given, the only bearer tokens accepted.
        identities: the account (email) of each bearer token; when given,
            requests are held to the queues' ACLs from ``queue.yaml`` (403).
        clock: seconds since the epoch, as :func:`time.time`.
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
    ) -> None:
        configs: list[QueueConfig] = load_queue_yaml(queue_yaml) if queue_yaml else []
        configs += [q if isinstance(q, QueueConfig) else QueueConfig(q) for q in queues]
        self.service = TaskQueueService(configs, project=project, clock=clock)
        self._journal = FileJournal(data_dir, self.service) if data_dir else None
        self.api = RestApi(
            self.service,
            require_auth=require_auth,
            accepted_tokens=set(accepted_tokens) if accepted_tokens is not None else None,
            identities=identities,
        )
        self._server = _Server((host, port), self.api)
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
        :data:`~kombu_appengine.emulator.rest.TOKENS_KEPT` only, so memory stays bounded."""
        return list(self.api.tokens)

    @property
    def requests(self) -> int:
        """HTTP requests received so far (a batch counts as one)."""
        return self._server.requests

    def declare_queue(self, name: str, **settings: Any) -> None:
        """Declare a pull queue at run time (what editing queue.yaml does)."""
        self.service.declare_queue(QueueConfig(name, **settings))

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
        Retry tests (``POST /retry_test``, see :mod:`.faults`) do the same
        over HTTP, by API method id.
        """
        self.api.faults.add_fault(Fault(count, status, reason, path_contains, method, reset))

    def start(self) -> Emulator:
        """Serve in a background thread; returns at once, ready for requests."""
        if self._thread is None:
            # stop() waits up to one poll interval: keep it short, as test
            # suites start and stop an emulator for every test.
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.01},
                name=f"taskqueue-emulator-{self.host}",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` is called from another."""
        self._server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        """Stop serving, drop open connections and close storage."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self._server.drop_connections()
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


@contextlib.contextmanager
def emulator(queues: Sequence[str | QueueConfig] = ("default",), **options: Any) -> Iterator[str]:
    """Run an :class:`Emulator` for the ``with`` block and give its base URL.

    ``options`` are those of :class:`Emulator`.
    """
    with Emulator(queues, **options) as running:
        yield running.url
