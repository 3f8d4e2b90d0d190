"""Durable storage (``--data-dir``) under attack: a full disk, two emulators on
one directory, corrupt journal entries, file permissions, and ``--fsync``.

The emulators here are real processes (``python -m kombu_appengine.emulator``)
or in-process :class:`Emulator` objects, always spoken to over HTTP.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
import resource
import socket
import stat
import subprocess
from collections.abc import Iterator
from typing import Any, Protocol

import pytest

from kombu_appengine.emulator import Emulator, storage
from tests.support.emulator_process import EmulatorProcess, Spawn, call, tasks_path
from tests.support.helpers import b64

#: Project of every request.
PROJECT = "demo"
#: Long enough that a journal entry naming the task cannot fit in the few
#: bytes left at the end of a tmpfs page once the disk is full.
LONG = "x" * 400


def assert_backend_error(answer: tuple[int, Any]) -> None:
    """A 503 with Google's error body, reason ``backendError``."""
    status, document = answer
    assert status == 503, answer
    error = document["error"]
    assert error["code"] == 503
    assert error["message"]
    assert [(e["domain"], e["reason"]) for e in error["errors"]] == [("global", "backendError")]


def mode_of(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def entry(**fields: Any) -> dict[str, Any]:
    """A valid insert entry of task ``a``, with ``fields`` changed."""
    base: dict[str, Any] = {
        "op": "insert",
        "project": PROJECT,
        "queue": "default",
        "name": "a",
        "payload": b64(b"p"),
        "tag": None,
        "enqueued": 1_700_000_000_000_000,
        "seq": 1,
    }
    base.update(fields)
    return base


def journal_line(document: Any) -> bytes:
    return json.dumps(document).encode() + b"\n"


def write_journal(data_dir: pathlib.Path, *lines: bytes) -> pathlib.Path:
    data_dir.mkdir(mode=0o700)
    journal = data_dir / storage.JOURNAL_NAME
    journal.write_bytes(b"".join(lines))
    return journal


# -- a full disk -------------------------------------------------------------


class Disk(Protocol):
    """A data directory whose disk a test can fill and free while an emulator runs."""

    data_dir: pathlib.Path

    def fill(self, emulator: EmulatorProcess) -> None: ...

    def make_room(self, emulator: EmulatorProcess) -> None: ...


class TmpfsDisk:
    """A 1 MiB tmpfs, filled by a file: writes fail with ENOSPC, as on a full disk."""

    def __init__(self, root: pathlib.Path) -> None:
        self.mount_point = root / "tmpfs"
        self.mount_point.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(self.mount_point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mounted.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        self.data_dir = self.mount_point / "data"
        self._filler = self.mount_point / "filler"

    def fill(self, emulator: EmulatorProcess) -> None:
        with open(self._filler, "wb", buffering=0) as filler:
            while True:
                try:
                    filler.write(b"\0" * 65536)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    return

    def make_room(self, emulator: EmulatorProcess) -> None:
        self._filler.unlink()

    def close(self) -> None:
        if subprocess.run(["umount", str(self.mount_point)], check=False).returncode:
            subprocess.run(["umount", "-l", str(self.mount_point)], check=False)


class FileSizeLimit:
    """The emulator's RLIMIT_FSIZE, lowered and raised from outside with prlimit(2).

    Past the limit a write fails with EFBIG (Python ignores SIGXFSZ), after a
    partial write up to it: what a disk that fills up mid-write does.
    No privilege needed: the soft limit of a process of the same user.
    """

    def __init__(self, root: pathlib.Path) -> None:
        if not hasattr(resource, "prlimit"):
            pytest.skip("resource.prlimit is Linux only")
        self.data_dir = root / "data"
        self._hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]

    def fill(self, emulator: EmulatorProcess) -> None:
        size = (self.data_dir / storage.JOURNAL_NAME).stat().st_size
        resource.prlimit(emulator.process.pid, resource.RLIMIT_FSIZE, (size + 16, self._hard))

    def make_room(self, emulator: EmulatorProcess) -> None:
        resource.prlimit(emulator.process.pid, resource.RLIMIT_FSIZE, (self._hard, self._hard))

    def close(self) -> None:
        pass


@pytest.fixture(params=["tmpfs", "file-size-limit"])
def disk(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Disk]:
    """A disk to fill: a real tmpfs where mounting one is allowed (root), and
    everywhere the file size limit."""
    made = TmpfsDisk(tmp_path) if request.param == "tmpfs" else FileSizeLimit(tmp_path)
    try:
        yield made
    finally:
        made.close()


QUEUE_YAML = """\
queue:
- name: default
  mode: pull
- name: limited
  mode: pull
  retry_parameters:
    task_retry_limit: 1
"""


@pytest.mark.slow
def test_a_full_disk_answers_503_changes_nothing_and_loses_nothing(
    disk: Disk, spawn: Spawn, tmp_path: pathlib.Path
) -> None:
    # `disk` before `spawn`: the emulators are killed before the tmpfs is unmounted.
    queue_yaml = tmp_path / "queue.yaml"
    queue_yaml.write_text(QUEUE_YAML)
    args = ("--queue-yaml", str(queue_yaml), "--data-dir", str(disk.data_dir))
    emulator = spawn(*args)
    held, waiting, victim, doomed = (f"{role}-{LONG}" for role in ("held", "waiting", "victim", "doomed"))
    for name in (held, waiting, victim):
        assert emulator.insert(name, payload=name.encode()[:20])[0] == 200
    assert emulator.insert(doomed, "limited")[0] == 200
    status, leased = emulator.lease(lease_secs=3600)
    assert [task["id"] for task in leased["items"]] == [held]
    # Leased once with leaseSecs=0: due again at once, and the next lease
    # must delete it instead (task_retry_limit 1).
    status, leased = emulator.lease("limited", lease_secs=0)
    assert [task["id"] for task in leased["items"]] == [doomed]
    before = {name: emulator.get(name)[1] for name in (held, waiting, victim)}
    doomed_before = emulator.get(doomed, "limited")[1]

    disk.fill(emulator)
    # Small inserts until one is refused: on tmpfs the journal's last page
    # may still have room for a few.
    acknowledged_pads: list[str] = []
    for number in range(90):
        answer = emulator.insert(f"pad-{number}")
        if answer[0] != 200:
            assert_backend_error(answer)
            refused_pad = f"pad-{number}"
            break
        acknowledged_pads.append(f"pad-{number}")
    else:
        pytest.fail("no insert was refused on a full disk")
    refused = f"refused-{LONG}"
    assert_backend_error(emulator.insert(refused))
    assert_backend_error(emulator.lease())
    assert_backend_error(emulator.lease("limited"))
    assert_backend_error(emulator.call("DELETE", f"{tasks_path()}/{victim}"))
    assert_backend_error(
        emulator.call("POST", f"{tasks_path()}/{held}?newLeaseSeconds=60", {"queueName": "default"})
    )
    assert_backend_error(
        emulator.call("PATCH", f"{tasks_path()}/{held}?newLeaseSeconds=0", {"queueName": "default"})
    )

    # Nothing changed in memory: no task held by a lease nobody got.
    for name, task in before.items():
        assert emulator.get(name) == (200, task), name
    assert emulator.get(doomed, "limited") == (200, doomed_before)
    assert emulator.get(refused)[0] == 404
    assert emulator.get(refused_pad)[0] == 404

    disk.make_room(emulator)
    # The journal stayed valid: what follows the failures is kept too.
    status, leased = emulator.lease(lease_secs=3600)
    assert status == 200
    (leased_waiting,) = leased["items"]
    assert leased_waiting["id"] == waiting
    assert leased_waiting["retry_count"] == 1
    after = f"after-{LONG}"
    assert emulator.insert(after)[0] == 200
    expected = {**before, waiting: leased_waiting, after: emulator.get(after)[1]}
    expected.update({name: emulator.get(name)[1] for name in acknowledged_pads})
    emulator.kill()

    restarted = spawn(*args)
    for name, task in expected.items():
        assert restarted.get(name) == (200, task), name
    assert restarted.get(doomed, "limited") == (200, doomed_before)
    assert restarted.listed() == set(expected)
    assert restarted.listed("limited") == {doomed}
    # Never recorded, so never reserved either.
    assert restarted.insert(refused)[0] == 200
    assert restarted.insert(refused_pad)[0] == 200


def test_a_complete_last_line_that_is_not_an_entry_is_corruption_not_a_torn_write(
    tmp_path: pathlib.Path,
) -> None:
    # A torn write never ends with the newline: this line was written whole.
    data_dir = tmp_path / "data"
    journal = write_journal(data_dir, journal_line(entry()), b'{"op": "insert", "proj\n')
    with pytest.raises(storage.CorruptJournal) as raised:
        Emulator(queues=["default"], data_dir=str(data_dir))
    assert str(raised.value).startswith(f"{journal}, line 2: ")


def test_only_a_torn_last_line_is_dropped(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "data"
    write_journal(data_dir, journal_line(entry()), journal_line(entry(name="b", seq=2))[:-9])
    with Emulator(queues=["default"], data_dir=str(data_dir)) as started:
        assert list(started.service.queue(PROJECT, "default").tasks) == ["a"]


# -- two emulators, one data directory ---------------------------------------


@pytest.mark.slow
def test_a_second_emulator_on_the_same_data_dir_refuses_to_start(
    spawn: Spawn, tmp_path: pathlib.Path
) -> None:
    data_dir = tmp_path / "data"
    first = spawn("--queue", "default", "--data-dir", str(data_dir))
    assert first.insert("before")[0] == 200

    second = spawn("--queue", "default", "--data-dir", str(data_dir), wait=False)
    assert second.wait_refused() == 1
    assert second.stderr() == (
        f"pullqueue_emulator: cannot start: data dir {data_dir} is in use by another emulator"
        f" (pid {first.process.pid})\n"
    )
    with pytest.raises(storage.DataDirInUse) as raised:
        Emulator(queues=["default"], data_dir=str(data_dir))
    assert str(raised.value) == f"data dir {data_dir} is in use by another emulator (pid {first.process.pid})"

    assert first.insert("after")[0] == 200
    first.kill()  # SIGKILL: the lock goes with the process
    third = spawn("--queue", "default", "--data-dir", str(data_dir))
    assert third.listed() == {"before", "after"}


def test_in_process_emulators_do_not_share_a_data_dir(tmp_path: pathlib.Path) -> None:
    data_dir = str(tmp_path / "data")
    with Emulator(queues=["default"], data_dir=data_dir) as first:
        with pytest.raises(storage.DataDirInUse) as raised:
            Emulator(queues=["default"], data_dir=data_dir)
        assert str(raised.value) == f"data dir {data_dir} is in use by another emulator (pid {os.getpid()})"
        assert call(first, "POST", tasks_path(), {"id": "kept", "payloadBase64": ""})[0] == 200
    # Stopping releases the directory.
    with Emulator(queues=["default"], data_dir=data_dir) as again:
        assert call(again, "GET", f"{tasks_path()}/kept")[0] == 200


def test_an_emulator_that_cannot_bind_gives_the_data_dir_back(tmp_path: pathlib.Path) -> None:
    data_dir = str(tmp_path / "data")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            Emulator(queues=["default"], data_dir=data_dir, port=taken.getsockname()[1])
    with Emulator(queues=["default"], data_dir=data_dir):
        pass


# -- corrupt journal entries -------------------------------------------------


#: A second line that is not a journal entry, though the first and the third are.
CORRUPT_SECOND_LINES = {
    "not an object": journal_line([1, 2, 3]),
    "unknown op": journal_line({"op": "frobnicate", "project": PROJECT, "queue": "default"}),
    "no op": journal_line({"project": PROJECT, "queue": "default", "name": "b"}),
    "name not a string": journal_line(entry(name=0, seq=2)),
    "missing key": journal_line({k: v for k, v in entry(name="b", seq=2).items() if k != "enqueued"}),
    "wrong type": journal_line(entry(name="b", seq=2, enqueued="yesterday")),
    "boolean as number": journal_line(entry(name="b", seq=True)),
    "payload not base64": journal_line(entry(name="b", seq=2, payload="not base64!")),
    "project not a string": journal_line(entry(name="b", seq=2, project=7)),
    "malformed lease": journal_line(
        {"op": "lease", "project": PROJECT, "queue": "default", "tasks": [["a", 1, 2]]}
    ),
    "lease of a string": journal_line({"op": "lease", "project": PROJECT, "queue": "default", "tasks": "a"}),
    "delete without when": journal_line(
        {"op": "delete", "project": PROJECT, "queue": "default", "name": "a"}
    ),
    "not JSON": b"{not json\n",
}


@pytest.mark.parametrize("second_line", CORRUPT_SECOND_LINES.values(), ids=list(CORRUPT_SECOND_LINES))
def test_a_corrupt_entry_is_one_error_naming_the_file_and_line(
    second_line: bytes, tmp_path: pathlib.Path
) -> None:
    data_dir = tmp_path / "data"
    journal = write_journal(
        data_dir, journal_line(entry()), second_line, journal_line(entry(name="c", seq=3))
    )
    with pytest.raises(storage.CorruptJournal) as raised:
        Emulator(queues=["default"], data_dir=str(data_dir))
    assert str(raised.value).startswith(f"{journal}, line 2: ")
    # A failed start holds nothing: once the file is mended, it starts.
    journal.write_bytes(journal_line(entry()))
    with Emulator(queues=["default"], data_dir=str(data_dir)) as started:
        assert list(started.service.queue(PROJECT, "default").tasks) == ["a"]


def test_a_task_inserted_again_in_a_later_entry_is_the_later_one(tmp_path: pathlib.Path) -> None:
    # What a journal holds when a queue's tasks were kept while it was not
    # declared, and a task of the same name was inserted once it was again.
    data_dir = tmp_path / "data"
    write_journal(
        data_dir,
        journal_line(entry(tag="old", payload=b64(b"old"))),
        journal_line(entry(tag="new", payload=b64(b"new"), seq=2)),
    )
    with Emulator(queues=["default"], data_dir=str(data_dir)) as started:
        status, task = call(started, "GET", f"{tasks_path()}/a")
        assert (status, task["tag"], task["payloadBase64"]) == (200, "new", b64(b"new"))
        status, queue = call(
            started, "GET", f"/taskqueue/v1beta2/projects/{PROJECT}/taskqueues/default?getStats=true"
        )
        assert queue["stats"]["totalTasks"] == 1
        status, leased = call(started, "POST", f"{tasks_path()}/lease?numTasks=5&leaseSecs=60")
        assert [(task["id"], task["payloadBase64"]) for task in leased["items"]] == [("a", b64(b"new"))]


@pytest.mark.slow
def test_the_command_line_reports_a_corrupt_entry_in_one_line(spawn: Spawn, tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "data"
    journal = write_journal(
        data_dir, journal_line(entry()), CORRUPT_SECOND_LINES["wrong type"], journal_line(entry(name="c"))
    )
    refused = spawn("--queue", "default", "--data-dir", str(data_dir), wait=False)
    assert refused.wait_refused() == 1
    message = refused.stderr()
    assert message.startswith(f"pullqueue_emulator: cannot start: {journal}, line 2: "), message
    assert message.count("\n") == 1, message


# -- permissions -------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The common umask, under which files come out readable by everyone."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_022")
def test_a_new_data_dir_and_its_files_are_private(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / "parent" / "data"
    with Emulator(queues=["default"], data_dir=str(data_dir)) as running:
        assert call(running, "POST", tasks_path(), {"id": "secret", "payloadBase64": b64(b"s")})[0] == 200
        assert mode_of(data_dir) == 0o700
        files = {path.name: mode_of(path) for path in data_dir.iterdir()}
    assert files == {storage.JOURNAL_NAME: 0o600, storage.LOCK_NAME: 0o600}


@pytest.mark.usefixtures("umask_022")
def test_existing_files_are_made_private_and_an_open_data_dir_is_warned_about(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    journal = data_dir / storage.JOURNAL_NAME
    journal.write_bytes(journal_line(entry()))
    journal.chmod(0o644)
    lock = data_dir / storage.LOCK_NAME
    lock.write_bytes(b"")
    lock.chmod(0o666)
    caplog.set_level(logging.WARNING, logger=storage.__name__)
    with Emulator(queues=["default"], data_dir=str(data_dir)):
        assert mode_of(journal) == 0o600
        assert mode_of(lock) == 0o600
    # The directory is the user's: left as it is, but they are told.
    assert mode_of(data_dir) == 0o755
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert any(str(data_dir) in message and "0755" in message for message in warnings), warnings


# -- --fsync -----------------------------------------------------------------


@pytest.mark.slow
def test_fsync_keeps_every_acknowledged_change(spawn: Spawn, tmp_path: pathlib.Path) -> None:
    args = ("--queue", "default", "--data-dir", str(tmp_path / "data"), "--fsync")
    emulator = spawn(*args)
    for name in ("a", "b", "c"):
        assert emulator.insert(name, payload=name.encode())[0] == 200
    status, leased = emulator.lease(lease_secs=3600)
    assert status == 200
    assert emulator.call("DELETE", f"{tasks_path()}/b")[0] == 204
    expected = {name: emulator.get(name)[1] for name in ("a", "c")}
    emulator.kill()
    restarted = spawn(*args)
    assert {name: restarted.get(name)[1] for name in ("a", "c")} == expected
    assert expected["a"]["leaseTimestamp"] == leased["items"][0]["leaseTimestamp"]
    assert restarted.get("b")[0] == 404


@pytest.mark.slow
def test_fsync_needs_a_data_dir(spawn: Spawn) -> None:
    refused = spawn("--queue", "default", "--fsync", wait=False)
    assert refused.wait_refused() == 2
    assert "--fsync needs --data-dir" in refused.stderr()


def test_fsync_from_python(tmp_path: pathlib.Path) -> None:
    data_dir = str(tmp_path / "data")
    with Emulator(queues=["default"], data_dir=data_dir, fsync=True) as running:
        assert call(running, "POST", tasks_path(), {"id": "a", "payloadBase64": ""})[0] == 200
    with Emulator(queues=["default"], data_dir=data_dir) as running:
        assert call(running, "GET", f"{tasks_path()}/a")[0] == 200
    with pytest.raises(ValueError, match="data_dir"):
        Emulator(queues=["default"], fsync=True)
