"""Leader election on a PostgreSQL advisory lock: in a cluster of server processes sharing one
database, the router must run in exactly one of them at a time. ``LeaderLock`` tells a process
when it becomes that one (``on_elected``) and when it stops being it (``on_deposed``).

**The lock.** The leader is the session holding ``pg_try_advisory_lock(LEADER_LOCK_KEY)``, a
session-level advisory lock: PostgreSQL keeps it exactly as long as the session lives, and
gives it up by itself when the session ends, however it ends (the process exits or is
SIGKILLed, its connection is closed or lost, ``pg_terminate_backend``, a server restart). The
lock is per database: every process of a cluster must use the same database (they do: the
store's), and reach PostgreSQL directly or through a *session* pooler, never a transaction
pooler (which would hand the session, and the lock, to somebody else). Who holds it, for an
operator::

    SELECT a.pid, a.application_name, a.client_addr, a.backend_start FROM pg_locks l
      JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
       AND l.classid = 0 AND l.objid = 444465155           -- LEADER_LOCK_KEY, 0x1A7E0003
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());

**A dedicated connection**, not one of the store's pool: the lock belongs to the session, so a
pooled connection would hand it to whichever caller got that connection next, and the pool
could close it (and end leadership) whenever it likes. It is opened with the store's settings
(``connection.connection_settings``: ``application_name`` with ``-leader`` appended, so
``pg_stat_activity`` shows which backend is the leader's; the connect timeout) plus:

* the check's ``statement_timeout`` (``CHECK_TIMEOUT_S``), and client-side TCP keepalives and
  ``tcp_user_timeout`` (libpq ``keepalives``, ``keepalives_idle``, ``keepalives_interval``,
  ``keepalives_count``, ``tcp_user_timeout``) of the same length: whatever happens to the
  network, a check that gets no answer fails within ``CHECK_TIMEOUT_S`` (keepalives alone run
  only while nothing is unacknowledged; ``tcp_user_timeout`` covers a query sent into a dead
  link);
* server-side keepalives for the session (the ``tcp_keepalives_*`` and ``tcp_user_timeout``
  settings, which any user may set): without them PostgreSQL notices a leader whose *host*
  vanished (power loss, a partition: no FIN, no RST) only when the kernel's defaults give up,
  about two hours later, and no failover would happen until then. They are set to
  ``check_interval_s + CHECK_TIMEOUT_S + 2 s`` (rounded up), *longer* than the leader needs to
  notice the loss itself (below), so on a silent network failure the old leader has already
  stepped down when PostgreSQL gives its lock away.

**Roles.** A *follower* tries the lock every ``check_interval_s`` on its connection, and
becomes the leader when it gets it, i.e. within ``check_interval_s`` of the previous leader's
session ending. A *leader* checks its connection every ``check_interval_s`` with ``SELECT 1``
(nobody but the session itself can release a session lock, so a live session still holds it):
when the check fails in any way (connection lost, server restarting, backend terminated, no
answer within ``CHECK_TIMEOUT_S``) it calls ``on_deposed`` *at once, before anything else*:
another process may hold the lock already. Then it closes the connection (which releases the
lock, if the server still had it: a check that timed out on a live session), reconnects as a
follower and sits out one round: its first try comes two rounds after it noticed the loss, and
a follower (trying every round, on a connection known to be good) takes over first; the
deposed process gets the lock back only if nobody else is there. ``unknown``: no connection
(starting, or the database unreachable): not the leader, and not knowing who is. A database
that cannot be reached is never fatal: connecting is tried every round, with one warning when
the outage starts and one when it ends.

**Never two leaders acting, and the one window where they may.** The lock is exclusive: at
every instant PostgreSQL grants it to at most one session. But a process learns that its
session is gone only at its next check: if PostgreSQL ends the session (terminated, server
restart), the lock is free at once and a follower may be elected while the old leader still
believes it leads, for up to ``check_interval_s`` (its socket is closed, so that check fails at
once). If the connection dies silently (network), the leader notices within
``check_interval_s + CHECK_TIMEOUT_S`` (the check interval plus the keepalive detection), and
PostgreSQL, with the server-side keepalives above, releases the lock only later. So the bound
is: **a deposed leader may go on acting for at most** ``check_interval_s + CHECK_TIMEOUT_S``
(4 s with the defaults) **after it lost the lock**, plus the time ``on_deposed`` takes to stop
the work, plus any time the process itself stood still (a stopped or frozen process cannot
notice anything). That is why this lock is a scheduling device, not the guard of correctness:
**the deposed leader's routing decisions must stay transactional**: each offer, revocation or
assignment a unit of work on versioned rows, committed only if the interaction is still at the
version it read (``ConcurrencyConflict`` otherwise), so that of two routers deciding about the
same interaction during the overlap one commits and the other gets a conflict. That is what
makes the overlap harmless; a decision acted on before (or without) its commit would not be.

**A thread, not an asyncio task.** The server runs asyncio with blocking work in threads, and
this is blocking work: psycopg's calls here wait up to ``connect_timeout_s`` (connecting) or
``CHECK_TIMEOUT_S`` (a check). Above all, the check's schedule must not depend on the event
loop: a loop busy with a burst of requests, or blocked by a slow call, would delay a task's
check and so stretch the window above, whereas a thread keeps its schedule (psycopg releases
the GIL while it waits). It also works where there is no event loop (tests, tools). The
callbacks run on that thread, one after the other, never concurrently; an exception in one is
logged and the election goes on. They must be quick, and thread-safe towards the loop: e.g.
``on_deposed`` clears a ``threading.Event`` the router's tick checks before it routes (taking
effect at once) and asks the loop to stop the timer (``loop.call_soon_threadsafe``).

**Measured** (``tests/postgres/test_leader.py``: separate processes on one machine with two
shared cores, ``check_interval_s=1``, the leader SIGKILLed at a random moment, from the kill
to the new leader's ``on_elected``): over 48 kills (8 runs, with 2 and 3 nodes) median 0.46 s,
max 1.00 s, min 0.01 s: by design at most ``check_interval_s`` plus a round trip, since the
kernel closes a SIGKILLed process's connection and PostgreSQL ends the session at once. When
the leader's host vanishes instead, PostgreSQL first has to notice (the server-side keepalives:
6 s with the defaults), so failover then takes up to about 7 s (computed, not measured).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import psycopg

from interactions_core.ids import SystemClock
from interactions_core.ports import Clock

from .connection import (
    Connection,
    DatabaseUnreachable,
    _cause,
    connect,
    connection_settings,
    describe,
    lost,
)

__all__ = [
    "CHECK_TIMEOUT_S",
    "LEADER_LOCK_KEY",
    "LeaderLock",
    "LeaderStatus",
    "Role",
    "leader_settings",
]

_log = logging.getLogger(__name__)

LEADER_LOCK_KEY: Final = 0x1A7E_0003
"""The session advisory lock whose holder leads (the store's keys are ``0x1A7E_0001``,
migrations, and ``0x1A7E_0002``, the outbox). Every process of a cluster must use the same key;
a different ``key`` makes a separate election in the same database (tests, two clusters)."""

CHECK_TIMEOUT_S: Final = 3
"""How long a check may take before it counts as failed: the check's ``statement_timeout``,
the client's ``tcp_user_timeout``, and its keepalives (idle 1 s, then 2 probes 1 s apart).
Long enough for a few TCP retransmissions on a congested network, short enough to bound the
overlap window (module docstring)."""

_KEEPALIVE_INTERVAL_S: Final = 1
_KEEPALIVE_COUNT: Final = 2
_SERVER_MARGIN_S: Final = 2
_SIT_OUT_ROUNDS: Final = 1

Role = Literal["leader", "follower", "unknown"]


@dataclass(frozen=True, slots=True)
class LeaderStatus:
    """What ``LeaderLock.status()`` reports (for logs and a health endpoint).

    ``since``: when the current role began; ``last_check``: the last successful round trip to
    the database (a try of the lock, or a leader's check); ``error``: why the role is
    ``unknown`` (or why it last changed), without credentials.
    """

    role: Role
    since: datetime | None
    last_check: datetime | None
    node_id: str | None
    key: int
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The same, JSON-ready (ISO 8601 times)."""
        return {
            "role": self.role,
            "since": self.since.isoformat() if self.since else None,
            "last_check": self.last_check.isoformat() if self.last_check else None,
            "node_id": self.node_id,
            "key": self.key,
            "error": self.error,
        }


def leader_settings(
    dsn: str,
    *,
    application_name: str,
    connect_timeout_s: float,
    check_interval_s: float,
) -> dict[str, Any]:
    """The keyword arguments of the leader's connection: the store's settings (with
    ``application_name`` as given: the caller appends ``-leader``), the check's
    ``statement_timeout``, and the client- and server-side keepalives (module docstring)."""
    settings = connection_settings(
        dsn,
        application_name=application_name,
        statement_timeout_ms=CHECK_TIMEOUT_S * 1000,
        connect_timeout_s=connect_timeout_s,
    )
    settings.update(
        keepalives=1,
        keepalives_idle=CHECK_TIMEOUT_S - _KEEPALIVE_INTERVAL_S * _KEEPALIVE_COUNT,
        keepalives_interval=_KEEPALIVE_INTERVAL_S,
        keepalives_count=_KEEPALIVE_COUNT,
        tcp_user_timeout=CHECK_TIMEOUT_S * 1000,
    )
    # PostgreSQL gives up on a silent client only after the client must have given up itself.
    server_s = math.ceil(check_interval_s + CHECK_TIMEOUT_S) + _SERVER_MARGIN_S
    settings["options"] += (
        f" -c tcp_keepalives_idle={server_s - _KEEPALIVE_INTERVAL_S * _KEEPALIVE_COUNT}"
        f" -c tcp_keepalives_interval={_KEEPALIVE_INTERVAL_S}"
        f" -c tcp_keepalives_count={_KEEPALIVE_COUNT}"
        f" -c tcp_user_timeout={server_s * 1000}"
    )
    return settings


class LeaderLock:
    """This process's part in the election (module docstring): ``start()``, then
    ``on_elected``/``on_deposed`` as leadership comes and goes, ``stop()`` at shutdown."""

    def __init__(
        self,
        dsn: str,
        *,
        on_elected: Callable[[], None],
        on_deposed: Callable[[], None],
        key: int = LEADER_LOCK_KEY,
        application_name: str = "interactions",
        connect_timeout_s: float = 10.0,
        check_interval_s: float = 1.0,
        node_id: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``application_name``: the store's (``-leader`` is appended); ``connect_timeout_s``:
        how long one connection attempt may take; ``check_interval_s``: how often a follower
        tries the lock and a leader checks its connection (the failover time, and part of the
        overlap bound); ``node_id``: this process's name in ``status()`` and the logs;
        ``clock``: the times of ``status()``. Nothing is connected before ``start()``."""
        if not check_interval_s > 0:
            raise ValueError("check_interval_s must be > 0")
        if not -(2**63) <= key < 2**63:
            raise ValueError("key must be a 64-bit signed integer")
        self._dsn = dsn
        self._where = describe(dsn)
        self._settings = leader_settings(
            dsn,
            application_name=f"{application_name}-leader",
            connect_timeout_s=connect_timeout_s,
            check_interval_s=check_interval_s,
        )
        self._key = key
        self._interval = check_interval_s
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        self._node_id = node_id
        self._clock = clock or SystemClock()
        self._name = f"leader election{f' ({node_id})' if node_id else ''}"

        self._state = threading.Lock()  # guards the status fields and the life cycle
        self._role: Role = "unknown"
        self._since: datetime | None = None
        self._last_check: datetime | None = None
        self._error: str | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

        # Touched by the election thread only.
        self._conn: Connection | None = None
        self._down = False  # the database is unreachable, and that was said once
        self._sit_out = 0

    # --- the public side ------------------------------------------------------------------

    def start(self) -> None:
        """Start the election thread (a daemon: a process that exits without ``stop()``
        loses its session, and the lock, with it). A ``LeaderLock`` runs once."""
        with self._state:
            if self._thread is not None or self._stopping:
                raise RuntimeError("a LeaderLock can be started once")
            self._thread = threading.Thread(
                target=self._run, name=f"leader-lock-{self._node_id or self._key}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Step down and leave the election: the thread calls ``on_deposed`` if it leads,
        then ``pg_advisory_unlock``, then closes the connection (which would release the lock
        anyway); returns when that is done (within one connect or check timeout at worst).
        Idempotent. From a callback, it only asks: the thread ends after the callback."""
        with self._state:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    @property
    def is_leader(self) -> bool:
        """This process holds the lock, as of its last check (False from the moment a check
        failed, before ``on_deposed`` runs)."""
        with self._state:
            return self._role == "leader"

    def status(self) -> LeaderStatus:
        with self._state:
            return LeaderStatus(
                role=self._role,
                since=self._since,
                last_check=self._last_check,
                node_id=self._node_id,
                key=self._key,
                error=self._error,
            )

    # --- the election thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                try:
                    self._round()
                except Exception:  # a bug here must not end the election
                    _log.exception("%s: unexpected failure; carrying on", self._name)
                    if self.is_leader:
                        self._depose("unexpected failure")
                    self._close()
                if self._stopping:
                    break
                self._wake.wait(self._interval)
        finally:
            self._leave()

    def _round(self) -> None:
        if self._conn is None or lost(self._conn):
            if self.is_leader:
                self._depose("connection lost")
            self._close()
            if not self._connect():
                return
        if self.is_leader:
            self._check()
        elif self._sit_out:
            self._sit_out -= 1
        else:
            self._try()

    def _connect(self) -> bool:
        try:
            self._conn = connect(self._dsn, self._settings)
        except DatabaseUnreachable as exc:
            self._unreachable(str(exc))
            return False
        if self._down:
            self._down = False
            _log.warning("%s: PostgreSQL at %s is reachable again", self._name, self._where)
        self._set("follower", error=None)
        return True

    def _try(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
        except Exception as exc:
            # Whether the lock was granted is unknown: closing the session releases it if so.
            self._close()
            if isinstance(exc, psycopg.OperationalError):  # lost, restarting, timed out
                self._unreachable(f"PostgreSQL at {self._where} is unavailable: {_cause(exc)}")
            else:
                self._set("unknown", error=_cause(exc))
                _log.exception("%s: trying the lock failed; retrying", self._name)
            return
        self._checked()
        if row is not None and row[0]:
            self._set("leader", error=None)
            _log.info(
                "%s: elected; this process leads (advisory lock %#x on %s)",
                self._name,
                self._key,
                self._where,
            )
            self._call(self._on_elected, "on_elected")

    def _check(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("SELECT 1").fetchone()
        except Exception as exc:
            self._depose(_cause(exc))
            self._close()
            return
        self._checked()

    def _depose(self, why: str) -> None:
        """Stop leading: the callback first (another process may lead already), then the
        rest. The caller closes the connection, releasing the lock if the server held it."""
        self._set("unknown", error=f"deposed: {why}")
        self._call(self._on_deposed, "on_deposed")
        self._sit_out = _SIT_OUT_ROUNDS
        _log.warning(
            "%s: deposed, this process no longer leads (%s); rejoining as a follower",
            self._name,
            why,
        )

    def _leave(self) -> None:
        """At stop: step down, unlock, close (whatever state the thread was in)."""
        if self.is_leader:
            self._set("unknown", error="stopped")
            self._call(self._on_deposed, "on_deposed")
            conn = self._conn
            if conn is not None and not lost(conn):
                with suppress(Exception):  # closing releases it anyway
                    conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
            _log.info("%s: stopped; leadership released", self._name)
        self._close()
        self._set("unknown", error="stopped")

    def _unreachable(self, message: str) -> None:
        self._set("unknown", error=message)
        if not self._down:
            self._down = True
            _log.warning(
                "%s: %s; retrying every %g s until it is back", self._name, message, self._interval
            )

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                conn.close()

    def _call(self, callback: Callable[[], None], what: str) -> None:
        try:
            callback()
        except Exception:
            _log.exception("%s: %s raised; the election goes on", self._name, what)

    def _set(self, role: Role, *, error: str | None) -> None:
        with self._state:
            if role != self._role or self._since is None:
                self._since = self._clock.now()
            self._role = role
            self._error = error

    def _checked(self) -> None:
        with self._state:
            self._last_check = self._clock.now()
