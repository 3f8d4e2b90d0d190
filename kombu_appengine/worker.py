"""``pullqueue_worker MODULE:FUNCTION --queue NAME``: the multi-process worker.

A supervisor starts ``--processes`` worker processes. Each opens its own
kombu connection (after the fork) and loops: get a task, call FUNCTION with
its payload (the decoded JSON value when the payload is JSON, else the
bytes), acknowledge (delete) it when FUNCTION returns.

* FUNCTION raised (anything: ``sys.exit`` and ``KeyboardInterrupt`` too),
  or the task could not be made a message or a payload (the channel's
  :class:`~kombu_appengine.errors.TaskNotDelivered`, a decoding error): the
  task failed, and the process goes on. One task never stops a process.
  The traceback is logged and the task is made leasable
  again after a backoff that doubles with each of its leases (a lease
  change, not a copy). When it failed on its lease ``--max-retries`` + 1 or
  a later one, or on the last lease the queue's own ``maxLeases`` allows, it
  is moved to ``--dead-letter-queue`` when given, else deleted with an
  error log.

  Leases, not failures, are what is counted: the task's ``retry_count``,
  which the service keeps, counts every lease of it, including those that
  ended without a run (buffered tasks given back at a restart, a consumer
  that closed). The API can keep no count of failures (a lease change
  alters neither payload nor tag), and one kept by this worker would be
  lost with it and unknown to the worker's other hosts. So a task may have
  been retried fewer than ``--max-retries`` times when it is dropped, never
  more; and it is never dropped without this worker having run it: the
  limit is checked only when FUNCTION has just failed on it (or when its
  payload, a kombu message, could not be decoded for FUNCTION at all).
* A worker process that dies (a crash, ``os._exit``, SIGKILL) is replaced;
  its tasks come back when their leases end. Leases of running tasks are
  renewed while they run.
* SIGTERM or SIGINT: stop leasing, let running tasks finish, release the
  leases of buffered tasks so other workers get them at once, exit 0. A
  second signal stops at once (the leases then expire: nothing is lost).
  Before the processes start (waiting for the API to answer, say), a stop
  signal ends the command at once, with 0.
* The supervisor killed (SIGKILL, the OOM killer): its processes stop as on
  SIGTERM, told by the kernel on Linux (``PR_SET_PDEATHSIG``) and, on any
  system, by a thread that checks their parent every second.
* Every ``--stats-interval`` seconds one log line with processed, failed,
  retried and tasks per second; a summary line at exit.
* ``--metrics-port``: Prometheus metrics of all the processes together
  (:mod:`kombu_appengine.metrics`, the ``metrics`` extra).
* ``--log-format json``: one JSON object a line on stderr, from every process;
  errors no code caught are logged too, never printed as raw tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from kombu import Connection

from .api import MAX_LEASE_SECONDS, MAX_NUM_TASKS
from .cli_common import (
    add_connection_options,
    add_log_format_option,
    add_log_level_option,
    add_version_option,
    configure_logging,
    connection_options,
    fail,
    integer,
    non_negative_int,
    not_empty,
    number,
    port_number,
    positive_int,
    queue_name,
)
from .errors import TaskNotDelivered, TaskQueueConnectionError, TaskQueueError
from .names import pull_queue_name

if TYPE_CHECKING:
    from .metrics import MetricsServer, ProcessMetrics

logger = logging.getLogger("kombu_appengine.worker")

#: Longest backoff before a failed task is retried, in seconds.
MAX_BACKOFF_SECONDS = 3600
#: Longest ``--polling-interval``, in seconds (the transport's own bound).
MAX_POLLING_INTERVAL = 3600
#: A process that dies sooner than this after starting counts as a crash loop.
QUICK_DEATH_SECONDS = 1.0
#: Seconds between a worker process's checks that its supervisor is alive.
PARENT_CHECK_SECONDS = 1.0
#: ``prctl``'s option that asks for a signal when the parent dies (Linux).
PR_SET_PDEATHSIG = 1
#: The signals that ask the worker to stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: The counters every worker process adds to.
COUNTERS = ("processed", "failed", "retried", "dead_lettered", "dropped")
#: The format of the worker's text log lines.
TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s: %(message)s"


class WorkerError(Exception):
    """The worker cannot start: a bad FUNCTION or option."""


def load_function(spec: str) -> Callable[[Any], Any]:
    """Import ``MODULE:FUNCTION``.

    Raises:
        WorkerError: naming what could not be found.
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise WorkerError(f"{spec!r} is not MODULE:FUNCTION")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WorkerError(f"cannot import module {module_name!r}: {exc}") from None
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise WorkerError(f"module {module_name!r} has no {attribute!r}")
    if not callable(target):
        raise WorkerError(f"{spec} is not callable")
    return target


