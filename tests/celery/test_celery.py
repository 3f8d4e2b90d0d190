"""Celery on pull queues, end to end: real ``celery worker`` processes (prefork
pool) run :mod:`tests.support.celery_app` against an in-process emulator, and
this process sends tasks and reads results as a client.

Every worker runs in its own process group and is killed at teardown; every
wait is a poll with a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.support import celery_app
from tests.support.celery_worker import Worker, assert_clean, executions, keys, queue_tasks
from tests.support.helpers import CELERY_EXAMPLE, ROOT, wait_for

#: Every test runs Celery worker processes.
pytestmark = pytest.mark.slow

#: The README's queue.yaml for its example.
README_QUEUE_YAML = """\
queue:
- name: celery
  mode: pull
- name: images
  mode: pull
- name: shared
  mode: pull
"""


def test_a_few_hundred_tasks_with_results_through_rpc(emulator, start_worker, client, exec_log):
    worker = start_worker("a")
    add = client.signature(celery_app.add.name)

    results = [add.delay(i, i) if i % 2 else add.apply_async((i, i)) for i in range(300)]

    assert [result.get(timeout=60) for result in results] == [2 * i for i in range(300)]
    assert sorted(keys(exec_log, "add")) == sorted(f"{i}+{i}" for i in range(300))
    # Tasks are deleted when acknowledged and replies when delivered (in batches).
    wait_for(lambda: not queue_tasks(emulator, "celery"), 10, "the task queue to empty")
    wait_for(lambda: not queue_tasks(emulator, celery_app.SHARED_QUEUE), 10, "the replies to be deleted")
    assert_clean(worker.log())


def test_the_readme_example(spawn, server_kind, tmp_path):
    # The README's files, and its commands: an emulator (or the local
    # gateway) reading queue.yaml, a worker, and a producer in another process.
    shutil.copy(CELERY_EXAMPLE, tmp_path / "tasks.py")
    (tmp_path / "queue.yaml").write_text(README_QUEUE_YAML, encoding="utf-8")
    emulator = spawn("--queue-yaml", "queue.yaml", cwd=tmp_path, kind=server_kind)
    worker = None
    try:
        env = {**os.environ, "TASKQUEUE_EMULATOR_HOST": emulator.host, "C_FORCE_ROOT": "1"}
        worker = Worker("example", env, tmp_path / "worker.log", "celery,images", app="tasks", cwd=tmp_path)
        worker.wait_ready()
        producer = subprocess.run(
            [
                sys.executable,
                "-c",
                "from tasks import add, resize\n"
                "print(add.delay(2, 3).get(timeout=30))\n"
                "print(resize.delay('cat.jpg').get(timeout=30))",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

        assert producer.returncode == 0, producer.stderr
        assert producer.stdout.splitlines() == ["5", "resized cat.jpg"]
        assert "transport:   appengine://:**@my-app//" in worker.log()
        assert_clean(worker.log())
    finally:
        if worker is not None:
            worker.kill()


def test_a_separate_result_backend(settings, start_worker, client, tmp_path):
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    backend = results_dir.as_uri()
    settings["CELERY_TEST_RESULT_BACKEND"] = backend
    client.conf.result_backend = backend
    worker = start_worker("a")

    results = [client.signature(celery_app.add.name).delay(i, 1) for i in range(20)]

    assert [result.get(timeout=30) for result in results] == [i + 1 for i in range(20)]
    assert len(list(results_dir.iterdir())) == 20
    assert_clean(worker.log())


def test_routing_to_a_pull_queue_and_to_a_tag_on_the_shared_queue(emulator, start_worker, client, exec_log):
    resized = client.signature(celery_app.resize.name).delay("photo")
    reported = client.signature(celery_app.report.name).delay("monthly")
    added = client.signature(celery_app.add.name).delay(1, 2)

    # Before any worker runs, each task waits in its own place.
    assert [t["celery_id"] for t in queue_tasks(emulator, "images")] == [resized.id]
    assert [t["celery_id"] for t in queue_tasks(emulator, "celery")] == [added.id]
    assert [(t["celery_id"], t["tag"]) for t in queue_tasks(emulator, celery_app.SHARED_QUEUE)] == [
        (reported.id, "reports")
    ]
    # What to look at instead of `celery inspect`: the queues' sizes.
    with client.connection_for_write() as connection:
        channel = connection.default_channel
        assert [
            channel.queue_declare(name, passive=True).message_count
            for name in ("celery", "images", "reports")
        ] == [1, 1, 1]

    images_only = start_worker("images", queues="images")
    assert resized.get(timeout=30) == "photo"
    assert queue_tasks(emulator, "celery")[0]["celery_id"] == added.id
    start_worker("rest", queues="celery,reports")
    assert reported.get(timeout=30) == "monthly"
    assert added.get(timeout=30) == 3
    assert sorted(what for what, _, _ in executions(exec_log)) == ["add", "report", "resize"]
    assert_clean(images_only.log())


def test_countdown_and_eta_longer_than_the_lease_run_once_on_one_of_two_workers(
    emulator, start_worker, client, exec_log
):
    first = start_worker("a", ready=False)
    second = start_worker("b")
    first.wait_ready()
    record = client.signature(celery_app.record.name)
    sent = time.time()
    later = record.apply_async(("countdown",), countdown=5)
    eta = record.apply_async(("eta",), eta=datetime.now(timezone.utc) + timedelta(seconds=6))

    # Both wait in a worker's memory, leased well past lease_secs (3 s).
    def held_by_workers() -> bool:
        tasks = queue_tasks(emulator, "celery")
        return len(tasks) == 2 and all(t["leased"] for t in tasks)

    wait_for(held_by_workers, 5, "both ETA tasks to be leased")
    while time.time() - sent < 4.5:
        assert held_by_workers(), "an ETA task lost its lease while a worker held it"
        time.sleep(0.2)

    assert later.get(timeout=30) == "countdown"
    assert eta.get(timeout=30) == "eta"
    assert time.time() - sent >= 6
    assert sorted(keys(exec_log, "record")) == ["countdown", "eta"]
    for result in (later, eta):
        assert first.received(result.id) + second.received(result.id) == 1
    assert_clean(first.log())
    assert_clean(second.log())


def test_retry_and_reject_on_worker_lost(start_worker, client, exec_log, tmp_path):
    worker = start_worker("a")

    assert client.signature(celery_app.flaky.name).delay("flaky", 2).get(timeout=30) == 2
    assert keys(exec_log, "try") == ["flaky"] * 3

    # The first run kills its pool process: the task is rejected with
    # requeue, its lease released, and it runs again.
    marker = tmp_path / "died"
    assert (
        client.signature(celery_app.die_once.name).delay("phoenix", str(marker)).get(timeout=30) == "phoenix"
    )
    assert marker.exists()
    assert keys(exec_log, "survived") == ["phoenix"]
    assert "exited with 'signal 9 (SIGKILL)'" in worker.log()


def test_prefetch_limit_leases_no_more_than_the_worker_may_hold(emulator, start_worker, client, exec_log):
    start_worker("a", CELERY_TEST_PREFETCH="1")
    slow = client.signature(celery_app.slow.name)
    results = [slow.delay(f"job{i}", 0.4) for i in range(12)]

    # Prefetch 1 x concurrency 2: one worker holds at most two tasks it has
    # yet to run, so the rest stays available to other workers. (A task run
    # and acknowledged keeps its lease until its batched delete is sent.)
    job_of = {result.id: f"job{number}" for number, result in enumerate(results)}

    def held_to_run() -> int:
        done = set(keys(exec_log, "done"))
        return sum(
            1
            for task in queue_tasks(emulator, "celery")
            if task["leased"] and job_of.get(task["celery_id"]) not in done
        )

    wait_for(lambda: keys(exec_log, "start"), 10, "a task to start")
    most = 0
    while len(keys(exec_log, "done")) < 6:
        most = max(most, held_to_run())
        assert most <= 2
        time.sleep(0.05)

    start_worker("b", CELERY_TEST_PREFETCH="1")
    assert sorted(result.get(timeout=30) for result in results) == sorted(f"job{i}" for i in range(12))
    assert sorted(keys(exec_log, "done")) == sorted(f"job{i}" for i in range(12))
    assert most == 2


def test_sigkill_with_acks_late_runs_unfinished_tasks_again_after_their_leases(
    start_worker, client, exec_log
):
    doomed = start_worker("doomed")
    slow = client.signature(celery_app.slow.name)
    results = [slow.delay(f"job{i}", 1.5) for i in range(4)]
    started = wait_for(
        lambda: set(keys(exec_log, "start")) if len(keys(exec_log, "start")) >= 2 else None,
        15,
        "two tasks to start",
    )

    doomed.kill()
    killed_at = time.monotonic()
    assert keys(exec_log, "done") == []
    start_worker("rescuer")

    assert sorted(result.get(timeout=30) for result in results) == [f"job{i}" for i in range(4)]
    # Within a few lease lengths, not an age; and exactly once to the end.
    assert time.monotonic() - killed_at < 20
    assert sorted(keys(exec_log, "done")) == [f"job{i}" for i in range(4)]
    for key in started:
        assert keys(exec_log, "start").count(key) == 2


def test_warm_shutdown_gives_prefetched_and_eta_tasks_back_at_once(emulator, start_worker, client, exec_log):
    lease_secs = 30
    leaving = start_worker("leaving", CELERY_TEST_LEASE_SECS=str(lease_secs))
    slow = client.signature(celery_app.slow.name)
    record = client.signature(celery_app.record.name)
    for i in range(2):
        slow.delay(f"run{i}", 1.5)
    wait_for(lambda: len(keys(exec_log, "start")) == 2, 15, "two tasks to run")
    eta_tasks = [record.apply_async((f"eta{i}",), countdown=6) for i in range(3)]
    waiting = [slow.delay(f"wait{i}", 0.2) for i in range(4)]
    wait_for(lambda: all(leaving.received(r.id) for r in eta_tasks), 10, "the ETA tasks to be received")

    leaving.process.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert leaving.wait_exit(15) == 0

    # The running tasks finished and were acknowledged; what the worker held
    # besides is back in the queue, not leased, long before its leases end.
    assert time.monotonic() - stopped_at < 10
    assert sorted(keys(exec_log, "done"))[:2] == ["run0", "run1"]
    left = queue_tasks(emulator, "celery")
    assert {t["celery_id"] for t in left} >= {r.id for r in eta_tasks}
    assert not any(t["leased"] for t in left)

    start_worker("next", CELERY_TEST_LEASE_SECS=str(lease_secs))
    assert sorted(r.get(timeout=20) for r in eta_tasks) == ["eta0", "eta1", "eta2"]
    assert sorted(r.get(timeout=20) for r in waiting) == [f"wait{i}" for i in range(4)]
    assert time.monotonic() - stopped_at < lease_secs
    assert sorted(keys(exec_log, "done")) == sorted(["run0", "run1"] + [f"wait{i}" for i in range(4)])
    assert sorted(keys(exec_log, "record")) == ["eta0", "eta1", "eta2"]
    assert_clean(leaving.log())


def test_remote_control_is_off_and_inspect_finds_no_workers(settings, start_worker):
    worker = start_worker("a")
    inspect = subprocess.run(
        [sys.executable, "-m", "celery", "-A", celery_app.__name__, "inspect", "ping", "--timeout", "0.5"],
        cwd=ROOT,
        env=settings,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert inspect.returncode != 0
    assert "No nodes replied" in inspect.stdout + inspect.stderr
    assert "pidbox" not in worker.log()
    assert_clean(worker.log())
