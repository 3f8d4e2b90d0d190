"""The benchmark scripts run and keep to their bounds (counts only, never times)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.helpers import ROOT

#: The benchmarks run as processes, for seconds.
pytestmark = pytest.mark.slow

SCRIPTS = ROOT / "scripts"


def test_bench_transport_keeps_http_calls_per_message_within_the_target() -> None:
    # The peers (SQS on moto_server, Redis) are optional: this checks the count.
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "bench_transport.py"),
            "--no-peers",
            "--messages",
            "300",
            "--rtt-ms",
            "0,5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if "HTTP calls per consumed message" in line]
    assert len(lines) == 2, result.stdout
    assert all(line.endswith(": ok") and "target <= 0.03" in line for line in lines), result.stdout
