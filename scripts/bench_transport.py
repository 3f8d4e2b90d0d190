#!/usr/bin/env python3
"""Benchmark consume+ack of kombu_appengine:Transport beside kombu's SQS and Redis transports.

Run it with the package installed (``pip install -e '.[bench]'`` for the peers)::

    scripts/bench_transport.py                         # 0 and 20 ms round trip, every peer found
    scripts/bench_transport.py --rtt-ms 0,5,20,50 --plot throughput.png
    scripts/bench_transport.py --no-peers --messages 500 --by-path

Every transport runs the same loop, ``SimpleQueue.get(block=False)`` and
``message.ack()``, against its own server in a process of its own:

* ``kombu_appengine:Transport`` against ``pullqueue_emulator``, with its
  default options and ``num_tasks`` 100 (``--num-tasks``);
* kombu's SQS transport against ``moto_server`` (``moto[server]``, ``boto3``
  and ``pycurl``);
* kombu's Redis transport against ``redis-server``, when it is on PATH.

Each server sits behind one delaying loopback proxy
(``scripts/delay_proxy.py``) for every round trip of ``--rtt-ms``, 0
included, so all of them pay the same round trip through the same proxy.
Queues are filled beforehand, directly (not through the proxy, not timed).

It prints one row per transport and round trip: messages consumed and
acknowledged per second and, for this transport, HTTP calls per consumed
message: every request from the first get to the end of the last ack's
batch (``channel.flush()``, which the loop's time includes). Then the
targets: calls per message at most 0.03 with ``num_tasks=100`` (a count,
checked; the script exits 1 above it, or when a message is missing), and
two ratios measured side by side in the same run, reported against their
targets but never failing the run (times depend on the machine):
consume+ack at 20 ms at least 20 times kombu's SQS transport's, and at 0 ms
at least 1.5 times kombu's Redis transport's. ``--plot FILE.png`` draws
throughput against round trip per transport (matplotlib).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httplib2
from kombu import Connection

from kombu_appengine.client import TaskQueueClient, root_url_of
from kombu_appengine.transport import EMULATOR_PROJECT, Settings
from kombu_appengine.transport.leases import leases_needed

#: The queue every transport fills and drains.
QUEUE = "bench"
#: Most HTTP calls per consumed message with the default options and num_tasks 100.
CALLS_TARGET = 0.03
#: num_tasks at which CALLS_TARGET holds.
CALLS_TARGET_NUM_TASKS = 100
#: consume+ack at 20 ms: this transport ÷ kombu's SQS transport, at least.
SQS_TARGET = 20.0
#: consume+ack at 0 ms: this transport ÷ kombu's Redis transport, at least.
REDIS_TARGET = 1.5
#: The proxy script.
PROXY = Path(__file__).resolve().with_name("delay_proxy.py")
#: A task id in a request path, replaced when counting requests by path.
_TASK_IN_PATH = re.compile(r"(/tasks/)(?!lease\b)[^/?]+")
#: Longest wait for a server to start, in seconds.
START_TIMEOUT = 30.0


def body_of(number: int) -> dict[str, Any]:
    """A small, realistic message body."""
    return {"task": "resize", "number": number, "args": [f"gs://bucket/image-{number:06d}.jpg", 640, 480]}


# -- servers, each a process of its own --------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(host: str, port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args[0]} exited with status {process.returncode} before it was ready")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise SystemExit(f"{process.args[0]} did not listen on {host}:{port} within {START_TIMEOUT}s")


@contextlib.contextmanager
def running(command: list[str], ready: Callable[[subprocess.Popen], Any]) -> Iterator[Any]:
    """Start ``command`` in its own process group; ``ready(process)`` says where it listens."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
    )
    try:
        yield ready(process)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def emulator() -> contextlib.AbstractContextManager[str]:
    """``pullqueue_emulator`` with the queue ``bench``; gives its URL."""

    def ready(process: subprocess.Popen) -> str:
        line = process.stdout.readline() if process.stdout else ""
        if not line.startswith("listening on "):
            raise SystemExit(f"pullqueue_emulator did not start: {line!r}")
        return line.split()[-1]

    command = [sys.executable, "-m", "kombu_appengine.emulator", "--port", "0", "--queue", QUEUE]
    return running(command, ready)


def moto_server(executable: str) -> contextlib.AbstractContextManager[str]:
    """``moto_server`` on a free port; gives ``host:port``."""
    port = free_port()

    def ready(process: subprocess.Popen) -> str:
        wait_for_port("127.0.0.1", port, process)
        return f"127.0.0.1:{port}"

    return running([executable, "-H", "127.0.0.1", "-p", str(port)], ready)


