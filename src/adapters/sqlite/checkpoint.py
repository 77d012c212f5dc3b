"""WAL checkpoints on a thread of their own, not inside a commit.

In WAL mode SQLite appends each commit to the ``-wal`` file, and by default the connection whose
commit takes the log past 1,000 pages (``wal_autocheckpoint``) copies the log back into the
database file there and then, fsync included, before its COMMIT returns. Measured on this
machine (docs/performance.md, "GIL ping-pong"): one UpdateProperties commit in about 166 took
6-8 ms instead of 0.3 ms, which is the loop held for that long when the core runs on the event
loop (``adapters.runtime.CoreRunner(inline=True)``).

``Checkpointer`` turns the automatic checkpoint off on the store's connections and runs
``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection and thread after every
``every_commits`` commits (and at least every ``interval`` seconds while there were any).
PASSIVE copies what no reader still needs and never waits for readers or writers, so commits go
on meanwhile; the sqlite3 module releases the GIL for the whole checkpoint. Nothing about
durability changes: a commit is in the WAL when COMMIT returns, checkpointed or not.

The log starts over from its beginning only when a write finds it wholly copied back. Under a
sustained load a PASSIVE pass never catches up with the commits made while it runs, so the log
would grow without bound (measured: 500 MB in 20,000 updates). So when the ``-wal`` file passes
``max_wal_bytes`` the checkpointer runs one RESTART checkpoint, which makes writers wait while
it copies the rest and syncs: one short stall every ``max_wal_bytes`` of log (every few
thousand commits) instead of one every 1,000 pages; ``journal_size_limit`` then truncates the
file back to that size.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable

_log = logging.getLogger(__name__)

MAX_WAL_BYTES = 64 * 1024 * 1024
"""The ``-wal`` file's size past which a RESTART checkpoint bounds it."""
EVERY_COMMITS = 100
"""Commits between two checkpoints: a few hundred pages of log at a time (each about 4 KiB),
so the WAL file stays at a few MiB and each checkpoint is short."""


class Checkpointer:
    """Runs the WAL checkpoints of one database file on its own thread (started on the first
    ``committed``, stopped by ``stop``)."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        wal_path: str | os.PathLike[str],
        *,
        writers: threading.Lock | None = None,
        every_commits: int = EVERY_COMMITS,
        interval: float = 1.0,
        max_wal_bytes: int = MAX_WAL_BYTES,
    ) -> None:
        """``connect``: a new connection to the file (the checkpointer's own, closed at stop);
        ``wal_path``: its ``-wal`` file; ``writers``: the lock this process's writers take
        (the store's), held for a RESTART so they queue on it and go on the moment it ends,
        rather than in SQLite's busy handler, which sleeps in steps of up to 10 ms."""
        if every_commits < 1:
            raise ValueError("every_commits must be >= 1")
        self._connect = connect
        self.wal_path = wal_path
        self.max_wal_bytes = max_wal_bytes
        self.restarts = 0
        self._writers = writers
        self.every_commits = every_commits
        self.interval = interval
        self._pending = 0
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.checkpoints = 0
        self.failures = 0

    def committed(self) -> None:
        """One more commit in the log (called after each COMMIT, from any thread)."""
        with self._lock:
            self._pending += 1
            due = self._pending >= self.every_commits
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(
                    target=self._run, name="sqlite-checkpoint", daemon=True
                )
                self._thread.start()
        if due:
            self._wanted.set()

    def stop(self) -> None:
        """Stop the thread (after the checkpoint it may be running). Idempotent."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wanted.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _wal_bytes(self) -> int:
        try:
            return os.path.getsize(self.wal_path)
        except OSError:
            return 0

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wanted.wait(self.interval)
                self._wanted.clear()
                with self._lock:
                    if self._stopping:
                        return
                    if self._pending == 0:
                        continue
                    self._pending = 0
                try:
                    if conn is None:
                        conn = self._connect()
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                    if self._wal_bytes() > self.max_wal_bytes:
                        with self._writers or contextlib.nullcontext():
                            conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                        self.restarts += 1
                except sqlite3.Error as exc:
                    # The next commit asks again; meanwhile the log only grows.
                    self.failures += 1
                    _log.warning("WAL checkpoint failed (retried after the next commits): %s", exc)
        finally:
            if conn is not None:
                conn.close()
