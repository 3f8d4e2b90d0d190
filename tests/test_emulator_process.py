"""The emulator as users run it: a real process, its command line, its
durability under SIGKILL with ``--data-dir``, and its behaviour under
concurrent clients."""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import queue
import re
import selectors
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from conftest import b64

from kombu_appengine.emulator import Emulator

#: Seconds the emulator may take to print its listening line.
START_DEADLINE = 20.0
#: Seconds a process may take to exit after a fatal error or a kill.
EXIT_DEADLINE = 10.0
#: Seconds any one request may take.
REQUEST_TIMEOUT = 10.0
#: What the emulator prints on stdout once it accepts connections.
LISTENING_RE = re.compile(r"listening on http://([^:/\s]+):(\d+)\n\Z")


class EmulatorProcess:
    """``python -m kombu_appengine.emulator`` in a child process."""

    def __init__(self, args: list[str], stderr_path: pathlib.Path) -> None:
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "wb")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kombu_appengine.emulator", *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
        )
        self.line = ""
        self.host = ""
        self.port = 0

    def wait_listening(self) -> EmulatorProcess:
        """Read the first stdout line, within :data:`START_DEADLINE`."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + START_DEADLINE
        data = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while not data.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no listening line within {START_DEADLINE}s; stderr: {self.stderr()}"
                    )
                if selector.select(remaining):
                    chunk = os.read(fd, 1024)
                    if not chunk:
                        raise AssertionError(
                            f"emulator exited ({self.process.wait(EXIT_DEADLINE)}) before listening; "
                            f"stderr: {self.stderr()}"
                        )
                    data += chunk
        self.line = data.decode()
        match = LISTENING_RE.match(self.line)
        assert match, self.line
        self.host, self.port = match.group(1), int(match.group(2))
        return self

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def client(self) -> Client:
        assert self.host in ("127.0.0.1", "localhost"), "send traffic to loopback only"
        return Client(self.host, self.port)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(EXIT_DEADLINE)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

    def wait_exit(self) -> int:
        return self.process.wait(EXIT_DEADLINE)


class Client:
    """One keep-alive connection speaking JSON."""

    def __init__(self, host: str, port: int) -> None:
        self.connection = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)

    def call(self, method: str, path: str, document: Any = None) -> tuple[int, Any]:
        body = None if document is None else json.dumps(document).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data else None)

    def close(self) -> None:
        self.connection.close()


def tasks_path(queue_name: str = "default", project: str = "demo") -> str:
    return f"/taskqueue/v1beta2/projects/{project}/taskqueues/{queue_name}/tasks"


@pytest.fixture
def spawn(tmp_path: pathlib.Path) -> Iterator[Callable[..., EmulatorProcess]]:
    """Start emulator processes (``--port 0`` added); all are killed at teardown."""
    started: list[EmulatorProcess] = []

    def start(*args: str, wait: bool = True) -> EmulatorProcess:
        emulator = EmulatorProcess(["--port", "0", *args], tmp_path / f"stderr-{len(started)}.txt")
        started.append(emulator)
        return emulator.wait_listening() if wait else emulator

    yield start
    for emulator in started:
        emulator.kill()


# -- the command line ---------------------------------------------------------


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
    code = emulator.wait_exit()
    assert code != 0
    assert emulator.process.stdout is not None
    assert emulator.process.stdout.read() == b""
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


# -- durability ------------------------------------------------------------------


def test_state_survives_sigkill_with_data_dir(
    spawn: Callable[..., EmulatorProcess], tmp_path: pathlib.Path
) -> None:
    data_dir = str(tmp_path / "data")
    emulator = spawn("--queue", "default", "--queue", "other", "--data-dir", data_dir)
    client = emulator.client()
    names = [f"task-{i}" for i in range(60)]
    for number, name in enumerate(names):
        body = {"id": name, "payloadBase64": b64(f"payload {number}".encode())}
        if number % 3 == 0:
            body["tag"] = f"tag-{number % 2}"
        status, _ = client.call("POST", tasks_path(), body)
        assert status == 200
    status, _ = client.call("POST", tasks_path("other"), {"id": "elsewhere", "payloadBase64": b64(b"o")})
    assert status == 200
    status, generated = client.call("POST", tasks_path(), {"payloadBase64": b64(b"no name")})
    assert status == 200

    status, leased = client.call("POST", tasks_path() + "/lease?numTasks=10&leaseSecs=3600")
    assert status == 200
    leased_before = {task["id"]: task for task in leased["items"]}
    assert list(leased_before) == names[:10]
    # A released lease, and a lease moved to an hour and a half.
    released_name, extended_name = names[0], names[1]
    status, _released = client.call(
        "POST", tasks_path() + f"/{released_name}?newLeaseSeconds=0", {"queueName": "default"}
    )
    assert status == 200
    status, extended = client.call(
        "PATCH",
        tasks_path() + f"/{extended_name}?newLeaseSeconds=5400",
        {"queueName": "default", "leaseTimestamp": leased_before[extended_name]["leaseTimestamp"]},
    )
    assert status == 200
    leased_before[extended_name] = extended
    del leased_before[released_name]

    deleted = names[5:8] + names[20:30]  # some leased, some not
    for name in deleted:
        status, _ = client.call("DELETE", tasks_path() + f"/{name}")
        assert status == 204
    remaining = [name for name in names if name not in deleted]

    def snapshot(client: Client) -> dict[str, dict[str, Any]]:
        tasks = {}
        for name in [*remaining, generated["id"]]:
            status, task = client.call("GET", tasks_path() + f"/{name}")
            assert status == 200, (name, task)
            tasks[name] = task
        return tasks

    before = snapshot(client)
    client.close()
    emulator.kill()
    assert emulator.process.returncode == -9

    for restart in range(2):  # the second start reads the journal the first one compacted
        emulator = spawn("--queue", "default", "--queue", "other", "--data-dir", data_dir)
        client = emulator.client()
        assert snapshot(client) == before, f"restart {restart}"
        assert before[released_name]["leaseTimestamp"] == "0"
        assert before[released_name]["retry_count"] == 1
        for name, task in leased_before.items():
            if name in deleted:
                continue
            assert before[name]["leaseTimestamp"] == task["leaseTimestamp"] != "0"
            assert before[name]["retry_count"] == 1
        for name in deleted:
            status, _ = client.call("GET", tasks_path() + f"/{name}")
            assert status == 404, name
            status, document = client.call("POST", tasks_path(), {"id": name, "payloadBase64": ""})
            assert status == 409, name
            assert name in document["error"]["message"]
        status, task = client.call("GET", tasks_path("other") + "/elsewhere")
        assert status == 200
        assert task["payloadBase64"] == b64(b"o")
        status, listed = client.call("GET", tasks_path())
        assert sorted(task["id"] for task in listed["items"]) == sorted(before)
        emulator.kill()

    # The leases are still in force: only tasks that were not leased are
    # leasable, oldest ETA first (the released task's ETA is its release).
    emulator = spawn("--queue", "default", "--queue", "other", "--data-dir", data_dir)
    client = emulator.client()
    status, leased = client.call("POST", tasks_path() + "/lease?numTasks=1000&leaseSecs=60")
    assert status == 200
    still_leased = {name for name in leased_before if name not in deleted} | {released_name}
    expected = [name for name in remaining if name not in still_leased] + [generated["id"], released_name]
    assert [task["id"] for task in leased["items"]] == expected
    by_name = {task["id"]: task for task in leased["items"]}
    assert by_name[released_name]["retry_count"] == 2
    assert by_name[names[15]]["payloadBase64"] == b64(b"payload 15")
    assert by_name[names[15]]["tag"] == "tag-1"
    client.close()


def test_torn_last_journal_line_is_dropped(
    spawn: Callable[..., EmulatorProcess], tmp_path: pathlib.Path
) -> None:
    data_dir = tmp_path / "data"
    emulator = spawn("--queue", "default", "--data-dir", str(data_dir))
    client = emulator.client()
    assert client.call("POST", tasks_path(), {"id": "kept", "payloadBase64": b64(b"k")})[0] == 200
    client.close()
    emulator.kill()
    journal = data_dir / "journal.jsonl"
    with open(journal, "ab") as stream:
        stream.write(b'{"op":"insert","project":"demo","queue":"def')
    emulator = spawn("--queue", "default", "--data-dir", str(data_dir))
    client = emulator.client()
    status, listed = client.call("GET", tasks_path())
    assert status == 200
    assert [task["id"] for task in listed["items"]] == ["kept"]
    client.close()


def test_acknowledged_inserts_and_deletes_survive_sigkill_under_load(
    spawn: Callable[..., EmulatorProcess], tmp_path: pathlib.Path
) -> None:
    data_dir = str(tmp_path / "data")
    emulator = spawn("--queue", "default", "--data-dir", data_dir)
    acked_inserts: set[str] = set()
    acked_deletes: set[str] = set()
    attempted_deletes: set[str] = set()
    to_delete: queue.Queue[str | None] = queue.Queue()
    enough = threading.Event()
    lock = threading.Lock()

    def insert_forever(worker: int) -> None:
        client = emulator.client()
        try:
            for number in range(100_000):
                name = f"w{worker}-{number}"
                status, _ = client.call(
                    "POST", tasks_path(), {"id": name, "payloadBase64": b64(name.encode())}
                )
                assert status == 200
                with lock:
                    acked_inserts.add(name)
                    if len(acked_inserts) >= 300:
                        enough.set()
                if number % 4 == 0:
                    to_delete.put(name)
        except (OSError, http.client.HTTPException):
            return  # the server was killed mid-request

    def delete_forever() -> None:
        client = emulator.client()
        try:
            for _ in range(100_000):
                name = to_delete.get(timeout=REQUEST_TIMEOUT)
                if name is None:
                    return
                with lock:
                    attempted_deletes.add(name)
                status, _ = client.call("DELETE", tasks_path() + f"/{name}")
                assert status == 204
                with lock:
                    acked_deletes.add(name)
        except (OSError, http.client.HTTPException, queue.Empty):
            return

    threads = [threading.Thread(target=insert_forever, args=(worker,)) for worker in range(3)]
    threads.append(threading.Thread(target=delete_forever))
    for thread in threads:
        thread.start()
    try:
        assert enough.wait(REQUEST_TIMEOUT), "the inserters made no progress"
    finally:
        emulator.kill()
        to_delete.put(None)
        for thread in threads:
            thread.join(REQUEST_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)
    assert acked_deletes

    emulator = spawn("--queue", "default", "--data-dir", data_dir)
    client = emulator.client()
    for name in sorted(acked_inserts - attempted_deletes):
        status, task = client.call("GET", tasks_path() + f"/{name}")
        assert status == 200, name
        assert task["payloadBase64"] == b64(name.encode())
    for name in sorted(acked_deletes):
        status, _ = client.call("GET", tasks_path() + f"/{name}")
        assert status == 404, name
    client.close()


def test_without_data_dir_a_restart_is_empty(spawn: Callable[..., EmulatorProcess]) -> None:
    emulator = spawn("--queue", "default")
    client = emulator.client()
    assert client.call("POST", tasks_path(), {"id": "gone", "payloadBase64": ""})[0] == 200
    client.close()
    emulator.kill()
    emulator = spawn("--queue", "default")
    client = emulator.client()
    status, listed = client.call("GET", tasks_path())
    assert status == 200
    assert listed["items"] == []
    # Nor is the name reserved.
    assert client.call("POST", tasks_path(), {"id": "gone", "payloadBase64": ""})[0] == 200
    client.close()


# -- concurrency -------------------------------------------------------------------


def fill(client: Client, count: int) -> list[str]:
    """Insert ``count`` tasks through batches of up to 1000 parts; their names."""
    names = [f"t{number:05d}" for number in range(count)]
    for start in range(0, count, 1000):
        parts = []
        for name in names[start : start + 1000]:
            body = json.dumps({"id": name, "payloadBase64": b64(name.encode())})
            parts.append(
                f"--b\r\nContent-Type: application/http\r\nContent-ID: <{name}>\r\n\r\n"
                f"POST {tasks_path()} HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{body}\r\n"
            )
        body = ("".join(parts) + "--b--\r\n").encode()
        client.connection.request(
            "POST", "/batch", body=body, headers={"Content-Type": "multipart/mixed; boundary=b"}
        )
        response = client.connection.getresponse()
        answer = response.read()
        assert response.status == 200
        assert answer.count(b"HTTP/1.1 200 OK") == len(parts)
    return names


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in ``count`` threads started together; re-raise the first failure."""
    failures: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(number: int) -> None:
        try:
            barrier.wait(REQUEST_TIMEOUT)
            target(number)
        except BaseException as exc:  # reported to the test below  # noqa: BLE001 - reported to the test thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(number,)) for number in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    if failures:
        raise failures[0]


