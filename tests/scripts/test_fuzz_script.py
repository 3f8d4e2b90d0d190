"""scripts/fuzz_emulator.py runs the fuzz tests with the examples asked for and says how many ran."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.helpers import ROOT

#: The script runs pytest in a process of its own.
pytestmark = pytest.mark.slow


def test_fuzz_script_runs_the_examples_asked_for_and_counts_them() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fuzz_emulator.py"), "--examples", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    counted = re.search(r"fuzz_emulator: (\d+) cases run \(batch: (\d+), rest: (\d+)\)", result.stdout)
    assert counted, result.stdout
    total, batch, rest = map(int, counted.groups())
    assert total == batch + rest
    # 3 each, and any failing examples saved by earlier runs, which Hypothesis tries first;
    # far fewer than the suite's own counts.
    assert 3 <= batch < 100
    assert 3 <= rest < 100


def test_fuzz_script_refuses_no_examples() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fuzz_emulator.py"), "--examples", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--examples" in result.stderr
