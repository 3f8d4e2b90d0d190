"""The Celery app the end-to-end tests run workers of (``celery -A tests.support.celery_app worker``).

Configured with ``broker_transport`` and ``broker_transport_options`` (the
README's example, ``celery_example.py``, uses a broker URL instead), from
the environment so each test can start workers with its own settings:

* ``TASKQUEUE_EMULATOR_HOST``: the emulator every connection talks to.
* ``CELERY_TEST_RESULT_BACKEND``: default ``rpc://``.
* ``CELERY_TEST_LEASE_SECS``: the transport's ``lease_secs``; default 60.
* ``CELERY_TEST_PREFETCH``: ``worker_prefetch_multiplier``; default 4.
* ``CELERY_TEST_LOG``: a file every task execution appends one line to
  (``name key pid``), so tests count executions across processes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from typing import Any

from celery import Celery

#: The pull queue holding every queue that has none of its own (reply queues).
SHARED_QUEUE = "shared"
#: Task name -> queue: ``images`` is a pull queue of its own, ``reports`` is a tag on ``shared``.
#: Task names are this module's name and the function's.
ROUTES = {
    f"{__name__}.resize": {"queue": "images"},
    f"{__name__}.report": {"queue": "reports"},
}


def config_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Celery settings for the environment ``env`` (see the module's docstring)."""
    options = {
        "shared_queue": SHARED_QUEUE,
        "lease_secs": int(env.get("CELERY_TEST_LEASE_SECS", "60")),
        "polling_interval": 0.05,
    }
    return {
        "broker_transport": "kombu_appengine:Transport",
        "broker_transport_options": options,
        "result_backend": env.get("CELERY_TEST_RESULT_BACKEND", "rpc://"),
        "task_routes": ROUTES,
        "worker_prefetch_multiplier": int(env.get("CELERY_TEST_PREFETCH", "4")),
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        # A pool process killed mid-task is noticed after 1 s, not Celery's 10.
        "worker_lost_wait": 1.0,
    }


app = Celery("celery_app")
app.config_from_object(config_from_env(os.environ))


def _record(name: str, key: Any) -> None:
    path = os.environ.get("CELERY_TEST_LOG")
    if path:
        # One short O_APPEND write per line: lines from many processes never mix.
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{name} {key} {os.getpid()}\n")


@app.task
def add(x: int, y: int) -> int:
    """x + y."""
    _record("add", f"{x}+{y}")
    return x + y


@app.task
def record(key: str) -> str:
    """Log one execution of ``key``."""
    _record("record", key)
    return key


@app.task(acks_late=True)
def slow(key: str, seconds: float) -> str:
    """Log a start, sleep, log the end; acknowledged after it returns."""
    _record("start", key)
    time.sleep(seconds)
    _record("done", key)
    return key


@app.task(bind=True, max_retries=5)
def flaky(self: Any, key: str, failures: int) -> int:
    """Fail ``failures`` times with ``self.retry``, then return the number of retries."""
    _record("try", key)
    if self.request.retries < failures:
        raise self.retry(countdown=0.2)
    return self.request.retries


@app.task(acks_late=True, reject_on_worker_lost=True)
def die_once(key: str, marker: str) -> str:
    """Kill the pool process running it the first time (``marker`` does not exist yet)."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    _record("survived", key)
    return key


@app.task
def resize(key: str) -> str:
    """Routed to the pull queue ``images``."""
    _record("resize", key)
    return key


@app.task
def report(key: str) -> str:
    """Routed to ``reports``, which lives as a tag on ``shared``."""
    _record("report", key)
    return key
