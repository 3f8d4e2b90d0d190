"""The console scripts as installed: ``--version`` and ``--log-level``.

Every command runs as the real console script of the environment the tests
run in (``.venv/bin/pullqueue_worker``), the way a user starts it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kombu_appengine import __version__
from kombu_appengine.cli_common import log_level

if sys.version_info >= (3, 11):
    import tomllib
else:  # build (in the test extra) needs tomli before Python 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
#: Where pip put the console scripts of the environment running the tests.
BIN = Path(sys.executable).parent
#: The console scripts pyproject.toml declares.
SCRIPTS = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"])


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / script), *args], capture_output=True, text=True, timeout=60)


def test_pyproject_declares_the_three_commands():
    assert SCRIPTS == ["pullqueue_authenticate", "pullqueue_emulator", "pullqueue_worker"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_prints_its_version(script: str):
    result = run(script, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{script} {__version__}\n"
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("script", "args"),
    [("pullqueue_emulator", []), ("pullqueue_worker", ["jobs:handle", "--queue", "default"])],
)
def test_an_unknown_log_level_is_one_error_line_naming_option_and_levels(script: str, args: list[str]):
    result = run(script, *args, "--log-level", "bogus")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    # argparse's usage, then the one error line.
    assert result.stderr.splitlines()[-1] == (
        f"{script}: error: argument --log-level: 'bogus' is not a logging level: "
        "use one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    )


@pytest.mark.parametrize(("given", "level"), [("debug", "DEBUG"), ("Info", "INFO"), ("WARN", "WARN")])
def test_log_levels_are_taken_in_any_case(given: str, level: str):
    assert log_level(given) == level