def backoff_seconds(lease: int, first: float) -> int:
    """Seconds before a task that failed on its lease number ``lease`` (its ``retry_count``) comes back.

    ``first`` doubled ``lease - 1`` times, rounded up, at most
    :data:`MAX_BACKOFF_SECONDS`; 0 when ``first`` is not positive. Safe for
    any ``first`` and any lease: the doublings are compared in powers of
    two, so no float overflows however many times a task was leased.
    """
    if not first > 0:  # NaN too
        return 0
    if first >= MAX_BACKOFF_SECONDS:
        return MAX_BACKOFF_SECONDS
    doublings = max(lease - 1, 0)
    if doublings >= math.log2(MAX_BACKOFF_SECONDS) - math.log2(first):
        return MAX_BACKOFF_SECONDS
    return min(math.ceil(math.ldexp(first, doublings)), MAX_BACKOFF_SECONDS)


@dataclass
class WorkerSettings:
    """What every worker process needs; picklable, so it crosses ``spawn`` too."""

    function: str
    queue: str
    transport_options: dict[str, Any]
    max_retries: int | None = None
    dead_letter_queue: str | None = None
    retry_backoff: float = 1.0
    polling_interval: float = 1.0
    log_level: str = "INFO"
    log_format: str = "text"
    #: Whether the processes write Prometheus metrics (``--metrics-port``).
    metrics: bool = False


class Counters:
    """Counts shared by the supervisor and its processes."""

    def __init__(self, context: Any) -> None:
        self._values = {name: context.Value("q", 0) for name in COUNTERS}
        self._observer: Callable[[str, int], None] | None = None

    def watch(self, observer: Callable[[str, int], None]) -> None:
        """In this process, call ``observer(name, amount)`` with every addition too (the metrics)."""
        self._observer = observer

    def add(self, name: str, amount: int = 1) -> None:
        value = self._values[name]
        with value.get_lock():
            value.value += amount
        if self._observer is not None:
            self._observer(name, amount)

    def snapshot(self) -> dict[str, int]:
        return {name: value.value for name, value in self._values.items()}


def _handle(
    channel: Any,
    message: Any,
    function: Callable[[Any], Any],
    settings: WorkerSettings,
    max_leases: int | None,
    counters: Counters,
    metrics: ProcessMetrics | None = None,
) -> None:
    started = time.monotonic()
    try:
        payload = message.decode()
        function(payload)
    # FUNCTION may raise anything, SystemExit and KeyboardInterrupt too: the
    # task failed, and the process goes on (its own stop raises nothing).
    except BaseException as error:  # noqa: BLE001 (logged by _failed)
        if metrics is not None:
            metrics.task_done("failed", time.monotonic() - started)
        info = message.delivery_info
        _failed(
            error,
            channel,
            message.delivery_tag,
            info.get("task_id"),
            info.get("retry_count", 1),
            settings,
            max_leases,
            counters,
        )
        return
    if metrics is not None:
        metrics.task_done("processed", time.monotonic() - started)
    message.ack()
    counters.add("processed")


