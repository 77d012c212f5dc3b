"""The PostgreSQL store: the ``Store`` / ``UnitOfWork`` ports on psycopg 3 and a connection pool.

Semantics are exactly ``interactions_core.memory.InMemoryStore``'s and the SQLite store's (the
contract suite in ``tests/postgres`` proves it); what differs is how they are kept when many
processes share the database:

* A unit of work *stages* its writes in memory (``interactions_core.staging``); reads inside it
  see the committed data with the staged changes on top (read-your-writes). Reads are single
  statements in autocommit mode, each on the latest committed data (read committed). A unit of
  work holds no connection between calls, so any number may be open at once.
* ``commit`` is one transaction. In id order, so that two commits always lock rows in the same
  order and never deadlock, it writes every update as
  ``UPDATE ... WHERE id = %s AND version = %s`` and checks every ``expect``-ed interaction with
  ``SELECT version ... FOR SHARE`` (a concurrent change of it then waits for this commit, as it
  would behind SQLite's write lock). A row count of 0 or another version is a
  ``ConcurrencyConflict`` with the version actually stored, and the transaction is rolled
  back: a stale write is refused, never lost. Under read committed, an ``UPDATE`` that waited
  for a concurrent writer of the row re-checks its ``WHERE`` against the row that writer
  committed, so of two racing commits exactly one matches.
* Then, under the outbox lock (outbox.py: why seqs are in commit order), it inserts the new
  interactions (``ON CONFLICT (id) DO NOTHING``: a duplicate id is a conflict), the
  notifications and the mail, and commits. No Python code of the service runs inside the
  transaction: everything is serialised before ``BEGIN``.
* An interaction is its JSON document (``model_dump_json``, read back with pydantic's
  ``validate_json``: stored data is trusted) in a ``text`` column, plus the columns the queries
  and indexes need, written from the same object in the same statement.

Failures: see connection.py (``Unavailable`` while serving; ``DatabaseUnreachable`` at
construction).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

from psycopg import sql

from interactions_core.errors import AlreadyIngested, ConcurrencyConflict
from interactions_core.ids import SystemClock
from interactions_core.lifecycle import WAITING_STATES
from interactions_core.model import Interaction
from interactions_core.ports import ChannelState, Clock, MailEntry, Notification, OutgoingMail
from interactions_core.staging import (
    Matches,
    StagedUnitOfWork,
    kept_in,
    listed_for,
    merge_staged,
    waiting_in,
)

from . import bulk
from .connection import Connection, Database, connect, connection_settings
from .migrations import apply_migrations, check_version, waiting_predicate
from .outbox import INSERT_MAIL, INSERT_NOTIFICATION, OUTBOX_LOCK_KEY, PostgresOutboxReader
from .rows import COLUMNS, decode, encode_json, row_values, text, utc
from .wake import WAKE_CHANNEL, wake_payload

if TYPE_CHECKING:
    from interactions_core.ports import Store, UnitOfWork

__all__ = ["WAKE_CHANNEL", "PostgresInteractions", "PostgresStore", "PostgresUnitOfWork"]

_NEW_POSITION: Final = 2**62  # after every stored row: staged rows not yet in the database

# ----------------------------------------------------------------------------- SQL

# ON CONFLICT on any unique index, the id's or the ingest key's: which one says the error.
_INSERT: Final = (
    f"INSERT INTO interactions ({COLUMNS}, ingest_key)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT DO NOTHING"
)
_BY_INGEST_KEY: Final = "SELECT id FROM interactions WHERE ingest_key = %s"
# The change feed: every row this commit wrote gets a seq taken under the outbox lock.
_MARK_CHANGED: Final = (
    "UPDATE interactions SET change_seq = nextval('outbox_seq') WHERE id = ANY(%s::text[])"
)
_MARK_CHANNELS_CHANGED: Final = (
    "UPDATE agent_channels SET change_seq = nextval('outbox_seq') WHERE agent_id = ANY(%s::text[])"
)
_NOTIFY: Final = "SELECT pg_notify(%s, %s)"  # wake.py: who committed, whose notifications
_CHANNEL: Final = "SELECT data FROM agent_channels WHERE agent_id = %s"
_CHANNELS: Final = "SELECT data FROM agent_channels ORDER BY agent_id"
_INSERT_CHANNEL: Final = (
    "INSERT INTO agent_channels (agent_id, version, data) VALUES (%s, %s, %s)"
    " ON CONFLICT (agent_id) DO NOTHING"
)
_UPDATE_CHANNEL: Final = (
    "UPDATE agent_channels SET version = %s, data = %s WHERE agent_id = %s AND version = %s"
)
_CHANNEL_VERSION: Final = "SELECT version FROM agent_channels WHERE agent_id = %s"
_UPDATE: Final = (
    "UPDATE interactions SET version = %s, state = %s, owner = %s, offer_agent = %s,"
    " current_queue = %s, workbin = %s, mailbox = %s, message_id = %s, received_at = %s,"
    " data = %s WHERE id = %s AND version = %s"
)
_GET: Final = "SELECT data FROM interactions WHERE id = %s"
_VERSION: Final = "SELECT version FROM interactions WHERE id = %s"
_VERSION_FOR_SHARE: Final = "SELECT version FROM interactions WHERE id = %s FOR SHARE"
_POSITION: Final = "SELECT pos FROM interactions WHERE id = %s"
_FOR_AGENT: Final = (
    "SELECT data FROM interactions WHERE owner = %s OR offer_agent = %s ORDER BY received_at, id"
)
_IN_WORKBIN: Final = "SELECT data FROM interactions WHERE workbin = %s ORDER BY received_at, id"
_BY_MESSAGE_ID: Final = "SELECT pos, id, data FROM interactions WHERE message_id = %s"
_BY_MESSAGE_ID_IN: Final = (
    "SELECT pos, id, data FROM interactions WHERE message_id = %s AND mailbox = %s"
)


def in_queue_sql(states: Iterable[str] = WAITING_STATES) -> sql.Composed:
    """The routing query; its WHERE repeats the partial index's predicate so the index is used."""
    return sql.SQL(
        "SELECT data FROM interactions WHERE current_queue = %s AND {}"
        " ORDER BY received_at, id LIMIT %s"
    ).format(waiting_predicate(states))


