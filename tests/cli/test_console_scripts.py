"""The console scripts as installed: ``--version``, ``--log-level`` and the README's flag tables.

Every command runs as the real console script of the environment the tests
run in (``.venv/bin/pullqueue_worker``), the way a user starts it.
"""

from __future__ import annotations

import re
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
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: Where pip put the console scripts of the environment running the tests.
BIN = Path(sys.executable).parent
#: The console scripts pyproject.toml declares.
SCRIPTS = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"])
#: Flags every argparse command has, which no manual needs to list.
UNDOCUMENTED = {"--help"}


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / script), *args], capture_output=True, text=True, timeout=60)


def help_flags(script: str) -> set[str]:
    """The long flags ``script --help`` lists in its options section."""
    result = run(script, "--help")
    assert result.returncode == 0, result.stderr
    flags = set()
    for line in result.stdout.splitlines():
        # An option's line starts with two spaces and its flags ("  -h, --help  show ...");
        # wrapped help text is indented further.
        match = re.match(r"  (-\S.*?)(?:\s{2,}|$)", line)
        if match:
            flags.update(re.findall(r"--[\w-]+", match.group(1)))
    return flags


def readme_table_flags(section: str, first_column: str) -> set[str]:
    """The flags in the first column of the table headed ``| first_column |`` in README's ``## section``."""
    start = README.index(f"\n## {section}\n")
    end = README.find("\n## ", start + 1)
    lines = iter(README[start:end].splitlines())
    for line in lines:
        if line.startswith(f"| {first_column} |"):
            break
    else:
        pytest.fail(f"README's section {section!r} has no table with the column {first_column!r}")
    next(lines)  # the |---| row
    flags = set()
    for line in lines:
        if not line.startswith("|"):
            break
        flags.update(re.findall(r"`(--[\w-]+)", line.split("|")[1]))
    return flags


def test_pyproject_declares_the_five_commands():
    assert SCRIPTS == [
        "pullqueue_authenticate",
        "pullqueue_emulator",
        "pullqueue_gateway",
        "pullqueue_status",
        "pullqueue_worker",
    ]


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


@pytest.mark.parametrize(
    ("script", "section", "first_column"),
    [
        ("pullqueue_emulator", "The emulator", "flag"),
        ("pullqueue_worker", "The worker", "option"),
        ("pullqueue_status", "Seeing the queues", "option"),
    ],
)
def test_the_readme_table_documents_exactly_the_flags_of_help(script: str, section: str, first_column: str):
    in_help = help_flags(script) - UNDOCUMENTED
    in_readme = readme_table_flags(section, first_column)
    assert "--version" in in_help
    assert in_help - in_readme == set(), f"{script} flags missing from README's {section!r} table"
    assert in_readme - in_help == set(), f"README's {section!r} table documents flags {script} lacks"
