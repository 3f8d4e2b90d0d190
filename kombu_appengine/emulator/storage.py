"""Durable storage for the emulator (``--data-dir``): an append-only journal.

Every change is written to ``journal.jsonl`` before it is applied in memory
and answered, all its entries with one ``write(2)``, so a task whose insert
was acknowledged survives the emulator being killed (SIGKILL included), a
delete never comes back and a lease keeps its expiry.

With ``fsync`` (``--fsync``) each write is also synced to the disk before
the answer, so acknowledged changes survive power loss too; compaction
always syncs the new file and the directory, so that a rename never leaves
less on disk than the journal it replaced.

When a write (or its sync) fails (a full disk, say), the journal is truncated back to its
last good offset, nothing changes in memory and the request is answered 503
``backendError``: the journal always holds whole entries, and only the
changes that were acknowledged.

At start the journal is replayed and compacted: the present state is written
to a new file that atomically replaces the old one. The same happens while
the emulator runs, whenever the journal has grown past twice its compacted
size (and :data:`COMPACTION_FLOOR`), so it stays within a small multiple of
the live data however many tasks pass through. A last line without its
newline, torn by a crash in the middle of a write, is dropped: its request
was never answered. Any other line that is not an entry stops the start
with :class:`CorruptJournal`.

One emulator at a time owns a data directory: it holds an exclusive
``flock(2)`` on ``emulator.lock`` there (which names its pid) for as long as
it runs, and the kernel releases it when the process ends, however it ends.
A second emulator on the same directory refuses to start with
:class:`DataDirInUse`, instead of journaling over the first one's changes.

Tasks are the users' data: a data directory the emulator creates is
``0700`` and its files are always ``0600``, whatever the umask, existing
files included. A directory that already exists is left as it is (it may
be shared on purpose), with a warning when other users can read or write it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import logging
import os
import stat
from typing import Any

from ..rest import errors
from ..rest.errors import ApiError
from .model import MalformedEntry, TaskQueueService

logger = logging.getLogger(__name__)

#: The journal's file name inside the data directory.
JOURNAL_NAME = "journal.jsonl"
#: The file whose lock says which emulator owns the data directory.
LOCK_NAME = "emulator.lock"
#: Mode of a data directory the emulator creates: its owner's alone.
DIR_MODE = 0o700
#: Mode of every file in the data directory.
FILE_MODE = 0o600
#: The journal is compacted while running once it is larger than this many
#: bytes and than :data:`COMPACTION_GROWTH` times its size after the last
#: compaction: its size stays within twice the live data, plus this floor.
COMPACTION_FLOOR = 1024 * 1024
#: How many times its compacted size the journal may grow to before the next compaction.
COMPACTION_GROWTH = 2
#: Bytes written at a time when compacting, so that a large state is never
#: held in memory twice.
WRITE_CHUNK = 1024 * 1024


class StorageError(Exception):
    """The data directory cannot be used; the message names it or its file."""


class CorruptJournal(StorageError):
    """The journal holds a line that is not an entry (other than a torn last one)."""


class DataDirInUse(StorageError):
    """Another emulator (another process, or this one) owns the data directory."""


class FileJournal:
    """Restore ``service`` from ``data_dir`` and record its changes there.

    Parameters:
        data_dir: the directory, created when missing.
        service: the queues, restored from the journal and then recording to it.
        fsync: make every change durable across power loss, not only across
            the death of the process, before it is answered: each write is
            followed by ``fdatasync(2)``.

    Raises:
        DataDirInUse: another emulator runs on ``data_dir``.
        CorruptJournal: the journal holds a line that is not an entry.
        OSError: the directory or its files cannot be made or written.
    """

    def __init__(self, data_dir: str, service: TaskQueueService, fsync: bool = False) -> None:
        _prepare_directory(data_dir)
        self.path = os.path.join(data_dir, JOURNAL_NAME)
        self.fsync = fsync
        self._service = service
        #: Entries of queues that are not declared now, carried into every compaction.
        self._kept: list[dict[str, Any]] = []
        #: The journal, open for appending; -1 once closed.
        self._fd = -1
        #: Bytes of whole entries in the journal: where a failed write is cut back to.
        self._size = 0
        #: The size past which the next change first compacts the journal.
        self._compact_at = COMPACTION_FLOOR
        #: Why the journal takes no more writes, once it is closed or a failed
        #: write could not be undone.
        self._broken: str | None = None
        self._lock_fd = _lock(data_dir)
        try:
            with service.lock:
                self._restore()
                self._compact()
                service.journal = self
        except BaseException:
            if self._fd >= 0:
                os.close(self._fd)
            os.close(self._lock_fd)
            raise

    def _restore(self) -> None:
        try:
            with open(self.path, "rb") as journal:
                data = journal.read()
        except FileNotFoundError:
            return
        # Every entry ends with a newline: what follows the last one is a
        # write torn by a crash, never acknowledged.
        whole, _, torn = data.rpartition(b"\n")
        if torn:
            logger.warning("%s: dropping a torn last line", self.path)
        undeclared: set[str] = set()
        for number, line in enumerate(whole.split(b"\n") if whole else [], 1):
            if not line:
                continue
            try:
                entry = json.loads(line)
            except (ValueError, RecursionError):
                raise CorruptJournal(f"{self.path}, line {number}: not a journal entry (not JSON)") from None
            try:
                self._service.replay(entry)
            except MalformedEntry as exc:
                raise CorruptJournal(f"{self.path}, line {number}: {exc}") from None
            except ApiError:
                # A queue that is no longer declared: keep its tasks for the
                # day it is declared again.
                undeclared.add(entry["queue"])
                self._kept.append(entry)
        if undeclared:
            logger.warning(
                "%s holds tasks of queues that are not declared now (%s); they are kept",
                self.path,
                ", ".join(sorted(undeclared)),
            )

    def _compact(self) -> None:
        """Replace the journal by the present state, and append to that from now on.

        The state is written to a temporary file, which is synced and renamed
        over the journal: at every instant the journal's name holds either
        the old whole journal or the new whole one, even across power loss.
        Called with the service's lock held, between changes, when memory
        holds exactly what the journal does.

        Raises:
            OSError: naming the file that could not be written; the journal
                is then as it was.
        """
        temporary = self.path + ".tmp"
        fd = _open_private(temporary, os.O_WRONLY | os.O_TRUNC | os.O_APPEND)
        try:
            size = self._write_snapshot(fd)
            os.fsync(fd)
            os.replace(temporary, self.path)
        except BaseException as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            if isinstance(exc, OSError):
                raise OSError(exc.errno, exc.strerror, temporary) from None
            raise
        # The name is the new file's now: append to it whatever comes next.
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._size = fd, size
        self._compact_at = max(COMPACTION_FLOOR, COMPACTION_GROWTH * size)
        _sync_directory(os.path.dirname(self.path))

    def _write_snapshot(self, fd: int) -> int:
        """Write the entries that rebuild the present state to ``fd``; their size."""
        size = 0
        chunk: list[bytes] = []
        pending = 0
        for entry in itertools.chain(self._kept, self._service.snapshot()):
            line = _line(entry)
            chunk.append(line)
            pending += len(line)
            if pending >= WRITE_CHUNK:
                _write_all(fd, b"".join(chunk))
                size, chunk, pending = size + pending, [], 0
        _write_all(fd, b"".join(chunk))
        return size + pending

    def record(self, *entries: dict[str, Any]) -> None:
        """Append the entries of one change with one write, all or none.

        Returns once they are in the kernel, so they survive the process,
        or with ``fsync`` once they are on the disk, so they survive power
        loss. When the journal has outgrown the live data, it is compacted
        first.

        Raises:
            ApiError: 503 ``backendError`` when they could not be written
                (the journal is then as it was before the call).
        """
        with self._service.lock:
            if self._broken is not None:
                raise errors.backend_error(self._broken)
            if self._size > self._compact_at:
                self._compact_while_running()
            data = b"".join(_line(entry) for entry in entries)
            try:
                _write_all(self._fd, data)
                if self.fsync:
                    _sync_data(self._fd)
            except OSError as exc:
                self._undo(exc)
            self._size += len(data)

    def _compact_while_running(self) -> None:
        try:
            self._compact()
        except OSError as exc:
            # Not the change's fault: it goes to the journal as it is, and
            # compaction is tried again once the journal grew some more.
            self._compact_at = self._size + COMPACTION_FLOOR
            logger.warning("cannot compact the journal: %s; it keeps growing for now", exc)
        else:
            logger.info("compacted the journal %s to %d bytes", self.path, self._size)

    def _undo(self, failure: OSError) -> None:
        """Cut off what a failed write left, then raise the 503 that says so."""
        message = f"Cannot write the journal {self.path}: {failure.strerror}; nothing was changed"
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as exc:
            # Whatever comes next would follow a torn entry, which a restart
            # would refuse as corrupt: take no more writes.
            self._broken = (
                f"The journal {self.path} could not be repaired after a failed write"
                f" ({exc.strerror}); restart the emulator"
            )
            logger.error("%s", self._broken)
            raise errors.backend_error(self._broken) from failure
        logger.error("%s", message)
        raise errors.backend_error(message) from failure

    def close(self) -> None:
        """Close the journal file and give up the data directory; later changes are refused (503)."""
        with self._service.lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
                self._broken = f"The journal {self.path} is closed: the emulator is stopping"
                os.close(self._lock_fd)


def _prepare_directory(path: str) -> None:
    """Create ``path`` private to its owner, or warn when an existing one is open to others.

    Raises:
        StorageError: ``path`` exists and is not a directory.
    """
    try:
        os.makedirs(path, mode=DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise StorageError(f"data dir {path} is not a directory") from None
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o066:
            logger.warning(
                "data dir %s can be read or changed by other users (mode %04o); its files are"
                " private (0600), but 'chmod 700 %s' keeps others from listing or replacing them",
                path,
                mode,
                path,
            )
    else:
        # makedirs' mode went through the umask.
        os.chmod(path, DIR_MODE)


def _open_private(path: str, flags: int) -> int:
    """Open ``path``, creating it, as a file only its owner may read, whatever it was before.

    Raises:
        OSError: naming ``path``.
    """
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except OSError as exc:
        os.close(fd)
        raise OSError(exc.errno, exc.strerror, path) from None
    return fd


def _lock(data_dir: str) -> int:
    """Take ``data_dir`` for this process: the open lock file, locked, holding our pid.

    Raises:
        DataDirInUse: another open file description holds the lock (it is
            per open file, so a second emulator in this process is refused too).
    """
    path = os.path.join(data_dir, LOCK_NAME)
    fd = _open_private(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise DataDirInUse(f"data dir {data_dir} is in use by another emulator (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


#: fdatasync(2) where there is one: an append needs the data and the size on
#: disk, not the other metadata.
_sync_data = getattr(os, "fdatasync", os.fsync)


def _sync_directory(path: str) -> None:
    """fsync a directory, so that a rename in it survives power loss.

    Raises:
        OSError: naming the directory.
    """
    path = path or "."
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: a write to a file that is filling up may be short."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _line(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode("utf-8") + b"\n"
