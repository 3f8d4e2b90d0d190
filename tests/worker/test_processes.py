"""pullqueue_worker end to end: real worker processes, a real emulator over HTTP."""

import os
import signal
import subprocess
import sys
import time

import pytest

from kombu_appengine.worker import Supervisor, WorkerSettings
from tests.support.helpers import ROOT, b64
from tests.support.transport import PROJECT, connect, total_tasks
from tests.support.worker_run import JOBS, publish, released

#: Every test runs worker processes.
pytestmark = pytest.mark.slow


def test_every_task_processed_exactly_once_over_four_processes(emulator, run_worker):
    publish(emulator, 1000)
    run = run_worker("record", "--processes", "4", "--num-tasks", "20")
    run.wait_for(lambda: total_tasks(emulator, "jobs") == 0, "the queue to drain")
    code, stdout, _ = run.stop()
    done = run.count("done")
    assert sorted(done) == list(range(1000))
    assert set(done.values()) == {1}
    assert len({e["pid"] for e in run.events()}) > 1, "the work was not shared between processes"
    assert code == 0
    assert "summary: processed=1000 failed=0" in stdout


def test_random_failures_are_retried_until_every_task_is_done(emulator, run_worker):
    publish(emulator, 300)
    run = run_worker("flaky", "--processes", "3", "--retry-backoff", "0")
    run.wait_for(lambda: total_tasks(emulator, "jobs") == 0, "the queue to drain")
    code, stdout, stderr = run.stop()
    assert sorted(run.count("done")) == list(range(300))
    assert set(run.count("done").values()) == {1}
    failed = sum(run.count("failed").values())
    assert failed > 0
    assert f"failed={failed} retried={failed}" in stdout
    assert "RuntimeError: flaky failure" in stderr, "the traceback of a failure is logged"
    assert code == 0


def test_raw_json_and_binary_payloads_reach_the_function_decoded(emulator, run_worker):
    emulator.service.insert(PROJECT, "jobs", {"payloadBase64": b64(b'{"n": 7}')})
    emulator.service.insert(PROJECT, "jobs", {"payloadBase64": b64(b"plain bytes")})
    run = run_worker("raw_payload", "--processes", "1")
    run.wait_for(lambda: total_tasks(emulator, "jobs") == 0, "the queue to drain")
    run.stop()
    assert sorted((e["event"], e["n"]) for e in run.events()) == [("int", 7), ("str", "plain bytes")]


