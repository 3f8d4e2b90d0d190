"""The kombu transport across processes: a killed consumer, a restarted
emulator, a forked child.

Consumers and emulators here are real processes talking real HTTP. Waits
are reads of a process's output or polls, each with a deadline.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import pytest
from kombu import Connection, Queue

from tests.support.emulator_process import Spawn
from tests.support.transport import PROJECT, connect, prefill, total_tasks

#: Every test runs a consumer, an emulator or a forked child as a process.
pytestmark = pytest.mark.slow

#: A consumer that takes messages without acknowledging them, says which,
#: and then waits to be killed.
HOLDING_CONSUMER = """
import sys
from kombu import Connection

url, count = sys.argv[1], int(sys.argv[2])
options = {"api_endpoint": url, "lease_secs": 3, "num_tasks": 4, "polling_interval": 0.05}
with Connection(transport="kombu_appengine:Transport", transport_options=options) as connection:
    queue = connection.SimpleQueue("default")
    for _ in range(count):
        print(queue.get(timeout=10).payload["n"], flush=True)
    print("holding", flush=True)
    sys.stdin.read()
"""


class Lines:
    """The lines a process writes to stdout, read in a thread so a hung process cannot hang the test."""

    def __init__(self, process: subprocess.Popen) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next(self, timeout: float = 20.0) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output for {timeout}s")
        if line is None:
            pytest.fail("the process ended without the expected output")
        return line


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


# -- a consumer killed while holding tasks ----------------------------------


def test_tasks_of_a_sigkilled_consumer_all_come_back_once(emulator):
    prefill(emulator, 6)
    consumer = subprocess.Popen(
        [sys.executable, "-c", HOLDING_CONSUMER, emulator.url, "5"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = Lines(consumer)
        held = [int(lines.next()) for _ in range(5)]
        assert lines.next() == "holding"
        assert held == [0, 1, 2, 3, 4]
        # Five delivered, unacknowledged; the sixth in the consumer's buffer.
        tasks = emulator.service.list_tasks(PROJECT, "default")["items"]
        assert [task["leaseTimestamp"] != "0" for task in tasks] == [True] * 6

        with connect(emulator, lease_secs=3, num_tasks=10) as survivor:
            survivor_queue = survivor.SimpleQueue("default")
            with pytest.raises(queue.Empty):
                survivor_queue.get(block=False)

            consumer.send_signal(signal.SIGKILL)
            consumer.wait(timeout=10)
            killed_at = time.monotonic()

            received: list[int] = []
            while len(received) < 6 and time.monotonic() - killed_at < 10:
                try:
                    message = survivor_queue.get(timeout=1)
                except queue.Empty:
                    continue
                received.append(message.payload["n"])
                assert message.delivery_info["redelivered"] is True
                message.ack()

            assert sorted(received) == list(range(6))
            with pytest.raises(queue.Empty):
                survivor_queue.get(block=False)
            survivor_queue.close()
        assert total_tasks(emulator) == 0
    finally:
        kill(consumer)


# -- the emulator restarts ----------------------------------------------------


def in_background(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``work`` in a started thread; the dict gets ``done`` or the ``error`` it raised."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            work()
            outcome["done"] = True
        except BaseException as error:  # noqa: BLE001 - reported to the test thread
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


#: Why the restart tests run against the emulator only.
RESTART_KEEPS_STATE = (
    "the server is restarted on its --data-dir; the local gateway's stub keeps nothing across "
    "a restart (App Engine's own service does, and the test is about the transport's reconnects)"
)


@pytest.mark.emulator_only(RESTART_KEEPS_STATE)
def test_ensure_publishes_through_an_emulator_restart_and_nothing_is_lost(spawn: Spawn, tmp_path):
    arguments = ("--queue", "default", "--data-dir", str(tmp_path / "data"))
    server = spawn(*arguments)
    with connect(server, request_retries=1) as connection:
        producer = connection.Producer(serializer="json")
        failures: list[BaseException] = []
        failed = threading.Event()

        def errback(error: BaseException, interval: float) -> None:
            failures.append(error)
            failed.set()

        publish = connection.ensure(
            producer,
            producer.publish,
            errback=errback,
            max_retries=100,
            interval_start=0.05,
            interval_step=0.05,
            interval_max=0.2,
        )
        publish({"n": 0}, routing_key="default")
        publish({"n": 1}, routing_key="default")

        server.kill()
        publisher, outcome = in_background(lambda: publish({"n": 2}, routing_key="default"))
        assert failed.wait(timeout=20), "publishing never noticed the emulator was down"
        server = spawn(*arguments, port=server.port)
        publisher.join(timeout=30)
        assert not publisher.is_alive()
        assert outcome == {"done": True}
        assert all(isinstance(error, tuple(connection.connection_errors)) for error in failures)

        publish({"n": 3}, routing_key="default")

    with connect(server) as consumer:
        consumer_queue = consumer.SimpleQueue("default")
        received = []
        while True:
            try:
                message = consumer_queue.get(timeout=1)
            except queue.Empty:
                break
            received.append(message.payload["n"])
            message.ack()
        consumer_queue.close()
    assert received == [0, 1, 2, 3]


@pytest.mark.emulator_only(RESTART_KEEPS_STATE)
def test_consumer_reconnects_after_the_emulator_restarts(spawn: Spawn, tmp_path):
    arguments = ("--queue", "default", "--data-dir", str(tmp_path / "data"))
    server = spawn(*arguments)
    with connect(server, request_retries=1) as connection:
        connection.SimpleQueue("default").put({"n": 0})
        server.kill()

        received: list[Any] = []

        def on_message(body: Any, message: Any) -> None:
            received.append(body)
            message.ack()

        def consume_once(connection_: Connection = connection) -> None:
            with connection_.Consumer(Queue("default"), callbacks=[on_message]):
                connection_.drain_events(timeout=5)

        failed = threading.Event()

        def consume() -> None:
            connection.ensure_connection(max_retries=3)
            connection.ensure(
                connection,
                consume_once,
                max_retries=100,
                errback=lambda error, interval: failed.set(),
                interval_start=0.05,
                interval_step=0.05,
                interval_max=0.2,
            )()

        consumer, outcome = in_background(consume)
        assert failed.wait(timeout=20), "consuming never noticed the emulator was down"
        server = spawn(*arguments, port=server.port)
        consumer.join(timeout=30)
        assert not consumer.is_alive()
        assert outcome == {"done": True}
        assert received == [{"n": 0}]


# -- fork -----------------------------------------------------------------------


def test_forked_child_uses_the_connection_with_its_own_http_client(emulator):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child_started = context.Event()
    rounds = 30

    with connect(emulator) as connection:
        default_queue = connection.SimpleQueue("default")
        other_queue = connection.SimpleQueue("other")
        default_queue.put({"from": "parent", "n": -1})
        held = default_queue.get(timeout=5)  # the parent's client has a live connection now
        inherited_service = connection.default_channel.client.service

        def child() -> None:
            try:
                child_started.set()
                own_client = connection.default_channel.client.service is not inherited_service
                payloads = []
                for number in range(rounds):
                    other_queue.put({"from": "child", "n": number})
                    # basic_get: draining would also serve the parent's
                    # consumer of "default", inherited with the channel.
                    message = other_queue.get(block=False)
                    payloads.append(message.payload)
                    message.ack()
                results.put({"own_client": own_client, "payloads": payloads})
            except BaseException as error:  # noqa: BLE001 - reported to the parent
                results.put({"error": repr(error)})

        process = context.Process(target=child)
        process.start()
        try:
            assert child_started.wait(timeout=20)
            # The parent keeps working at the same time, on the same connection.
            for number in range(rounds):
                default_queue.put({"from": "parent", "n": number})
                message = default_queue.get(block=False)
                assert message.payload == {"from": "parent", "n": number}
                message.ack()
            outcome = results.get(timeout=30)
            process.join(timeout=30)
        finally:
            if process.is_alive():
                process.kill()
                process.join()
        assert process.exitcode == 0
        assert "error" not in outcome, outcome["error"]
        assert outcome["own_client"] is True
        assert outcome["payloads"] == [{"from": "child", "n": number} for number in range(rounds)]

        # The child did not give away the parent's lease, and the parent can still ack.
        connection.default_channel.flush()
        leased = emulator.service.list_tasks(PROJECT, "default")["items"]
        assert len(leased) == 1
        assert leased[0]["leaseTimestamp"] != "0"
        held.ack()
        default_queue.close()
        other_queue.close()
    assert total_tasks(emulator) == 0
    assert total_tasks(emulator, "other") == 0


def run_in_forked_child(work: Callable[[], None]) -> None:
    """Run ``work`` in a forked child process, which must exit 0."""
    process = multiprocessing.get_context("fork").Process(target=work)
    process.start()
    process.join(timeout=30)
    assert process.exitcode == 0


def test_a_forked_child_closing_the_inherited_connection_keeps_the_parents_leases(emulator):
    with connect(emulator, num_tasks=2) as connection:
        default_queue = connection.SimpleQueue("default")
        for number in range(3):
            default_queue.put({"n": number})
        # Leases of one task, then of two: two delivered and unacked, one buffered.
        held = [default_queue.get(timeout=5), default_queue.get(timeout=5)]

        def child() -> None:
            connection.close()

        run_in_forked_child(child)
        tasks = emulator.service.list_tasks(PROJECT, "default")["items"]
        assert len(tasks) == 3
        assert all(task["leaseTimestamp"] != "0" for task in tasks), "the child released the parent's leases"
        for message in held:
            message.ack()
        default_queue.close()
    # The parent's own close releases what it still buffers.
    tasks = emulator.service.list_tasks(PROJECT, "default")["items"]
    assert [task["leaseTimestamp"] for task in tasks] == ["0"]


def test_a_forked_child_acknowledges_a_message_its_parent_received(emulator):
    # A parent takes messages and hands them to forked children to process
    # (as a pre-fork pool does): a child's ack deletes the task, a child's
    # requeue gives it back, and the parent's close does not hand them out again.
    with connect(emulator, num_tasks=1, lease_secs=60) as connection:
        default_queue = connection.SimpleQueue("default")
        for number in range(2):
            default_queue.put({"n": number})
        acked, requeued = default_queue.get(timeout=5), default_queue.get(timeout=5)

        def child() -> None:
            acked.ack()
            requeued.requeue()
            connection.close()

        run_in_forked_child(child)
        tasks = emulator.service.list_tasks(PROJECT, "default")["items"]
        assert [(task["id"], task["leaseTimestamp"]) for task in tasks] == [
            (requeued.delivery_info["task_id"], "0")
        ]
        default_queue.close()
    again = emulator.service.list_tasks(PROJECT, "default")["items"]
    assert [task["id"] for task in again] == [requeued.delivery_info["task_id"]]
