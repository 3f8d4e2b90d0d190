"""``scripts/bench_emulator.py`` measures the cost of ``--fsync`` in a quick mode."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "bench_emulator.py"


@pytest.mark.slow
def test_bench_emulator_measures_the_cost_of_fsync(tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--fsync-only", "--fsync-requests", "30", "--tmp-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rates = re.findall(r"^\s*insert, data dir( with --fsync)?\s+([\d,]+)", result.stdout, re.MULTILINE)
    assert [with_fsync for with_fsync, _ in rates] == ["", " with --fsync"], result.stdout
    assert re.search(r"--fsync costs: [\d.]+x fewer inserts per second", result.stdout), result.stdout
    # The data dirs were the bench's own, and are gone.
    assert not list(tmp_path.iterdir())
