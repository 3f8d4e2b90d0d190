"""The benchmark scripts run and keep to their bounds (counts only, never times)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.helpers import ROOT

#: The benchmarks run as processes, for seconds.
pytestmark = pytest.mark.slow

SCRIPTS = ROOT / "scripts"


def test_bench_transport_keeps_http_calls_per_message_within_the_bound() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_transport.py"), "--messages", "200", "--num-tasks", "10"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HTTP calls per consumed message" in result.stdout


def test_bench_gateway_runs_both_servers_within_the_bound() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_gateway.py"), "--messages", "100", "--num-tasks", "10"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "emulator: HTTP calls per consumed message" in result.stdout
    assert "gateway: HTTP calls per consumed message" in result.stdout
