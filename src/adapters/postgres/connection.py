"""Connections to PostgreSQL: the pool, the settings every connection gets, and what a failure
becomes.

* **Every connection is configured the same way**, by libpq options sent at connect time (no
  extra round trip, and a connection the pool re-opens after a failure gets them too):
  ``application_name`` (so an operator sees in ``pg_stat_activity`` who holds what),
  ``statement_timeout`` (a statement stuck behind a lock, or a runaway query, ends with a clear
  error instead of holding a request for ever) and ``TimeZone=UTC`` (timestamps come back as
  UTC datetimes). Connections run in autocommit mode: a read is one statement on the latest
  committed data, a write is an explicit ``BEGIN`` ... ``COMMIT``.
* **Reaching the database is checked first, with a direct connection**
  (``connect``): a pool only reports "no connection within N seconds", whereas libpq says why
  (refused, unknown host, no such database, authentication), and that is what an operator needs
  at start-up. ``DatabaseUnreachable`` names host, port and database, never the password.
* **While serving, a database that is down, a connection that was lost, a pool with no free
  connection or a statement timeout is ``interactions_core.errors.Unavailable``** (the HTTP
  adapter answers 503): the request may simply be tried again. A connection found dead is
  discarded by the pool, which opens new ones, so the next call works once the server is back.
* **What is retried, and what never is.** A read that failed because its connection was dead
  (the usual sight after a server restart or ``pg_terminate_backend``: the pool still holds the
  old connections) is tried once more after ``pool.check()`` dropped the other dead ones: a read
  changes nothing, so trying it again is always safe. So is a write that is idempotent (marking
  a mail sent, claiming mail for the same claimant). A write is retried only when its ``BEGIN``
  failed that way, before anything of it reached the server. A write whose connection was lost
  later, and above all during ``COMMIT``, is never retried: its outcome is unknown, and a retry
  could apply it twice; it raises ``Unavailable`` saying so.
"""

from __future__ import annotations

import getpass
import math
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout
from psycopg_pool.base import AttemptWithBackoff

from interactions_core.errors import Unavailable

Connection = psycopg.Connection[TupleRow]
_T = TypeVar("_T")

# Said explicitly, whatever ``default_transaction_isolation`` the database has: the store's
# version checks rely on read committed (an UPDATE that waited for a concurrent writer re-checks
# its WHERE against the committed row; under repeatable read it would fail instead).
_BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"

__all__ = [
    "Connection",
    "Database",
    "DatabaseUnreachable",
    "connect",
    "connection_settings",
    "describe",
]


class DatabaseUnreachable(Exception):
    """The database could not be reached (at construction, or by ``migrate``).

    The message names host, port and database (never the password) and libpq's reason, e.g.
    ``cannot reach PostgreSQL at 127.0.0.1:5433/interactions: connection refused``.
    """

    def __init__(self, where: str, cause: str) -> None:
        super().__init__(f"cannot reach PostgreSQL at {where}: {cause}")
        self.where = where
        self.cause = cause


def describe(dsn: str) -> str:
    """``host:port/database`` of a DSN, with libpq's defaults (never the user or password)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        # libpq's message may quote the string, password included: say only what is wrong.
        raise ValueError("invalid PostgreSQL connection string (check its syntax)") from None
    host = str(params.get("host") or os.environ.get("PGHOST") or "localhost")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    user = str(params.get("user") or os.environ.get("PGUSER") or getpass.getuser())
    database = str(params.get("dbname") or os.environ.get("PGDATABASE") or user)
    return f"{host}:{port}/{database}"


_PREFIX = re.compile(r"^.*? failed: ")  # 'connection to server at "h", port 5 failed: <why>'
_SEVERITY = re.compile(r"^(FATAL|ERROR):\s+")


def _cause(exc: BaseException) -> str:
    """libpq's reason, short: the first line, without the 'connection to server ... failed'
    preamble and the severity, lower-cased as the tail of a sentence."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    if text.startswith("connection failed: "):
        text = text[len("connection failed: ") :]
    text = _SEVERITY.sub("", _PREFIX.sub("", text, count=1))
    if text[:1].isupper() and text[1:2].islower():
        text = text[0].lower() + text[1:]
    return text or type(exc).__name__


def connection_settings(
    dsn: str,
    *,
    application_name: str,
    statement_timeout_ms: int | None,
    connect_timeout_s: float,
) -> dict[str, Any]:
    """The keyword arguments every connection is opened with (on top of the DSN).

    ``options`` from the DSN (e.g. a ``search_path``) are kept: ours are appended.
    """
    describe(dsn)  # a malformed DSN is a ValueError that does not quote it
    if connect_timeout_s <= 0:
        raise ValueError("connect_timeout_s must be > 0")
    options = ["-c TimeZone=UTC"]
    if statement_timeout_ms is not None:
        if statement_timeout_ms < 0:
            raise ValueError("statement_timeout_ms must be >= 0 (0: none)")
        options.append(f"-c statement_timeout={int(statement_timeout_ms)}")
    given = conninfo_to_dict(dsn).get("options")
    if given:
        options.insert(0, str(given))
    return {
        "autocommit": True,
        "application_name": application_name,
        # libpq takes whole seconds (and treats anything under 2 as 2).
        "connect_timeout": max(1, math.ceil(connect_timeout_s)),
        "options": " ".join(options),
    }