_IN_QUEUE: Final = in_queue_sql()


def _version(conn: Connection, interaction_id: str) -> int | None:
    row = conn.execute(_VERSION, (text(interaction_id),)).fetchone()
    return None if row is None else int(row[0])


# ----------------------------------------------------------------------------- store


class PostgresStore(PostgresOutboxReader):
    """Store + outbox in a PostgreSQL database, shared safely by any number of processes."""

    def __init__(
        self,
        dsn: str,
        *,
        clock: Clock | None = None,
        pool_size: int = 10,
        statement_timeout_ms: int = 30_000,
        application_name: str = "interactions",
        connect_timeout_s: float = 10.0,
        mail_lease_seconds: float = 300.0,
        migrate: bool = True,
    ) -> None:
        """Connect (and, with ``migrate``, migrate) the database at ``dsn``.

        ``pool_size``: at most that many connections (two are opened at start). Every
        connection has ``application_name`` and ``statement_timeout`` (``statement_timeout_ms``;
        0: none) set. ``connect_timeout_s``: how long connecting may take, and how long a call
        waits for a free connection before ``Unavailable``. ``mail_lease_seconds``: how long a
        mail ``pending_mail`` returned stays claimed by this store (outbox.py). Without
        ``migrate`` the database must be at this library's version (``SchemaTooOld`` if not).

        Raises ``DatabaseUnreachable`` when the database cannot be reached.
        """
        if mail_lease_seconds <= 0:
            raise ValueError("mail_lease_seconds must be > 0")
        self._clock = clock or SystemClock()
        self._lease = timedelta(seconds=mail_lease_seconds)
        # Who holds a mail claim: this store object (a process may have several).
        self._claimant = f"{application_name}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        settings = connection_settings(
            dsn,
            application_name=application_name,
            statement_timeout_ms=statement_timeout_ms,
            connect_timeout_s=connect_timeout_s,
        )
        self._db = Database(
            dsn,
            settings,
            pool_size=pool_size,
            connect_timeout_s=connect_timeout_s,
            statement_timeout_ms=statement_timeout_ms,
            name=f"{application_name}-store",
        )
        with connect(dsn, settings) as conn:  # says why when the database cannot be reached
            if migrate:
                conn.execute("SET statement_timeout = 0")  # a migration may take long
                apply_migrations(conn)
            else:
                check_version(conn)
        self._db.open()
        self._closed = False

    @property
    def origin(self) -> str:
        """This store object's id: on its mail claims (outbox.py) and on its commits'
        wake-ups (wake.py), so that this process's listener can tell its own."""
        return self._claimant

    @property
    def where(self) -> str:
        """``host:port/database`` (for logs and errors; no credentials)."""
        return self._db.where

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A pooled connection (autocommit) for statements of the caller's own: tests, admin
        tools. Operational failures raise ``Unavailable``."""
        with self._db.connection() as conn:
            yield conn

    def close(self) -> None:
        """Release this store's mail claims, then close every connection (call at shutdown,
        with no unit of work in flight). Idempotent. Every commit was durable when it returned,
        so closing loses nothing; a store opened again on the database finds it all."""
        if self._closed:
            return
        self._closed = True
        try:
            # Best effort, and brief (the database may be down at shutdown): the leases end by
            # themselves anyway.
            with suppress(Exception):
                self.release_claims(timeout=min(1.0, self._db.timeout))
        finally:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the port
    def unit_of_work(self) -> PostgresUnitOfWork:
        return PostgresUnitOfWork(self)

    def load(
        self,
        interactions: Iterable[Interaction],
        *,
        mail: Iterable[MailEntry] = (),
        notifications: Iterable[Notification] = (),
    ) -> int:
        """Bulk import (moving an installation from SQLite): rows kept as given (versions, ids,
        states; pending mail with attempts/next_attempt_at; notifications as unpublished), in
        one transaction; refuses (ValueError naming the reason) if the database already holds
        interactions. Returns how many interactions were loaded. Uses COPY.

        Seqs given (> 0) are kept, so a client's last seq stays meaningful; entries with seq 0
        get new ones above them, and the sequence continues above all. See bulk.py.
        """
        with self._db.transaction() as conn:
            return bulk.load(
                conn, interactions, mail=mail, notifications=notifications, now=self._clock.now()
            )

    # -- used by the unit of work
    def _get(self, interaction_id: str) -> Interaction | None:
        key = text(interaction_id)
        row = self._db.retryable(lambda c: c.execute(_GET, (key,)).fetchone())
        return None if row is None else decode(row[0])

    def _query(self, query: str | sql.Composed, params: tuple[Any, ...]) -> list[Interaction]:
        rows = self._db.retryable(lambda c: c.execute(query, params).fetchall())
        return [decode(data) for (data,) in rows]

    def _matches(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._db.retryable(lambda c: c.execute(query, params).fetchall())

    def _positions(self, ids: list[str]) -> dict[str, int]:
        def read(conn: Connection) -> dict[str, int]:
            found: dict[str, int] = {}
            for iid in ids:
                row = conn.execute(_POSITION, (text(iid),)).fetchone()
                if row is not None:
                    found[iid] = int(row[0])
            return found

        return self._db.retryable(read)

    def _lock_outbox(self, conn: Connection) -> None:
        """Serialise seq allocation until this transaction ends (outbox.py). Overridden only
        by a test that proves what goes wrong without it."""
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (OUTBOX_LOCK_KEY,))

    def _before_commit(self, conn: Connection) -> None:
        """Called with the transaction's inserts done, right before ``COMMIT``: a no-op, for
        tests that need a delay or a failure exactly there."""

    def _commit(
        self,
        expected: dict[str, int | None],
        rows: dict[str, Interaction],
        notifications: list[tuple[str, str, str]],
        mail: list[OutgoingMail],
        channels: dict[str, ChannelState] | None = None,
        channels_expected: dict[str, int] | None = None,
    ) -> None:
        # Everything is serialised before the transaction begins.
        values = {iid: row_values(row) for iid, row in rows.items()}
        channel_writes = sorted(
            (agent, (channels_expected or {}).get(agent, 0), state, state.model_dump_json())
            for agent, state in (channels or {}).items()
        )
        # Updates and checks, in id order: every commit locks rows in the same order.
        locked: list[tuple[str, int, tuple[Any, ...] | None]] = []
        inserts: list[str] = []
        for iid in sorted(expected):
            version = expected[iid]
            if iid not in values:  # expected, not written: checked
                locked.append((iid, version or 0, None))
            elif version is None:
                inserts.append(iid)
            else:
                row = values[iid]
                locked.append((iid, version, (*row[1:], row[0], version)))
        order = {iid: n for n, iid in enumerate(rows)}
        inserts.sort(key=order.__getitem__)  # stored in the order they were added
        outbox_rows: list[tuple[str, tuple[Any, ...]]] = []
        if notifications or mail:
            now = utc(self._clock.now())
            outbox_rows = [
                (INSERT_NOTIFICATION, (text(agent), text(topic), payload, now))
                for agent, topic, payload in notifications
            ]
            outbox_rows.extend(
                (INSERT_MAIL, (text(m.interaction_id), m.model_dump_json(), now, now)) for m in mail
            )
        writes = bool(inserts or outbox_rows or values or channel_writes)
        wake = wake_payload(self._claimant, (agent for agent, _, _ in notifications))
        # COMMIT goes with the inserts unless their results must be seen first: an insert
        # refused by a unique index (ON CONFLICT DO NOTHING), or a test's hook before COMMIT.
        commit_with_inserts = not inserts and (
            type(self)._before_commit is PostgresStore._before_commit
        )
        Checks = tuple[list[tuple[str, int, Any]], list[tuple[str, int, Any]]]

        def checks(conn: Connection) -> Checks:
            """Round trip 1: every version check, update and row lock (in id order)."""
            checked = [
                (iid, version, conn.execute(_UPDATE, params))
                if params is not None
                # FOR SHARE: a concurrent change of it waits until this commit is done.
                else (iid, version, conn.execute(_VERSION_FOR_SHARE, (text(iid),)))
                for iid, version, params in locked
            ]
            channel_cursors = [
                (
                    agent,
                    channel_version,
                    conn.execute(_INSERT_CHANNEL, (text(agent), state.version, data))
                    if channel_version == 0
                    else conn.execute(
                        _UPDATE_CHANNEL, (state.version, data, text(agent), channel_version)
                    ),
                )
                for agent, channel_version, state, data in channel_writes
            ]
            return checked, channel_cursors

        def inserts_and_commit(conn: Connection, found: Checks) -> Callable[[], None] | None:
            """Round trip 2, once nothing conflicted: the outbox lock (taken last: outbox.py),
            the inserts, the change marks, the wake-up; COMMIT with them where it can."""
            checked, channel_cursors = found
            for iid, version, cur in checked:
                if iid in values:
                    if cur.rowcount != 1:
                        raise ConcurrencyConflict(iid, version, _version(conn, iid))
                    continue
                row = cur.fetchone()
                actual = None if row is None else int(row[0])
                if actual != version:
                    raise ConcurrencyConflict(iid, version, actual)
            for agent, channel_version, cur in channel_cursors:
                if cur.rowcount != 1:
                    row = conn.execute(_CHANNEL_VERSION, (text(agent),)).fetchone()
                    raise ConcurrencyConflict(
                        agent, channel_version, int(row[0]) if row is not None else 0
                    )
            if not writes:
                return None
            self._lock_outbox(conn)
            inserted = [
                (iid, conn.execute(_INSERT, (*values[iid], rows[iid].ingest_key)))
                for iid in inserts
            ]
            for statement, params in outbox_rows:
                conn.execute(statement, params)
            if values:
                conn.execute(_MARK_CHANGED, ([text(iid) for iid in values],))
            if channel_writes:
                conn.execute(_MARK_CHANNELS_CHANGED, ([text(a) for a, *_ in channel_writes],))
            conn.execute(_NOTIFY, (WAKE_CHANNEL, wake))
            if commit_with_inserts:
                return None

            def check() -> None:
                for iid, cur in inserted:
                    if cur.rowcount != 1:
                        self._refused_insert(conn, iid, rows[iid].ingest_key)
                self._before_commit(conn)

            return check

        self._db.pipelined(checks, inserts_and_commit)

    def _refused_insert(self, conn: Connection, iid: str, key: str | None) -> None:
        """An insert that did nothing: its id exists (a conflict), or its ingest key does."""
        actual = _version(conn, iid)
        if actual is not None or key is None:
            raise ConcurrencyConflict(iid, 0, actual)
        holder = conn.execute(_BY_INGEST_KEY, (key,)).fetchone()
        if holder is None:  # the other row went away meanwhile: nothing to point at
            raise ConcurrencyConflict(iid, 0, None)
        raise AlreadyIngested(str(holder[0]))

    def _channel(self, agent_id: str) -> ChannelState | None:
        key = text(agent_id)
        row = self._db.retryable(lambda c: c.execute(_CHANNEL, (key,)).fetchone())
        return None if row is None else ChannelState.model_validate_json(row[0])

    def _all_channels(self) -> list[ChannelState]:
        rows = self._db.retryable(lambda c: c.execute(_CHANNELS).fetchall())
        return [ChannelState.model_validate_json(data) for (data,) in rows]


# ----------------------------------------------------------------------------- unit of work


class PostgresInteractions:
    """The repository of one unit of work: the database with the staged changes on top."""

    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow
        self._store = uow._store

    def get(self, interaction_id: str) -> Interaction | None:
        return self._uow._staged.get(interaction_id, self._store._get)

    def add(self, interaction: Interaction) -> Interaction:
        return self._uow._staged.add(interaction, self._store._get)

    def update(self, interaction: Interaction) -> Interaction:
        return self._uow._staged.update(interaction)

    def expect(self, interaction: Interaction) -> None:
        self._uow._staged.expect(interaction)

    def _merged(
        self, found: list[Interaction], matches: Matches, limit: int | None = None
    ) -> list[Interaction]:
        return merge_staged(found, self._uow._rows, matches, limit)

    def for_agent(self, agent_id: str) -> list[Interaction]:
        key = text(agent_id)
        return self._merged(
            self._store._query(_FOR_AGENT, (key, key)),
            listed_for(agent_id),
        )

    def in_queue(self, queue: str, limit: int | None = None) -> list[Interaction]:
        if limit is not None and limit <= 0:
            return []
        # Staged rows may displace database rows: fetch enough to cover them.
        fetch = None if limit is None else limit + len(self._uow._rows)
        return self._merged(
            self._store._query(_IN_QUEUE, (text(queue), fetch)),
            waiting_in(queue),
            limit,
        )

    def in_workbin(self, workbin: str) -> list[Interaction]:
        return self._merged(self._store._query(_IN_WORKBIN, (text(workbin),)), kept_in(workbin))

    def by_message_id(self, message_id: str, mailbox: str | None = None) -> Interaction | None:
        """The first stored (commit order) interaction with this Message-ID."""
        params: tuple[str | None, ...]
        if mailbox is None:
            query, params = _BY_MESSAGE_ID, (text(message_id),)
        else:
            query, params = _BY_MESSAGE_ID_IN, (text(message_id), text(mailbox))
        staged = self._uow._rows
        if not staged:
            first = self._store._matches(query + " ORDER BY pos LIMIT 1", params)
            return decode(first[0][2]) if first else None
        found = self._store._matches(query + " ORDER BY pos", params)
        # A staged row keeps the position of its stored row; new rows come last, in order.
        candidates = [(int(pos), decode(data)) for pos, iid, data in found if iid not in staged]
        mine = [
            i
            for i in staged.values()
            if i.email.message_id == message_id and (mailbox is None or i.mailbox == mailbox)
        ]
        if mine:
            stored = self._store._positions([i.id for i in mine])
            order = list(staged)
            candidates.extend(
                (stored.get(i.id, _NEW_POSITION + order.index(i.id)), i) for i in mine
            )
        return min(candidates, key=lambda c: c[0])[1] if candidates else None


class PostgresOutbox:
    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow

    def add_notification(self, notification: Notification) -> None:
        # Serialised now, so a payload that is not JSON fails in the operation that made it.
        payload = encode_json(notification.to_wire())
        self._uow._notifications.append((notification.agent_id, notification.topic, payload))

    def add_mail(self, mail: OutgoingMail) -> None:
        self._uow._mail.append(mail)


class PostgresUnitOfWork(StagedUnitOfWork[tuple[str, str, str]]):
    """One transaction: staged here, written by ``commit`` in one PostgreSQL transaction."""

    def __init__(self, store: PostgresStore) -> None:
        super().__init__()
        self._store = store
        self._interactions = PostgresInteractions(self)
        self._outbox = PostgresOutbox(self)

    @property
    def interactions(self) -> PostgresInteractions:
        return self._interactions

    @property
    def outbox(self) -> PostgresOutbox:
        return self._outbox

    def commit(self) -> None:
        if self._has_writes():
            self._store._commit(
                self._expected,
                self._rows,
                self._notifications,
                self._mail,
                self._channels.rows,
                self._channels.expected,
            )
        self._reset()

    def _load_channel(self, agent_id: str) -> ChannelState | None:
        return self._store._channel(agent_id)

    def _load_channels(self) -> list[ChannelState]:
        return self._store._all_channels()


if TYPE_CHECKING:

    def _conforms(store: PostgresStore, uow: PostgresUnitOfWork) -> tuple[Store, UnitOfWork]:
        return store, uow
