"""``pullqueue_status``: how full each pull queue is, and whether it is being worked.

For each queue it shows what one ``taskqueues.get(getStats=true)`` says (the
tasks in the queue, how long the task available longest has waited, the
tasks leased in the last minute and hour) and what one ``tasks.list`` adds:
the tasks leased now, the age of the oldest task since it was enqueued, and
for a queue holding tagged tasks (``shared_queue``) the counts per tag. The
API lists at most 100 tasks, so those figures cover only the first 100
when the queue holds more: the output says so (``≥`` in the text,
``"truncated": true`` in JSON).

The stats' ``oldestTask`` is the earliest ETA of the queue's tasks, not
their earliest enqueue time: a task's ETA is when it was enqueued until a
lease moves it to the lease's end, or a release to the release time. So it
tells how long the task available longest has waited for a worker
(``longest_wait_seconds``); how old the oldest task is, leases and
releases notwithstanding, only the tasks' ``enqueueTimestamp`` tells
(``oldest_enqueued_age_seconds``).

The API cannot list a project's queues, so they are named (``--queue``,
``--queue-yaml``). A queue that does not exist is an error naming it and the
project, and the exit status is 1.

``--json`` prints one JSON document a line (see :data:`SCHEMA` and the
README for its fields); ``--watch SECS`` refreshes every SECS seconds until
Ctrl-C or SIGTERM, which end it with status 0.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

from kombu import Connection

from .api import MAX_LIST_TASKS
from .cli_common import (
    add_connection_options,
    add_log_level_option,
    add_version_option,
    configure_logging,
    connection_options,
    number,
    printable,
    queue_name,
)
from .client import TaskQueueClient
from .errors import QueueNotFound, TaskQueueConnectionError, TaskQueueError
from .names import pull_queue_name

logger = logging.getLogger(__name__)

#: The ``schema`` of every ``--json`` document; it changes only when a field
#: changes meaning or goes away (new fields may be added within a version).
#: 2: ``oldest_task_age_seconds`` (the stats' earliest ETA, which README called
#: the oldest enqueue) gave way to ``longest_wait_seconds`` and
#: ``oldest_enqueued_age_seconds``.
SCHEMA = "pullqueue_status/2"
#: What the text output writes for a count taken from a truncated list.
AT_LEAST = "≥"
#: Shortest ``--watch`` interval, in seconds: shorter is a busy loop against the API.
WATCH_MIN_SECONDS = 0.1
#: Longest ``--watch`` interval, in seconds (a day): longer is no watch.
WATCH_MAX_SECONDS = 86400.0


@dataclass
class TagStatus:
    """The listed tasks carrying one tag (a kombu queue living on ``shared_queue``)."""

    tasks: int = 0
    leased_now: int = 0


@dataclass
class QueueStatus:
    """One pull queue, as its stats and its task list show it."""

    queue: str
    #: Every task in the queue, leased or not (the queue's stats).
    total_tasks: int
    #: How long the task available longest has waited for a worker, since it
    #: was enqueued or its lease ended or was released: seconds since the
    #: earliest ETA (the stats' ``oldestTask``); 0 when none is available (all
    #: leased); ``None`` for an empty queue.
    longest_wait_seconds: float | None
    #: Seconds since the earliest ``enqueueTimestamp`` of the listed tasks,
    #: leased ones included (a lower bound when ``truncated``); ``None`` when none is listed.
    oldest_enqueued_age_seconds: float | None
    leased_last_minute: int
    leased_last_hour: int
    #: How many tasks ``tasks.list`` returned: what the counts below are taken from.
    listed_tasks: int
    #: Whether the list stopped at the API's limit with more in the queue: the counts below are lower bounds.
    truncated: bool
    #: Listed tasks whose lease (or ETA) has not passed: leased now.
    leased_now: int
    #: Listed tasks by tag, when any carries one.
    tags: dict[str, TagStatus] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The queue's object in the ``--json`` document."""
        return {
            "queue": self.queue,
            "total_tasks": self.total_tasks,
            "longest_wait_seconds": self.longest_wait_seconds,
            "oldest_enqueued_age_seconds": self.oldest_enqueued_age_seconds,
            "leased_last_minute": self.leased_last_minute,
            "leased_last_hour": self.leased_last_hour,
            "listed_tasks": self.listed_tasks,
            "truncated": self.truncated,
            "leased_now": self.leased_now,
            "tags": {
                tag: {"tasks": counts.tasks, "leased_now": counts.leased_now}
                for tag, counts in sorted(self.tags.items())
            },
        }


