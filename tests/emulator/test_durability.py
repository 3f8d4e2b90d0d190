"""What an emulator process keeps across SIGKILL with ``--data-dir``, and forgets without it."""

from __future__ import annotations

import http.client
import pathlib
import queue
import threading
from typing import Any, Callable

import pytest

from tests.support.emulator_process import REQUEST_TIMEOUT, Client, EmulatorProcess, tasks_path
from tests.support.helpers import b64

#: Every test runs, kills and restarts emulator processes.
pytestmark = pytest.mark.slow


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