def _failed(
    error: BaseException,
    channel: Any,
    delivery_tag: str,
    task_id: str | None,
    lease: int,
    settings: WorkerSettings,
    max_leases: int | None,
    counters: Counters,
) -> None:
    """Settle a task that failed with ``error`` on its lease number ``lease``, logging the traceback.

    FUNCTION raised, or the task could not be made a message or a payload.
    The task is retried after its backoff, or, out of retries, dead-lettered
    or deleted.
    """
    counters.add("failed")
    # Leases, run or not, not failures: see the module's docstring.
    lease = int(lease)
    out_of_retries = settings.max_retries is not None and lease > settings.max_retries
    out_of_leases = max_leases is not None and lease >= max_leases
    # The logs below carry the traceback as the record's exc_info, not
    # pasted into the message, so handlers and formatters get it apart.
    if out_of_retries or out_of_leases:
        why = (
            f"--max-retries {settings.max_retries}"
            if out_of_retries
            else f"the queue's maxLeases {max_leases}"
        )
        if settings.dead_letter_queue:
            logger.error(
                "task %s failed on lease %d (its retry_count); %s allows no more: moving it to %r",
                task_id,
                lease,
                why,
                settings.dead_letter_queue,
                exc_info=error,
            )
            channel.dead_letter(delivery_tag, settings.dead_letter_queue)
            counters.add("dead_lettered")
        else:
            logger.error(
                "task %s failed on lease %d (its retry_count); %s allows no more: deleting it",
                task_id,
                lease,
                why,
                exc_info=error,
            )
            channel.basic_reject(delivery_tag, requeue=False)
            counters.add("dropped")
        return
    delay = backoff_seconds(lease, settings.retry_backoff)
    logger.warning(
        "task %s failed on lease %d (its retry_count); retrying in %ds", task_id, lease, delay, exc_info=error
    )
    channel.retry_later(delivery_tag, delay)
    counters.add("retried")


def work(settings: WorkerSettings, counters: Counters, supervisor_pid: int) -> None:
    """One worker process: get, call, ack, until SIGTERM (a second one stops at once).

    It stops as on SIGTERM when its supervisor (``supervisor_pid``) dies.
    """
    configure_logging(settings.log_level, settings.log_format, TEXT_LOG_FORMAT)
    _log_uncaught_exceptions()
    try:
        _work(settings, counters, supervisor_pid)
    except BaseException:
        # Logged, rather than printed by multiprocessing, so that it is one
        # JSON line with --log-format json; the supervisor starts another.
        logger.exception("worker process failed")
        sys.exit(1)


def _work(settings: WorkerSettings, counters: Counters, supervisor_pid: int) -> None:
    stopping = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        if stopping.is_set():
            os._exit(1)
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    # The terminal's SIGINT reaches the whole process group; the supervisor
    # turns it into SIGTERM for us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _stop_with_parent(supervisor_pid, stopping)
    # The supervisor forked us with the stop signals blocked, so that its own
    # handlers never ran here; one that came meanwhile is delivered now, to ours.
    _unblock_stop_signals()
    function = load_function(settings.function)
    metrics = None
    if settings.metrics:
        from .metrics import ProcessMetrics

        metrics = ProcessMetrics()
        counters.watch(metrics.count)
    with connect(settings.transport_options) as conn:
        channel = conn.default_channel
        max_leases = channel.queue_max_leases(settings.queue)

        def release_on_stop() -> None:
            # Buffered tasks go back at once, while a running task finishes.
            stopping.wait()
            channel.release_buffered()

        threading.Thread(target=release_on_stop, name="release-on-stop", daemon=True).start()
        while not stopping.is_set():
            try:
                message = channel.basic_get(settings.queue)
            except TaskQueueConnectionError as error:
                logger.warning("cannot lease from %r now (%s); trying again", settings.queue, error)
                stopping.wait(settings.polling_interval)
                continue
            except TaskNotDelivered as error:
                # A payload no message can be made of fails like a task whose
                # FUNCTION raised: it must not stop the process that leased it.
                if metrics is not None:
                    metrics.task_done("failed", 0.0)
                _settle(
                    settings.queue,
                    _failed,
                    error,
                    channel,
                    error.delivery_tag,
                    error.task_id,
                    error.retry_count,
                    settings,
                    max_leases,
                    counters,
                )
                continue
            if metrics is not None:
                metrics.set_buffered(channel.buffered(settings.queue))
            if message is None:
                stopping.wait(settings.polling_interval)
                continue
            _settle(
                settings.queue, _handle, channel, message, function, settings, max_leases, counters, metrics
            )
    # Leaving the with block closed the connection: buffered and unacked
    # tasks were released for other workers.


