"""HTTP sessions and the failed-login limits in PostgreSQL (migration 3), shared by every
``interactions serve`` process on the database: a cookie made by one is valid on all, a logout
on one ends the session on all (nothing is cached: every lookup reads the table), failures on
one count on all.

Connections are the store's (``Database``: its pool, its statement timeout, its rules for what
is retried, every operational failure as ``Unavailable``, which ``HttpAuth`` answers with 503).
A lookup is one primary-key read (``retryable``), plus an idempotent write of the last use at
most every ``touch_interval`` seconds. The other writes are short transactions.

**The limiter stays atomic across processes.** Every update of an address's state locks its
``login_addresses`` row first (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``: the row is
created or locked, and read, in one statement), then reads and writes its pair under that lock;
two processes admitting logins for one address therefore take turns, and neither can slip
under a limit the other is filling. The lock lasts a few statements; a 429 writes nothing
(rolled back). Different addresses never wait for each other.

**Opening a session** takes a transaction-level advisory lock on the agent (so two processes
opening sessions for one agent cannot both keep 32), inserts the row and drops the agent's
least recently used beyond the bound; the overall bound drops the least recently used of all
(``FOR UPDATE SKIP LOCKED``: two opens never wait on each other's victims, so they cannot
deadlock).

**Sweeps** delete at most ``limit`` rows per table, oldest first, by index, skipping rows
another transaction holds (``SKIP LOCKED``): a row in use is not stale, and the next sweep
comes back for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeVar

from ..http.sessions import (
    AddressState,
    LoginState,
    PairState,
    Session,
    SessionLimits,
)
from .connection import Connection, Database

if TYPE_CHECKING:
    from .store import PostgresStore

T = TypeVar("T")

__all__ = ["SESSION_LOCK_CLASS", "PostgresLoginLimits", "PostgresSessions"]

SESSION_LOCK_CLASS: Final = 0x1A7E_0010
"""The first key of the per-agent advisory lock, ``pg_advisory_xact_lock(class, hashtext(agent))``:
the two-key form, a key space apart from the one-key locks (migrations ``0x1A7E_0001``, the
outbox ``0x1A7E_0002``, the leader ``0x1A7E_0003``), and a value none of them uses."""

EVICT_BATCH: Final = 64
"""The most sessions one ``open`` drops for the overall bound."""

_GET: Final = "SELECT agent_id, csrf_token, used_s FROM http_sessions WHERE id_hash = %s"
_TOUCH: Final = (
    "UPDATE http_sessions SET used_s = GREATEST(used_s, %s) WHERE id_hash = %s AND used_s > %s"
)
_LOCK_AGENT: Final = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"
_OPEN: Final = (
    "INSERT INTO http_sessions (id_hash, agent_id, csrf_token, opened_s, used_s)"
    " VALUES (%s, %s, %s, %s, %s)"
)
_EVICT_AGENT: Final = (
    "DELETE FROM http_sessions WHERE id_hash IN ("
    " SELECT id_hash FROM http_sessions WHERE agent_id = %s AND id_hash <> %s"
    " ORDER BY used_s DESC OFFSET %s)"
)
# Counting no further than the bound plus a batch: cheap while the table is small.
_COUNT_UP_TO: Final = "SELECT count(*) FROM (SELECT 1 FROM http_sessions LIMIT %s) AS s"
_EVICT_OLDEST: Final = (
    "DELETE FROM http_sessions WHERE id_hash IN ("
    " SELECT id_hash FROM http_sessions WHERE id_hash <> %s ORDER BY used_s LIMIT %s"
    " FOR UPDATE SKIP LOCKED)"
)
_END: Final = "DELETE FROM http_sessions WHERE id_hash = %s"
_SWEEP: Final = (
    "DELETE FROM http_sessions WHERE id_hash IN ("
    " SELECT id_hash FROM http_sessions WHERE used_s <= %s ORDER BY used_s LIMIT %s"
    " FOR UPDATE SKIP LOCKED)"
)


class PostgresSessions:
    """``SessionStore`` (``adapters.http.sessions``) in PostgreSQL."""

    blocking = True

    def __init__(self, db: Database) -> None:
        """``db``: an open ``Database`` on a schema migrated to version 3 or later."""
        self._db = db

    @classmethod
    def of(cls, store: PostgresStore) -> PostgresSessions:
        """On the store's connections (closed with the store)."""
        return cls(store._db)

    def get(self, key: bytes, now: float, limits: SessionLimits) -> Session | None:
        row = self._db.retryable(lambda conn: conn.execute(_GET, (key,)).fetchone())
        if row is None:
            return None
        agent_id, csrf_token, used = str(row[0]), str(row[1]), float(row[2])
        if used + limits.ttl <= now:
            return None
        if now - used >= limits.touch_interval and now > used:
            # Idempotent (the later of two times wins): safe to retry on a dead connection.
            touched = self._db.retryable(
                lambda conn: conn.execute(_TOUCH, (now, key, now - limits.ttl)).rowcount
            )
            if touched == 0:  # ended (or expired) since the read: refused
                return None
            used = now
        return Session(agent_id, csrf_token, used + limits.ttl)

    def open(
        self, key: bytes, agent_id: str, csrf_token: str, now: float, limits: SessionLimits
    ) -> None:
        with self._db.transaction() as conn:
            conn.execute(_LOCK_AGENT, (SESSION_LOCK_CLASS, agent_id))
            conn.execute(_OPEN, (key, agent_id, csrf_token, now, now))
            conn.execute(_EVICT_AGENT, (agent_id, key, limits.max_per_agent - 1))
            found = conn.execute(_COUNT_UP_TO, (limits.max_sessions + EVICT_BATCH,)).fetchone()
            held = int(found[0]) if found is not None else 0
            if held > limits.max_sessions:
                conn.execute(_EVICT_OLDEST, (key, held - limits.max_sessions))

    def end(self, key: bytes) -> None:
        self._db.retryable(lambda conn: conn.execute(_END, (key,)))

    def sweep(self, now: float, limits: SessionLimits, limit: int) -> int:
        return self._db.retryable(
            lambda conn: conn.execute(_SWEEP, (now - limits.ttl, limit)).rowcount
        )

    def count(self) -> int:
        row = self._db.retryable(
            lambda conn: conn.execute("SELECT count(*) FROM http_sessions").fetchone()
        )
        return int(row[0]) if row is not None else 0


