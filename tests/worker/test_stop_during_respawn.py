"""A stop signal that meets a respawn: the supervisor and its new child both stop.

A SIGTERM can reach the supervisor while it starts a replacement for a dead
process, and a new process can be signalled before it has installed its own
handlers. Both moments are a few microseconds wide in real life; here fork
hooks (``os.register_at_fork`` in the supervisor's process) hold them open,
so that every run meets them, and each case runs several cycles.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from kombu_appengine.emulator import Emulator
from tests.support.helpers import wait_for

pytestmark = pytest.mark.slow

#: Worker processes in each run.
PROCESSES = 2
#: Runs of each case: a failure that shows one time in three is caught.
CYCLES = 4

#: Runs pullqueue_worker with fork hooks. argv: mode, marker directory, worker args.
#: Mode "slow-respawn": forks after the first PROCESSES sleep before forking.
#: Mode "signalled-child": the first respawned child gets SIGTERM at once,
#: before anything of the worker has run in it.
LAUNCHER = textwrap.dedent(
    f"""
    import os, pathlib, signal, sys, time

    mode, markers = sys.argv[1], pathlib.Path(sys.argv[2])
    forks = 0

    def before():
        global forks
        forks += 1
        if forks > {PROCESSES} and mode == "slow-respawn":
            (markers / "respawning").touch()
            time.sleep(1.0)

    def after_in_child():
        if forks > {PROCESSES} and mode == "signalled-child":
            try:
                fd = os.open(markers / "signalled.tmp", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.rename(markers / "signalled.tmp", markers / "signalled")
            os.kill(os.getpid(), signal.SIGTERM)

    os.register_at_fork(before=before, after_in_child=after_in_child)
    from kombu_appengine.worker import main
    sys.argv = ["pullqueue_worker", *sys.argv[3:]]
    main()
    """
)


def children_of(pid: int) -> set[int]:
    """The live child processes of ``pid``."""
    try:
        text = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return set()
    return {int(child) for child in text.split()}


class Run:
    """One pullqueue_worker run under the launcher."""

    def __init__(self, emulator: Emulator, tmp_path: pathlib.Path, mode: str) -> None:
        self.markers = tmp_path / f"markers-{time.monotonic_ns()}"
        self.markers.mkdir()
        launcher = tmp_path / "launcher.py"
        launcher.write_text(LAUNCHER)
        self.log = self.markers / "stderr.log"
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(launcher),
                    mode,
                    str(self.markers),
                    "json:loads",
                    "--queue",
                    "jobs",
                    "--processes",
                    str(PROCESSES),
                    "--polling-interval",
                    "0.05",
                    "--stats-interval",
                    "60",
                ],
                env={**os.environ, "TASKQUEUE_EMULATOR_HOST": emulator.host},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )

    def children(self, count: int) -> set[int]:
        def all_started() -> set[int]:
            found = children_of(self.process.pid)
            return found if len(found) == count else set()

        return wait_for(all_started, 20, f"{count} worker processes")

    def stop(self) -> int:
        """SIGTERM the supervisor; its exit code, or a failure naming the hang."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail("the supervisor did not stop after SIGTERM:\n" + self.log.read_text())

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@contextlib.contextmanager
def launched(emulator: Emulator, tmp_path: pathlib.Path, mode: str) -> Iterator[Run]:
    """A run for the ``with`` block; killed with its processes if still there at the end."""
    run = Run(emulator, tmp_path, mode)
    try:
        yield run
    finally:
        run.kill()


def test_sigterm_while_a_dead_process_is_replaced_stops_the_new_one_too(
    emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    for _ in range(CYCLES):
        with launched(emulator, tmp_path, "slow-respawn") as run:
            victim, *_ = run.children(PROCESSES)
            os.kill(victim, signal.SIGKILL)
            wait_for(
                (run.markers / "respawning").exists, 20, "the supervisor to start replacing the dead process"
            )
            assert run.stop() == 0
            log = run.log.read_text()
            assert log.count("stopping: running tasks finish") == 1, log


def test_a_new_process_signalled_before_it_is_ready_leaves_its_siblings_alone(
    emulator: Emulator, tmp_path: pathlib.Path
) -> None:
    for _ in range(CYCLES):
        with launched(emulator, tmp_path, "signalled-child") as run:
            signal_a_new_process(run)


def signal_a_new_process(run: Run) -> None:
    victim, survivor = sorted(run.children(PROCESSES))
    os.kill(victim, signal.SIGKILL)
    signalled_file = run.markers / "signalled"
    wait_for(signalled_file.exists, 20, "the new process to be signalled")
    gone = {victim, int(signalled_file.read_text())}

    # The signalled process stops by itself and is replaced in turn; the
    # other one, never signalled, must stay as it was.
    def replaced() -> set[int]:
        found = children_of(run.process.pid)
        return found if len(found) == PROCESSES and not found & gone else set()

    after = wait_for(replaced, 20, "the signalled process to be replaced")
    log = run.log.read_text()
    assert survivor in after, log
    assert "stopping" not in log
    assert run.stop() == 0
