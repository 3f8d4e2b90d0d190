"""The wheel built from the checkout installs into a fresh virtual environment and its commands run.

Slow: it builds the wheel, creates a venv and installs the wheel's
dependencies there from the package index, as pip is configured here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kombu_appengine import __version__

if sys.version_info >= (3, 11):
    import tomllib
else:  # build (in the test extra) needs tomli before Python 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
#: The console scripts pyproject.toml declares.
SCRIPTS = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"])
#: Files the package needs besides its modules.
PACKAGE_DATA = (
    "kombu_appengine/py.typed",
    "kombu_appengine/taskqueue_v1beta2.json",
    "kombu_appengine/dashboard/static/index.html",
    "kombu_appengine/dashboard/static/dashboard.js",
    "kombu_appengine/dashboard/static/dashboard.css",
)


def run(*command: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    # Nothing of the checkout or of the test environment may leak into the new
    # venv: not its directory (``python -m`` puts the working directory on
    # sys.path), nor PYTHONPATH.
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_every_command_runs(tmp_path: Path):
    # Built from a copy: setuptools' build/ directory in the checkout would
    # keep modules deleted since the last build and slip them into the wheel.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".tox", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, source, cwd=tmp_path)
    (wheel,) = dist.glob("kombu_appengine_pullqueue-*.whl")
    assert wheel.name == f"kombu_appengine_pullqueue-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for data in PACKAGE_DATA:
        assert data in names

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    run(
        bin_dir / "python",
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        wheel,
        cwd=tmp_path,
    )
    for script in SCRIPTS:
        result = run(bin_dir / script, "--version", cwd=tmp_path, timeout=60)
        assert result.stdout == f"{script} {__version__}\n"
    # The dashboard's page and script come from the installed package's data.
    served = run(
        bin_dir / "python",
        "-c",
        "import urllib.request\n"
        "from kombu_appengine.emulator import Emulator\n"
        "with Emulator(queues=['q']) as server:\n"
        "    for path in ('/', '/dashboard/dashboard.js', '/dashboard/dashboard.css'):\n"
        "        print(urllib.request.urlopen(server.url + path).status)\n",
        cwd=tmp_path,
        timeout=60,
    )
    assert served.stdout == "200\n200\n200\n"
