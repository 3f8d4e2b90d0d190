"""A task's payload as a person reads it: kombu's envelope opened, JSON laid out, bytes in hex.

:func:`preview` turns a payload into a :class:`Preview`, a short text and
what kind of payload it came from. The text is only ever shown as text by
the page (never as HTML), so it may hold anything the payload holds.

A preview never fails, whatever the payload: JSON nested deeper than
Python's recursion limit lets :mod:`json` parse or lay out (fifty thousand
``[``, say) is shown as the text it is made of.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, NamedTuple

from ..transport.codec import is_envelope, json_document

#: Most characters of a preview's text; the rest is cut (and said to be).
PREVIEW_CHARS = 2000
#: Most bytes of a binary payload shown in hex.
HEX_BYTES = 256
#: Bytes per line of a hex dump.
HEX_LINE = 16


class Preview(NamedTuple):
    """What the dashboard shows of a payload."""

    #: ``"kombu"`` (kombu's envelope, its body shown), ``"json"``, ``"text"`` or ``"binary"``.
    format: str
    #: The text to show, at most :data:`PREVIEW_CHARS` characters.
    text: str
    #: Whether ``text`` was cut short.
    truncated: bool
    #: A few words on what the payload is, e.g. ``kombu message, application/json``.
    label: str

    def to_dict(self) -> dict[str, Any]:
        """The preview as the dashboard's JSON carries it."""
        return self._asdict()


def preview(payload: bytes, size: int | None = None) -> Preview:
    """What the dashboard shows of ``payload``.

    A kombu envelope shows its body, decoded (base64 undone, JSON laid out);
    another JSON document is laid out; other UTF-8 text is shown as it is;
    anything else as a hex dump of its first :data:`HEX_BYTES` bytes.

    Parameters:
        payload: the payload, or its first bytes.
        size: the whole payload's length, when ``payload`` is only its
            first bytes: that is then shown as text or bytes, cut short.
    """
    if size is not None and size > len(payload):
        return _plain(payload, size)
    is_json, document = _parse(payload)
    if is_envelope(document):
        return _envelope(document, payload)
    laid_out = _layout(document) if is_json else None
    if laid_out is not None:
        return _cut("json", laid_out, f"JSON, {_size(len(payload))}")
    return _plain(payload)


def _envelope(envelope: dict[str, Any], payload: bytes) -> Preview:
    """kombu's message (``envelope``, read from ``payload``): its body decoded as kombu would,
    with its content type."""
    size = len(payload)
    content_type = str(envelope.get("content-type") or "")
    body = envelope.get("body")
    label = f"kombu message, {content_type or 'no content type'}"
    task = envelope.get("headers", {}).get("task") if isinstance(envelope.get("headers"), dict) else None
    if isinstance(task, str):
        label += f", Celery task {task}"
    label += f", {_size(size)}"
    if envelope["properties"].get("body_encoding") == "base64" and isinstance(body, str):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return _cut("kombu", body, label + " (body is not the base64 it says)")
    elif isinstance(body, str):
        raw = body.encode("utf-8", "surrogatepass")
    else:
        laid_out = _layout(body)
        if laid_out is None:
            # A body nested too deep to lay out: the envelope as it was sent.
            return _plain(payload)._replace(format="kombu", label=label)
        return _cut("kombu", laid_out, label)
    if content_type == "application/json":
        is_json, document = _parse(raw)
        laid_out = _layout(document) if is_json else None
        if laid_out is not None:
            return _cut("kombu", laid_out, label)
    return _plain(raw)._replace(format="kombu", label=label)


def _plain(payload: bytes, size: int | None = None) -> Preview:
    """Text when the bytes are printable UTF-8 text, else a hex dump.

    ``size`` is the whole payload's length when ``payload`` is its head only.
    """
    whole = len(payload) if size is None else size
    try:
        text: str | None = payload.decode("utf-8")
    except UnicodeDecodeError as error:
        # A head may end inside a character: the text before it is text all the same.
        cut_inside = whole > len(payload) and error.start >= len(payload) - 3
        text = payload[: error.start].decode("utf-8", "replace") if cut_inside else None
    if text is not None and all(ch.isprintable() or ch in "\n\r\t" for ch in text):
        shown = _cut("text", text, f"text, {_size(whole)}")
        return shown._replace(truncated=shown.truncated or whole > len(payload))
    dump = _hex_dump(payload[:HEX_BYTES])
    return Preview("binary", dump, whole > HEX_BYTES, f"binary, {_size(whole)}")


def _hex_dump(data: bytes) -> str:
    """``offset  hex bytes  |printable|`` lines, as ``hexdump -C`` writes them."""
    lines = []
    for offset in range(0, len(data), HEX_LINE):
        chunk = data[offset : offset + HEX_LINE]
        hex_part = " ".join(f"{byte:02x}" for byte in chunk)
        shown = "".join(chr(byte) if 0x20 <= byte < 0x7F else "." for byte in chunk)
        lines.append(f"{offset:08x}  {hex_part:<{HEX_LINE * 3 - 1}}  |{shown}|")
    return "\n".join(lines)


def _parse(data: bytes) -> tuple[bool, Any]:
    """Whether ``data`` is a JSON document, and the document.

    JSON nested deeper than :mod:`json`'s recursive parser can go counts as
    no JSON: it is shown as text.
    """
    try:
        document, _ = json_document(data)
    except RecursionError:
        return False, None
    # json_document gives None for a payload that is JSON's null too.
    return document is not None or data.strip() == b"null", document


def _layout(document: Any) -> str | None:
    """``document`` laid out, or ``None`` when it is nested too deep for :mod:`json` to write."""
    try:
        return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False)
    except RecursionError:
        return None


def _cut(kind: str, text: str, label: str) -> Preview:
    if len(text) > PREVIEW_CHARS:
        return Preview(kind, text[:PREVIEW_CHARS], True, label)
    return Preview(kind, text, False, label)


def _size(size: int) -> str:
    return f"{size} byte" if size == 1 else f"{size} bytes"
