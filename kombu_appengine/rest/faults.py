"""Injected failures, so clients' retry paths are tested against the real server.

Two ways in, one mechanism (:class:`Instruction`):

* **Retry tests over HTTP**, as Google's storage-testbench has them.
  ``POST /retry_test`` with ``{"instructions": {METHOD_ID: [WORD, ...]}}``
  creates one; a request carrying ``x-retry-test-id: ID`` consumes the next
  instruction listed for its API method id (a batch's header applies to each
  of its parts, each by its own method). ``GET /retry_test/ID`` shows what is
  left (``completed`` once every instruction was consumed), ``DELETE
  /retry_test/ID`` removes it. Words: ``return-CODE`` (a 4xx or 5xx status
  with Google's error body), ``return-reset-connection`` (the connection is
  closed without an answer), ``stall-for-Ns`` (wait N seconds, fractions
  allowed, then carry out the request).
* **Python-level faults** (:meth:`Emulator.inject_failures
  <kombu_appengine.emulator.server.Emulator.inject_failures>`), matched by
  HTTP verb and a piece of the URL, for the next ``count`` requests.

Every instruction strikes before the request is carried out, and after it
passed authentication and the queue's ACL: on a server that asks for
tokens, retry tests and the requests that consume them need one
(:class:`~kombu_appengine.rest.front.RestApi` checks).
"""

from __future__ import annotations

import collections
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import api
from . import errors
from .errors import ApiError

#: Path of the retry test resources below the server's root.
RETRY_TEST_PATH = "/retry_test"
#: Request header naming the retry test a request takes part in (lower case).
RETRY_TEST_HEADER = "x-retry-test-id"

_RETURN = re.compile(r"return-([45][0-9][0-9])\Z")
_STALL = re.compile(r"stall-for-([0-9]+(?:\.[0-9]+)?)s\Z")
_RESET = "return-reset-connection"
#: Google's ``reason`` for an injected status; other 4xx are ``badRequest``, 5xx ``backendError``.
_REASONS = {
    401: "authError",
    403: "forbidden",
    404: "notFound",
    409: "alreadyExists",
    429: "rateLimitExceeded",
}
_METHOD_IDS = frozenset(method.id for method in api.METHODS)


class ResetConnection(Exception):
    """Raised to close the client's connection without an answer.

    The HTTP server catches it; anything between (the batch endpoint) lets it through.
    """


@dataclass(frozen=True)
class Instruction:
    """One failure to inject: a status, a dropped connection, or a stall."""

    #: The instruction as a retry test spells it (``return-503``).
    word: str
    #: Status to answer with Google's error body; ``None`` when not answering with one.
    status: int | None = None
    #: Google's ``reason`` of that answer.
    reason: str = "backendError"
    #: Close the connection without answering.
    reset: bool = False
    #: Seconds to wait before carrying out the request.
    stall: float = 0.0

    @classmethod
    def parse(cls, word: str) -> Instruction:
        """The instruction a retry test's word names.

        Raises:
            ValueError: ``word`` is not ``return-CODE`` (400 to 599),
                ``return-reset-connection`` or ``stall-for-Ns``.
        """
        if word == _RESET:
            return cls(word, reset=True)
        returned = _RETURN.match(word)
        if returned:
            status = int(returned.group(1))
            default = "backendError" if status >= 500 else "badRequest"
            return cls(word, status=status, reason=_REASONS.get(status, default))
        stalled = _STALL.match(word)
        if stalled:
            return cls(word, stall=float(stalled.group(1)))
        raise ValueError(
            f"unknown instruction {word!r}: use return-CODE (400 to 599), {_RESET} or stall-for-Ns"
        )

    def carry_out(self) -> None:
        """Inject the failure: stall and return, or raise.

        Raises:
            ApiError: for ``return-CODE``.
            ResetConnection: for ``return-reset-connection``.
        """
        if self.reset:
            raise ResetConnection(self.word)
        if self.status is not None:
            raise ApiError(self.status, self.reason, f"Injected failure ({self.word})")
        if self.stall:
            # The stall is the instruction itself: a slow server, as clients see one.
            time.sleep(self.stall)


