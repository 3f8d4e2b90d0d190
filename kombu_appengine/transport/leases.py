"""The leases a channel holds."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .routing import Route


@dataclass
class Lease:
    """A task this channel holds a lease on."""

    route: Route
    task_id: str
    #: When the lease ends, on this process's monotonic clock (conservative:
    #: measured from before the lease was asked for).
    expires: float
    task: dict[str, Any]
    lost: bool = False
    #: The process that leased it: only that one gives it back on close
    #: (a forked child closing what it inherited must not).
    pid: int = field(default_factory=os.getpid)
