"""Durable storage for the emulator (``--data-dir``): an append-only journal.

Every change is written to ``journal.jsonl`` with one ``write(2)`` before the
request is answered, so a task whose insert was acknowledged survives the
emulator being killed (SIGKILL included), a delete never comes back and a
lease keeps its expiry. At start the journal is replayed and compacted: the
present state is written to a new file that atomically replaces the old one.
A last line torn by a kill in the middle of a write is dropped: its request
was never answered.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

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
        self._kept: list[dict[str, Any]] = []
        with service.lock:
            self._restore(service)
            self._compact(service)
            service.journal = self
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def _restore(self, service: TaskQueueService) -> None:
        try:
            with open(self.path, "rb") as journal:
                lines = journal.read().split(b"\n")
        except FileNotFoundError:
            return
        undeclared: set[str] = set()
        last = len(lines) - 1
        for number, line in enumerate(lines, 1):
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                if number >= last:
                    logger.warning("%s: dropping a torn last line", self.path)
                    continue
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

    def record(self, entry: dict[str, Any]) -> None:
        """Append one entry with a single write: in the kernel when this returns."""
        data = _line(entry)
        written = os.write(self._fd, data)
        while written < len(data):
            written += os.write(self._fd, data[written:])

    def close(self) -> None:
        """Close the journal file."""
        os.close(self._fd)


def _line(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode("utf-8") + b"\n"