def connect(dsn: str, settings: dict[str, Any]) -> Connection:
    """One direct connection, or ``DatabaseUnreachable`` saying where and why not."""
    where = describe(dsn)
    try:
        return psycopg.connect(dsn, **settings)
    except psycopg.OperationalError as exc:
        raise DatabaseUnreachable(where, _cause(exc)) from exc


def _roll_back(conn: Connection) -> None:
    """``ROLLBACK`` if a transaction is open on a live connection (errors ignored: the pool
    resets or discards the connection all the same)."""
    if not lost(conn) and conn.info.transaction_status in (
        TransactionStatus.INTRANS,
        TransactionStatus.INERROR,
    ):
        with suppress(psycopg.Error):
            conn.execute("ROLLBACK")


def lost(conn: Connection) -> bool:
    """The connection is gone (closed by the server, the network, or a terminated backend)."""
    return conn.broken or conn.closed


RECONNECT_DELAY_MAX_S = 1.0
"""The longest the pool waits between two attempts to reopen a connection after a failure."""


class _PromptReconnect(AttemptWithBackoff):
    """psycopg_pool's reconnect schedule, capped: it doubles its wait from 1 s (1, 2, 4, 8, 16,
    ... s), so a database back after a 20 s outage was used again only about 10 s later, every
    request meanwhile a 503. Starting at 0.1 s and never waiting more than
    ``RECONNECT_DELAY_MAX_S``, the first request after the database is back finds a connection
    within about a second; an attempt against a database that is down costs one refused
    connect, so once a second is cheap."""

    INITIAL_DELAY = 0.1

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, RECONNECT_DELAY_MAX_S)


class _Pool(ConnectionPool[Connection]):
    """The pool with ``_PromptReconnect``. ``_add_connection`` is the pool's one place that
    starts a reconnect schedule (psycopg_pool 3.2 and 3.3; the dependency is pinned below 4, and
    ``tests/postgres/test_postgres_failures.py`` holds the schedule)."""

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        if attempt is None:
            attempt = _PromptReconnect(timeout=self.reconnect_timeout)
        super()._add_connection(attempt, growing)


