"""The emulator under concurrent clients, as a process and in-process: no task
is leased twice while its lease holds, no name is taken twice."""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any, Callable

import pytest

from kombu_appengine.emulator import Emulator
from tests.support.emulator_process import REQUEST_TIMEOUT, Client, EmulatorProcess, tasks_path
from tests.support.helpers import b64


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    idle = Client(emulator.host)
    busy = Client(emulator.host)
    try:
        assert idle.call("GET", "/taskqueue/v1beta2/projects/demo/taskqueues/default")[0] == 200
        # The idle keep-alive connection holds its server thread; others are served anyway.
        for index in range(50):
            assert busy.call("POST", tasks_path(), {"id": f"t{index}", "payloadBase64": ""})[0] == 200
        others = [Client(emulator.host) for _ in range(20)]
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
    leased: list[str] = []
    lock = threading.Lock()
    for index in range(400):
        emulator.service.insert("demo", "default", {"id": f"t{index}", "payloadBase64": ""})

    def lease(number: int) -> None:
        client = Client(emulator.host)
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
