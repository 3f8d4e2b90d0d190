"""Payload previews: kombu's envelope opened, JSON laid out, text as it is, anything else in hex."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu import Connection

from kombu_appengine.dashboard.preview import HEX_BYTES, PREVIEW_CHARS, preview
from kombu_appengine.emulator import Emulator


def test_a_kombu_message_shows_its_body_decoded(make_emulator):
    emulator: Emulator = make_emulator(queues=["pull-queue"])
    options = {"api_endpoint": emulator.url}
    with Connection(transport="kombu_appengine:Transport", transport_options=options) as conn:
        conn.SimpleQueue("pull-queue").put({"image": "cat.png", "sizes": [1, 2]})
    [task] = emulator.service.peek_tasks("emulator", "pull-queue", 10, 1000)
    shown = preview(task.payload, task.size)
    assert shown.format == "kombu"
    assert json.loads(shown.text) == {"image": "cat.png", "sizes": [1, 2]}
    assert shown.label.startswith("kombu message, application/json, ")
    assert not shown.truncated


def test_a_celery_message_names_its_task():
    envelope = {
        "body": json.dumps([[2, 3], {}, {}]),
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {"task": "tasks.add"},
        "properties": {"delivery_tag": "x"},
    }
    shown = preview(json.dumps(envelope).encode())
    assert shown.format == "kombu"
    assert "Celery task tasks.add" in shown.label
    assert json.loads(shown.text) == [[2, 3], {}, {}]


def test_json_is_laid_out():
    shown = preview(b'{"n":1,"text":"caf\\u00e9"}')
    assert shown.format == "json"
    assert shown.text == '{\n  "n": 1,\n  "text": "café"\n}'
    assert shown.label == "JSON, 26 bytes"


def test_json_null_is_json():
    assert preview(b"null").format == "json"


def test_text_is_shown_as_it_is_even_when_it_looks_like_html():
    shown = preview(b"<img src=x onerror=alert(1)>")
    assert shown == ("text", "<img src=x onerror=alert(1)>", False, "text, 28 bytes")


def test_binary_is_a_hex_dump_of_its_first_bytes():
    payload = bytes(range(256)) * 2
    shown = preview(payload)
    assert shown.format == "binary"
    assert shown.truncated
    lines = shown.text.splitlines()
    assert len(lines) == HEX_BYTES // 16
    assert lines[0] == "00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  |................|"
    assert lines[4].endswith("|@ABCDEFGHIJKLMNO|")
    assert shown.label == "binary, 512 bytes"


def test_control_characters_make_text_binary():
    assert preview(b"abc\x00def").format == "binary"
    assert preview(b"").format == "text"


def test_long_payloads_are_cut_and_say_so():
    shown = preview(json.dumps(["x" * 10] * 1000).encode())
    assert shown.truncated
    assert len(shown.text) == PREVIEW_CHARS


def test_an_envelope_whose_body_is_not_base64_shows_it_as_it_is():
    envelope = {
        "body": "not base64!",
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {},
        "properties": {"body_encoding": "base64"},
    }
    shown = preview(json.dumps(envelope).encode())
    assert shown.format == "kombu"
    assert shown.text == "not base64!"
    assert "not the base64 it says" in shown.label


def test_an_envelope_with_a_binary_body_shows_hex():
    envelope = {
        "body": base64.b64encode(b"\xff\xfe\x00").decode(),
        "content-type": "application/data",
        "content-encoding": "binary",
        "headers": {},
        "properties": {"body_encoding": "base64"},
    }
    shown = preview(json.dumps(envelope).encode())
    assert shown.format == "kombu"
    assert shown.text.startswith("00000000  ff fe 00")
    assert shown.label.startswith("kombu message, application/data")


def test_the_head_of_a_long_payload_is_shown_as_text_cut_short():
    head = json.dumps({"text": "é" * 100}, ensure_ascii=False).encode()[:51]  # ends inside an "é"
    shown = preview(head, 1_000_000)
    assert shown.format == "text"
    assert shown.truncated
    assert shown.text == head[:50].decode()
    assert shown.label == "text, 1000000 bytes"


def test_the_head_of_a_long_binary_payload_is_a_hex_dump():
    shown = preview(b"\x00" * 32, 1_000_000)
    assert shown.format == "binary"
    assert shown.truncated
    assert shown.label == "binary, 1000000 bytes"


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 50_000,
        b"[" * 50_000 + b"]" * 50_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ],
    ids=["unclosed", "closed", "objects"],
)
def test_json_nested_deeper_than_python_can_parse_is_shown_as_text(payload: bytes):
    shown = preview(payload)
    assert shown.format == "text"
    assert shown.text == payload[:PREVIEW_CHARS].decode()
    assert shown.truncated
    assert shown.label == f"text, {len(payload)} bytes"


def test_an_envelope_whose_json_body_is_nested_too_deep_shows_the_body_as_text():
    body = "[" * 50_000 + "]" * 50_000
    envelope = {
        "body": body,
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {},
        "properties": {},
    }
    shown = preview(json.dumps(envelope).encode())
    assert shown.format == "kombu"
    assert shown.text == body[:PREVIEW_CHARS]
    assert shown.label.startswith("kombu message, application/json, ")


# No deadline: a payload 100,000 deep takes a while to parse, and how long says nothing here.
@settings(max_examples=50, deadline=None)
@given(
    st.binary(max_size=512),
    st.sampled_from([b"[", b'{"a":', b'"']),
    st.integers(min_value=0, max_value=100_000),
    st.sampled_from([b"]", b"}", b""]),
    st.integers(min_value=0, max_value=100_000),
)
def test_a_preview_never_fails(middle: bytes, opening: bytes, depth: int, closing: bytes, closed: int):
    shown = preview(opening * depth + middle + closing * closed)
    assert len(shown.text) <= PREVIEW_CHARS
