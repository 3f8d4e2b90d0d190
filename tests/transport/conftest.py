"""Fixtures of the transport tests."""

from __future__ import annotations

import pytest

from tests.support.transport import EMULATOR_HOST_ENV


@pytest.fixture(autouse=True)
def _no_emulator_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test names its emulator itself; a developer's own setting must not leak in."""
    monkeypatch.delenv(EMULATOR_HOST_ENV, raising=False)
