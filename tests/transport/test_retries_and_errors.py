"""Server failures are retried without copies; what cannot be retried becomes
kombu's connection or channel error, naming the queue."""

from __future__ import annotations

import socket
import threading
from queue import Empty
from typing import Any

import google.oauth2.credentials
import pytest
from kombu import Connection, Consumer, Queue
from kombu.exceptions import OperationalError

from kombu_appengine.emulator import QueueConfig
from kombu_appengine.errors import AuthenticationFailed, TaskQueueChannelError, TaskQueueConnectionError
from tests.support.fault_proxy import FaultProxy
from tests.support.transport import connect, total_tasks

#: Seconds after which a call that should have returned is taken to hang.
HANG = 60


def test_lease_and_insert_succeed_through_two_server_failures_each(emulator):
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        emulator.inject_failures(2, status=503, method="POST", path_contains="/tasks?")
        before = emulator.requests
        queue.put({"n": 1})
        assert emulator.requests - before == 3
        assert total_tasks(emulator) == 1

        emulator.inject_failures(2, status=503, path_contains="/tasks/lease")
        before = emulator.requests
        message = queue.get(timeout=5)
        assert emulator.requests - before == 3
        assert message.payload == {"n": 1}

        # Acks are deleted in batch calls.
        emulator.inject_failures(2, status=429, reason="rateLimitExceeded", path_contains="/batch")
        before = emulator.requests
        message.ack()
        connection.default_channel.flush()
        assert emulator.requests - before == 3
        assert total_tasks(emulator) == 0
        queue.close()


def test_rate_limit_403_is_retried(emulator):
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        emulator.inject_failures(1, status=403, reason="userRateLimitExceeded", method="POST")
        before = emulator.requests
        queue.put({"n": 1})
        assert emulator.requests - before == 2
        assert total_tasks(emulator) == 1
        queue.close()


def test_insert_retried_after_a_dropped_connection_makes_no_copy(emulator):
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        emulator.inject_failures(1, method="POST", path_contains="/tasks?", reset=True)
        before = emulator.requests
        queue.put({"n": 1})
        assert emulator.requests - before == 2
        assert total_tasks(emulator) == 1
        queue.close()


def test_insert_whose_answer_was_lost_after_it_took_effect_makes_no_copy(emulator):
    # The emulator's faults strike before a request is carried out; here the
    # insert must take effect and its answer be lost, as when a connection
    # drops on the way back. Wrap the emulator's dispatcher so that the first
    # insert is carried out and then fails the connection.
    real_dispatch = emulator.api.dispatch
    lost = []

    def dispatch_then_drop(method: str, target: str, *args: Any) -> Any:
        response = real_dispatch(method, target, *args)
        if method == "POST" and target.split("?")[0].endswith("/tasks") and not lost:
            lost.append(target)
            raise ConnectionResetError("answer lost on the way back")
        return response

    emulator.api.dispatch = dispatch_then_drop
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        queue.put({"n": 1})
        assert lost
        assert total_tasks(emulator) == 1
        message = queue.get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()
        queue.close()


def test_more_failures_than_request_retries_is_a_connection_error(emulator):
    with connect(emulator, request_retries=2) as connection:
        queue = connection.SimpleQueue("default")
        emulator.inject_failures(3, status=503, method="POST", path_contains="/tasks?")
        with pytest.raises(TaskQueueConnectionError) as failure:
            queue.put({"n": 1})
        assert isinstance(failure.value, tuple(connection.connection_errors))
        assert not isinstance(failure.value, tuple(connection.channel_errors))
        assert "'default'" in str(failure.value)
        assert total_tasks(emulator) == 0
        queue.put({"n": 2})  # the faults are used up: the next call works
        assert total_tasks(emulator) == 1
        queue.close()


@pytest.mark.slow  # waits out the client's retries, seconds
def test_unreachable_server_is_a_connection_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    connection = Connection(
        transport="kombu_appengine:Transport",
        transport_options={
            "api_endpoint": f"http://127.0.0.1:{dead_port}",
            "request_retries": 1,
            "interval_start": 0,
        },
    )
    # Connecting fails, as with every kombu transport: kombu raises the
    # transport's connection error as its OperationalError.
    with pytest.raises((OperationalError, *connection.connection_errors)) as failure:
        connection.default_channel.queue_declare("default")
    assert f"127.0.0.1:{dead_port}" in str(failure.value)
    connection.release()