class RetryTest:
    """A retry test: what is left to inject, per API method id."""

    def __init__(self, test_id: str, instructions: Mapping[str, list[Instruction]]) -> None:
        self.id = test_id
        self.instructions = {method: collections.deque(words) for method, words in instructions.items()}

    def resource(self) -> dict[str, Any]:
        """The JSON resource ``/retry_test`` answers with."""
        return {
            "id": self.id,
            "instructions": {
                method: [step.word for step in steps] for method, steps in self.instructions.items()
            },
            "completed": not any(self.instructions.values()),
        }


@dataclass
class Fault:
    """A Python-level failure for the next ``count`` requests matching ``method`` and ``path_contains``.

    ``status`` answers with that HTTP status and Google's error body;
    ``reset`` drops the connection without answering.
    """

    count: int
    status: int = 503
    reason: str = "backendError"
    path_contains: str | None = None
    method: str | None = None
    reset: bool = False

    def matches(self, method: str, target: str) -> bool:
        """Whether a request with this verb and target is one to fail."""
        return (self.method is None or self.method == method) and (
            self.path_contains is None or self.path_contains in target
        )

    def instruction(self) -> Instruction:
        """The failure as an :class:`Instruction`."""
        if self.reset:
            return Instruction(_RESET, reset=True)
        return Instruction(f"return-{self.status}", status=self.status, reason=self.reason)


class FaultInjector:
    """Every retry test and Python-level fault of one server; safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tests: dict[str, RetryTest] = {}
        self._faults: collections.deque[Fault] = collections.deque()

    # -- retry tests --------------------------------------------------------

    def create(self, document: Any) -> dict[str, Any]:
        """Create a retry test from its JSON document; its resource.

        Raises:
            ApiError: 400 naming what is wrong with ``document``.
        """
        if not isinstance(document, dict) or not isinstance(document.get("instructions"), dict):
            raise errors.bad_request(
                'A retry test is a JSON object {"instructions": {METHOD_ID: [INSTRUCTION, ...]}}'
            )
        parsed: dict[str, list[Instruction]] = {}
        for method_id, words in document["instructions"].items():
            if method_id not in _METHOD_IDS:
                known = ", ".join(sorted(_METHOD_IDS))
                raise errors.bad_request(
                    f"Unknown API method id {method_id!r} in a retry test: use one of {known}"
                )
            if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
                raise errors.bad_request(f"The instructions for {method_id} must be a list of strings")
            try:
                parsed[method_id] = [Instruction.parse(word) for word in words]
            except ValueError as error:
                raise errors.bad_request(f"Retry test instructions for {method_id}: {error}") from None
        test = RetryTest(uuid.uuid4().hex, parsed)
        with self._lock:
            self._tests[test.id] = test
            return test.resource()

    def show(self, test_id: str) -> dict[str, Any]:
        """The resource of a retry test.

        Raises:
            ApiError: 404 for an unknown ``test_id``.
        """
        with self._lock:
            return self._test(test_id).resource()

    def delete(self, test_id: str) -> None:
        """Remove a retry test.

        Raises:
            ApiError: 404 for an unknown ``test_id``.
        """
        with self._lock:
            del self._tests[self._test(test_id).id]

    def next_instruction(self, test_id: str, method_id: str) -> Instruction | None:
        """Consume the next instruction of retry test ``test_id`` for ``method_id``, if any.

        Raises:
            ApiError: 404 for an unknown ``test_id``.
        """
        with self._lock:
            left = self._test(test_id).instructions.get(method_id)
            return left.popleft() if left else None

    def _test(self, test_id: str) -> RetryTest:
        test = self._tests.get(test_id)
        if test is None:
            raise errors.not_found(f"Retry test {test_id!r} does not exist")
        return test

    # -- Python-level faults ------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        """Fail the next ``fault.count`` matching requests."""
        with self._lock:
            self._faults.append(fault)

    def take_fault(self, method: str, target: str) -> Instruction | None:
        """The failure to inject into a request with this verb and target, if any (and count it)."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, target):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault.instruction()
        return None