def _settle(queue: str, handle: Callable[..., None], *args: Any) -> None:
    """Run ``handle(*args)`` on one task; an error settling it is logged, never raised.

    The task then comes back when its lease ends.
    """
    try:
        handle(*args)
    except TaskQueueError as error:
        logger.warning("could not settle a task of %r (%s); it comes back when its lease ends", queue, error)
    except Exception:
        logger.exception("could not settle a task of %r; it comes back when its lease ends", queue)


def _stop_with_parent(supervisor_pid: int, stopping: threading.Event) -> None:
    """Stop (``stopping``, as SIGTERM does) when the supervisor dies, even by SIGKILL.

    On Linux the kernel sends SIGTERM at its death (``PR_SET_PDEATHSIG``);
    everywhere, a thread checks each :data:`PARENT_CHECK_SECONDS` whether
    this process's parent is still the supervisor (an orphan is adopted by
    another). Without either, orphans would lease and run tasks unsupervised.
    """
    _ask_kernel_for_sigterm_at_parent_death()

    def watch() -> None:
        while True:
            stopped = stopping.wait(PARENT_CHECK_SECONDS)
            if os.getppid() != supervisor_pid:
                logger.warning("the supervisor (pid %d) is gone: stopping", supervisor_pid)
                stopping.set()
                return
            if stopped:
                return

    threading.Thread(target=watch, name="watch-supervisor", daemon=True).start()


def _ask_kernel_for_sigterm_at_parent_death() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # no libc to ask: the watching thread is enough
        logger.debug("cannot ask for SIGTERM at the supervisor's death; watching it instead")


