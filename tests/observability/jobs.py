"""Task functions of the metrics and log tests, run by ``pullqueue_worker``'s processes.

Each run is recorded as one line appended to the file named by
``WORKER_RECORD`` (one ``write(2)`` a line, see
:func:`tests.support.worker_jobs.append_line`): the truth the worker's
metrics are checked against.
"""

import os

from tests.support.worker_jobs import append_line

#: Runs of FUNCTION in this process so far.
_runs = 0


def _record(event, payload):
    append_line(os.environ["WORKER_RECORD"], {"event": event, "n": payload["n"], "pid": os.getpid()})


def fail_some_and_crash_once(payload):
    """Fail the tasks whose payload says ``fail``, succeed on the others; and once, in
    whichever process first reaches its fifth run, die at once (as a crash does),
    after that process has counted four runs."""
    global _runs
    _runs += 1
    if _runs == 5:
        try:
            os.close(os.open(os.environ["WORKER_CRASHED"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            _record("crashed", payload)
            os._exit(3)
    if payload["fail"]:
        _record("failed", payload)
        raise RuntimeError(f"task {payload['n']} fails")
    _record("done", payload)


def always_fail(payload):
    """Fail, with a traceback the log must carry."""
    _record("failed", payload)
    raise RuntimeError(f"task {payload['n']} cannot be done")
