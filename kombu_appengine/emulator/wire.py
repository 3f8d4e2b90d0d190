"""HTTP/1.1 request framing, read strictly, within limits and deadlines.

The stdlib's :mod:`http.server` parses the request line and the headers; the
emulator reads them, and every body, through :class:`RequestReader`, which
holds each request to a deadline from its first byte to the end of its body
(a client trickling one byte at a time is cut off), and reads bodies by
:func:`body_framing` and :func:`read_body`, which refuse whatever a lenient
parser would have to guess at: request smuggling starts where two parsers
guess differently.
"""

from __future__ import annotations

import io
import re
import socket
import time
from email.message import Message
from typing import NamedTuple

from ..rest.errors import MAX_LENGTH_DIGITS, ApiError, too_large

#: Longest chunk-size line (with its extensions), in bytes.
MAX_CHUNK_LINE = 4096
#: Most trailer lines after the last chunk.
MAX_TRAILER_LINES = 64
#: Bytes asked of the socket at a time.
RECV_SIZE = 64 * 1024

#: A chunk-size line: hexadecimal digits only, then optional extensions.
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[^\r\n]*)?\r?\n\Z")
_DIGITS = re.compile(r"[0-9]+\Z")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


class DeadlineExceeded(socket.timeout):
    """The request did not arrive in full before its deadline.

    A ``socket.timeout`` (``TimeoutError``), so :mod:`http.server` treats it as one.
    """


class ClientGone(Exception):
    """The client closed its connection before the request's end: no answer is possible."""


class RequestReader(io.BufferedIOBase):
    """Buffered reads from a connection, each held to the current request's deadline.

    Between requests (no deadline) a read waits at most ``idle_timeout``.

    Parameters:
        sock: the connection.
        idle_timeout: seconds a read may wait when no request is under way.
    """

    def __init__(self, sock: socket.socket, idle_timeout: float) -> None:
        super().__init__()
        self._sock = sock
        self._buffer = bytearray()
        self.idle_timeout = idle_timeout
        #: ``time.monotonic()`` by which the current request must have arrived.
        self.deadline: float | None = None
        #: Whether the current request's deadline passed.
        self.expired = False

    def readable(self) -> bool:
        return True

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet."""
        return len(self._buffer)

    def start_deadline(self, seconds: float) -> None:
        """A request begins: it must arrive in full within ``seconds``."""
        self.deadline = time.monotonic() + seconds
        self.expired = False

    def end_deadline(self) -> None:
        """The request arrived: back to the idle timeout (which also bounds writes)."""
        self.deadline = None
        self._set_timeout(self.idle_timeout)

    def _set_timeout(self, seconds: float) -> None:
        # Only when it changes: settimeout is a system call that lets go of
        # the GIL, and under load each of those makes the thread wait its
        # turn again behind every other connection's.
        if self._sock.gettimeout() != seconds:
            self._sock.settimeout(seconds)

    def _fill(self) -> bool:
        """Receive more bytes into the buffer; ``False`` at the end of the stream."""
        if self.deadline is None:
            self._set_timeout(self.idle_timeout)
        else:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self.expired = True
                raise DeadlineExceeded("the request did not arrive before its deadline")
            self._sock.settimeout(remaining)
        try:
            chunk = self._sock.recv(RECV_SIZE)
        except socket.timeout:
            if self.deadline is None:
                raise
            self.expired = True
            raise DeadlineExceeded("the request did not arrive before its deadline") from None
        if not chunk:
            return False
        self._buffer += chunk
        return True

    def wait_for_input(self) -> bool:
        """Wait (up to the idle timeout) for a request's first byte; ``False`` at the end of the stream."""
        return bool(self._buffer) or self._fill()

    def _take(self, size: int) -> bytes:
        if size >= len(self._buffer):
            # All of it (a whole body, usually): one copy, not two.
            taken = bytes(self._buffer)
            self._buffer = bytearray()
            return taken
        taken = bytes(self._buffer[:size])
        del self._buffer[:size]
        return taken

    def readline(self, size: int | None = -1) -> bytes:
        """One line, with its ``\\n``; at most ``size`` bytes; short at the end of the stream."""
        limit = -1 if size is None else size
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                return self._take(end + 1 if limit < 0 else min(end + 1, limit))
            if 0 <= limit <= len(self._buffer):
                return self._take(limit)
            start = len(self._buffer)
            if not self._fill():
                return self._take(len(self._buffer))

    def read(self, size: int | None = -1) -> bytes:
        """``size`` bytes, fewer only at the end of the stream; all that is left when ``size`` is negative."""
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buffer))
        while len(self._buffer) < size and self._fill():
            pass
        return self._take(size)

    def read1(self, size: int = -1) -> bytes:
        if not self._buffer:
            self._fill()
        return self._take(len(self._buffer) if size < 0 else size)