def _log_uncaught_exceptions() -> None:
    """Log what no code catches, in this process and its threads, instead of printing it.

    So that with ``--log-format json`` even a crash is one JSON line.
    """

    def log_uncaught(kind: type[BaseException], error: BaseException, tb: Any) -> None:
        logger.critical("uncaught error", exc_info=(kind, error, tb))

    def log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        logger.critical(
            "uncaught error in thread %s",
            args.thread.name if args.thread else "?",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = log_uncaught
    threading.excepthook = log_uncaught_in_thread


def connect(transport_options: dict[str, Any]) -> Connection:
    """A connection to the pull queues, retried until the service answers.

    A service that cannot be reached now (down, restarting, answering 503)
    is waited for, with one warning per attempt, as Celery waits for its
    broker; a refusal (bad credentials, a missing queue) is raised at once.
    """
    conn = Connection(transport="kombu_appengine:Transport", transport_options=transport_options)

    def retrying(error: Exception, interval: float) -> None:
        logger.warning("cannot connect to the Task Queue API (%s); trying again in %.0fs", error, interval)

    try:
        conn.ensure_connection(
            errback=retrying, max_retries=None, interval_start=1, interval_step=2, interval_max=10
        )
    except BaseException:  # a refusal, or a stop signal while it waits
        conn.release()
        raise
    return conn


class Supervisor:
    """Keeps ``processes`` worker processes running until told to stop."""

    def __init__(
        self,
        settings: WorkerSettings,
        processes: int,
        stats_interval: float = 5.0,
        metrics: MetricsServer | None = None,
    ) -> None:
        self.settings = settings
        #: Told when a process exits, so that its gauges no longer count.
        self.metrics = metrics
        self.processes = processes
        self.stats_interval = stats_interval
        methods = multiprocessing.get_all_start_methods()
        self.context: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self.counters = Counters(self.context)
        self.children: list[Any] = []
        #: Whether it stopped because processes kept dying at start.
        self.gave_up = False
        #: Stop signals received, counted by the handler; acted on by the loop.
        self._stop_requests = 0
        #: Stop requests the loop has acted on.
        self._stops_done = 0
        self._wake_read, self._wake_write = -1, -1

    def _start_child(self, number: int) -> Any:
        child = self.context.Process(
            target=work,
            args=(self.settings, self.counters, os.getpid()),
            name=f"worker-{number}",
            daemon=False,
        )
        # Until the child has its own handlers a stop signal must wait:
        # run by the supervisor's handlers (inherited through fork) it would
        # act on the supervisor's copy of its children.
        with _stop_signals_blocked():
            child.start()
        child.started_at = time.monotonic()
        return child

    def _exited(self, child: Any) -> None:
        if self.metrics is not None:
            self.metrics.process_exited(child.pid)

    def on_signal(self, signum: int, frame: Any) -> None:
        """The stop signals' handler: note the request, and wake the supervising loop."""
        # Only note it: a handler runs between any two bytecodes, even in the
        # middle of starting a child, where acting on self.children would
        # miss the child being started (which then never stops).
        self._stop_requests += 1
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"\0")

    def request_stop(self) -> None:
        """Stop as the first SIGTERM does (from the supervising thread)."""
        self._stop_requests += 1

    def _act_on_stop_requests(self) -> None:
        """Tell every live child to stop: gently the first time, at once the next."""
        if self._stops_done == self._stop_requests:
            return
        self._stops_done = self._stop_requests
        if self._stops_done == 1:
            logger.info("stopping: running tasks finish, buffered tasks are released (again to stop at once)")
            how = signal.SIGTERM
        else:
            logger.warning("stopping at once: unfinished tasks come back when their leases end")
            how = signal.SIGKILL
        for child in self.children:
            if child.is_alive():
                os.kill(child.pid, how)

    def run(self) -> dict[str, float]:
        """Supervise until every process has stopped after a signal.

        Returns the final counts and ``seconds``, the time it ran.
        :attr:`gave_up` then says whether it stopped because processes kept
        dying as soon as they started.
        """
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        previous = {number: signal.signal(number, self.on_signal) for number in STOP_SIGNALS}
        try:
            return self._supervise()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            os.close(self._wake_read)
            os.close(self._wake_write)
            # A signal after this must not write to whatever reuses the numbers.
            self._wake_read, self._wake_write = -1, -1

    def _supervise(self) -> dict[str, float]:
        started = time.monotonic()
        self.children = [self._start_child(n) for n in range(self.processes)]
        last_report = started
        last_processed = 0
        quick_deaths = 0
        while True:
            self._act_on_stop_requests()
            sentinels = [child.sentinel for child in self.children]
            ready = multiprocessing.connection.wait([*sentinels, self._wake_read], timeout=0.2)
            if self._wake_read in ready:
                os.read(self._wake_read, 512)
            self._act_on_stop_requests()
            for index, child in enumerate(self.children):
                if child.is_alive() or child.exitcode is None:
                    continue
                if self._stop_requests:
                    continue
                self._exited(child)
                lived = time.monotonic() - child.started_at
                logger.error(
                    "%s (pid %d) died with exit code %s; starting another",
                    child.name,
                    child.pid,
                    child.exitcode,
                )
                quick_deaths = quick_deaths + 1 if lived < QUICK_DEATH_SECONDS else 0
                if quick_deaths > 3 * self.processes:
                    logger.critical("worker processes keep dying at start; giving up")
                    self.gave_up = True
                    self.request_stop()
                    break
                self.children[index] = self._start_child(index)
            self._act_on_stop_requests()
            if self._stop_requests and not any(child.is_alive() for child in self.children):
                break
            now = time.monotonic()
            if now - last_report >= self.stats_interval:
                counts = self.counters.snapshot()
                rate = (counts["processed"] - last_processed) / (now - last_report)
                logger.info(
                    "processed=%d failed=%d retried=%d dead_lettered=%d tasks/s=%.1f",
                    counts["processed"],
                    counts["failed"],
                    counts["retried"],
                    counts["dead_lettered"],
                    rate,
                )
                last_report, last_processed = now, counts["processed"]
        for child in self.children:
            child.join()
            self._exited(child)
        final: dict[str, float] = dict(self.counters.snapshot())
        final["seconds"] = time.monotonic() - started
        return final


