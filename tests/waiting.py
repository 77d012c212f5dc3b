"""Waiting for what another thread or process does: a condition polled until it holds, with a
generous limit that only ends a test that would otherwise hang (never a timed assertion)."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"not reached within {timeout} s: {what or predicate}")