def test_a_child_killed_mid_task_is_replaced_and_its_task_processed_later(emulator, run_worker):
    publish(emulator, 1)
    run = run_worker("blocking", "--processes", "1", "--lease-secs", "2")
    run.wait_for(lambda: run.count("started"), "the task to start")
    victim = run.events()[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    run.release.touch()
    run.wait_for(lambda: run.count("done"), "the task to be done by another process")
    run.wait_for(lambda: total_tasks(emulator, "jobs") == 0, "the task to be acked")
    code, _, stderr = run.stop()
    done = [e for e in run.events() if e["event"] == "done"]
    assert [e["n"] for e in done] == [0]
    assert done[0]["pid"] != victim
    assert f"(pid {victim}) died with exit code -9; starting another" in stderr
    assert code == 0


def test_sigterm_finishes_running_tasks_and_releases_buffered_ones_at_once(emulator, run_worker):
    publish(emulator, 5)
    run = run_worker("blocking", "--processes", "1", "--num-tasks", "5", "--lease-secs", "600")
    run.wait_for(lambda: run.count("started"), "a task to start")
    running = run.events()[0]["n"]
    run.process.send_signal(signal.SIGTERM)

    run.wait_for(lambda: released(emulator) == 4, "the four buffered tasks to be released")
    # Another worker can lease them now, long before their 600 s leases would end.
    leased = emulator.service.lease(PROJECT, "jobs", num_tasks=10, lease_secs=60)["items"]
    assert len(leased) == 4
    assert run.process.poll() is None, "the worker must wait for its running task"
    run.release.touch()
    code, stdout, _ = run.stop(sig=None)
    assert code == 0
    assert run.count("done") == {running: 1}
    assert "summary: processed=1 " in stdout
    assert total_tasks(emulator, "jobs") == 4


def test_a_second_signal_stops_at_once_and_loses_nothing(emulator, run_worker):
    with connect(emulator) as conn:
        simple = conn.SimpleQueue("jobs")
        for n in range(6):
            simple.put({"n": n, "block": n == 3})
    # Leases of 1, 2, then 4 tasks (num_tasks): tasks 0 to 2 are done, 3
    # blocks, 4 and 5 wait in the buffer.
    run = run_worker("blocking_marked", "--processes", "1", "--num-tasks", "4", "--lease-secs", "600")
    run.wait_for(lambda: run.count("started"), "a task to start")
    run.process.send_signal(signal.SIGTERM)
    # Signals sent together may arrive as one: send the second once the
    # first has visibly been handled (the buffered tasks were released).
    run.wait_for(lambda: released(emulator) == 2, "the buffered tasks to be released")
    run.process.send_signal(signal.SIGTERM)
    code, _, _ = run.stop(sig=None)
    assert code == 0
    assert run.count("started") == {3: 1}
    assert run.count("done") == {0: 1, 1: 1, 2: 1}
    assert total_tasks(emulator, "jobs") == 3, "an interrupted task stays in the queue"


def test_max_retries_then_dead_letter_queue(emulator, run_worker):
    publish(emulator, 2)
    run = run_worker(
        "always_fail",
        "--processes",
        "1",
        "--max-retries",
        "2",
        "--retry-backoff",
        "0",
        "--dead-letter-queue",
        "dead",
    )
    run.wait_for(lambda: total_tasks(emulator, "dead") == 2, "both tasks to reach the dead-letter queue")
    _code, stdout, stderr = run.stop()
    assert run.count("failed") == {0: 3, 1: 3}, "one try and two retries each"
    assert total_tasks(emulator, "jobs") == 0
    assert "dead_lettered=2" in stdout
    assert "moving it to 'dead'" in stderr
    # The dead letters hold the original payload, readable by kombu.
    with connect(emulator) as conn:
        dead = conn.SimpleQueue("dead")
        payloads = sorted(dead.get(timeout=5).payload["n"] for _ in range(2))
    assert payloads == [0, 1]


def test_max_retries_without_dead_letter_queue_deletes(emulator, run_worker):
    publish(emulator, 1)
    run = run_worker("always_fail", "--processes", "1", "--max-retries", "1", "--retry-backoff", "0")
    run.wait_for(lambda: total_tasks(emulator, "jobs") == 0, "the task to be dropped")
    _code, stdout, stderr = run.stop()
    assert run.count("failed") == {0: 2}
    assert "dropped=1" in stdout
    assert "deleting it" in stderr


def test_the_queues_max_leases_is_respected(emulator, run_worker):
    publish(emulator, 1, queue="limited")
    run = run_worker(
        "always_fail",
        "--processes",
        "1",
        "--retry-backoff",
        "0",
        "--dead-letter-queue",
        "dead",
        queue="limited",
    )
    run.wait_for(lambda: total_tasks(emulator, "dead") == 1, "the task to be dead-lettered")
    run.stop()
    assert run.count("failed") == {0: 3}, "maxLeases 3 allows three attempts"


@pytest.mark.parametrize(
    ("queue", "options", "unrun_leases", "limit"),
    [
        ("jobs", ["--max-retries", "1"], 3, "--max-retries 1"),
        ("limited", [], 2, "the queue's maxLeases 3"),
    ],
)
def test_a_task_leased_before_without_a_run_is_run_once_before_it_is_dead_lettered(
    emulator, run_worker, queue, options, unrun_leases, limit
):
    # --max-retries counts leases (retry_count), run or not: the task comes
    # to the worker already past the limit, and still runs before it goes.
    publish(emulator, 1, queue=queue)
    for _ in range(unrun_leases):
        with connect(emulator) as conn:
            assert conn.SimpleQueue(queue).get(timeout=5) is not None
            # Closed unacked: the lease is given back, the task never run.
    lease = unrun_leases + 1
    run = run_worker("always_fail", "--processes", "1", "--dead-letter-queue", "dead", *options, queue=queue)
    run.wait_for(lambda: total_tasks(emulator, "dead") == 1, "the task to be dead-lettered")
    _code, stdout, stderr = run.stop()
    assert run.count("failed") == {0: 1}
    assert total_tasks(emulator, queue) == 0
    assert "dead_lettered=1" in stdout
    assert f"failed on lease {lease} (its retry_count); {limit} allows no more: moving it to 'dead'" in stderr


def test_bad_function_and_unknown_queue_are_clear_errors(emulator, tmp_path):
    env = dict(os.environ, TASKQUEUE_EMULATOR_HOST=emulator.host, PYTHONPATH=str(ROOT))
    for args, expected in [
        ([f"{JOBS}:missing", "--queue", "jobs"], "has no 'missing'"),
        (["no_such_module:f", "--queue", "jobs"], "cannot import module 'no_such_module'"),
        ([f"{JOBS}:record", "--queue", "nope"], "'nope'"),
        (
            [f"{JOBS}:record", "--queue", "jobs", "--processes", "0"],
            "argument --processes: '0' is not a positive integer",
        ),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "kombu_appengine.worker", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert expected in result.stderr
        assert "Traceback" not in result.stderr


def test_a_task_running_longer_than_its_lease_keeps_it_and_runs_once(emulator, run_worker):
    publish(emulator, 1)
    run = run_worker("blocking", "--processes", "2", "--lease-secs", "2")
    run.wait_for(lambda: run.count("started"), "the task to start")
    started = time.monotonic()
    # Three lease lengths: without renewal the other process would lease it.
    run.wait_for(lambda: time.monotonic() - started > 6, "three lease lengths to pass", timeout=30)
    tasks = emulator.service.list_tasks(PROJECT, "jobs")["items"]
    assert len(tasks) == 1
    assert tasks[0]["leaseTimestamp"] != "0"
    assert tasks[0]["retry_count"] == 1
    run.release.touch()
    run.wait_for(lambda: total_tasks(emulator, "jobs") == 0, "the task to be acked")
    run.stop()
    assert run.count("started") == {0: 1}
    assert run.count("done") == {0: 1}


def test_processes_dying_at_start_make_the_supervisor_give_up(emulator, monkeypatch):
    # The parent checks FUNCTION before starting processes; here the
    # processes cannot load it, so each dies as soon as it starts.
    monkeypatch.setenv("TASKQUEUE_EMULATOR_HOST", emulator.host)
    settings = WorkerSettings(
        function=f"{JOBS}:missing", queue="jobs", transport_options={}, log_level="CRITICAL"
    )
    supervisor = Supervisor(settings, processes=1, stats_interval=60)
    handlers = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    counts = supervisor.run()
    assert supervisor.gave_up
    assert counts["processed"] == 0
    assert all(child.exitcode not in (0, None) for child in supervisor.children)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
