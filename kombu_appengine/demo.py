"""The project's main job in one command: ``python -m kombu_appengine.demo``.

Starts the emulator with a pull queue ``demo``, enqueues tasks the way
producers do (half as raw JSON through a plain REST insert, as App Engine
code would; half through kombu), runs ``pullqueue_worker`` with several
processes on them while a progress bar shows the queue draining, and ends
with a summary. The queue is checked empty through the API at the end.
Exits 0 when every task was processed and the queue is empty.

The emulator's dashboard (its address is printed first) shows the queue
draining; with ``--keep`` the emulator and the dashboard stay up after the
summary, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from kombu import Connection

from .api import EMULATOR_HOST_ENV, MAX_NUM_TASKS, SERVICE_PATH, encode_payload
from .cli_common import integer, positive_int
from .client import TaskQueueClient
from .emulator import Emulator

#: The demo's pull queue.
QUEUE = "demo"
#: Share of first attempts that fail on purpose, to show retries.
FAILURE_RATE = 0.02


def process(payload: Any) -> str:
    """The demo's task: hash the payload a little; fail now and then on a first try."""
    text = json.dumps(payload, sort_keys=True).encode("utf-8")
    digest = text
    for _ in range(200):
        digest = hashlib.sha256(digest).digest()
    if random.random() < FAILURE_RATE:
        raise RuntimeError(f"demo failure for task {payload.get('n')} (it will be retried)")
    return digest.hex()


def _insert_raw(host: str, count: int, first: int) -> None:
    """Insert JSON tasks with plain HTTP requests, as App Engine code or curl would."""
    connection = http.client.HTTPConnection(host)
    path = f"{SERVICE_PATH}demo-app/taskqueues/{QUEUE}/tasks"
    try:
        for n in range(first, first + count):
            payload = json.dumps({"n": n, "source": "rest"}).encode("utf-8")
            body = json.dumps({"payloadBase64": encode_payload(payload)})
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"insert answered {response.status}")
    finally:
        connection.close()


def _progress(left: int, total: int, started: float, stream: Any) -> None:
    width = 40
    done = total - left
    filled = int(width * done / total) if total else width
    rate = done / (time.monotonic() - started or 1e-9)
    line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} done, {left} in queue, {rate:.0f}/s"
    if stream.isatty():
        stream.write("\r" + line)
    else:
        stream.write(line + "\n")
    stream.flush()


def run(tasks: int, processes: int, num_tasks: int, keep: bool = False) -> int:
    """Run the demo; returns the exit status.

    With ``keep``, the emulator (and its dashboard) serve on after the
    summary until SIGINT (Ctrl-C) or SIGTERM.
    """
    err = sys.stderr
    with Emulator(queues=[QUEUE]) as emulator:
        print(f"emulator listening on {emulator.url}, pull queue {QUEUE!r}", file=err)
        print(
            f"dashboard: {emulator.url}/ (open it in a browser to watch the queue drain)",
            file=err,
            flush=True,
        )
        rest_count = tasks // 2
        _insert_raw(emulator.host, rest_count, 0)
        options = {"api_endpoint": emulator.url, "project_name": "demo-app"}
        with Connection(transport="kombu_appengine:Transport", transport_options=options) as conn:
            queue = conn.SimpleQueue(QUEUE)
            for n in range(rest_count, tasks):
                queue.put({"n": n, "source": "kombu"})
        print(f"enqueued {rest_count} tasks through REST and {tasks - rest_count} through kombu", file=err)

        env = {**os.environ, EMULATOR_HOST_ENV: emulator.host}
        requests_before = emulator.requests
        started = time.monotonic()
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kombu_appengine.worker",
                "kombu_appengine.demo:process",
                "--queue",
                QUEUE,
                "--project",
                "demo-app",
                "--processes",
                str(processes),
                "--num-tasks",
                str(num_tasks),
                "--polling-interval",
                "0.2",
                "--retry-backoff",
                "1",
                "--log-level",
                "ERROR",
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        left = tasks
        # A terminal gets a bar redrawn in place; a log gets a line every 2 s.
        print_every = 0.25 if err.isatty() else 2.0
        printed = 0.0
        while left and worker.poll() is None:
            time.sleep(0.1)
            left = emulator.service.get_queue("demo-app", QUEUE, get_stats=True)["stats"]["totalTasks"]
            if not left or time.monotonic() - printed >= print_every:
                _progress(left, tasks, started, err)
                printed = time.monotonic()
        seconds = time.monotonic() - started
        requests = emulator.requests - requests_before
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
        err.write("\n")
        summary = _parse_summary(output)

        client = TaskQueueClient("demo-app", emulator.url + "/")
        total = client.get_queue(QUEUE, stats=True)["stats"]["totalTasks"]
        listed = client.list_tasks(QUEUE)
        processed = summary.get("processed", 0)
        print(f"processed:          {processed} of {tasks}")
        print(f"failed (retried):   {summary.get('failed', 0)}")
        print(f"seconds:            {seconds:.1f}")
        print(f"tasks per second:   {processed / seconds:.0f}")
        print(f"HTTP calls per task: {requests / tasks:.2f}")
        print(f"queue now holds:    {total} tasks (taskqueues.get), {len(listed)} listed (tasks.list)")
        ok = processed == tasks and total == 0 and not listed and worker.returncode == 0
        print("OK: every task processed once, queue empty" if ok else "FAILED", flush=True)
        if keep:
            _serve_until_interrupted(emulator.url)
        return 0 if ok else 1


def _serve_until_interrupted(url: str) -> None:
    """Keep the process (and the emulator's thread) alive until SIGINT or SIGTERM."""
    stopped = threading.Event()
    # Both handlers are in place before the address is printed: a signal
    # sent as soon as it is read stops the wait, never the process half-way.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stopped.set())
    print(f"the emulator and its dashboard stay up at {url}/ until Ctrl-C", flush=True)
    # Waits of a second at a time: the signal handlers run between them
    # whatever a platform's lock waits do with signals.
    while not stopped.wait(1.0):
        pass


def _parse_summary(output: str) -> dict[str, int | float]:
    match = re.search(r"^summary: (.*)$", output, re.MULTILINE)
    if match is None:
        return {}
    return {
        key: float(value) if "." in value else int(value)
        for key, value in re.findall(r"(\w+)=([\d.]+)", match.group(1))
    }


def main(argv: list[str] | None = None) -> None:
    """The ``scripts/demo`` entry point."""
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks", type=positive_int, default=4000, help="tasks to enqueue (default: %(default)s)"
    )
    parser.add_argument(
        "--processes", type=positive_int, default=4, help="worker processes (default: %(default)s)"
    )
    parser.add_argument(
        "--num-tasks",
        type=integer(1, MAX_NUM_TASKS),
        default=20,
        help="tasks per lease (default: %(default)s)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="after the summary, keep the emulator and its dashboard up until Ctrl-C",
    )
    args = parser.parse_args(argv)
    sys.exit(run(args.tasks, args.processes, args.num_tasks, args.keep))


if __name__ == "__main__":
    main()