@pytest.mark.slow  # waits out the client's retries, seconds
def test_connect_to_an_unreachable_endpoint_fails():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    connection = Connection(
        transport="kombu_appengine:Transport",
        transport_options={"api_endpoint": f"http://127.0.0.1:{dead_port}", "request_retries": 0},
    )
    with pytest.raises(tuple(connection.connection_errors)) as failure:
        connection.connect()
    assert f"127.0.0.1:{dead_port}" in str(failure.value)
    connection.release()


def test_drain_events_keeps_to_its_timeout_when_the_server_goes_away(make_server):
    server = make_server(queues=["default"])
    # Retries enough, with their backoff, to go on for many minutes: the
    # lease's retries must stop at drain_events' deadline.
    with (
        connect(server, request_retries=100) as connection,
        Consumer(connection, Queue("default"), callbacks=[lambda body, message: None]),
    ):
        server.stop()
        outcome: list[BaseException] = []

        def drain() -> None:
            try:
                connection.drain_events(timeout=1)
            except (socket.timeout, *connection.connection_errors) as error:
                outcome.append(error)

        thread = threading.Thread(target=drain, daemon=True)
        thread.start()
        thread.join(HANG)
        assert not thread.is_alive(), "drain_events(timeout=1) went on retrying past its timeout"
        assert len(outcome) == 1, "drain_events returned without a timeout or a connection error"


def test_client_errors_are_not_retried(emulator):
    with connect(emulator) as connection:
        queue = connection.SimpleQueue("default")
        emulator.inject_failures(1, status=400, reason="invalid", method="POST", path_contains="/tasks?")
        before = emulator.requests
        with pytest.raises(TaskQueueChannelError):
            queue.put({"n": 1})
        assert emulator.requests - before == 1
        queue.close()


def test_a_queue_acl_refusal_is_an_authentication_error_naming_queue_yaml(make_server):
    guarded = QueueConfig("guarded", consumer_emails=["worker@example.com"])
    server = make_server(queues=[guarded], identities={"worker-token": "worker@example.com"})
    token = google.oauth2.credentials.Credentials(token="worker-token")
    with connect(server, credentials=token) as connection:
        queue = connection.SimpleQueue("guarded")
        with pytest.raises(AuthenticationFailed) as refused:
            queue.put({"n": 1})
        text = str(refused.value)
        assert "'guarded'" in text
        assert "writer_email" in text
        assert "queue.yaml" in text
        assert refused.value.status == 403
        assert isinstance(refused.value, tuple(connection.channel_errors))
        with pytest.raises(Empty):  # consuming is allowed: the queue is just empty
            queue.get(block=False)


def silent_listener() -> socket.socket:
    """A socket on loopback that takes connections and never answers (a stalled server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    return listener


def in_thread(work: Any) -> list[BaseException | None]:
    """Run ``work`` in a thread; wait (up to :data:`HANG`) and give what it raised, or ``None``."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            work()
        except Exception as error:  # noqa: BLE001 - handed to the test
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), "still waiting for a server that never answers"
    return outcome


def test_connect_waits_at_most_connect_timeout_for_a_server_that_never_answers():
    with silent_listener() as listener:
        port = listener.getsockname()[1]
        connection = Connection(
            transport="kombu_appengine:Transport",
            transport_options={"api_endpoint": f"http://127.0.0.1:{port}", "request_retries": 0},
            connect_timeout=0.5,
        )
        # The socket timeout is a minute: without connect_timeout, this hangs.
        [error] = in_thread(connection.connect)
        assert isinstance(error, tuple(connection.connection_errors)), error
        assert f"127.0.0.1:{port}" in str(error)
        connection.release()


def test_close_waits_at_most_lease_secs_for_a_server_that_stopped_answering(make_emulator):
    server = make_emulator(queues=["default"])
    with silent_listener() as listener:
        proxy = FaultProxy(server.host, fault_rate=0, seed=0).start()
        try:
            connection = connect(proxy, lease_secs=2, request_retries=0)
            queue = connection.SimpleQueue("default")
            queue.put({"n": 1})
            message = queue.get(timeout=5)
            # From now on every request goes to a server that never answers.
            proxy.upstream = f"127.0.0.1:{listener.getsockname()[1]}"
            message.ack()
            assert in_thread(connection.close) == [None]
        finally:
            proxy.close()
    # The ack never reached the service: its task comes back (at least once).
    assert total_tasks(server) == 1
