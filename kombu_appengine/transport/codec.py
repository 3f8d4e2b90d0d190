"""Tasks to kombu messages and back: kombu's JSON envelope, or a raw payload wrapped."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import api


def payload_of(task: Mapping[str, Any]) -> bytes:
    """A leased task's payload; text that is not base64 is taken as it is, never dropped."""
    text = task.get("payloadBase64", "")
    if not isinstance(text, str):
        return b""
    try:
        return api.decode_payload(text)
    except ValueError:
        return text.encode("utf-8", "replace")


#: Keys of every message kombu prepares (``Channel.prepare_message``).
ENVELOPE_KEYS = frozenset({"body", "content-encoding", "content-type", "headers", "properties"})


def is_envelope(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and document.keys() >= ENVELOPE_KEYS
        and isinstance(document["properties"], dict)
    )