class Framing(NamedTuple):
    """How a request's body is delimited."""

    chunked: bool
    #: The ``Content-Length``; 0 for no body; ``None`` when chunked.
    length: int | None


def body_framing(headers: Message) -> Framing:
    """How the body of a request with these headers is delimited (RFC 9112, section 6).

    Raises:
        ApiError: 400 for a malformed or conflicting ``Content-Length``,
            ``Content-Length`` with chunked, or a transfer coding other than
            ``chunked`` alone. (RFC 9112 suggests 501 for a coding the server
            does not know; but a 5xx says the server failed, and clients
            retry it, while the request is what is wrong.)
    """
    encodings = headers.get_all("Transfer-Encoding") or []
    lengths = headers.get_all("Content-Length") or []
    if encodings:
        codings = [coding.strip().lower() for value in encodings for coding in value.split(",")]
        if codings != ["chunked"]:
            named = ", ".join(codings)
            if all(_TOKEN.match(coding) for coding in codings):
                raise bad_framing(f"Transfer-Encoding {named!r} is not supported: only chunked is")
            raise bad_framing(f"Malformed Transfer-Encoding {named!r}")
        if lengths:
            raise bad_framing("Content-Length and Transfer-Encoding: chunked may not come together")
        return Framing(chunked=True, length=None)
    values = {value.strip() for header in lengths for value in header.split(",")}
    if not values:
        return Framing(chunked=False, length=0)
    if len(values) > 1:
        raise bad_framing(f"Conflicting Content-Length values {', '.join(sorted(values))}")
    (value,) = values
    if not _DIGITS.match(value):
        raise bad_framing(f"Invalid Content-Length {value!r}")
    digits = value.lstrip("0") or "0"
    if len(digits) > MAX_LENGTH_DIGITS:
        # Not converted: int() refuses thousands of digits. It is over every limit anyway.
        return Framing(chunked=False, length=10**MAX_LENGTH_DIGITS)
    return Framing(chunked=False, length=int(digits))


def read_body(reader: RequestReader, framing: Framing, limit: int) -> bytes:
    """The body of a request, at most ``limit`` bytes.

    Raises:
        ApiError: 400 for a malformed chunked body, 413 for a body over ``limit``.
        ClientGone: the stream ended before the body did.
        DeadlineExceeded: the body did not arrive in time.
    """
    if framing.chunked:
        return _read_chunked(reader, limit)
    length = framing.length or 0
    if length > limit:
        raise too_large(limit)
    body = reader.read(length)
    if len(body) < length:
        raise ClientGone(f"the body ended after {len(body)} of {length} bytes")
    return body


def _read_chunked(reader: RequestReader, limit: int) -> bytes:
    body = bytearray()
    while True:
        size = _chunk_size(_line(reader, "chunk size"))
        if size == 0:
            break
        if len(body) + size > limit:
            raise too_large(limit)
        chunk = reader.read(size)
        if len(chunk) < size:
            raise ClientGone("the chunked body ended inside a chunk")
        body += chunk
        if _line(reader, "chunk end") not in (b"\r\n", b"\n"):
            raise bad_framing("Malformed chunked body: a chunk is longer than its size line says")
    for _ in range(MAX_TRAILER_LINES):
        if _line(reader, "trailer") in (b"\r\n", b"\n"):
            return bytes(body)
    raise bad_framing(f"Malformed chunked body: more than {MAX_TRAILER_LINES} trailer lines")


def _line(reader: RequestReader, what: str) -> bytes:
    line = reader.readline(MAX_CHUNK_LINE + 1)
    if not line.endswith(b"\n"):
        if len(line) > MAX_CHUNK_LINE:
            raise bad_framing(f"Malformed chunked body: {what} line over {MAX_CHUNK_LINE} bytes")
        raise ClientGone(f"the chunked body ended in a {what} line")
    return line


def _chunk_size(line: bytes) -> int:
    matched = _CHUNK_SIZE.match(line)
    if matched is None:
        raise bad_framing(f"Malformed chunked body: chunk size {line[:40]!r} is not hexadecimal digits")
    return int(matched.group(1), 16)


def bad_framing(message: str) -> ApiError:
    """400 for a request whose body cannot be delimited: the connection must close."""
    return ApiError(400, "badRequest", message)
