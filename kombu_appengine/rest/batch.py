"""The batch endpoint: ``multipart/mixed`` in, ``multipart/mixed`` out.

Each part of the request holds one HTTP request (``application/http``); each
is answered on its own through :meth:`RestApi.dispatch`, and the answer part
carries ``Content-ID: <response-ID>`` for a request part with ``Content-ID: ID``.

The body is split on its boundary here, as bytes, rather than by the
:mod:`email` package, which decodes the whole body to text and keeps a string
per line (some 25 times the size of a body of short lines). The parts are
counted before anything is split, and every part's headers are checked
before any part runs (its MIME headers, its Content-ID, and the content type
of a JSON body): a batch that cannot be answered in full is refused whole,
with nothing done.
"""

from __future__ import annotations

import binascii
import re
import uuid
from collections.abc import Mapping
from http import HTTPStatus
from typing import NamedTuple

from ..api import BATCH_PATHS, MAX_BATCH_PARTS
from . import errors
from .errors import MAX_LENGTH_DIGITS, ApiError, too_large
from .faults import RETRY_TEST_HEADER
from .front import Response, RestApi, check_json_content_type, parse_headers

_REQUEST_LINE = re.compile(rb"([A-Za-z]+) (\S+)(?: HTTP/\d\.\d)?\Z")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_BOUNDARY = re.compile(r';\s*boundary\s*=\s*(?:"([^"]*)"|([^\s;"]*))', re.IGNORECASE)
#: RFC 2046's boundary characters, 1 to 70 of them, not ending in a space.
_BCHARS = re.compile(r"[0-9A-Za-z'()+_,./:=? -]{0,69}[0-9A-Za-z'()+_,./:=?-]\Z")
#: A Content-ID that can be echoed in a header: printable ASCII.
_PRINTABLE = re.compile(rb"[\x20-\x7e]*\Z")
_DIGITS = re.compile(rb"[0-9]+\Z")


class Request(NamedTuple):
    """One part's HTTP request."""

    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes


class Part(NamedTuple):
    """One part of a batch: its Content-ID, and its request or why it has none."""

    content_id: str | None
    request: Request | ApiError


def parse_part(payload: bytes) -> Request:
    """Split one ``application/http`` part into method, target, headers, body.

    Raises:
        ApiError: 400 when the part is not an HTTP request.
    """
    match = _HEAD_END.search(payload)
    head, body = (payload[: match.start()], payload[match.end() :]) if match else (payload, b"")
    lines = head.strip(b"\r\n").splitlines()
    if not lines:
        raise errors.bad_request("A batch part holds no HTTP request")
    request_line = _REQUEST_LINE.match(lines[0].strip())
    if request_line is None:
        raise errors.bad_request(f"A batch part has a malformed request line {lines[0][:80]!r}")
    method, target = request_line.group(1).decode("ascii"), request_line.group(2).decode("latin-1")
    if "://" in target:
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    headers = parse_headers(lines[1:])
    if "content-length" in headers:
        length = headers["content-length"].encode("latin-1")
        if not _DIGITS.match(length):
            raise errors.bad_request("A batch part has a malformed Content-Length")
        digits = length.lstrip(b"0") or b"0"
        # More digits than that is longer than any part (and int() refuses thousands).
        if len(digits) <= MAX_LENGTH_DIGITS:
            body = body[: int(digits)]
    return Request(method, target, headers, body)


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/mixed`` content type.

    Raises:
        ApiError: 400 for another content type, or no legal boundary.
    """
    declared = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/mixed") or declared is None:
        raise errors.bad_request("A batch request must be multipart/mixed with a boundary")
    boundary = declared.group(1) if declared.group(1) is not None else declared.group(2)
    if not _BCHARS.match(boundary):
        raise errors.bad_request(f"The batch's multipart/mixed boundary {boundary[:80]!r} is not legal")
    return boundary.encode("ascii")


def split_parts(body: bytes, boundary: bytes) -> list[bytes]:
    """The parts of a multipart body (RFC 2046), headers and content, as slices of it.

    A delimiter is ``--boundary`` at the start of a line, the last one
    ``--boundary--``; the preamble before the first and the epilogue after
    the last are ignored.

    Raises:
        ApiError: 400 for a body with no delimiter, none that closes it, or
            more than :data:`MAX_BATCH_PARTS` parts.
    """
    # Counted before anything is built: a delimiter for each part, one to close.
    if body.count(b"--" + boundary) > MAX_BATCH_PARTS + 1:
        raise too_many_parts()
    delimiters = re.finditer(rb"(?:\A|\r?\n)--" + re.escape(boundary) + rb"(--)?[ \t]*(?=\r?\n|\Z)", body)
    parts: list[bytes] = []
    start: int | None = None
    for delimiter in delimiters:
        if start is not None:
            parts.append(body[start : max(start, delimiter.start())])
        if delimiter.group(1):
            if not parts:
                raise errors.bad_request("The batch holds no requests")
            return parts
        start = delimiter.end()
        start += 2 if body.startswith(b"\r\n", start) else 1 if body.startswith(b"\n", start) else 0
    if start is None:
        raise errors.bad_request("The batch body is not multipart/mixed: its boundary is nowhere in it")
    raise errors.bad_request("The batch body is not well-formed multipart/mixed: it is never closed")


def too_many_parts() -> ApiError:
    """400 for a batch over the API's limit."""
    return errors.bad_request(f"A batch may hold at most {MAX_BATCH_PARTS} requests")


