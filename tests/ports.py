"""Free TCP ports for the servers the tests start (PostgreSQL, nodes, HAProxy, SMTP peers).

Why not ``bind(("127.0.0.1", 0))``: the kernel hands that port out of the *ephemeral* range,
the same range it draws the local ports of outgoing connections from. A test that picks a
port, starts a few processes that open connections (to PostgreSQL, to each other), and only
then starts the server meant for that port, can find the port taken by one of those outgoing
connections ("Address already in use"; CI saw it with HAProxy). Ports below the ephemeral range
are never handed out that way, so a port picked there and found free stays free unless some
test binds it on purpose, and this module never gives the same one twice in a process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000
_given: set[int] = set()
_lock = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in _RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that is free now, outside the ephemeral range where possible,
    and not handed out before by this process."""
    low, _high = _ephemeral_range()
    rng = random.SystemRandom()
    with _lock:
        if low - _LOWEST > 1000:
            for _ in range(200):
                port = rng.randrange(_LOWEST, low)
                if port not in _given and _is_free(port):
                    _given.add(port)
                    return port
        # A machine whose ephemeral range starts low: the kernel's choice, never twice.
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _given:
                _given.add(port)
                return port