class Database:
    """A connection pool and the rules above: ``retryable`` (reads and idempotent writes,
    tried once more on a dead connection), ``transaction`` (``BEGIN`` .. ``COMMIT``, never
    retried once begun), and every operational failure turned into ``Unavailable``."""

    def __init__(
        self,
        dsn: str,
        settings: dict[str, Any],
        *,
        pool_size: int,
        connect_timeout_s: float,
        statement_timeout_ms: int | None,
        name: str,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        self.where = describe(dsn)
        self.timeout = connect_timeout_s
        self.statement_timeout_ms = statement_timeout_ms
        self.pool: ConnectionPool[Connection] = _Pool(
            dsn,
            kwargs=settings,
            min_size=min(2, pool_size),  # opened at start; more on demand, up to pool_size
            max_size=pool_size,
            open=False,
            timeout=connect_timeout_s,  # how long a caller waits for a free connection
            name=name,
        )
        self._closed = False

    def open(self) -> None:
        """Open the pool's first connections (the database was reached just before)."""
        try:
            self.pool.open(wait=True, timeout=self.timeout)
        except PoolTimeout as exc:
            self.pool.close()
            raise DatabaseUnreachable(
                self.where, f"no connection within {self.timeout:g} s"
            ) from exc

    def close(self) -> None:
        """Close every connection; idempotent."""
        if not self._closed:
            self._closed = True
            self.pool.close()

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Operational failures as ``Unavailable``; anything else (a bug, a constraint) as is."""
        try:
            yield
        except PoolTimeout as exc:
            raise Unavailable(
                f"no connection to PostgreSQL at {self.where} was free within "
                f"{self.timeout:g} s (pool of {self.pool.max_size}); try again"
            ) from exc
        except PoolClosed as exc:
            raise Unavailable(f"the store on PostgreSQL at {self.where} is closed") from exc
        except pg_errors.QueryCanceled as exc:
            limit = f" ({self.statement_timeout_ms} ms)" if self.statement_timeout_ms else ""
            raise Unavailable(
                f"PostgreSQL at {self.where} did not finish a statement within the statement "
                f"timeout{limit}: {_cause(exc)}; try again"
            ) from exc
        except psycopg.OperationalError as exc:
            # Connection lost, server shutting down, deadlock or serialisation failure (none
            # expected: locks are taken in one order), out of resources: all transient.
            raise Unavailable(f"PostgreSQL at {self.where} is unavailable: {_cause(exc)}") from exc

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A pooled connection for the caller's own statements (autocommit)."""
        with self.errors(), self.pool.connection() as conn:
            yield conn

    def retryable(self, fn: Callable[[Connection], _T], *, timeout: float | None = None) -> _T:
        """``fn(conn)`` on a pooled connection, tried once more on another when the connection
        turned out dead: for reads (each statement its own snapshot) and for writes that are
        idempotent (a second run changes nothing more), so running it twice is harmless.
        ``timeout``: how long to wait for a connection (default: ``connect_timeout_s``)."""
        with self.errors():
            conn = self.pool.getconn(timeout)
            try:
                return fn(conn)
            except psycopg.OperationalError:
                if not lost(conn):
                    raise
            finally:
                self.pool.putconn(conn)  # a dead one is discarded, and replaced
            self._drop_dead()
            with self.pool.connection(timeout) as conn:
                return fn(conn)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """``BEGIN`` ... ``COMMIT`` on a pooled connection; rolled back when the body raises.

        A connection found dead at ``BEGIN`` is replaced (nothing was sent yet). One lost
        after that raises ``Unavailable``: during the body, the server rolled the transaction
        back; during ``COMMIT``, its outcome is unknown. Neither is retried here.
        """
        with self.errors():
            conn = self._begin()
            try:
                yield conn
                self._commit(conn)
            except BaseException:
                _roll_back(conn)
                raise
            finally:
                self.pool.putconn(conn)

    def pipelined(
        self,
        first: Callable[[Connection], _T],
        then: Callable[[Connection, _T], Callable[[], None] | None],
    ) -> None:
        """A transaction in two round trips where ``transaction`` takes one per statement,
        through psycopg's pipeline mode.

        1. ``BEGIN`` and what ``first(conn)`` queues (its statements' cursors, say) go to the
           server together; their results are read when they are back.
        2. ``then(conn, what_first_returned)`` reads them (raise to roll back: a conflict)
           and queues the rest. It returns None, and ``COMMIT`` travels with the rest; or a
           ``check`` that must see the rest's results first: called once they are back
           (raise to roll back), then ``COMMIT``, one round trip more.

        Why: on a loopback connection a round trip costs this process about 120 µs of CPU and
        the database a statement's overhead (docs/performance.md, "PostgreSQL store"), and a
        commit is half a dozen statements. A connection found dead in step 1 (nothing sent
        can have committed) is replaced and step 1 sent once more, as ``transaction`` does at
        ``BEGIN``. Lost in step 2: ``Unavailable``, outcome unknown, never retried.
        """
        with self.errors():
            for last_try in (False, True):
                conn = self.pool.getconn()
                try:
                    with conn.pipeline() as pipeline:
                        try:
                            conn.execute(_BEGIN)
                            first_result = first(conn)
                            pipeline.sync()
                        except psycopg.OperationalError:
                            if last_try or not lost(conn):
                                raise
                            continue  # the finally blocks return (and discard) it first
                        check = then(conn, first_result)
                        if check is None:
                            self._commit(conn, pipeline)
                            return
                    check()  # the pipeline's end brought the rest's results
                    self._commit(conn)
                    return
                except BaseException:
                    _roll_back(conn)
                    raise
                finally:
                    self.pool.putconn(conn)
                    if not last_try and lost(conn):
                        self._drop_dead()

    def _commit(self, conn: Connection, pipeline: psycopg.Pipeline | None = None) -> None:
        """``COMMIT``; in ``pipeline``, with what is queued before it (its sync sends them)."""
        try:
            conn.execute("COMMIT")
            if pipeline is not None:
                pipeline.sync()
        except psycopg.OperationalError as exc:
            if not lost(conn):
                raise
            raise Unavailable(
                f"lost the connection to PostgreSQL at {self.where} while committing "
                f"({_cause(exc)}): whether the change was stored is unknown"
            ) from exc

    def _begin(self) -> Connection:
        conn = self.pool.getconn()
        try:
            conn.execute(_BEGIN)
            return conn
        except BaseException as exc:
            self.pool.putconn(conn)
            if not (isinstance(exc, psycopg.OperationalError) and lost(conn)):
                raise
        self._drop_dead()
        conn = self.pool.getconn()
        try:
            conn.execute(_BEGIN)
        except BaseException:
            self.pool.putconn(conn)
            raise
        return conn

    def _drop_dead(self) -> None:
        """One connection was dead, so others probably are (a restart, terminated backends):
        test the idle ones now, so the retry does not pick another dead one."""
        with suppress(psycopg.Error):
            self.pool.check()
