"""Tasks to kombu messages and back: kombu's JSON envelope, or a raw payload wrapped.

What kombu publishes is stored as kombu's JSON envelope. A task whose payload
is not one (put there by App Engine code, another REST client, a script), or
is one kombu cannot read (its body not the base64 it says, headers that are
not a mapping ...), is delivered with the payload's bytes as body, labelled
``application/json`` when they are a JSON document, in the text encoding
they are in: UTF-8, or UTF-8 after a byte order mark, or UTF-16 or UTF-32,
as JSON's own rules tell them apart (RFC 8259, and :func:`json.detect_encoding`).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
from collections.abc import Mapping
from typing import Any

from kombu.serialization import loads
from kombu.transport import virtual

from .. import api

logger = logging.getLogger(__name__)

#: Keys of every message kombu prepares (``Channel.prepare_message``).
ENVELOPE_KEYS = frozenset({"body", "content-encoding", "content-type", "headers", "properties"})
#: The content type of a payload that is a JSON document.
JSON_CONTENT_TYPE = "application/json"
#: Content encodings kombu's JSON decoder reads as they are (it decodes bytes as UTF-8).
UTF8_NAMES = frozenset({"utf-8", "utf8"})
#: Broken envelopes warned about once each (by queue and task) in a process.
WARNED_ENVELOPES = 1024


class Payload(bytes):
    """A leased task's payload that knows the task's name, for :func:`message_of` to warn with."""

    task_id: str | None

    def __new__(cls, data: bytes, task_id: str | None = None) -> Payload:
        payload = super().__new__(cls, data)
        payload.task_id = task_id
        return payload


def payload_of(task: Mapping[str, Any]) -> Payload:
    """A leased task's payload; text that is not base64 is taken as it is, never dropped."""
    text = task.get("payloadBase64", "")
    task_id = task.get("id") if isinstance(task.get("id"), str) else None
    if not isinstance(text, str):
        return Payload(b"", task_id)
    try:
        return Payload(api.decode_payload(text), task_id)
    except ValueError:
        return Payload(text.encode("utf-8", "replace"), task_id)


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
    # Nested deeper than Python's parser goes, it is no document a consumer
    # could decode either: bytes, like any payload that is not JSON.
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None


def envelope_fault(envelope: dict[str, Any]) -> str | None:
    """What keeps kombu from making a message of ``envelope`` (an envelope by its keys), or ``None``.

    These are what kombu's virtual ``Message`` and this transport's delivery
    read before the consumer has the message: anything wrong there would
    raise out of ``drain_events`` with the task held and never delivered.
    What the consumer decodes itself (the body's content type, its
    compression) is left to it, as with any transport: kombu hands those
    errors to the consumer's ``on_decode_error`` with the message.
    """
    body, properties = envelope["body"], envelope["properties"]
    if not isinstance(body, str):
        return f"its body is a {type(body).__name__}, not text"
    if not isinstance(envelope["headers"], (dict, type(None))):
        return "its headers are not a mapping"
    for key in ("content-type", "content-encoding"):
        if not isinstance(envelope[key], (str, type(None))):
            return f"its {key} is not text"
    if not isinstance(properties.get("delivery_info", {}), dict):
        return "its delivery_info is not a mapping"
    body_encoding = properties.get("body_encoding")
    if body_encoding is None or body_encoding == "":
        return None
    if not isinstance(body_encoding, str):
        return "its body_encoding is not text"
    if body_encoding.lower() == "utf-8" or not body:
        return None  # kombu leaves those bodies as they are
    codec = virtual.Channel.codecs.get(body_encoding)
    if codec is None:
        return f"its body_encoding {body_encoding!r} is none kombu knows"
    try:
        codec.decode(body)
    except ValueError:  # binascii.Error among them
        return f"its body is not the {body_encoding} its body_encoding says"
    return None


@functools.lru_cache(maxsize=WARNED_ENVELOPES)
def _warn_once(queue: str, task_id: str | None, fault: str) -> None:
    """Warn of a broken envelope, once for each task (the cache remembers which)."""
    logger.warning(
        "task %s of queue %r looks like a kombu message but kombu cannot read it (%s): "
        "delivered as raw bytes, for the consumer to acknowledge or reject",
        task_id or "(unnamed)",
        queue,
        fault,
    )


def message_of(payload: bytes, queue: str) -> dict[str, Any]:
    """kombu's message for a task's payload: its envelope, or the raw payload wrapped.

    An envelope kombu cannot read (:func:`envelope_fault`) is not one: it is
    wrapped too, so that the consumer gets it and can reject it, with a
    warning (once a task) naming the task and the queue.

    The envelope (or the wrapping) still lacks its delivery tag and delivery
    information, which each delivery adds.
    """
    document, encoding = json_document(payload)
    if is_envelope(document):
        fault = envelope_fault(document)
        if fault is None:
            message: dict[str, Any] = document
            return message
        _warn_once(queue, getattr(payload, "task_id", None), fault)
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
