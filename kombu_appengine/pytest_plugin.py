"""pytest plugin: the ``pullqueue_emulator`` fixture, for your own test suites.

Installed with the package (a ``pytest11`` entry point)::

    def test_my_consumer(pullqueue_emulator):
        pullqueue_emulator.declare_queue("images")
        with kombu.Connection(transport="kombu_appengine:Transport") as conn:
            ...

The fixture runs an in-process :class:`~kombu_appengine.emulator.Emulator`
with a pull queue named ``default`` (declare more with ``declare_queue``)
and points ``TASKQUEUE_EMULATOR_HOST`` at it for the test's duration.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kombu_appengine.api import EMULATOR_HOST_ENV
from kombu_appengine.emulator import Emulator


@pytest.fixture
def pullqueue_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """A running emulator with the queue ``default``, and the environment pointing at it."""
    with Emulator(queues=["default"]) as running:
        monkeypatch.setenv(EMULATOR_HOST_ENV, running.host)
        yield running
