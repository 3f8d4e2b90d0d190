"""Durable storage for the emulator (``--data-dir``): an append-only journal.

Every change is written to ``journal.jsonl`` before it is applied in memory
and answered, all its entries with one ``write(2)``, so a task whose insert
was acknowledged survives the emulator being killed (SIGKILL included), a
delete never comes back and a lease keeps its expiry.

When a write fails (a full disk, say), the journal is truncated back to its
last good offset, nothing changes in memory and the request is answered 503
``backendError``: the journal always holds whole entries, and only the
changes that were acknowledged. At start the journal is replayed and
compacted: the present state is written to a new file that atomically
replaces the old one. A last line without its newline, torn by a crash in
the middle of a write, is dropped: its request was never answered. Any
other line that is not an entry stops the start with :class:`CorruptJournal`.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from . import errors
from .errors import ApiError
from .model import TaskQueueService

logger = logging.getLogger(__name__)

#: The journal's file name inside the data directory.
JOURNAL_NAME = "journal.jsonl"


class CorruptJournal(Exception):
    """The journal holds a line that is not an entry, before its last line."""


class FileJournal:
    """Restore ``service`` from ``data_dir`` and record its changes there."""

    def __init__(self, data_dir: str, service: TaskQueueService) -> None:
        os.makedirs(data_dir, exist_ok=True)
        self.path = os.path.join(data_dir, JOURNAL_NAME)
        self._service = service
        self._kept: list[dict[str, Any]] = []
        with service.lock:
            self._restore(service)
            self._compact(service)
            service.journal = self
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        #: Bytes of whole entries in the journal: where a failed write is cut back to.
        self._size = os.fstat(self._fd).st_size
        #: Why the journal takes no more writes, once a failed one could not be undone.
        self._broken: str | None = None

    def _restore(self, service: TaskQueueService) -> None:
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
            except ValueError:
                raise CorruptJournal(f"{self.path}, line {number}: not a journal entry") from None
            try:
                service.replay(entry)
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

    def _compact(self, service: TaskQueueService) -> None:
        temporary = self.path + ".tmp"
        with open(temporary, "wb") as out:
            for entry in self._kept:
                out.write(_line(entry))
            for entry in service.snapshot():
                out.write(_line(entry))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        directory = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def record(self, *entries: dict[str, Any]) -> None:
        """Append the entries of one change with one write, all or none.

        Returns once they are in the kernel, so they survive the process.

        Raises:
            ApiError: 503 ``backendError`` when they could not be written
                (the journal is then as it was before the call).
        """
        with self._service.lock:
            if self._broken is not None:
                raise errors.backend_error(self._broken)
            data = b"".join(_line(entry) for entry in entries)
            try:
                _write_all(self._fd, data)
            except OSError as exc:
                self._undo(exc)
            self._size += len(data)

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
        """Close the journal file; later changes are refused (503)."""
        with self._service.lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
                self._broken = f"The journal {self.path} is closed: the emulator is stopping"


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: a write to a file that is filling up may be short."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _line(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode("utf-8") + b"\n"
