"""Is the database reachable? The check behind ``GET /health`` (``adapters.http.app``).

``database_check(store)`` returns the coroutine function the HTTP API's ``Api`` takes as
``check_database``: it returns when the store's database answered, and raises
``DatabaseUnreachable`` (with the reason, never a password) when it did not, or not within
``timeout`` seconds. It is cheap (one trivial statement) and bounded:

* **PostgreSQL**: ``SELECT 1`` on a connection of the store's own pool (its ``Database``,
  ``adapters.postgres.connection``), waiting at most half of ``timeout`` for a free one; a
  pooled connection found dead (after a PostgreSQL restart) is replaced and the statement
  tried once more, as every read of the store is. So the answer says whether this process can
  use its database now. When the pool has no connection to give, one direct connection asks
  PostgreSQL why (refused, not accepting connections, authentication...); if that one works,
  the pool's connections are all busy, which counts as unreachable too (the requests waiting
  behind them are about to answer 503 as well).
* **SQLite**: a fresh ``sqlite3`` connection to the store's file, read only, reading the
  schema's header (``PRAGMA schema_version``: a bare ``SELECT 1`` would not even open the
  file), so a deleted, unreadable or corrupted file is seen.
* **Any other store** (in memory, a test's): always reachable.

The statement runs in a worker thread, never on the event loop or the core thread, and the
caller waits at most ``timeout`` (``asyncio.wait_for``). A thread stuck on a dead network
cannot be interrupted; so at most one check is in flight at a time: a check asked for while
one is running waits for that one (with its own deadline) instead of starting another, and a
database that hangs costs one thread, not one per health request.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_S = 2.0

__all__ = ["DEFAULT_TIMEOUT_S", "DatabaseCheck", "DatabaseUnreachable", "database_check"]


class DatabaseUnreachable(Exception):
    """The database did not answer the health check; the message says why (one line)."""


class DatabaseCheck:
    """A bounded check (``await check()``), at most one in flight; see the module's text."""

    def __init__(self, probe: Callable[[], None], *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.probe = probe
        self.timeout = timeout
        self._running: asyncio.Future[None] | None = None

    @property
    def in_flight(self) -> bool:
        """A check is running (perhaps stuck, nobody waiting for it any more)."""
        return self._running is not None and not self._running.done()

    async def __call__(self) -> None:
        running = self._running
        if running is None or running.done() or running.get_loop() is not _loop():
            running = asyncio.ensure_future(asyncio.to_thread(self.probe))
            running.add_done_callback(_consume)
            self._running = running
        try:
            # shield: a caller giving up must not cancel the check other callers wait for.
            await asyncio.wait_for(asyncio.shield(running), self.timeout)
        except TimeoutError:
            raise DatabaseUnreachable(f"no answer within {self.timeout:g} s") from None
        except DatabaseUnreachable:
            raise
        except Exception as exc:
            raise DatabaseUnreachable(_reason(exc)) from exc


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _consume(future: asyncio.Future[None]) -> None:
    """Mark the outcome as seen: a check nobody waited for to the end logs nothing."""
    if not future.cancelled():
        future.exception()


def _reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _postgres_probe(store: Any, timeout: float) -> Callable[[], None]:
    from psycopg_pool import PoolTimeout

    from ..postgres.connection import connect

    database = store._db  # adapters.postgres.connection.Database
    pool_wait = timeout / 2

    def probe() -> None:
        # ``retryable``: a dead pooled connection is replaced and the statement tried once
        # more; failures come out as ``Unavailable`` with PostgreSQL's reason.
        try:
            database.retryable(lambda conn: conn.execute("SELECT 1").fetchone(), timeout=pool_wait)
            return
        except Exception as exc:
            if not isinstance(exc.__cause__, PoolTimeout):
                raise
        # The pool had no connection to give: it cannot say why, PostgreSQL can. One direct
        # connection (closed at once) tells "refused" or "not accepting connections" from a
        # pool whose connections are all busy.
        settings = {**database.pool.kwargs, "connect_timeout": max(2, math.ceil(timeout))}
        with connect(database.pool.conninfo, settings) as conn:
            conn.execute("SELECT 1")
        raise DatabaseUnreachable(
            f"PostgreSQL at {database.where} answers, but none of the pool's"
            f" {database.pool.max_size} connections was free within {pool_wait:g} s"
        )

    return probe


def _sqlite_probe(path: Path, timeout: float) -> Callable[[], None]:
    uri = path.resolve().as_uri() + "?mode=ro"  # read only: a missing file is not created

    def probe() -> None:
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise DatabaseUnreachable(f"cannot open SQLite file {path}: {exc}") from exc
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        except sqlite3.Error as exc:
            raise DatabaseUnreachable(f"cannot read SQLite file {path}: {exc}") from exc
        finally:
            conn.close()

    return probe


def database_check(
    store: object, *, timeout: float = DEFAULT_TIMEOUT_S
) -> Callable[[], Awaitable[None]]:
    """The health check of ``store``'s database (PostgreSQL, SQLite, or none to check)."""
    from ..sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        return DatabaseCheck(_sqlite_probe(store.path, timeout), timeout=timeout)
    try:
        from ..postgres import PostgresStore
    except ImportError:  # the postgres extra is not installed: no such store
        pass
    else:
        if isinstance(store, PostgresStore):
            return DatabaseCheck(_postgres_probe(store, timeout), timeout=timeout)
    return _reachable


async def _reachable() -> None:
    """A store without a database to reach (in memory, a test's own)."""
