#!/usr/bin/env python3
"""Fuzz the emulator for a long while: the suite's fuzz tests, with many examples.

Run from a checkout with the test extra installed (``scripts/test`` makes ``.venv``)::

    .venv/bin/python scripts/fuzz_emulator.py                     # 20,000 examples per test
    .venv/bin/python scripts/fuzz_emulator.py --examples 2000     # a shorter run
    .venv/bin/python scripts/fuzz_emulator.py -- --hypothesis-seed=7 -x

It runs ``tests/emulator/test_fuzz_rest.py`` and
``tests/emulator/test_fuzz_batch.py`` in this process with ``FUZZ_EXAMPLES``
set (the test suite runs them with a few hundred examples), then prints how
many cases ran. Arguments after ``--`` go to pytest. A failing example is
printed with the seed and a ``@reproduce_failure`` blob, and saved in
Hypothesis's example database (``.hypothesis/``), so the next run of the
suite in this checkout tries it first.

The exit status is pytest's: 0 when every case kept the invariants.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
from collections.abc import Sequence

#: The repository, whose ``tests`` package holds the fuzz tests.
ROOT = pathlib.Path(__file__).resolve().parents[1]
#: The fuzz tests.
FUZZ_TESTS = ("tests/emulator/test_fuzz_rest.py", "tests/emulator/test_fuzz_batch.py")


class FuzzRun:
    """A pytest plugin: sets the examples per test before the tests are collected, and
    keeps the count of cases run."""

    def __init__(self, examples: int) -> None:
        self.examples = examples
        self.cases: dict[str, int] = {}

    def pytest_configure(self) -> None:
        # Imported here, not before pytest starts, so that pytest may rewrite
        # the asserts of what it imports.
        from tests.support import fuzz

        os.environ[fuzz.FUZZ_EXAMPLES_ENV] = str(self.examples)
        self.cases = fuzz.CASES


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--examples", type=int, default=20_000, help="examples per fuzz test (default: %(default)s)"
    )
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    options = parser.parse_args(argv)
    if options.examples < 1:
        parser.error("--examples must be at least 1")

    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    import pytest

    run = FuzzRun(options.examples)
    started = time.monotonic()
    status = pytest.main(["-q", "-p", "no:cacheprovider", *FUZZ_TESTS, *options.pytest_args], plugins=[run])
    seconds = time.monotonic() - started
    by_test = ", ".join(f"{name}: {count:,}" for name, count in sorted(run.cases.items()))
    print(f"fuzz_emulator: {sum(run.cases.values()):,} cases run ({by_test}) in {seconds:.0f} s")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