def test_parallel_leasers_never_share_a_long_lease(spawn: Callable[..., EmulatorProcess]) -> None:
    emulator = spawn("--queue", "default")
    names = fill(emulator.client(), 2000)
    grants: list[list[dict[str, Any]]] = [[] for _ in range(8)]

    def lease_until_empty(number: int) -> None:
        client = emulator.client()
        for _ in range(2000):
            status, leased = client.call(
                "POST", tasks_path() + f"/lease?numTasks={1 + number * 3}&leaseSecs=3600"
            )
            assert status == 200
            if "items" not in leased:
                break
            grants[number].extend(leased["items"])
        client.close()

    run_threads(len(grants), lease_until_empty)
    leased_ids = [task["id"] for tasks in grants for task in tasks]
    assert len(leased_ids) == len(set(leased_ids)), "a task was leased twice while its lease was in force"
    assert sorted(leased_ids) == names
    assert all(task["retry_count"] == 1 for tasks in grants for task in tasks)
    assert sum(1 for tasks in grants if tasks) > 1, "the leasers did not run concurrently"


def test_parallel_leasers_with_short_leases_never_overlap(spawn: Callable[..., EmulatorProcess]) -> None:
    emulator = spawn("--queue", "default")
    names = fill(emulator.client(), 300)
    lease_secs = 1
    deadline = time.monotonic() + 2.0
    grants: list[list[dict[str, Any]]] = [[] for _ in range(6)]

    def lease_until_deadline(number: int) -> None:
        client = emulator.client()
        for _ in range(100_000):
            if time.monotonic() > deadline:
                break
            status, leased = client.call("POST", tasks_path() + f"/lease?numTasks=7&leaseSecs={lease_secs}")
            assert status == 200
            grants[number].extend(leased.get("items", []))
        client.close()

    run_threads(len(grants), lease_until_deadline)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for tasks in grants:
        for task in tasks:
            by_task.setdefault(task["id"], []).append(task)
    assert sorted(by_task) == names, "every task is leased in the end"
    assert any(len(held) > 1 for held in by_task.values()), "no task was leased again after expiry"
    for name, held in by_task.items():
        held.sort(key=lambda task: task["retry_count"])
        # Each grant is a distinct lease: retry_count 1, 2, 3 ... with no repeats.
        assert [task["retry_count"] for task in held] == list(range(1, len(held) + 1)), name
        # And a lease starts only once the one before it has expired.
        for earlier, later in zip(held, held[1:]):
            later_start = int(later["leaseTimestamp"]) - lease_secs * 1_000_000
            assert later_start >= int(earlier["leaseTimestamp"]), name