def redis_server(executable: str) -> contextlib.AbstractContextManager[str]:
    """``redis-server`` on a free port, without persistence; gives ``host:port``."""
    port = free_port()

    def ready(process: subprocess.Popen) -> str:
        wait_for_port("127.0.0.1", port, process)
        return f"127.0.0.1:{port}"

    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return running(command, ready)


def delay_proxy(
    rtt_ms: float, forwards: list[tuple[str, str]]
) -> contextlib.AbstractContextManager[list[str]]:
    """``scripts/delay_proxy.py`` for ``(listen, target)`` pairs; gives the addresses it listens on."""

    def ready(process: subprocess.Popen) -> list[str]:
        listening = []
        for _ in forwards:
            line = process.stdout.readline() if process.stdout else ""
            if "->" not in line:
                raise SystemExit(f"the delaying proxy did not start: {line!r}")
            listening.append(line.split(" -> ")[0].strip())
        process.stdout.readline() if process.stdout else None  # "ready"
        return listening

    command = [sys.executable, str(PROXY), "--rtt-ms", str(rtt_ms)]
    for listen, target in forwards:
        command += ["--forward", f"{listen}={target}"]
    return running(command, ready)


# -- counting this transport's HTTP calls -----------------------------------------


class HttpCalls:
    """Every request sent through httplib2 in this process (this transport's only), by method and path."""

    def __init__(self) -> None:
        self.total = 0
        self.by_path: Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        request = httplib2.Http.request
        calls = self

        def counting(http: Any, uri: str, method: str = "GET", *args: Any, **kwargs: Any) -> Any:
            path = _TASK_IN_PATH.sub(r"\1{task}", uri.split("://", 1)[-1].partition("/")[2].partition("?")[0])
            with calls._lock:
                calls.total += 1
                calls.by_path[f"{method} /{path}"] += 1
            return request(http, uri, method, *args, **kwargs)

        httplib2.Http.request = counting  # type: ignore[method-assign]

    def take(self) -> tuple[int, Counter[str]]:
        with self._lock:
            taken = self.total, self.by_path
            self.total, self.by_path = 0, collections.Counter()
            return taken


# -- the measurements ----------------------------------------------------------------


@dataclass
class Row:
    """What one transport did at one round trip."""

    label: str
    rtt_ms: float
    consumed: int
    seconds: float
    num_tasks: int | None = None
    calls: int | None = None
    by_path: Counter[str] | None = None

    @property
    def rate(self) -> float:
        return self.consumed / self.seconds

    @property
    def calls_per_message(self) -> float | None:
        return None if self.calls is None else self.calls / self.consumed


def fill_appengine(url: str, count: int) -> None:
    """Put ``count`` messages on the emulator's queue: one published by kombu, copied by batch inserts."""
    with Connection(transport="kombu_appengine:Transport", transport_options={"api_endpoint": url}) as conn:
        conn.SimpleQueue(QUEUE).put(body_of(0))
    client = TaskQueueClient(EMULATOR_PROJECT, root_url_of(url))
    [task] = client.lease(QUEUE, 1, 60)
    client.delete(QUEUE, task["id"])
    template = task["payloadBase64"]
    for start in range(0, count, 1000):
        batch = client.service.new_batch_http_request()
        for _ in range(min(1000, count - start)):
            body = {"queueName": QUEUE, "payloadBase64": template}
            batch.add(client.tasks.insert(project=EMULATOR_PROJECT, taskqueue=QUEUE, body=body))
        batch.execute()


def tasks_left(url: str) -> int:
    client = TaskQueueClient(EMULATOR_PROJECT, root_url_of(url))
    return int(client.get_queue(QUEUE, stats=True)["stats"]["totalTasks"])


def measure_appengine(
    url: str, proxied_url: str, rtt_ms: float, num_tasks: int, messages: int, calls: HttpCalls
) -> Row:
    """This transport, default options but ``num_tasks``, consuming ``messages`` through the proxy."""
    fill_appengine(url, messages)
    options = {"api_endpoint": proxied_url, "num_tasks": num_tasks}
    with Connection(transport="kombu_appengine:Transport", transport_options=options) as connection:
        queue = connection.SimpleQueue(QUEUE)
        calls.take()
        started = time.perf_counter()
        for _ in range(messages):
            queue.get(block=False).ack()
        connection.default_channel.flush()
        seconds = time.perf_counter() - started
        total, by_path = calls.take()
        queue.close()
    left = tasks_left(url)
    if left:
        raise SystemExit(f"kombu_appengine at {rtt_ms:g} ms: {left} tasks left after consuming {messages}")
    return Row("kombu_appengine", rtt_ms, messages, seconds, num_tasks, total, by_path)


