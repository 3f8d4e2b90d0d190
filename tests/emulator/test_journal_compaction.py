"""The journal of ``--data-dir`` stays within a small multiple of the live data
while the emulator runs, and a restart after that restores the exact state."""

from __future__ import annotations

import os
import pathlib
import threading
from concurrent.futures import ThreadPoolExecutor

from kombu_appengine.emulator import Emulator, storage
from tests.support.emulator_process import Client, tasks_path
from tests.support.helpers import b64

#: Seconds any one request may take.
REQUEST_TIMEOUT = 30.0
#: Concurrent clients churning tasks.
CLIENTS = 4
#: Insert, lease, delete cycles per client.
CYCLES = 50
#: Each churned task's payload: a few dozen of them pass any compaction floor.
BIG = b"c" * 48 * 1024


def test_churn_keeps_the_journal_bounded_and_a_restart_restores_the_exact_state(
    tmp_path: pathlib.Path,
) -> None:
    data_dir = str(tmp_path / "data")
    journal = pathlib.Path(data_dir, storage.JOURNAL_NAME)
    queues = ["churn", "keep"]
    largest = 0
    deleted: set[str] = set()
    lock = threading.Lock()

    def observe() -> None:
        nonlocal largest
        size = os.stat(journal).st_size
        with lock:
            largest = max(largest, size)

    def churn(number: int, emulator: Emulator) -> None:
        client = Client(emulator.host, REQUEST_TIMEOUT)
        try:
            for cycle in range(CYCLES):
                name = f"c{number}-{cycle}"
                status, _ = client.call("POST", tasks_path("churn"), {"id": name, "payloadBase64": b64(BIG)})
                assert status == 200
                observe()
                status, leased = client.call("POST", tasks_path("churn") + "/lease?numTasks=1&leaseSecs=600")
                assert status == 200
                observe()
                for task in leased.get("items", []):
                    status, _ = client.call("DELETE", tasks_path("churn") + f"/{task['id']}")
                    assert status == 204
                    with lock:
                        deleted.add(task["id"])
                    observe()
        finally:
            client.close()

    with Emulator(queues=queues, data_dir=data_dir) as emulator:
        client = Client(emulator.host, REQUEST_TIMEOUT)
        # Live data past any floor, so the bound is relative to it.
        kept = [f"k{number}" for number in range(16)]
        for name in kept:
            body = {"id": name, "payloadBase64": b64(name.encode().ljust(60_000, b".")), "tag": "kept"}
            assert client.call("POST", tasks_path("keep"), body)[0] == 200
        with ThreadPoolExecutor(CLIENTS) as pool:
            for churned_ok in [pool.submit(churn, number, emulator) for number in range(CLIENTS)]:
                churned_ok.result()
        # Leases in force and a released one must come back as they are.
        status, leased = client.call("POST", tasks_path("keep") + "/lease?numTasks=3&leaseSecs=3600")
        assert status == 200
        released = leased["items"][0]["id"]
        status, _ = client.call(
            "POST", tasks_path("keep") + f"/{released}?newLeaseSeconds=0", {"queueName": "keep"}
        )
        assert status == 200
        status, churned = client.call("GET", tasks_path("churn"))
        assert status == 200
        remaining = [task["id"] for task in churned["items"]]
        before = {
            name: client.call("GET", tasks_path(queue) + f"/{name}")[1]
            for queue, names in (("keep", kept), ("churn", remaining))
            for name in names
        }
        client.close()

    written = CLIENTS * CYCLES * len(BIG) * 4 // 3
    with Emulator(queues=queues, data_dir=data_dir) as emulator:
        # At start the journal is compacted to the live data alone.
        live = journal.stat().st_size
        client = Client(emulator.host, REQUEST_TIMEOUT)
        after = {
            name: client.call("GET", tasks_path(task["queueName"].rsplit("/", 1)[1]) + f"/{name}")[1]
            for name, task in before.items()
        }
        assert after == before
        assert {task["id"] for task in client.call("GET", tasks_path("keep"))[1]["items"]} == set(kept)
        for name in sorted(deleted)[:20]:
            assert client.call("GET", tasks_path("churn") + f"/{name}")[0] == 404
            # Still tombstoned: the name stays reserved across compactions.
            assert client.call("POST", tasks_path("churn"), {"id": name, "payloadBase64": ""})[0] == 409
        client.close()

    # Twice the live data at the last compaction (at most one churned task
    # per client more than now), plus the change that came after it.
    entry = len(b64(BIG)) + 200
    bound = 2 * (live + CLIENTS * entry) + entry
    assert live > 1024 * 1024
    assert written > 3 * bound
    assert largest <= bound, (largest, live, written)