def test_parallel_inserters_and_deleters(spawn: Callable[..., EmulatorProcess]) -> None:
    emulator = spawn("--queue", "default")
    per_worker = 150
    inserted: queue.Queue[str] = queue.Queue()
    deleted: list[str] = []
    deleted_lock = threading.Lock()

    def work(number: int) -> None:
        client = emulator.client()
        if number < 4:
            for index in range(per_worker):
                name = f"w{number}-{index}"
                status, _ = client.call("POST", tasks_path(), {"id": name, "payloadBase64": ""})
                assert status == 200, name
                if index % 2:
                    inserted.put(name)
        else:
            for _ in range(per_worker):
                name = inserted.get(timeout=REQUEST_TIMEOUT)
                status, _ = client.call("DELETE", tasks_path() + f"/{name}")
                assert status == 204, name
                with deleted_lock:
                    deleted.append(name)
                if len(deleted) >= 2 * per_worker:
                    break
        client.close()

    run_threads(6, work)
    assert len(deleted) == len(set(deleted)) >= 2 * per_worker
    client = emulator.client()
    status, queue_info = client.call(
        "GET", "/taskqueue/v1beta2/projects/demo/taskqueues/default?getStats=true"
    )
    assert status == 200
    assert queue_info["stats"]["totalTasks"] == 4 * per_worker - len(deleted)
    for name in deleted:
        assert client.call("GET", tasks_path() + f"/{name}")[0] == 404
    client.close()


