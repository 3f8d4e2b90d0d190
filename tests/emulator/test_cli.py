"""The emulator as users run it: a real process and its command line."""

from __future__ import annotations

import pathlib
import socket
import textwrap
import time
from typing import Callable

import pytest

from tests.support.emulator_process import REQUEST_TIMEOUT, EmulatorProcess, tasks_path
from tests.support.helpers import b64
from tests.support.raw_http import address

#: Every test runs the emulator as a process.
pytestmark = pytest.mark.slow


def test_listening_line(spawn: Callable[..., EmulatorProcess]) -> None:
    emulator = spawn("--queue", "default", "--queue", "other")
    assert emulator.line == f"listening on http://127.0.0.1:{emulator.port}\n"
    assert emulator.port > 0
    client = emulator.client()
    for name in ("default", "other"):
        status, document = client.call("GET", f"/taskqueue/v1beta2/projects/demo/taskqueues/{name}")
        assert status == 200
        assert document["id"] == name
    status, discovery = client.call("GET", "/discovery/v1/apis/taskqueue/v1beta2/rest")
    assert status == 200
    assert discovery["rootUrl"] == f"http://127.0.0.1:{emulator.port}/"
    client.close()
    assert emulator.stderr() == ""


def test_queue_yaml_push_queues_are_noted_and_refused(
    spawn: Callable[..., EmulatorProcess], tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "queue.yaml"
    path.write_text(
        textwrap.dedent("""\
        total_storage_limit: 1G
        queue:
        - name: default
          rate: 5/s
        - name: mailer
          mode: push
          target: mail
        - name: work
          mode: pull
          acl:
          - user_email: worker@example.com
          retry_parameters:
            task_retry_limit: 4
    """)
    )
    emulator = spawn("--queue-yaml", str(path))
    stderr = emulator.stderr()
    (note,) = [line for line in stderr.splitlines() if "push" in line]
    assert "note" in note
    assert "default" in note
    assert "mailer" in note
    assert "work" not in note
    assert "Traceback" not in stderr

    client = emulator.client()
    for name in ("default", "mailer"):
        status, document = client.call("GET", tasks_path(name))
        assert status == 400
        assert "not a pull queue" in document["error"]["message"]
    status, document = client.call("GET", "/taskqueue/v1beta2/projects/demo/taskqueues/work")
    assert status == 200
    assert document["maxLeases"] == 4
    assert document["acl"]["consumerEmails"] == ["worker@example.com"]
    client.close()


def test_project_flag(spawn: Callable[..., EmulatorProcess]) -> None:
    emulator = spawn("--project", "demo", "--queue", "default")
    client = emulator.client()
    status, _inserted = client.call(
        "POST", tasks_path(project="s~demo"), {"id": "t1", "payloadBase64": b64(b"x")}
    )
    assert status == 200
    for project in ("demo", "s~demo", "e~demo"):
        status, task = client.call("GET", tasks_path(project=project) + "/t1")
        assert status == 200, project
        assert task["id"] == "t1"
    for project in ("other", "s~other", "demo2"):
        status, document = client.call("GET", tasks_path(project=project))
        assert status == 404, project
        assert document["error"]["errors"][0]["reason"] == "notFound"
        assert project in document["error"]["message"]
    client.close()


def test_non_loopback_host_warns(spawn: Callable[..., EmulatorProcess]) -> None:
    emulator = spawn("--host", "0.0.0.0", "--queue", "default")
    assert emulator.line == f"listening on http://0.0.0.0:{emulator.port}\n"
    warnings = [line for line in emulator.stderr().splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "0.0.0.0" in warnings[0]
    assert "loopback" in warnings[0]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_host_does_not_warn(spawn: Callable[..., EmulatorProcess], host: str) -> None:
    emulator = spawn("--host", host, "--queue", "default")
    assert emulator.stderr() == ""


def assert_fails_cleanly(emulator: EmulatorProcess, *words: str) -> None:
    """The process exits non-zero with one error line naming ``words``, no traceback."""
    assert emulator.wait_refused() != 0
    lines = emulator.stderr().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("pullqueue_emulator: ")
    assert "Traceback" not in lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_missing_queue_yaml_is_one_clear_error(
    spawn: Callable[..., EmulatorProcess], tmp_path: pathlib.Path
) -> None:
    path = str(tmp_path / "missing" / "queue.yaml")
    assert_fails_cleanly(spawn("--queue-yaml", path, wait=False), path, "cannot read")


def test_malformed_queue_yaml_is_one_clear_error(
    spawn: Callable[..., EmulatorProcess], tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "queue.yaml"
    path.write_text("queue:\n- name: work\n  mode: pull\n  retry_parameters:\n    task_retry_limit: many\n")
    assert_fails_cleanly(
        spawn("--queue-yaml", str(path), wait=False), str(path), "'work'", "task_retry_limit"
    )


def test_illegal_queue_name_is_one_clear_error(spawn: Callable[..., EmulatorProcess]) -> None:
    assert_fails_cleanly(spawn("--queue", "bad_name", wait=False), "bad_name")


def connect(emulator: EmulatorProcess, data: bytes = b"") -> socket.socket:
    # ``host`` is ``host:port``, as TASKQUEUE_EMULATOR_HOST takes it.
    sock = socket.create_connection(address(emulator), timeout=REQUEST_TIMEOUT)
    if data:
        sock.sendall(data)
    return sock


def get_request(emulator: EmulatorProcess) -> bytes:
    return f"GET {tasks_path()} HTTP/1.1\r\nHost: {emulator.host}\r\n\r\n".encode()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closing)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def test_max_connections_flag_sets_the_cap(spawn: Callable[..., EmulatorProcess]) -> None:
    emulator = spawn("--queue", "default", "--max-connections", "1")
    idle = connect(emulator)
    try:
        # At the cap of one, the idle connection makes room for the next.
        client = emulator.client()
        status, _ = client.call("GET", tasks_path())
        assert status == 200
        client.close()
        assert read_until_closed(idle) == b""
    finally:
        idle.close()


def test_idle_timeout_flag_closes_idle_connections(spawn: Callable[..., EmulatorProcess]) -> None:
    emulator = spawn("--queue", "default", "--idle-timeout", "0.5")
    sock = connect(emulator, get_request(emulator))
    try:
        # The answer, then the close: well before the default of 60 s (the
        # socket's timeout would fail the read first).
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200 ")
    finally:
        sock.close()


def test_request_timeout_flag_cuts_off_slow_requests(spawn: Callable[..., EmulatorProcess]) -> None:
    emulator = spawn("--queue", "default", "--request-timeout", "0.5", "--idle-timeout", "600")
    sock = connect(emulator, get_request(emulator)[:-2])
    try:
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
    finally:
        sock.close()


def test_latency_flag_delays_answers_by_milliseconds(spawn: Callable[..., EmulatorProcess]) -> None:
    emulator = spawn("--queue", "default", "--latency", "300")
    client = emulator.client()
    started = time.monotonic()
    status, _ = client.call("GET", tasks_path())
    # A lower bound, which a slow machine cannot break.
    assert time.monotonic() - started >= 0.3
    assert status == 200
    client.close()