@dataclass
class Peer:
    """One of kombu's own transports, with its server."""

    label: str
    #: Why it cannot run here, if it cannot.
    missing: str | None
    #: Starts the server; gives its ``host:port``.
    server: Callable[[], contextlib.AbstractContextManager[str]]
    #: The kombu URL and transport options for a server at ``host:port``.
    connection: Callable[[str], tuple[str, dict[str, Any]]]


def peers() -> list[Peer]:
    """kombu's SQS transport on moto_server, and its Redis transport, as far as they are installed."""
    found = []
    moto = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    missing = None
    try:
        import boto3  # noqa: F401
        import pycurl  # noqa: F401
    except ImportError as error:
        missing = f"{error.name} is not installed (pip install '.[bench]')"
    if missing is None and not os.access(moto, os.X_OK):
        missing = "moto_server is not installed (pip install '.[bench]')"

    def sqs(address: str) -> tuple[str, dict[str, Any]]:
        options = {"region": "us-east-1", "is_secure": False, "wait_time_seconds": 0, "polling_interval": 0}
        return f"sqs://bench:bench@{address}", options

    found.append(Peer("SQS (moto_server)", missing, lambda: moto_server(moto), sqs))
    redis = shutil.which("redis-server")
    missing = None if redis else "redis-server is not on PATH (Debian: apt-get install redis-server)"
    if missing is None:
        try:
            import redis as redis_client  # noqa: F401
        except ImportError:
            missing = "the redis package is not installed (pip install '.[bench]')"

    def redis_url(address: str) -> tuple[str, dict[str, Any]]:
        return f"redis://{address}/0", {}

    found.append(Peer("Redis", missing, lambda: redis_server(redis or "redis-server"), redis_url))
    return found


def measure_peer(peer: Peer, address: str, proxied: str, rtt_ms: float, messages: int, seconds: float) -> Row:
    """A peer consuming up to ``messages`` through the proxy, for at most ``seconds``."""
    url, options = peer.connection(address)
    with Connection(url, transport_options=options) as direct:
        queue = direct.SimpleQueue(QUEUE)
        try:
            ready = queue.qsize()
        except direct.channel_errors:  # Redis: an empty queue does not exist
            ready = 0
        for number in range(max(0, messages - ready)):
            queue.put(body_of(number))
        queue.close()
    url, options = peer.connection(proxied)
    with Connection(url, transport_options=options) as connection:
        queue = connection.SimpleQueue(QUEUE)
        consumed = 0
        started = time.perf_counter()
        deadline = started + seconds
        while consumed < messages and time.perf_counter() < deadline:
            queue.get(block=False).ack()
            consumed += 1
        elapsed = time.perf_counter() - started
        queue.close()
    return Row(peer.label, rtt_ms, consumed, elapsed)


# -- the run -----------------------------------------------------------------------------


