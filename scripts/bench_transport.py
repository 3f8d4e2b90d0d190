#!/usr/bin/env python3
"""Benchmark the pull-queue transport against kombu's in-memory transport.

Run it with the package installed (``pip install -e .``)::

    scripts/bench_transport.py                       # 5000 messages, num_tasks 10
    scripts/bench_transport.py --num-tasks 1,10,100  # one row per num_tasks
    scripts/bench_transport.py --messages 200 --by-path

Both transports run the same two loops in the same process:

* publish: ``SimpleQueue.put`` of ``--publish-messages`` messages;
* consume: ``SimpleQueue.get(block=False)`` and ``message.ack()`` of
  ``--messages`` messages from a pre-filled queue.

``kombu_appengine:Transport`` talks over HTTP to an in-process emulator. Its
queue is pre-filled with what kombu published in the publish loop, topped up
through the emulator's service (no HTTP) with copies of those same payloads,
so every task is exactly what the transport stores.

It prints a table: publish and consume messages per second of each
transport, the ratio memory/appengine, and the HTTP calls the emulator
received per published and per consumed message (counted during each loop
only), next to the bound for consuming, ``1 + 1/num_tasks``: one
``tasks.delete`` per ack plus one ``tasks.lease`` per ``num_tasks`` gets.
When ``--messages`` is not a multiple of ``num_tasks`` the last, partial
lease is allowed too. Then one line per ``num_tasks``::

    HTTP calls per consumed message: 1.1000 (bound 1 + 1/10 = 1.1000): ok

It exits with status 1 when a consume loop made more HTTP calls than the
bound allows (a count, not a time, so it is reliable on any machine), or
when a message was missing. ``--by-path`` also prints the requests of each
consume loop by method and path, to find the calls that should not be there.
"""

from __future__ import annotations

import argparse
import collections
import math
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from kombu import Connection

from kombu_appengine.emulator import Emulator
from kombu_appengine.transport import EMULATOR_PROJECT

#: The pull queue the benchmark fills and drains.
QUEUE = "bench"
#: Most tasks the emulator lists: how many published payloads are reused.
TEMPLATE_LIMIT = 100
#: A task id in a request path, replaced when counting requests by path.
_TASK_IN_PATH = re.compile(r"(/tasks/)(?!lease\b)[^/?]+")


@dataclass
class Rates:
    """What one transport did with one ``num_tasks``."""

    label: str
    num_tasks: int | None
    publish_rate: float
    consume_rate: float
    publish_calls: float | None = None
    consume_calls: int | None = None
    consumed: int = 0
    by_path: Counter[str] | None = None

    @property
    def calls_per_message(self) -> float | None:
        if self.consume_calls is None or not self.consumed:
            return None
        return self.consume_calls / self.consumed

    @property
    def allowed_calls(self) -> int | None:
        """One delete a message, one lease a ``num_tasks`` (the last may be partial)."""
        if self.num_tasks is None:
            return None
        return self.consumed + math.ceil(self.consumed / self.num_tasks)


def body_of(number: int) -> dict[str, Any]:
    """A small, realistic message body."""
    return {"task": "resize", "number": number, "args": [f"gs://bucket/image-{number:06d}.jpg", 640, 480]}


def timed(loop: Callable[[], None]) -> float:
    """Seconds ``loop`` took."""
    started = time.perf_counter()
    loop()
    return time.perf_counter() - started


def publish(queue: Any, count: int) -> None:
    for number in range(count):
        queue.put(body_of(number))


def consume(queue: Any, count: int) -> None:
    for _ in range(count):
        message = queue.get(block=False)
        message.ack()


def measure_memory(messages: int, publish_messages: int) -> Rates:
    """The in-memory transport on the same loops."""
    with Connection("memory://") as connection:
        queue = connection.SimpleQueue(QUEUE)
        publish_seconds = timed(lambda: publish(queue, publish_messages))
        publish(queue, messages - publish_messages)
        consume_seconds = timed(lambda: consume(queue, messages))
        left = queue.qsize()
        queue.close()
    if left:
        raise SystemExit(f"memory://: {left} messages left in the queue after consuming")
    return Rates(
        "memory://", None, publish_messages / publish_seconds, messages / consume_seconds, consumed=messages
    )


class PathCounter:
    """Counts the emulator's requests by method and path while switched on."""

    def __init__(self, emulator: Emulator) -> None:
        self.counts: Counter[str] = collections.Counter()
        self.on = False
        dispatch = emulator.api.dispatch

        def counting(method: str, target: str, *args: Any, **kwargs: Any) -> Any:
            if self.on:
                path = _TASK_IN_PATH.sub(r"\1{task}", target.partition("?")[0])
                self.counts[f"{method} {path}"] += 1
            return dispatch(method, target, *args, **kwargs)

        emulator.api.dispatch = counting

    def take(self) -> Counter[str]:
        counts, self.counts = self.counts, collections.Counter()
        return counts


def fill(emulator: Emulator, templates: list[str], count: int) -> None:
    """Insert ``count`` tasks carrying the published payloads, in turn, without HTTP."""
    for number in range(count):
        emulator.service.insert(
            EMULATOR_PROJECT, QUEUE, {"payloadBase64": templates[number % len(templates)]}
        )


def published_payloads(emulator: Emulator) -> list[str]:
    """The payloads of the tasks kombu published (the first :data:`TEMPLATE_LIMIT`)."""
    listed = emulator.service.list_tasks(EMULATOR_PROJECT, QUEUE).get("items", [])
    return [
        emulator.service.get_task(EMULATOR_PROJECT, QUEUE, task["id"])["payloadBase64"]
        for task in listed[:TEMPLATE_LIMIT]
    ]