def read_part(number: int, raw: bytes) -> Part:
    """A part's Content-ID and its request.

    Raises:
        ApiError: 400 for a part that cannot be answered as its own (malformed
            MIME headers, a Content-ID that is not printable ASCII, a nested
            multipart, an unknown Content-Transfer-Encoding): the whole
            batch is refused before any part runs.
    """
    if raw.startswith((b"\r\n", b"\n")):
        head, content = b"", raw[raw.index(b"\n") + 1 :]
    else:
        end = _HEAD_END.search(raw)
        head, content = (raw[: end.start()], raw[end.end() :]) if end else (raw, b"")
    headers: dict[str, bytes] = {}
    last = None
    for line in head.splitlines():
        if line[:1] in (b" ", b"\t") and last is not None:
            headers[last] += b" " + line.strip()
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            raise errors.bad_request(f"Part {number} of the batch has a malformed header line {line[:80]!r}")
        last = name.strip().lower().decode("latin-1")
        headers[last] = value.strip()
    content_id = headers.get("content-id")
    if content_id is not None and not _PRINTABLE.match(content_id):
        raise errors.bad_request(
            f"The Content-ID of part {number} of the batch is not printable ASCII: it could not be echoed"
        )
    if headers.get("content-type", b"").lower().startswith(b"multipart/"):
        raise errors.bad_request(f"Part {number} of the batch is itself multipart: a part holds one request")
    content = _decode(number, headers.get("content-transfer-encoding", b"binary"), content)
    request: Request | ApiError
    try:
        request = parse_part(content)
        if request.target.partition("?")[0] in BATCH_PATHS:
            # Nesting would let one request recurse without bound.
            raise errors.bad_request("A batch may not contain a batch request")
    except ApiError as error:
        request = error
    return Part(None if content_id is None else content_id.decode("ascii"), request)


def _decode(number: int, encoding: bytes, content: bytes) -> bytes:
    coding = encoding.strip().lower()
    if coding in (b"binary", b"7bit", b"8bit"):
        return content
    try:
        if coding == b"base64":
            return binascii.a2b_base64(content)
        if coding == b"quoted-printable":
            return binascii.a2b_qp(content)
    except binascii.Error:
        named = coding.decode("latin-1")
        raise errors.bad_request(f"Part {number} of the batch is not valid {named}") from None
    raise errors.bad_request(
        f"Part {number} of the batch has an unknown Content-Transfer-Encoding {encoding[:40]!r}"
    )


def answer_batch(
    api: RestApi, headers: Mapping[str, str], body: bytes, host: str, token: str | None
) -> Response:
    """Answer a batch request: each part on its own, in one multipart answer.

    The batch's ``x-retry-test-id`` applies to each of its parts.

    Raises:
        ApiError: 400 for a body that is not a well-formed ``multipart/mixed``
            of at most :data:`MAX_BATCH_PARTS` parts that can all be answered.
        ResetConnection: a retry test says to drop the connection.
    """
    boundary = boundary_of(headers.get("content-type", ""))
    raw_parts = split_parts(body, boundary)
    if len(raw_parts) > MAX_BATCH_PARTS:
        raise too_many_parts()
    parts = [read_part(number, raw) for number, raw in enumerate(raw_parts, 1)]
    del raw_parts
    for number, part in enumerate(parts, 1):
        _check_content_type(api, number, part)
    retry_test = headers.get(RETRY_TEST_HEADER)
    requests: list[tuple[str, str, Mapping[str, str], bytes] | ApiError] = []
    for part in parts:
        request = part.request
        if isinstance(request, Request):
            limit = api.body_limit(request.method, request.target, request.headers)
            if len(request.body) > limit:
                request = too_large(limit)
        requests.append(request)
    answers = api.dispatch_parts(requests, host, token, retry_test)
    answer_boundary = "batch_" + uuid.uuid4().hex
    chunks = [_render_part(answer_boundary, part.content_id, answer) for part, answer in zip(parts, answers)]
    chunks.append(f"--{answer_boundary}--\r\n".encode("ascii"))
    return Response(200, b"".join(chunks), f"multipart/mixed; boundary={answer_boundary}")


def _check_content_type(api: RestApi, number: int, part: Part) -> None:
    """Refuse the batch for a part whose JSON body is not sent as ``application/json``.

    Checked before any part runs: the part would be refused anyway, and
    a client that sent it is not speaking JSON (a page's ``text/plain`` POST).

    Raises:
        ApiError: 400 naming the part.
    """
    request = part.request
    if not isinstance(request, Request) or not api.takes_json_body(
        request.method, request.target, request.headers
    ):
        return
    try:
        check_json_content_type(request.headers)
    except ApiError as error:
        raise errors.bad_request(
            f"Part {number} of the batch: {error.message}; nothing in the batch was run", reason=error.reason
        ) from None


def _render_part(boundary: str, content_id: str | None, answer: Response) -> bytes:
    head = [f"--{boundary}", "Content-Type: application/http"]
    if content_id:
        inner = content_id.strip()
        inner = inner[1:-1] if inner.startswith("<") and inner.endswith(">") else inner
        head.append(f"Content-ID: <response-{inner}>")
    try:
        reason = HTTPStatus(answer.status).phrase
    except ValueError:
        reason = "Unknown"
    head += ["", f"HTTP/1.1 {answer.status} {reason}"]
    if answer.content_type:
        head.append(f"Content-Type: {answer.content_type}")
    # Always at least one header: google-api-python-client cannot parse a
    # sub-response without one.
    head += [f"Content-Length: {len(answer.body)}", "", ""]
    return "\r\n".join(head).encode("latin-1") + answer.body + b"\r\n"
