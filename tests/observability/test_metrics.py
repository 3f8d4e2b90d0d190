"""``pullqueue_worker --metrics-port``: what a real worker of several
processes serves over HTTP adds up to what its processes really did.

The worker runs as a process of its own against an emulator on loopback; its
task function records every run in a file, and one of its processes dies
midway (and is replaced), so the totals must survive a process's death
without being reset or counted twice. The metrics are scraped over HTTP and
parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kombu_appengine.emulator import Emulator
from kombu_appengine.metrics import SERIES
from tests.support.helpers import ROOT, MakeEmulator, wait_for
from tests.support.transport import connect, total_tasks

pytestmark = pytest.mark.slow

#: The tasks the test puts on the queue, and those among them that fail.
TASKS = 40
FAILING = frozenset(range(0, TASKS, 5))


@pytest.fixture
def worker_emulator(make_emulator: MakeEmulator) -> Emulator:
    return make_emulator(queues=["jobs", "dead"])


class Worker:
    """``pullqueue_worker`` in a process of its own, its stderr read line by line into :attr:`lines`."""

    def __init__(self, emulator: Emulator, tmp_path: pathlib.Path, function: str, *options: str) -> None:
        self.record = tmp_path / "record.jsonl"
        self.tmp = tmp_path / "tmp"
        self.tmp.mkdir()
        env = dict(
            os.environ,
            TASKQUEUE_EMULATOR_HOST=emulator.host,
            WORKER_RECORD=str(self.record),
            WORKER_CRASHED=str(tmp_path / "crashed"),
            PYTHONPATH=str(ROOT),
            # Where the worker makes its metrics directory: the test checks it is removed.
            TMPDIR=str(self.tmp),
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kombu_appengine.worker",
                f"tests.observability.jobs:{function}",
                "--queue",
                "jobs",
                "--polling-interval",
                "0.05",
                "--log-format",
                "json",
                *options,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # A group of its own, so that a test that fails kills its processes too.
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the supervisor and its processes, which would otherwise outlive it."""
        if self.process.returncode is None:  # not reaped: the group is still ours
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.communicate()

    def events(self) -> collections.Counter[str]:
        if not self.record.exists():
            return collections.Counter()
        return collections.Counter(json.loads(line)["event"] for line in self.record.read_text().splitlines())

    def stop(self) -> tuple[int, str, list[dict[str, Any]]]:
        """SIGTERM, then the exit status, stdout and the JSON lines of stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=60)
        return self.process.returncode, out, [json.loads(line) for line in err.splitlines()]


@pytest.fixture
def start_worker(worker_emulator: Emulator, tmp_path: pathlib.Path) -> Iterator[Any]:
    workers: list[Worker] = []

    def start(function: str, *options: str) -> Worker:
        worker = Worker(worker_emulator, tmp_path, function, *options)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.kill()


def metrics_url(worker: Worker) -> str:
    """The URL the worker logged it serves its metrics on (its first stderr line)."""
    assert worker.process.stderr is not None
    line = worker.process.stderr.readline()
    assert line, f"the worker exited ({worker.process.wait()}) before serving metrics"
    match = re.fullmatch(
        r"serving Prometheus metrics on (http://127\.0\.0\.1:\d+/metrics)", json.loads(line)["message"]
    )
    assert match, line
    return match.group(1)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample served at ``url``: (name, labels) → value."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of ``name`` over every label set that includes ``labels``."""
    return sum(
        found
        for (sample, sample_labels), found in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def test_counters_add_up_across_processes_and_a_replaced_one(worker_emulator: Emulator, start_worker: Any):
    with connect(worker_emulator) as conn:
        queue = conn.SimpleQueue("jobs")
        for number in range(TASKS):
            queue.put({"n": number, "fail": number in FAILING})

    worker = start_worker(
        "fail_some_and_crash_once",
        "--processes",
        "3",
        "--lease-secs",
        "2",
        "--max-retries",
        "1",
        "--retry-backoff",
        "0",
        "--dead-letter-queue",
        "dead",
        "--metrics-port",
        "0",
    )
    url = metrics_url(worker)

    # A task leaves "jobs" only once processed or copied to "dead".
    wait_for(lambda: total_tasks(worker_emulator, "jobs") == 0, timeout=120, what="every task done")
    # One more than FAILING when the crash lost the delete of a task it had
    # just dead-lettered: that task came back, and went to "dead" again.
    dead_lettered = total_tasks(worker_emulator, "dead")
    assert dead_lettered >= len(FAILING)

    def truth() -> dict[str, float]:
        events = worker.events()
        return {
            "processed": events["done"],
            "failed": events["failed"],
            # Every failure without --max-retries left is dead-lettered, the others retried.
            "retried": events["failed"] - dead_lettered,
            "dead_lettered": dead_lettered,
            "dropped": 0,
        }

    def counters(samples: dict[Any, float]) -> dict[str, float]:
        return {name: value(samples, f"pullqueue_worker_tasks_{name}_total") for name in truth()}

    # The counts are added just after each record is written: they catch up.
    samples = wait_for(
        lambda: (lambda samples: samples if counters(samples) == truth() else None)(scrape(url)),
        timeout=30,
        what="the counters to equal the tasks' records",
    )
    events = worker.events()
    assert events["crashed"] == 1
    assert events["done"] >= TASKS - len(FAILING)
    assert counters(samples)["processed"] == events["done"]
    task_runs = total(samples, "pullqueue_worker_task_duration_seconds_count")
    assert task_runs == events["done"] + events["failed"]
    assert (
        value(samples, "pullqueue_worker_task_duration_seconds_count", outcome="failed") == events["failed"]
    )
    assert (
        value(samples, "pullqueue_worker_task_duration_seconds_bucket", outcome="processed", le="+Inf")
        == (events["done"])
    )
    assert total(samples, "pullqueue_worker_api_call_duration_seconds_count", call="lease") > 0
    assert total(samples, "pullqueue_worker_api_call_duration_seconds_count", call="delete_batch") > 0
    # Only live processes count, and every buffer is empty now (the crashed
    # process's buffer no longer counts).
    assert value(samples, "pullqueue_worker_buffered_tasks") == 0
    for name in SERIES:
        assert any(sample.startswith(name) for sample, _ in samples), name

    status, out, lines = worker.stop()
    assert status == 0
    summary = dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[-1]))
    assert {name: float(summary[name]) for name in truth()} == counters(samples)
    assert any("died with exit code 3" in line["message"] for line in lines)
    # The run's metrics directory is gone with it.
    assert list(worker.tmp.iterdir()) == []


def test_metrics_port_without_the_extra_names_it(worker_emulator: Emulator):
    # prometheus_client made unimportable, as when the metrics extra is not installed.
    code = (
        "import sys; sys.modules['prometheus_client'] = None; from kombu_appengine.worker import main; main()"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "tests.observability.jobs:always_fail",
            "--queue",
            "jobs",
            "--metrics-port",
            "0",
        ],
        env=dict(os.environ, TASKQUEUE_EMULATOR_HOST=worker_emulator.host, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "pullqueue_worker: --metrics-port needs prometheus_client: install the metrics extra, "
        "pip install 'kombu-appengine-pullqueue[metrics]'"
    )