def queue_status(client: TaskQueueClient, queue: str, now: float) -> QueueStatus:
    """Read the pull queue ``queue``'s stats and task list (two calls).

    Parameters:
        now: seconds since the epoch, against which ages and leases are read.

    Raises:
        QueueNotFound: the queue does not exist (or is not a pull queue).
        TaskQueueError: the service refused, or could not be reached.
    """
    stats = client.get_queue(queue, stats=True).get("stats", {})
    listed = client.list_tasks(queue)
    now_micros = int(now * 1_000_000)
    tags: dict[str, TagStatus] = collections.defaultdict(TagStatus)
    leased_now = 0
    for task in listed:
        # leaseTimestamp is "0" when not leased; some servers give the ETA, which has passed then.
        leased = int(task.get("leaseTimestamp") or 0) > now_micros
        leased_now += leased
        if task.get("tag") is not None:
            tags[task["tag"]].tasks += 1
            tags[task["tag"]].leased_now += leased
    earliest_eta = int(stats.get("oldestTask") or 0)
    enqueued = [int(task["enqueueTimestamp"]) for task in listed if task.get("enqueueTimestamp")]
    total_tasks = int(stats.get("totalTasks") or 0)
    return QueueStatus(
        queue=queue,
        total_tasks=total_tasks,
        longest_wait_seconds=_age(now, earliest_eta) if earliest_eta else None,
        oldest_enqueued_age_seconds=_age(now, min(enqueued) / 1_000_000) if enqueued else None,
        leased_last_minute=int(stats.get("leasedLastMinute") or 0),
        leased_last_hour=int(stats.get("leasedLastHour") or 0),
        listed_tasks=len(listed),
        # A full list may be the whole queue: more only when the stats count more.
        truncated=len(listed) >= MAX_LIST_TASKS and total_tasks > len(listed),
        leased_now=leased_now,
        tags=dict(tags),
    )


def _age(now: float, since: float) -> float:
    """Seconds from ``since`` to ``now``, to the millisecond; 0 for a time still to come."""
    return round(max(now - since, 0.0), 3)


@dataclass
class Report:
    """One refresh: every queue asked for, found or not."""

    project: str
    time: float
    queues: list[QueueStatus]
    #: Queues that do not exist, with the error that says so.
    missing: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "schema": SCHEMA,
            "time": _utc(self.time).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "project": self.project,
            "queues": [queue.as_json() for queue in self.queues],
            "missing": sorted(self.missing),
        }


def report(client: TaskQueueClient, queues: list[str]) -> Report:
    """The status of every queue of ``queues``.

    Raises:
        TaskQueueError: other than a missing queue.
    """
    now = time.time()
    found, missing = [], {}
    for queue in queues:
        try:
            found.append(queue_status(client, queue, now))
        except QueueNotFound:
            missing[queue] = (
                f"queue {queue!r} does not exist in project {client.project!r}, or is not a pull queue"
            )
    return Report(client.project, now, found, missing)


def render_text(result: Report) -> str:
    """The table people read: a line per queue, and a line per tag below a queue holding tagged tasks.

    Names and tags are written with :func:`~kombu_appengine.cli_common.printable`:
    a tag holding a newline or an escape sequence cannot forge a row or
    reach the terminal.
    """
    header = ("QUEUE", "TASKS", "LEASED NOW", "LONGEST WAIT", "OLDEST", "LEASED 1M", "LEASED 1H")
    rows = [header]
    for status in result.queues:
        mark = AT_LEAST if status.truncated else ""
        rows.append(
            (
                printable(status.queue),
                str(status.total_tasks),
                f"{mark}{status.leased_now}",
                format_age(status.longest_wait_seconds),
                _at_least(mark, format_age(status.oldest_enqueued_age_seconds)),
                str(status.leased_last_minute),
                str(status.leased_last_hour),
            )
        )
        for tag, counts in sorted(status.tags.items()):
            tag_cells = (f"  tag {printable(tag)}", f"{mark}{counts.tasks}", f"{mark}{counts.leased_now}")
            rows.append((*tag_cells, "", "", "", ""))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [f"project {printable(result.project)} at {_utc(result.time):%Y-%m-%d %H:%M:%S} UTC"]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    if any(status.truncated for status in result.queues):
        lines.append(
            f"{AT_LEAST}: at least, from the first {MAX_LIST_TASKS} tasks the API lists; the queue holds more"
        )
    return "\n".join(lines)