def test_racing_inserts_of_one_name_succeed_once(spawn: Callable[..., EmulatorProcess]) -> None:
    emulator = spawn("--queue", "default")
    statuses: dict[str, list[int]] = {}
    lock = threading.Lock()

    def insert_all(number: int) -> None:
        client = emulator.client()
        for index in range(100):
            name = f"same-{index}"
            status, _ = client.call("POST", tasks_path(), {"id": name, "payloadBase64": ""})
            with lock:
                statuses.setdefault(name, []).append(status)
        client.close()

    run_threads(6, insert_all)
    for name, seen in statuses.items():
        assert sorted(seen) == [200] + [409] * 5, name


def test_in_process_emulator_serves_clients_at_once(emulator: Emulator) -> None:
    host, port = emulator.host.rsplit(":", 1)
    idle = Client(host, int(port))
    busy = Client(host, int(port))
    try:
        assert idle.call("GET", "/taskqueue/v1beta2/projects/demo/taskqueues/default")[0] == 200
        # The idle keep-alive connection holds its server thread; others are served anyway.
        for index in range(50):
            assert busy.call("POST", tasks_path(), {"id": f"t{index}", "payloadBase64": ""})[0] == 200
        others = [Client(host, int(port)) for _ in range(20)]
        for client in others:
            status, leased = client.call("POST", tasks_path() + "/lease?numTasks=2&leaseSecs=600")
            assert status == 200
            assert len(leased["items"]) == 2
        for client in others:
            client.close()
        # And the idle connection is still good.
        status, listed = idle.call("GET", tasks_path())
        assert status == 200
        assert len(listed["items"]) == 50
        assert (
            idle.call("POST", tasks_path() + "/lease?numTasks=100&leaseSecs=600")[1]["items"][0]["id"]
            == "t40"
        )
    finally:
        idle.close()
        busy.close()


def test_in_process_emulator_parallel_clients(emulator: Emulator) -> None:
    host, port = emulator.host.rsplit(":", 1)
    leased: list[str] = []
    lock = threading.Lock()
    for index in range(400):
        emulator.service.insert("demo", "default", {"id": f"t{index}", "payloadBase64": ""})

    def lease(number: int) -> None:
        client = Client(host, int(port))
        for _ in range(400):
            status, answer = client.call("POST", tasks_path() + "/lease?numTasks=3&leaseSecs=600")
            assert status == 200
            if "items" not in answer:
                break
            with lock:
                leased.extend(task["id"] for task in answer["items"])
        client.close()

    run_threads(8, lease)
    assert sorted(leased) == sorted(f"t{index}" for index in range(400))
