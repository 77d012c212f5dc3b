"""What this process is in a cluster: its node id, its role, and how far its notification tail
has got. The runtime writes it (``adapters.runtime``: the leadership loop and the notification
tail); ``GET /health`` and the logs read it."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["starting", "leader", "follower", "stopping"]


def derive_node_id(port: int | None = None) -> str:
    """``<host>-<port>`` (or ``<host>-<pid>`` without a port): stable across restarts of the
    same service on the same host, distinct between processes of one host."""
    host = socket.gethostname().split(".")[0] or "node"
    return f"{host}-{port if port is not None else os.getpid()}"


@dataclass
class NodeStatus:
    node_id: str
    role: Role = "starting"
    """``leader``: this process routes and runs the offer timeouts; ``follower``: another one
    does (or none yet, while the lock is free and about to be taken)."""
    tail_position: int = 0
    """The highest outbox seq this process's notification tail has read and delivered."""
    tail_lag: int = 0
    """Entries committed but not yet read by the tail, at its last read (0: caught up)."""
    tail_read_at: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` of the tail's last successful read."""
    started_at: float = field(default_factory=time.monotonic)

    def tail_age(self) -> float:
        """Seconds since the tail last read the outbox successfully."""
        return max(0.0, time.monotonic() - self.tail_read_at)