def _at_least(mark: str, shown: str) -> str:
    return shown if shown == "-" else f"{mark}{shown}"


def format_age(seconds: float | None) -> str:
    """An age for people: ``42s``, ``5m03s``, ``2h05m``, ``3d04h``; ``-`` for none (an empty queue)."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pullqueue_status",
        description="Show how many tasks each pull queue holds, how long the task available "
        "longest has waited, how old the oldest is, and how many are leased.",
    )
    parser.add_argument(
        "--queue",
        action="append",
        default=[],
        type=queue_name,
        metavar="NAME",
        help="a pull queue to show (repeatable; a kombu queue name is translated as the transport does)",
    )
    parser.add_argument(
        "--queue-yaml", metavar="PATH", help="show every pull queue an App Engine queue.yaml declares"
    )
    add_connection_options(parser)
    parser.add_argument(
        "--json", action="store_true", help=f"one JSON document a line, schema {SCHEMA!r} (see README)"
    )
    parser.add_argument(
        "--watch",
        type=number("seconds", low=WATCH_MIN_SECONDS, high=WATCH_MAX_SECONDS),
        metavar="SECS",
        help=f"refresh every SECS seconds ({WATCH_MIN_SECONDS:g} to {WATCH_MAX_SECONDS:g}) until Ctrl-C "
        "or SIGTERM (exit status 0)",
    )
    add_log_level_option(parser, default="WARNING")
    add_version_option(parser)
    return parser


def _queues(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    names = []
    if args.queue_yaml:
        from .emulator.queue_yaml import QueueYamlError, load_queue_yaml

        try:
            names += [config.name for config in load_queue_yaml(args.queue_yaml) if config.mode == "pull"]
        except QueueYamlError as error:
            parser.exit(1, f"pullqueue_status: {error}\n")
        if not names:
            parser.exit(1, f"pullqueue_status: {args.queue_yaml} declares no pull queue\n")
    names += [pull_queue_name(name) for name in args.queue]
    if not names:
        parser.error(
            "name the queues to show with --queue NAME (repeatable) or --queue-yaml PATH: "
            "the API cannot list a project's queues"
        )
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> None:
    """The ``pullqueue_status`` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, "text", "%(levelname)s %(name)s: %(message)s")
    queues = _queues(parser, args)
    options = connection_options(args)
    if args.watch is not None:
        # The next refresh is the retry: a refresh that fails is one line, not one a retry.
        options["request_retries"] = 0
    try:
        client = Connection(
            transport="kombu_appengine:Transport", transport_options=options
        ).transport.client_for_channels
    except TaskQueueError as error:
        sys.exit(_error_line(error))
    # SIGTERM ends a watch as Ctrl-C does, at once, even inside a call to the service.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if args.watch else None
    try:
        _show(client, queues, args)
    except KeyboardInterrupt:
        # Ctrl-C is how a watch ends; a single look it interrupts.
        if args.watch is None:
            sys.exit(130)
    except BrokenPipeError:
        _reader_gone()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _show(client: TaskQueueClient, queues: list[str], args: argparse.Namespace) -> None:
    """Print the queues' status, once or, with ``--watch``, until interrupted."""
    while True:
        try:
            result = report(client, queues)
        except TaskQueueConnectionError as error:
            if args.watch is None:
                sys.exit(_error_line(error))
            # Watching is for a while: the service may be back at the next refresh.
            print(_error_line(error), file=sys.stderr, flush=True)
        except TaskQueueError as error:
            sys.exit(_error_line(error))
        else:
            output = json.dumps(result.as_json(), ensure_ascii=False) if args.json else render_text(result)
            print(output, flush=True)
            if result.missing:
                sys.exit("\n".join(_error_line(error) for error in result.missing.values()))
        if args.watch is None:
            return
        time.sleep(args.watch)
        if not args.json:
            print(flush=True)


def _reader_gone() -> NoReturn:
    """End quietly when what reads the output went away (``| head -1``), as Unix tools do.

    They die of SIGPIPE, which the shell reports as status 141: so does
    this. Python would write what is left of stdout again at exit and
    complain, so stdout goes to the null device first.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    sys.exit(128 + signal.SIGPIPE)


def _error_line(error: object) -> str:
    """A line for stderr: the error's text comes from the service, so it is made printable."""
    return f"pullqueue_status: {printable(str(error))}"


if __name__ == "__main__":
    main()
