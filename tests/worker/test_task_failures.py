"""Whatever one task does, it fails alone: the worker process that leased it goes on.

A payload the worker cannot make a message or a payload of, and a FUNCTION
that raises ``KeyboardInterrupt`` or calls ``sys.exit``, fail that task
like any exception would (retry, ``--max-retries``, dead letters), with the
traceback logged; a process that does die is logged through logging too,
so that ``--log-format json`` stays JSON.
"""

import json

import pytest

from kombu_appengine.worker import COUNTERS
from tests.support import worker_jobs_child_crash
from tests.support.helpers import b64
from tests.support.transport import PROJECT, payload_of, total_tasks
from tests.support.worker_run import publish

#: Every test runs worker processes.
pytestmark = pytest.mark.slow

#: Invalid JSON that Python's parser gives up on with a RecursionError.
DEEP_JSON = b"[" * 50000


def json_lines(stderr):
    """Every line of ``stderr``, each parsed (fails on a line that is not JSON)."""
    return [json.loads(line) for line in stderr.splitlines()]


def test_a_payload_the_worker_cannot_decode_fails_that_task_only(emulator, run_worker):
    emulator.service.insert(PROJECT, "jobs", {"payloadBase64": b64(DEEP_JSON)})
    publish(emulator, 5)
    run = run_worker(
        "record",
        "--processes",
        "1",
        "--max-retries",
        "0",
        "--dead-letter-queue",
        "dead",
        "--log-format",
        "json",
    )
    run.wait_for(lambda: total_tasks(emulator, "dead") == 1, "the undecodable task to be dead-lettered")
    run.wait_for(lambda: total_tasks(emulator, "jobs") == 0, "the good tasks to be done")
    code, stdout, stderr = run.stop()
    assert code == 0
    assert run.count("done") == dict.fromkeys(range(5), 1)
    (dead,) = emulator.service.lease(PROJECT, "dead", num_tasks=10, lease_secs=60)["items"]
    assert payload_of(dead) == DEEP_JSON, "the dead letter is the payload, unchanged"
    records = json_lines(stderr)
    assert not [r for r in records if "died with exit code" in r["message"]]
    (failure,) = [r for r in records if "allows no more: moving it to 'dead'" in r["message"]]
    assert failure["traceback"]
    assert "failed=1 retried=0 dead_lettered=1" in stdout


def test_keyboard_interrupt_and_sys_exit_in_the_function_fail_the_task(emulator, run_worker):
    # Task 0 raises KeyboardInterrupt, tasks 1 and 2 call sys.exit(1) and sys.exit(2).
    publish(emulator, 3)
    run = run_worker("interrupted", "--processes", "1", "--max-retries", "0", "--log-format", "json")
    run.wait_for(lambda: total_tasks(emulator, "jobs") == 0, "the three tasks to be dropped")
    code, stdout, stderr = run.stop()
    assert code == 0
    assert run.count("failed") == {0: 1, 1: 1, 2: 1}
    assert len({event["pid"] for event in run.events()}) == 1, "the process died"
    records = json_lines(stderr)
    assert not [r for r in records if "died with exit code" in r["message"]]
    dropped = [r for r in records if "allows no more: deleting it" in r["message"]]
    assert sorted(r["exception"] for r in dropped) == ["KeyboardInterrupt", "SystemExit: 1", "SystemExit: 2"]
    assert "failed=3 retried=0 dead_lettered=0 dropped=3" in stdout


def test_a_process_dying_of_a_base_exception_is_logged_as_json(emulator, run_worker):
    run = run_worker(f"{worker_jobs_child_crash.__name__}:record", "--processes", "1", "--log-format", "json")
    code, stdout, stderr = run.stop(sig=None)
    assert code == 1, "the processes keep dying at start: the worker gives up"
    records = json_lines(stderr)
    crashes = [r for r in records if r["message"] == "worker process failed"]
    assert crashes
    assert all(
        r["exception"].startswith("KeyboardInterrupt: interrupted while looking FUNCTION up") for r in crashes
    )
    assert "summary: " + " ".join(f"{name}=0" for name in COUNTERS) in stdout