@contextlib.contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """Hold SIGTERM and SIGINT back (they stay pending) for the ``with`` block."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no fork, nothing inherited
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _StoppedAtStart(BaseException):
    """A stop signal came before the supervisor took over (connecting may wait for ever).

    A ``BaseException``, as ``KeyboardInterrupt`` is, so that no ``except
    Exception`` on the way (kombu's retries, say) swallows it.
    """


class _StopSignals:
    """The command's SIGTERM and SIGINT handler, from its start to its end.

    Until :attr:`supervisor` is set, a stop signal raises
    :class:`_StoppedAtStart`: nothing runs yet, so the command just ends.
    From then on it is the supervisor's (which sets its own handlers while
    it runs; this one covers the moments before and after).
    """

    def __init__(self) -> None:
        self.supervisor: Supervisor | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.supervisor is None:
            raise _StoppedAtStart()
        self.supervisor.on_signal(signum, frame)

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopSignals]:
        previous = {number: signal.signal(number, self) for number in STOP_SIGNALS}
        try:
            yield self
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)


def _unblock_stop_signals() -> None:
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def format_summary(counts: dict[str, float]) -> str:
    """The one-line summary the command prints at exit."""
    seconds = counts["seconds"]
    rate = counts["processed"] / seconds if seconds else 0.0
    return (
        "summary: processed={processed} failed={failed} retried={retried} "
        "dead_lettered={dead_lettered} dropped={dropped} ".format(**counts)
        + f"seconds={seconds:.1f} tasks_per_second={rate:.1f}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pullqueue_worker",
        description="Run FUNCTION on every task of an App Engine pull queue, in several processes.",
    )
    parser.add_argument(
        "function",
        metavar="MODULE:FUNCTION",
        help="called with each task's payload (decoded JSON, else bytes); returning acks it",
    )
    parser.add_argument("--queue", required=True, type=queue_name, help="the pull queue (a kombu queue name)")
    parser.add_argument(
        "--processes",
        type=positive_int,
        default=2 * (os.cpu_count() or 1) + 1,
        help="worker processes (default: 2 x CPUs + 1 = %(default)s)",
    )
    parser.add_argument(
        "--num-tasks",
        type=integer(1, MAX_NUM_TASKS),
        default=10,
        help="tasks one lease asks for (default: %(default)s)",
    )
    parser.add_argument(
        "--lease-secs",
        type=integer(1, MAX_LEASE_SECONDS),
        default=60,
        help="lease length in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--polling-interval",
        type=number("seconds", zero=True, high=MAX_POLLING_INTERVAL),
        default=1.0,
        help="seconds to wait after finding the queue empty (default: %(default)s)",
    )
    add_connection_options(parser)
    parser.add_argument(
        "--max-retries",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="a task that fails on its lease N+1 or a later one is dead-lettered or deleted; every lease "
        "counts (its retry_count), run or not, so it may have been retried fewer than N times, never more "
        "(default: no limit but the queue's maxLeases)",
    )
    parser.add_argument(
        "--dead-letter-queue",
        type=queue_name,
        metavar="NAME",
        help="move tasks out of retries (--max-retries, maxLeases) here instead of deleting them",
    )
    parser.add_argument(
        "--retry-backoff",
        type=number("seconds", zero=True),
        default=1.0,
        help="seconds before the first retry; doubles with each lease of the task, at most an hour "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--stats-interval",
        type=number("seconds"),
        default=5.0,
        help="seconds between progress lines (default: %(default)s)",
    )
    parser.add_argument(
        "--metrics-port",
        type=port_number,
        metavar="N",
        help="serve Prometheus metrics of all the processes on this port; 0 picks a free one "
        "(needs the metrics extra; default: none)",
    )
    parser.add_argument(
        "--metrics-host",
        type=not_empty("an address"),
        default="127.0.0.1",
        metavar="HOST",
        help="address the metrics are served on (default: %(default)s)",
    )
    add_log_level_option(parser, default="INFO")
    add_log_format_option(parser)
    add_version_option(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    """The ``pullqueue_worker`` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format, TEXT_LOG_FORMAT)
    if args.dead_letter_queue is not None and pull_queue_name(args.dead_letter_queue) == pull_queue_name(
        args.queue
    ):
        parser.error(
            f"--dead-letter-queue {args.dead_letter_queue!r} is the pull queue of --queue {args.queue!r} "
            f"({pull_queue_name(args.queue)!r}): tasks out of retries would go back where they failed"
        )
    options: dict[str, Any] = {
        "num_tasks": args.num_tasks,
        "lease_secs": args.lease_secs,
        "polling_interval": args.polling_interval,
        **connection_options(args),
    }
    settings = WorkerSettings(
        function=args.function,
        queue=args.queue,
        transport_options=options,
        max_retries=args.max_retries,
        dead_letter_queue=args.dead_letter_queue,
        retry_backoff=args.retry_backoff,
        polling_interval=args.polling_interval,
        log_level=args.log_level,
        log_format=args.log_format,
        metrics=args.metrics_port is not None,
    )
    _log_uncaught_exceptions()
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as cleanup:
            stop_signals = cleanup.enter_context(_StopSignals().installed())
            metrics = None
            if args.metrics_port is not None:
                # Before FUNCTION's module is imported: it may import prometheus_client.
                metrics = _serve_metrics(args.metrics_host, args.metrics_port, args.log_format)
                cleanup.callback(metrics.close)
            _check_and_run(args, options, settings, metrics, stop_signals)
    except _StoppedAtStart:
        # Nothing had started: the stop is as clean as a stop can be.
        logger.info("stopped before any worker process started")
        print(
            format_summary({**dict.fromkeys(COUNTERS, 0), "seconds": time.monotonic() - started}), flush=True
        )


