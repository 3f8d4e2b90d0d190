"""Tasks to kombu messages and back: kombu's JSON envelope, or a raw payload wrapped.

What kombu publishes is stored as kombu's JSON envelope. A task whose payload
is not one (put there by App Engine code, another REST client, a script) is
delivered with the payload's bytes as body, labelled ``application/json``
when they are a JSON document, in the text encoding they are in: UTF-8, or
UTF-8 after a byte order mark, or UTF-16 or UTF-32, as JSON's own rules
tell them apart (RFC 8259, and :func:`json.detect_encoding`).
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Mapping
from typing import Any

from kombu.serialization import loads
from kombu.transport import virtual

from .. import api

#: Keys of every message kombu prepares (``Channel.prepare_message``).
ENVELOPE_KEYS = frozenset({"body", "content-encoding", "content-type", "headers", "properties"})
#: The content type of a payload that is a JSON document.
JSON_CONTENT_TYPE = "application/json"
#: Content encodings kombu's JSON decoder reads as they are (it decodes bytes as UTF-8).
UTF8_NAMES = frozenset({"utf-8", "utf8"})


def payload_of(task: Mapping[str, Any]) -> bytes:
    """A leased task's payload; text that is not base64 is taken as it is, never dropped."""
    text = task.get("payloadBase64", "")
    if not isinstance(text, str):
        return b""
    try:
        return api.decode_payload(text)
    except ValueError:
        return text.encode("utf-8", "replace")


def is_envelope(document: Any) -> bool:
    """Whether ``document`` is a message kombu prepared."""
    return (
        isinstance(document, dict)
        and document.keys() >= ENVELOPE_KEYS
        and isinstance(document["properties"], dict)
    )


def json_document(payload: bytes) -> tuple[Any, str | None]:
    """The JSON document ``payload`` holds, and its text encoding; ``(None, None)`` if it holds none.

    The encoding is a Python codec name: ``utf-8``, ``utf-8-sig`` (after a
    byte order mark), ``utf-16``, ``utf-16-le`` ... as
    :func:`json.detect_encoding` tells them apart.
    """
    encoding = json.detect_encoding(payload)
    try:
        return json.loads(payload.decode(encoding)), encoding
    except (ValueError, UnicodeDecodeError):
        return None, None


def message_of(payload: bytes, queue: str) -> dict[str, Any]:
    """kombu's message for a task's payload: its envelope, or the raw payload wrapped.

    The envelope (or the wrapping) still lacks its delivery tag and delivery
    information, which each delivery adds.
    """
    document, encoding = json_document(payload)
    if is_envelope(document):
        message: dict[str, Any] = document
        return message
    return {
        "body": base64.b64encode(payload).decode("ascii"),
        "content-type": JSON_CONTENT_TYPE if encoding else "application/data",
        "content-encoding": encoding or "binary",
        "headers": {},
        "properties": {
            "body_encoding": "base64",
            "delivery_info": {"exchange": "", "routing_key": queue},
            "delivery_mode": 2,
            "priority": 0,
        },
    }


class Message(virtual.Message):
    """A kombu message whose ``decode()`` reads JSON in any encoding JSON allows.

    kombu's JSON decoder reads bytes as UTF-8 whatever the content encoding
    says; a body in UTF-16, or after a byte order mark, is decoded with its
    own encoding first.
    """

    def _decode(self) -> Any:
        body = self.body
        encoding = (self.content_encoding or "utf-8").lower()
        if self.content_type == JSON_CONTENT_TYPE and encoding not in UTF8_NAMES and isinstance(body, bytes):
            # A label Python has no codec for, or a wrong one: left to kombu.
            with contextlib.suppress(LookupError, UnicodeDecodeError):
                body = body.decode(encoding)
        return loads(body, self.content_type, self.content_encoding, accept=self.accept)
