"""The batch endpoint: ``multipart/mixed`` in, ``multipart/mixed`` out.

Each part of the request holds one HTTP request (``application/http``); each
is answered on its own through :meth:`RestApi.dispatch`, and the answer part
carries ``Content-ID: <response-ID>`` for a request part with ``Content-ID: ID``.
"""

from __future__ import annotations

import email.policy
import re
import uuid
from collections.abc import Mapping
from email.parser import BytesParser
from http import HTTPStatus
from typing import Any, cast

from ..api import BATCH_PATHS, MAX_BATCH_PARTS
from . import errors
from .faults import RETRY_TEST_HEADER
from .rest import Response, RestApi, parse_headers

_REQUEST_LINE = re.compile(rb"([A-Za-z]+) (\S+)(?: HTTP/\d\.\d)?\Z")
_HEAD_END = re.compile(rb"\r?\n\r?\n")


def parse_part(payload: bytes) -> tuple[str, str, Mapping[str, str], bytes]:
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
        try:
            body = body[: int(headers["content-length"])]
        except ValueError:
            raise errors.bad_request("A batch part has a malformed Content-Length") from None
    return method, target, headers, body


def answer_batch(
    api: RestApi, headers: Mapping[str, str], body: bytes, host: str, token: str | None
) -> Response:
    """Answer a batch request: each part on its own, in one multipart answer.

    The batch's ``x-retry-test-id`` applies to each of its parts.

    Raises:
        ApiError: 400 for a body that is not a well-formed ``multipart/mixed``
            of at most :data:`MAX_BATCH_PARTS` parts.
        ResetConnection: a retry test says to drop the connection.
    """
    content_type = headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/mixed") or "boundary=" not in content_type:
        raise errors.bad_request("A batch request must be multipart/mixed with a boundary")
    try:
        message = BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
        )
    except RecursionError:
        raise errors.bad_request("The batch body nests multipart parts too deeply") from None
    if message.defects or not message.is_multipart():
        raise errors.bad_request(
            "The batch body is not well-formed multipart/mixed: "
            + ", ".join(type(defect).__name__ for defect in message.defects)
        )
    parts = cast(list[Any], message.get_payload())
    if not parts:
        raise errors.bad_request("The batch holds no requests")
    if len(parts) > MAX_BATCH_PARTS:
        raise errors.bad_request(f"A batch may hold at most {MAX_BATCH_PARTS} requests, not {len(parts)}")
    retry_test = headers.get(RETRY_TEST_HEADER)
    boundary = "batch_" + uuid.uuid4().hex
    chunks: list[bytes] = []
    for part in parts:
        payload = part.get_payload(decode=True) or b""
        try:
            method, target, part_headers, part_body = parse_part(payload)
            if target.partition("?")[0] in BATCH_PATHS:
                # Nesting would let one request recurse without bound.
                raise errors.bad_request("A batch may not contain a batch request")
        except errors.ApiError as error:
            answer = Response(error.code, error.body())
        else:
            answer = api.dispatch(method, target, part_headers, part_body, host, token, retry_test)
        content_id = part.get("Content-ID")
        chunks.append(_render_part(boundary, content_id, answer))
    chunks.append(f"--{boundary}--\r\n".encode("ascii"))
    return Response(200, b"".join(chunks), f"multipart/mixed; boundary={boundary}")


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