# Creates the address's row or locks the existing one, and reads it, in one statement.
_LOCK_ADDRESS: Final = (
    "INSERT INTO login_addresses AS a (address, failures, expires_s, in_flight, stale_s)"
    " VALUES (%s, '{}', 0, '{}', 0)"
    " ON CONFLICT (address) DO UPDATE SET address = a.address"
    " RETURNING a.failures, a.expires_s, a.in_flight"
)
_PAIR: Final = (
    "SELECT failures, blocked_until_s, expires_s, in_flight FROM login_pairs"
    " WHERE address = %s AND name_hash = %s"
)
_PUT_ADDRESS: Final = (
    "UPDATE login_addresses SET failures = %s::float8[], expires_s = %s,"
    " in_flight = %s::float8[], stale_s = %s WHERE address = %s"
)
# An upsert, not an update: a sweep may have deleted a stale pair since it was read.
_PUT_PAIR: Final = (
    "INSERT INTO login_pairs"
    " (address, name_hash, failures, blocked_until_s, expires_s, in_flight, stale_s)"
    " VALUES (%s, %s, %s, %s, %s, %s::float8[], %s)"
    " ON CONFLICT (address, name_hash) DO UPDATE SET failures = excluded.failures,"
    " blocked_until_s = excluded.blocked_until_s, expires_s = excluded.expires_s,"
    " in_flight = excluded.in_flight, stale_s = excluded.stale_s"
)
_DELETE_ADDRESS: Final = "DELETE FROM login_addresses WHERE address = %s"
_DELETE_PAIR: Final = "DELETE FROM login_pairs WHERE address = %s AND name_hash = %s"
_SWEEP_PAIRS: Final = (
    "DELETE FROM login_pairs WHERE (address, name_hash) IN ("
    " SELECT address, name_hash FROM login_pairs WHERE stale_s <= %s ORDER BY stale_s"
    " LIMIT %s FOR UPDATE SKIP LOCKED)"
)
_SWEEP_ADDRESSES: Final = (
    "DELETE FROM login_addresses WHERE address IN ("
    " SELECT address FROM login_addresses WHERE stale_s <= %s ORDER BY stale_s"
    " LIMIT %s FOR UPDATE SKIP LOCKED)"
)


def name_hash(name: str) -> bytes:
    """A name as the limiter's tables key it: its SHA-256 (a name is any text a client sent,
    up to 3 KB: too long for a B-tree entry, which PostgreSQL caps at about 2.7 KB)."""
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()


class PostgresLoginLimits:
    """``LoginLimits`` (``adapters.http.sessions``) in PostgreSQL."""

    blocking = True

    def __init__(self, db: Database) -> None:
        self._db = db

    @classmethod
    def of(cls, store: PostgresStore) -> PostgresLoginLimits:
        return cls(store._db)

    def update(self, address: str, name: str, now: float, change: Callable[[LoginState], T]) -> T:
        digest = name_hash(name)
        with self._db.transaction() as conn:
            locked = conn.execute(_LOCK_ADDRESS, (address,)).fetchone()
            if locked is None:  # an upsert's RETURNING always has its row
                raise RuntimeError("the login_addresses upsert returned no row")
            entry = AddressState(list(locked[0]), float(locked[1]), list(locked[2]))
            found = conn.execute(_PAIR, (address, digest)).fetchone()
            pair = PairState()
            if found is not None:
                pair = PairState(int(found[0]), float(found[1]), float(found[2]), list(found[3]))
            result = change(LoginState(pair, entry))  # raises: rolled back, nothing stored
            _store_pair(conn, address, digest, pair)
            if entry.empty():
                conn.execute(_DELETE_ADDRESS, (address,))
            else:
                conn.execute(
                    _PUT_ADDRESS,
                    (entry.failures, entry.expires, entry.in_flight, entry.stale(), address),
                )
            return result

    def sweep(self, now: float, limit: int) -> int:
        def run(conn: Connection) -> int:
            pairs = conn.execute(_SWEEP_PAIRS, (now, limit)).rowcount
            return pairs + conn.execute(_SWEEP_ADDRESSES, (now, limit)).rowcount

        return self._db.retryable(run)


def _store_pair(conn: Connection, address: str, digest: bytes, pair: PairState) -> None:
    if pair.empty():
        conn.execute(_DELETE_PAIR, (address, digest))
        return
    conn.execute(
        _PUT_PAIR,
        (
            address,
            digest,
            pair.failures,
            pair.blocked_until,
            pair.expires,
            pair.in_flight,
            pair.stale(),
        ),
    )
