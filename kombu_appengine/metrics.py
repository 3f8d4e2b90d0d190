"""``pullqueue_worker --metrics-port``: Prometheus metrics of a worker and all its processes.

It uses ``prometheus_client`` (the ``metrics`` extra) in its multiprocess
mode: every worker process writes its series to files of its own in a
directory the supervisor makes for this run, and the supervisor's HTTP
server adds them up at each scrape. A process that dies leaves its files
behind, so its counts stay in the totals; the one started in its place
writes files of its own (or, when it was given the same pid, carries on from
the values there), so totals are never reset nor counted twice. Gauges count
live processes only: the supervisor marks a process dead when it exits.

The series (:data:`SERIES` names them):

* ``pullqueue_worker_tasks_processed_total``, ``..._failed_total``,
  ``..._retried_total``, ``..._dead_lettered_total``, ``..._dropped_total``:
  counters, the same counts as the worker's progress lines;
* ``pullqueue_worker_task_duration_seconds``: a histogram of FUNCTION's
  run time, labelled ``outcome`` (``processed`` or ``failed``);
* ``pullqueue_worker_api_call_duration_seconds``: a histogram of the API
  calls the processes make, labelled ``call`` (``lease``, ``delete_batch``,
  ``change_lease_batch``, ``get_task``, ...; see
  :func:`kombu_appengine.client.observe_calls`) and ``outcome`` (``ok`` or
  ``error``), retries included;
* ``pullqueue_worker_buffered_tasks``: a gauge, tasks leased and waiting in
  the processes' buffers.

Nothing here is imported unless ``--metrics-port`` is given: the transport
and the worker do not depend on ``prometheus_client``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile

from .client import observe_calls

logger = logging.getLogger(__name__)

#: The environment variable that puts ``prometheus_client`` in multiprocess mode.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Prefix of every series.
PREFIX = "pullqueue_worker"
#: The counters, by the name the worker counts them under.
COUNTER_HELP = {
    "processed": "Tasks FUNCTION returned on (acknowledged).",
    "failed": "Tasks that failed, each attempt: FUNCTION raised, or the task could not be made a payload.",
    "retried": "Failed tasks made leasable again after a backoff.",
    "dead_lettered": "Tasks out of retries moved to --dead-letter-queue.",
    "dropped": "Tasks out of retries deleted (no --dead-letter-queue).",
}
#: Every series the worker exports (histograms also give ``_bucket``, ``_count`` and ``_sum``).
SERIES = (
    *(f"{PREFIX}_tasks_{name}_total" for name in COUNTER_HELP),
    f"{PREFIX}_task_duration_seconds",
    f"{PREFIX}_api_call_duration_seconds",
    f"{PREFIX}_buffered_tasks",
)
#: Buckets of the task duration histogram, in seconds: tasks run from milliseconds to hours.
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: Buckets of the API call histogram, in seconds.
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class MetricsUnavailable(Exception):
    """``--metrics-port`` was given, but ``prometheus_client`` is not installed."""


def check_available() -> None:
    """Raise :class:`MetricsUnavailable`, naming the extra, unless ``prometheus_client`` can be imported.

    It only looks for the module: importing it here, before
    :data:`MULTIPROC_DIR_ENV` is set, would leave it in single-process mode.
    """
    if importlib.util.find_spec("prometheus_client") is None:
        raise MetricsUnavailable(
            "--metrics-port needs prometheus_client: install the metrics extra, "
            "pip install 'kombu-appengine-pullqueue[metrics]'"
        )


class MetricsServer:
    """The supervisor's side: the run's directory, and the HTTP server adding up every process's series.

    Create it before any worker process starts and before anything imports
    ``prometheus_client`` (FUNCTION's module may), since the multiprocess
    mode is chosen at that import. :meth:`close` removes the directory.

    Raises:
        MetricsUnavailable: ``prometheus_client`` is not installed.
        OSError: the port cannot be bound.
    """

    def __init__(self, host: str, port: int) -> None:
        check_available()
        self.directory = tempfile.mkdtemp(prefix="pullqueue_worker-metrics-")
        # Any directory set before (by the user's environment) would mix other
        # programs' series, and values of earlier runs, into ours.
        os.environ[MULTIPROC_DIR_ENV] = self.directory
        try:
            from prometheus_client import CollectorRegistry, multiprocess, start_http_server, values

            if not getattr(values.ValueClass, "_multiprocess", False):
                raise MetricsUnavailable(
                    "prometheus_client was imported before --metrics-port could set "
                    f"{MULTIPROC_DIR_ENV}: the worker's processes could not share their metrics"
                )
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.directory)
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise
        #: The port bound (the one picked, with port 0).
        self.port = int(self._server.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        #: Where the metrics are served.
        self.url = f"http://{shown}:{self.port}/metrics"

    def process_exited(self, pid: int) -> None:
        """Forget the gauges of the worker process ``pid``, which exited; its counts stay."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.directory)

    def close(self) -> None:
        """Stop serving and remove the directory."""
        self._server.shutdown()
        self._server.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)


class ProcessMetrics:
    """A worker process's side: its series, which the supervisor's server adds up.

    Create it in the worker process (after the fork): its series are then
    written to that process's own files.
    """

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self._counters = {
            name: Counter(f"{PREFIX}_tasks_{name}", help_text, registry=None)
            for name, help_text in COUNTER_HELP.items()
        }
        self._task_seconds = Histogram(
            f"{PREFIX}_task_duration_seconds",
            "Seconds FUNCTION ran, by outcome (processed or failed).",
            ["outcome"],
            buckets=TASK_BUCKETS,
            registry=None,
        )
        self._call_seconds = Histogram(
            f"{PREFIX}_api_call_duration_seconds",
            "Seconds each Task Queue API call took, retries included, by call and outcome (ok or error).",
            ["call", "outcome"],
            buckets=CALL_BUCKETS,
            registry=None,
        )
        self._buffered = Gauge(
            f"{PREFIX}_buffered_tasks",
            "Tasks leased and waiting in the worker processes' buffers.",
            multiprocess_mode="livesum",
            registry=None,
        )
        self._stop_observing = observe_calls(self._observe_call)

    def count(self, name: str, amount: int = 1) -> None:
        """Add to the counter of ``name`` (one of :data:`COUNTER_HELP`)."""
        self._counters[name].inc(amount)

    def task_done(self, outcome: str, seconds: float) -> None:
        """Note one run of FUNCTION: ``processed`` or ``failed``, and how long it took."""
        self._task_seconds.labels(outcome=outcome).observe(seconds)

    def set_buffered(self, tasks: int) -> None:
        """Say how many tasks this process has waiting in its buffer."""
        self._buffered.set(tasks)

    def _observe_call(self, name: str, seconds: float, error: BaseException | None) -> None:
        self._call_seconds.labels(call=name, outcome="ok" if error is None else "error").observe(seconds)

    def close(self) -> None:
        """Stop observing API calls."""
        with contextlib.suppress(ValueError):
            self._stop_observing()
