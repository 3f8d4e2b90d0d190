"""Fixtures of the gateway tests: a local gateway on App Engine's task queue stub."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kombu_appengine.emulator import QueueConfig
from kombu_appengine.gateway.local import LocalGateway

#: The application the gateway serves.
APP_ID = "test-app"
#: Its queues: one held to an ACL.
QUEUES = (
    "pull-queue",
    "tagged",
    QueueConfig("guarded", consumer_emails=["worker@example.com"], producer_emails=["app@example.com"]),
)


@pytest.fixture
def gateway() -> Iterator[LocalGateway]:
    """A running local gateway serving :data:`APP_ID` only."""
    with LocalGateway(QUEUES, project=APP_ID) as running:
        yield running