def _serve_metrics(host: str, port: int, log_format: str) -> MetricsServer:
    from .metrics import MetricsServer, MetricsUnavailable

    try:
        server = MetricsServer(host, port)
    except MetricsUnavailable as error:
        fail("pullqueue_worker", str(error), log_format)
    except OSError as error:
        fail("pullqueue_worker", f"cannot serve metrics on {host}:{port}: {error}", log_format)
    logger.info("serving Prometheus metrics on %s", server.url)
    return server


def _check_and_run(
    args: argparse.Namespace,
    options: dict[str, Any],
    settings: WorkerSettings,
    metrics: MetricsServer | None,
    stop_signals: _StopSignals,
) -> None:
    try:
        load_function(args.function)
        with connect(options) as conn:
            channel = conn.default_channel
            for queue in filter(None, (args.queue, args.dead_letter_queue)):
                channel.queue_max_leases(queue)
    except (WorkerError, TaskQueueError, ValueError) as error:
        fail("pullqueue_worker", str(error), args.log_format)
    supervisor = Supervisor(settings, args.processes, args.stats_interval, metrics)
    stop_signals.supervisor = supervisor
    counts = supervisor.run()
    print(format_summary(counts), flush=True)
    if supervisor.gave_up:
        fail(
            "pullqueue_worker",
            "worker processes kept dying as soon as they started; see the log above",
            args.log_format,
        )


if __name__ == "__main__":
    main()
