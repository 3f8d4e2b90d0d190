"""Where a kombu queue's tasks live: its own pull queue, or a tag on ``shared_queue``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    """Where a kombu queue's tasks are: a pull queue, and a tag on it or none."""

    pull_queue: str
    tag: str | None = None
