"""How the worker stops when it is not the usual SIGTERM to a running worker:
its supervisor killed, or a stop signal before anything started."""

import json
import os
import signal

import pytest

from tests.support.helpers import wait_for
from tests.support.transport import total_tasks
from tests.support.worker_run import publish, released

#: Every test runs worker processes.
pytestmark = pytest.mark.slow


def test_processes_of_a_killed_supervisor_stop_and_give_their_tasks_back(emulator, run_worker):
    publish(emulator, 5)
    run = run_worker("blocking", "--processes", "1", "--num-tasks", "5", "--lease-secs", "600")
    run.wait_for(lambda: run.count("started"), "a task to start")
    (started,) = run.events()
    supervisor = run.process.pid
    os.kill(supervisor, signal.SIGKILL)
    run.process.wait()
    # Long before their 600 s leases end, the orphan gives back what it holds...
    wait_for(lambda: released(emulator) == 4, timeout=60, what="the orphan to release its buffered tasks")
    # ... finishes its running task, and exits (its end closes the worker's pipes).
    run.release.touch()
    _, _, stderr = run.stop(sig=None, timeout=60)
    assert run.count("done") == {started["n"]: 1}
    assert total_tasks(emulator, "jobs") == 4
    assert released(emulator) == 4
    assert f"the supervisor (pid {supervisor}) is gone: stopping" in stderr, (_, stderr)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_while_waiting_for_the_api_at_start_is_a_clean_stop(run_worker, sig):
    run = run_worker("record", "--api-endpoint", "http://127.0.0.1:1", "--log-format", "json")
    # The first warning says it waits; what it names is the service, not a queue it never asked for.
    waiting = json.loads(run.process.stderr.readline())
    assert waiting["message"].startswith(
        "cannot connect to the Task Queue API (cannot reach the Task Queue API at http://127.0.0.1:1/ "
        "(project 'emulator'): ConnectionRefusedError"
    )
    code, stdout, stderr = run.stop(sig)
    assert code == 0
    messages = [json.loads(line)["message"] for line in stderr.splitlines()]
    assert messages[-1] == "stopped before any worker process started"
    assert stdout.startswith("summary: processed=0 failed=0")
