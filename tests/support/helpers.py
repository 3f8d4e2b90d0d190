"""Small helpers many test modules use: polling with a deadline, a fake clock,
base64 as the API carries it, private JSON files, a google-api-python-client
service for an emulator, the types of the ``make_emulator`` and ``make_server`` fixtures, and the
paths the processes started by the tests need."""

from __future__ import annotations

import base64
import json
import pathlib
import time
from typing import Any, Callable, TypeVar

import httplib2
import pytest
from googleapiclient.discovery import build_from_document

from kombu_appengine.discovery import load_document
from kombu_appengine.emulator import Emulator
from kombu_appengine.emulator.server import RestServer

#: Queues every test emulator declares.
TEST_QUEUES = ("default", "other", "pull-queue")
#: The repository: the working directory of the processes the tests start,
#: and where those processes import ``tests.support`` modules from.
ROOT = pathlib.Path(__file__).resolve().parents[2]
#: README's Celery example (its ``tasks.py``), which the Celery tests run.
CELERY_EXAMPLE = pathlib.Path(__file__).resolve().with_name("celery_example.py")


T = TypeVar("T")

#: The type of the ``make_emulator`` fixture: Emulator's options in, a running one out.
MakeEmulator = Callable[..., Emulator]
#: The type of the ``make_server`` fixture: options in, a running server of the test's kind out.
MakeServer = Callable[..., RestServer]


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


class FakeClock:
    """Seconds since the epoch that move only when a test says so: a ``clock``
    for :class:`~kombu_appengine.emulator.Emulator` and its service.

    Kept in quarter seconds, which floats hold exactly, so that the emulator's
    ``int(clock() * 1e6)`` is exact.
    """

    def __init__(self, start: float) -> None:
        self._quarters = self._in_quarters(start)

    def __call__(self) -> float:
        return self._quarters / 4

    def advance(self, seconds: float) -> None:
        self._quarters += self._in_quarters(seconds)

    @property
    def micros(self) -> int:
        """Now, in whole microseconds."""
        return self._quarters * 250_000

    @staticmethod
    def _in_quarters(seconds: float) -> int:
        quarters = seconds * 4
        assert quarters == int(quarters), f"{seconds}s is not a whole number of quarter seconds"
        return int(quarters)


def b64(data: bytes) -> str:
    """Standard base64 text, as payloadBase64 carries it."""
    return base64.b64encode(data).decode("ascii")


def write_json(path: pathlib.Path, document: Any, mode: int = 0o600) -> pathlib.Path:
    """Write ``document`` as JSON to ``path``, private unless ``mode`` says otherwise, as
    credential files are."""
    path.write_text(json.dumps(document, indent=2))
    path.chmod(mode)
    return path


def build_service(url: str) -> Any:
    """google-api-python-client's TaskQueue service talking to ``url``."""
    return build_from_document(load_document(url + "/"), http=httplib2.Http())
