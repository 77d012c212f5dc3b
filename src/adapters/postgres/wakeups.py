"""Wake-ups between processes: LISTEN/NOTIFY on the store's database.

Every commit that writes something (``PostgresStore._commit``) runs ``pg_notify(WAKE_CHANNEL)``
inside its transaction; PostgreSQL delivers it to every listening session when, and only if,
the transaction commits. ``Wakeups`` holds one such session per process, on a connection of
its own (LISTEN belongs to the session, so a pooled connection would not do), on a thread:
each delivery calls ``wake()``, which the server turns into "read the outbox and the change
feed now" (``adapters.runtime.ClusterTail``).

A wake-up carries only a hint (wake.py: who committed, whose notifications), which
``wanted`` may use to skip it: what changed is read from the tables, in commit order, from the
reader's own position. So a wake-up lost or skipped (the listening connection dropped,
PostgreSQL's notification queue full, another process's agents) delays a reader but never
makes it miss anything; the reader also polls, as the fallback. After every (re)connection
``wake()`` is called once, for what was committed while nobody listened.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Final

import psycopg

from .connection import Connection, DatabaseUnreachable, connect, connection_settings, describe
from .wake import WAKE_CHANNEL, WakeUp

__all__ = ["Wakeups"]

_log = logging.getLogger(__name__)
_IDLE_CHECK_S: Final = 1.0  # how long one wait for notifications lasts (to notice stop())
_RETRY_S: Final = 1.0


class Wakeups:
    """``start()``: listen on ``WAKE_CHANNEL`` and call ``wake`` (from this object's thread)
    for every burst of notifications with one ``wanted`` (all, when ``None``); ``stop()``:
    stop listening. ``wake`` and ``wanted`` must be quick and thread-safe (e.g.
    ``loop.call_soon_threadsafe(event.set)``)."""

    def __init__(
        self,
        dsn: str,
        wake: Callable[[], None],
        *,
        application_name: str = "interactions",
        connect_timeout_s: float = 10.0,
        channel: str = WAKE_CHANNEL,
        wanted: Callable[[WakeUp], bool] | None = None,
    ) -> None:
        self._dsn = dsn
        self._where = describe(dsn)
        self._settings = connection_settings(
            dsn,
            application_name=f"{application_name}-listen",
            statement_timeout_ms=None,
            connect_timeout_s=connect_timeout_s,
        )
        self._wake = wake
        self._wanted = wanted
        self._channel = channel
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        self.received = 0  # wake() calls (for tests and health)
        self.skipped = 0  # notifications ``wanted`` refused
        self.connected = False

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("Wakeups can be started once")
        self._thread = threading.Thread(target=self._run, name="pg-wakeups", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening; returns within about a second (one wait for notifications)."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=_IDLE_CHECK_S + 5)
        self._close()

    def _run(self) -> None:
        down = False
        while not self._stopping.is_set():
            try:
                conn = connect(self._dsn, self._settings)
            except DatabaseUnreachable as exc:
                if not down:
                    _log.warning("wake-ups: %s; polling until it is back", exc)
                down = True
                self._stopping.wait(_RETRY_S)
                continue
            self._conn = conn
            try:
                conn.execute(f'LISTEN "{self._channel}"')
                self.connected = True
                if down:
                    _log.warning("wake-ups: listening again on %s", self._where)
                down = False
                self._call()  # what was committed while nobody listened
                while not self._stopping.is_set():
                    got = want = False
                    for note in conn.notifies(timeout=_IDLE_CHECK_S, stop_after=1):
                        got, want = True, self._wants(note.payload)
                    if got:
                        # Drain what else arrived meanwhile: one wake-up for a burst.
                        for note in conn.notifies(timeout=0, stop_after=10_000):
                            want = self._wants(note.payload) or want
                        if want:
                            self._call()
            except psycopg.Error as exc:
                if not self._stopping.is_set():
                    if not down:
                        _log.warning("wake-ups: connection to %s lost (%s)", self._where, exc)
                    down = True
            finally:
                self.connected = False
                self._close()
            self._stopping.wait(0.1 if not down else _RETRY_S)

    def _wants(self, payload: str) -> bool:
        wanted = self._wanted
        if wanted is None:
            return True
        try:
            if wanted(WakeUp.parse(payload)):
                return True
        except Exception:
            _log.exception("wake-ups: wanted() raised; waking")
            return True
        self.skipped += 1
        return False

    def _call(self) -> None:
        self.received += 1
        try:
            self._wake()
        except Exception:
            _log.exception("wake-ups: wake() raised; listening on")

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                conn.close()