def tasks_left(emulator: Emulator) -> int:
    stats = emulator.service.get_queue(EMULATOR_PROJECT, QUEUE, get_stats=True)["stats"]
    return int(stats["totalTasks"])


def measure_appengine(
    emulator: Emulator,
    num_tasks: int,
    messages: int,
    publish_messages: int,
    templates: list[str],
    paths: PathCounter | None,
) -> Rates:
    """The pull-queue transport with ``num_tasks``; fills ``templates`` on first use."""
    options = {"api_endpoint": emulator.url, "num_tasks": num_tasks}
    with Connection(transport="kombu_appengine:Transport", transport_options=options) as connection:
        queue = connection.SimpleQueue(QUEUE)
        publish_rate = publish_calls = None
        if not templates:
            before = emulator.requests
            publish_seconds = timed(lambda: publish(queue, publish_messages))
            publish_calls = (emulator.requests - before) / publish_messages
            publish_rate = publish_messages / publish_seconds
            templates.extend(published_payloads(emulator))
            fill(emulator, templates, messages - publish_messages)
        else:
            fill(emulator, templates, messages)
        if paths is not None:
            paths.take()
            paths.on = True
        before = emulator.requests
        consume_seconds = timed(lambda: consume(queue, messages))
        consume_calls = emulator.requests - before
        if paths is not None:
            paths.on = False
        queue.close()
    left = tasks_left(emulator)
    if left:
        raise SystemExit(
            f"num_tasks={num_tasks}: {left} tasks left in the queue after consuming "
            f"and acknowledging {messages}"
        )
    return Rates(
        "kombu_appengine",
        num_tasks,
        publish_rate,
        messages / consume_seconds,
        publish_calls,
        consume_calls,
        messages,
        paths.take() if paths is not None else None,
    )


def number_list(text: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        numbers = []
    if not numbers or any(not 1 <= number <= 1000 for number in numbers):
        raise argparse.ArgumentTypeError(f"expected numbers from 1 to 1000 separated by commas, not {text!r}")
    return numbers


def positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, not {text!r}")
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages",
        type=positive,
        default=5000,
        help="messages each consume loop gets and acks (default 5000)",
    )
    parser.add_argument(
        "--num-tasks",
        type=number_list,
        default=[10],
        metavar="N[,N...]",
        help="the transport's num_tasks; a list such as 1,10,100 runs one row each (default 10)",
    )
    parser.add_argument(
        "--publish-messages",
        type=positive,
        default=1000,
        help="messages each publish loop puts; capped at --messages (default 1000)",
    )
    parser.add_argument(
        "--by-path",
        action="store_true",
        help="also print each consume loop's HTTP requests by method and path",
    )
    args = parser.parse_args(argv)
    args.publish_messages = min(args.publish_messages, args.messages)
    return args


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(args: argparse.Namespace, memory: Rates, rows: list[Rates]) -> bool:
    """Print the table and the verdicts; whether every row kept to the bound."""
    print(
        f"{args.messages} messages consumed with SimpleQueue.get(block=False) + ack, "
        f"{args.publish_messages} published with SimpleQueue.put"
    )
    header = (
        "transport",
        "num_tasks",
        "publish msg/s",
        "consume msg/s",
        "memory/this",
        "HTTP/publish",
        "HTTP/consumed",
        "bound 1+1/n",
    )
    table = [
        header,
        (
            memory.label,
            "-",
            fmt(memory.publish_rate, ".0f"),
            fmt(memory.consume_rate, ".0f"),
            "1.0",
            "-",
            "-",
            "-",
        ),
    ]
    for row in rows:
        table.append(
            (
                row.label,
                str(row.num_tasks),
                fmt(row.publish_rate, ".0f"),
                fmt(row.consume_rate, ".0f"),
                fmt(memory.consume_rate / row.consume_rate, ".1f"),
                fmt(row.publish_calls, ".4f"),
                fmt(row.calls_per_message, ".4f"),
                fmt(1 + 1 / row.num_tasks, ".4f"),
            )
        )
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    for line in table:
        print(
            "  ".join(
                cell.ljust(width) if column == 0 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(line, widths))
            )
        )
    print("(memory/this: how many times faster kombu's in-memory transport consumed)")
    first = rows[0]
    if first.publish_rate is not None:
        print(f"publish ratio memory/appengine: {memory.publish_rate / first.publish_rate:.1f}")
    within = True
    for row in rows:
        ok = row.consume_calls <= row.allowed_calls
        within = within and ok
        print(
            f"num_tasks={row.num_tasks}: HTTP calls per consumed message: {row.calls_per_message:.4f} "
            f"(bound 1 + 1/{row.num_tasks} = {1 + 1 / row.num_tasks:.4f}; {row.consume_calls} calls, "
            f"at most {row.allowed_calls} allowed): {'ok' if ok else 'OVER THE BOUND'}"
        )
        if row.by_path is not None:
            for path, count in row.by_path.most_common():
                print(f"    {count:8d}  {path}")
    if not within and not args.by_path:
        print("run again with --by-path to see which requests are extra")
    return within


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    memory = measure_memory(args.messages, args.publish_messages)
    rows: list[Rates] = []
    with Emulator(queues=[QUEUE]) as emulator:
        paths = PathCounter(emulator) if args.by_path else None
        templates: list[str] = []
        for num_tasks in args.num_tasks:
            rows.append(
                measure_appengine(emulator, num_tasks, args.messages, args.publish_messages, templates, paths)
            )
    return 0 if report(args, memory, rows) else 1


if __name__ == "__main__":
    sys.exit(main())
