"""HTTP sessions and the failed-login limits in the SQLite database (migration 4).

For the one process a SQLite file normally serves this changes nothing but that sessions and
limits survive a restart (a deploy no longer logs every agent out, nor forgives a guesser);
processes sharing one file (rare; they serialise on its write lock) share them too.

The store's own connection handling is reused: each thread's connection
(``SqliteStore.connection``) for reads, and the store's write transaction (``BEGIN IMMEDIATE``
under the store's write lock) for writes, so a session write queues behind a core commit with
an immediate hand-over instead of polling SQLite's busy handler. Every write is a few
statements with no other work inside the transaction.

Reads run in autocommit mode on the latest committed data, so a session ended by any
connection is gone for the next read. A session's use is recorded at most every
``touch_interval`` seconds (``SessionLimits``): a lookup is a read, and a write only once a
minute per session.

A limiter update is one ``BEGIN IMMEDIATE`` transaction (reading the pair and address rows,
applying the change, writing them back): SQLite has one writer at a time, so it is atomic
across threads and processes alike.

``sqlite3.OperationalError`` (the file locked past the busy timeout, an I/O error) becomes
``Unavailable``: ``HttpAuth`` answers 503.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, TypeVar

from interactions_core.errors import Unavailable

from ..http.sessions import (
    AddressState,
    LoginState,
    PairState,
    Session,
    SessionLimits,
)
from .store import SqliteStore

T = TypeVar("T")

__all__ = ["SqliteLoginLimits", "SqliteSessions"]

_GET: Final = "SELECT agent_id, csrf_token, used_s FROM http_sessions WHERE id_hash = ?"
_TOUCH: Final = "UPDATE http_sessions SET used_s = max(used_s, ?) WHERE id_hash = ? AND used_s > ?"
_OPEN: Final = (
    "INSERT INTO http_sessions (id_hash, agent_id, csrf_token, opened_s, used_s)"
    " VALUES (?, ?, ?, ?, ?)"
)
# The agent's sessions but the new one, beyond the newest max_per_agent - 1.
_EVICT_AGENT: Final = (
    "DELETE FROM http_sessions WHERE id_hash IN ("
    " SELECT id_hash FROM http_sessions WHERE agent_id = ? AND id_hash <> ?"
    " ORDER BY used_s DESC LIMIT -1 OFFSET ?)"
)
# How many sessions there are, counting no further than the bound plus a batch: cheap while
# the table is small, and never a walk of more than that.
_COUNT_UP_TO: Final = "SELECT count(*) FROM (SELECT 1 FROM http_sessions LIMIT ?)"
_EVICT_OLDEST: Final = (
    "DELETE FROM http_sessions WHERE id_hash IN ("
    " SELECT id_hash FROM http_sessions WHERE id_hash <> ? ORDER BY used_s LIMIT ?)"
)
_END: Final = "DELETE FROM http_sessions WHERE id_hash = ?"
_SWEEP: Final = (
    "DELETE FROM http_sessions WHERE id_hash IN ("
    " SELECT id_hash FROM http_sessions WHERE used_s <= ? ORDER BY used_s LIMIT ?)"
)
EVICT_BATCH: Final = 64
"""The most sessions one ``open`` drops for the overall bound (more only when several processes
opened at once, and the next opens catch up)."""


@contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise Unavailable(f"the session database is unavailable ({exc}); try again") from exc


class SqliteSessions:
    """``SessionStore`` (``adapters.http.sessions``) in the store's SQLite file.

    Not ``blocking``: ``HttpAuth`` calls it on the event loop, with no hop to a worker thread
    (which costs more than the call: ~280 µs a request against ~10 µs for the lookup, both
    measured).
    A lookup is a primary-key read on the calling thread's own connection; it writes (the
    touch) at most once per ``touch_interval`` per session, and ``open``/``end`` are a few
    statements under the store's write lock, which a core commit holds for well under a
    millisecond. The sweep (at most ``SWEEP_LIMIT`` rows, every ``SWEEP_INTERVAL`` at most,
    with a login) is the longest of them."""

    blocking = False

    def __init__(self, store: SqliteStore) -> None:
        """The store must be open (it migrated the file, tables included)."""
        self._store = store

    def get(self, key: bytes, now: float, limits: SessionLimits) -> Session | None:
        with _unavailable():
            row = self._store.connection().execute(_GET, (key,)).fetchone()
            if row is None:
                return None
            agent_id, csrf_token, used = str(row[0]), str(row[1]), float(row[2])
            if used + limits.ttl <= now:
                return None
            if now - used >= limits.touch_interval and now > used:
                with self._store._write() as conn:
                    # Not found any more: ended (or expired) since the read; refused.
                    if conn.execute(_TOUCH, (now, key, now - limits.ttl)).rowcount == 0:
                        return None
                used = now
            return Session(agent_id, csrf_token, used + limits.ttl)

    def open(
        self, key: bytes, agent_id: str, csrf_token: str, now: float, limits: SessionLimits
    ) -> None:
        with _unavailable(), self._store._write() as conn:
            conn.execute(_OPEN, (key, agent_id, csrf_token, now, now))
            conn.execute(_EVICT_AGENT, (agent_id, key, limits.max_per_agent - 1))
            (held,) = conn.execute(_COUNT_UP_TO, (limits.max_sessions + EVICT_BATCH,)).fetchone()
            if held > limits.max_sessions:
                conn.execute(_EVICT_OLDEST, (key, held - limits.max_sessions))

    def end(self, key: bytes) -> None:
        with _unavailable(), self._store._write() as conn:
            conn.execute(_END, (key,))

    def sweep(self, now: float, limits: SessionLimits, limit: int) -> int:
        with _unavailable(), self._store._write() as conn:
            return conn.execute(_SWEEP, (now - limits.ttl, limit)).rowcount

    def count(self) -> int:
        with _unavailable():
            (n,) = self._store.connection().execute("SELECT count(*) FROM http_sessions").fetchone()
            return int(n)


_ADDRESS: Final = "SELECT failures, expires_s, in_flight FROM login_addresses WHERE address = ?"
_PAIR: Final = (
    "SELECT failures, blocked_until_s, expires_s, in_flight FROM login_pairs"
    " WHERE address = ? AND name_hash = ?"
)
_PUT_ADDRESS: Final = (
    "INSERT OR REPLACE INTO login_addresses (address, failures, expires_s, in_flight, stale_s)"
    " VALUES (?, ?, ?, ?, ?)"
)
_PUT_PAIR: Final = (
    "INSERT OR REPLACE INTO login_pairs"
    " (address, name_hash, failures, blocked_until_s, expires_s, in_flight, stale_s)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_ADDRESS: Final = "DELETE FROM login_addresses WHERE address = ?"
_DELETE_PAIR: Final = "DELETE FROM login_pairs WHERE address = ? AND name_hash = ?"
_SWEEP_PAIRS: Final = (
    "DELETE FROM login_pairs WHERE (address, name_hash) IN ("
    " SELECT address, name_hash FROM login_pairs WHERE stale_s <= ? ORDER BY stale_s LIMIT ?)"
)
_SWEEP_ADDRESSES: Final = (
    "DELETE FROM login_addresses WHERE address IN ("
    " SELECT address FROM login_addresses WHERE stale_s <= ? ORDER BY stale_s LIMIT ?)"
)


def name_hash(name: str) -> bytes:
    """A name as the limiter's tables key it: its SHA-256 (a name is any text a client sent,
    up to 3 KB; the hash is 32 bytes whatever it is)."""
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()


def _floats(text: str) -> list[float]:
    return [float(x) for x in json.loads(text)]


class SqliteLoginLimits:
    """``LoginLimits`` (``adapters.http.sessions``) in the store's SQLite file."""

    blocking = True

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def update(self, address: str, name: str, now: float, change: Callable[[LoginState], T]) -> T:
        digest = name_hash(name)
        with _unavailable(), self._store._write() as conn:
            found = conn.execute(_ADDRESS, (address,)).fetchone()
            entry = AddressState()
            if found is not None:
                entry = AddressState(_floats(found[0]), float(found[1]), _floats(found[2]))
            found = conn.execute(_PAIR, (address, digest)).fetchone()
            pair = PairState()
            if found is not None:
                pair = PairState(int(found[0]), float(found[1]), float(found[2]), _floats(found[3]))
            result = change(LoginState(pair, entry))  # raises: rolled back, nothing stored
            if pair.empty():
                conn.execute(_DELETE_PAIR, (address, digest))
            else:
                conn.execute(
                    _PUT_PAIR,
                    (
                        address,
                        digest,
                        pair.failures,
                        pair.blocked_until,
                        pair.expires,
                        json.dumps(pair.in_flight),
                        pair.stale(),
                    ),
                )
            if entry.empty():
                conn.execute(_DELETE_ADDRESS, (address,))
            else:
                conn.execute(
                    _PUT_ADDRESS,
                    (
                        address,
                        json.dumps(entry.failures),
                        entry.expires,
                        json.dumps(entry.in_flight),
                        entry.stale(),
                    ),
                )
            return result

    def sweep(self, now: float, limit: int) -> int:
        with _unavailable(), self._store._write() as conn:
            pairs = conn.execute(_SWEEP_PAIRS, (now, limit)).rowcount
            return pairs + conn.execute(_SWEEP_ADDRESSES, (now, limit)).rowcount
