"""Fixtures shared by the test suite: a real emulator on loopback, and
google-api-python-client built from the shipped discovery document."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any, Callable, TypeVar

import httplib2
import pytest
from googleapiclient.discovery import build_from_document

from kombu_appengine.discovery import load_document
from kombu_appengine.emulator import Emulator

#: Queues every test emulator declares.
TEST_QUEUES = ("default", "other", "pull-queue")


T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None], timeout: float = 10.0, what: str = "condition", interval: float = 0.02
) -> T:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def b64(data: bytes) -> str:
    """Standard base64 text, as payloadBase64 carries it."""
    return base64.b64encode(data).decode("ascii")


def build_service(url: str) -> Any:
    """google-api-python-client's TaskQueue service talking to ``url``."""
    return build_from_document(load_document(url + "/"), http=httplib2.Http())


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A running in-process emulator with :data:`TEST_QUEUES`."""
    with Emulator(queues=TEST_QUEUES) as running:
        yield running


@pytest.fixture
def service(emulator: Emulator) -> Any:
    """The TaskQueue API client for :func:`emulator`."""
    return build_service(emulator.url)
