"""The benchmark scripts run and keep to their bounds (counts only, never times)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from types import ModuleType

import pytest

from kombu_appengine.emulator import Emulator
from tests.support.helpers import ROOT

#: The benchmarks run as processes, for seconds.
pytestmark = pytest.mark.slow

SCRIPTS = ROOT / "scripts"


@pytest.fixture
def bench_emulator(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``scripts/bench_emulator.py`` as a module; the load processes it
    spawns find it too, as they take this process's ``sys.path``."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    return importlib.import_module("bench_emulator")


def test_bench_transport_keeps_http_calls_per_message_within_the_target() -> None:
    # The peers (SQS on moto_server, Redis) are optional: this checks the count.
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "bench_transport.py"),
            "--no-peers",
            # Enough for the leases to have grown to num_tasks (1, 2, 4 ... 64 first).
            "--messages",
            "2000",
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


def test_bench_emulator_under_load_answers_every_request_on_kept_connections() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_emulator.py"), "--load-only", "--load-requests", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    # The smallest run: 6 requests per client and round, 4 rounds, 64 clients.
    assert "64 keep-alive clients in 2 processes, 1,536 requests per mix and server" in out
    rows = re.findall(r"^ +(?:([a-z, ]+?) +)?(emulator|trivial|latency) +[\d,]+ .* (\d+)$", out, re.MULTILINE)
    assert [(mix, server) for mix, server, _ in rows] == [
        ("insert, lease, delete", "emulator"),
        ("", "trivial"),
        ("lease, get queue", "emulator"),
        ("", "trivial"),
        ("", "latency"),
    ], out
    assert all(errors == "0" for _, _, errors in rows), out
    assert len(re.findall(r"emulator / trivial$", out, re.MULTILINE)) == 2, out
    # One connection per client and server, none dropped and opened again.
    assert "emulator: 64 connections opened for 64 clients" in out
    assert "trivial: 64 connections opened for 64 clients" in out
    assert re.search(r"^   [\d.]+ of the 1,280 req/s that 64 clients", out, re.MULTILINE), out
    assert "errors under load: 0 non-2xx answers, 0 connection errors" in out
    assert "verdict: ok (0 errors under load)" in out


def test_the_load_counts_failed_answers_and_lost_connections(bench_emulator: ModuleType) -> None:
    with Emulator(queues=[bench_emulator.QUEUE, bench_emulator.READ_QUEUE]) as emulator:
        emulator.inject_failures(2, status=503)
        emulator.inject_failures(1, reset=True)
        addresses = {"emulator": bench_emulator.address_of(emulator)}
        with bench_emulator.LoadGenerator(addresses, processes=1, clients=4) as load:
            (result,), _ = load.round("emulator", bench_emulator.LOAD_MIXES[1], "r0", 6)
        assert emulator.requests == 24
    assert result.non_2xx == 2
    assert result.connection_errors == 1
    # The one whose connection was reset was answered on a new one.
    assert result.opened == 5
    assert len(result.latencies) == 23
    assert any("HTTP 503" in sample for sample in result.samples), result.samples


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