def number_list(kind: type, low: float, high: float) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            numbers = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            numbers = []
        if not numbers or any(not low <= number <= high for number in numbers):
            raise argparse.ArgumentTypeError(f"expected numbers from {low} to {high} separated by commas")
        return numbers

    return parse


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
    parser.add_argument("--messages", type=positive, default=5000, help="messages this transport consumes")
    parser.add_argument(
        "--num-tasks",
        type=number_list(int, 1, 1000),
        default=[CALLS_TARGET_NUM_TASKS],
        metavar="N[,N...]",
        help=f"this transport's num_tasks, one row each (default {CALLS_TARGET_NUM_TASKS})",
    )
    parser.add_argument(
        "--rtt-ms",
        type=number_list(float, 0, 1000),
        default=[0.0, 20.0],
        metavar="MS[,MS...]",
        help="round trips the proxy adds, one row each (default 0,20)",
    )
    parser.add_argument(
        "--peer-messages", type=positive, default=300, help="most messages each peer consumes (default 300)"
    )
    parser.add_argument(
        "--peer-seconds",
        type=float,
        default=8.0,
        help="most seconds each peer consumes for, at each round trip (default 8)",
    )
    parser.add_argument("--no-peers", action="store_true", help="measure this transport only")
    parser.add_argument("--plot", metavar="FILE.png", help="draw throughput against round trip per transport")
    parser.add_argument("--by-path", action="store_true", help="also print this transport's requests by path")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    calls = HttpCalls()
    rows: list[Row] = []
    notes: list[str] = []
    with emulator() as url:
        port = url.rsplit(":", 1)[1]
        for rtt in args.rtt_ms:
            # The emulator answers only requests addressed to it: the proxy
            # takes its port on the IPv6 loopback, which the emulator also
            # counts as its own name.
            with delay_proxy(rtt, [(f"[::1]:{port}", f"127.0.0.1:{port}")]) as [proxied]:
                for num_tasks in args.num_tasks:
                    row = measure_appengine(url, f"http://{proxied}", rtt, num_tasks, args.messages, calls)
                    rows.append(row)
        if args.no_peers:
            return rows, notes
        for peer in peers():
            if peer.missing:
                notes.append(f"{peer.label}: skipped, {peer.missing}")
                continue
            with peer.server() as address:
                for rtt in args.rtt_ms:
                    with delay_proxy(rtt, [("127.0.0.1:0", address)]) as [proxied]:
                        rows.append(
                            measure_peer(peer, address, proxied, rtt, args.peer_messages, args.peer_seconds)
                        )
    return rows, notes


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(args: argparse.Namespace, rows: list[Row], notes: list[str]) -> bool:
    """Print the table and the targets; whether the counts kept to theirs."""
    default_batch = Settings.ack_batch_size
    header = ("transport", "RTT ms", "num_tasks", "messages", "consume+ack msg/s", "HTTP calls/message")
    table = [header]
    for row in rows:
        table.append(
            (
                row.label,
                f"{row.rtt_ms:g}",
                fmt(row.num_tasks, "d"),
                str(row.consumed),
                f"{row.rate:.1f}",
                fmt(row.calls_per_message, ".4f"),
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
    for note in notes:
        print(note)
    within = True
    for row in rows:
        if row.calls is None or row.num_tasks is None:
            continue
        # The leases (growing from one task to num_tasks), a batch of deletes
        # per ack_batch_size, and two more: the lease asked ahead that finds
        # the queue empty, and the flush of the last, partial batch.
        allowed = leases_needed(row.consumed, row.num_tasks) + math.ceil(row.consumed / default_batch) + 2
        target = CALLS_TARGET if row.num_tasks == CALLS_TARGET_NUM_TASKS else None
        ok = row.calls <= allowed and (target is None or row.calls_per_message <= target)  # type: ignore[operator]
        within = within and ok
        print(
            f"num_tasks={row.num_tasks} at {row.rtt_ms:g} ms: HTTP calls per consumed message: "
            f"{row.calls_per_message:.4f} ({row.calls} calls, at most {allowed} allowed"
            + (f"; target <= {target}" if target is not None else "")
            + f"): {'ok' if ok else 'OVER THE BOUND'}"
        )
        if args.by_path and row.by_path is not None:
            for path, count in row.by_path.most_common():
                print(f"    {count:8d}  {path}")
    ours = {
        row.rtt_ms: row
        for row in rows
        if row.label == "kombu_appengine" and row.num_tasks == args.num_tasks[0]
    }
    for label, rtt, target in (("SQS (moto_server)", 20.0, SQS_TARGET), ("Redis", 0.0, REDIS_TARGET)):
        peer = next((row for row in rows if row.label == label and row.rtt_ms == rtt), None)
        if peer is None or rtt not in ours:
            continue
        ratio = ours[rtt].rate / peer.rate
        verdict = "met" if ratio >= target else "NOT MET (a time: reported, not failed)"
        print(
            f"consume+ack at {rtt:g} ms, kombu_appengine / {label}: {ratio:.1f}x "
            f"(target >= {target:g}x): {verdict}"
        )
    return within


def plot(path: str, rows: list[Row]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[Row]] = collections.defaultdict(list)
    for row in rows:
        label = row.label if row.num_tasks is None else f"{row.label} (num_tasks={row.num_tasks})"
        series[label].append(row)
    for label, points in series.items():
        points.sort(key=lambda row: row.rtt_ms)
        axes.plot([row.rtt_ms for row in points], [row.rate for row in points], marker="o", label=label)
    axes.set_yscale("log")
    axes.set_xlabel("round trip added by the proxy (ms)")
    axes.set_ylabel("consume+ack (messages/s, log scale)")
    axes.set_title("SimpleQueue.get + ack through a delaying loopback proxy")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"plot written to {path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows, notes = run(args)
    within = report(args, rows, notes)
    if args.plot:
        plot(args.plot, rows)
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
