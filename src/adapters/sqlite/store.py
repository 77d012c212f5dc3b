"""The SQLite store: the ``Store`` / ``UnitOfWork`` ports on the stdlib ``sqlite3`` module.

Semantics are exactly ``interactions_core.testing.InMemoryStore``'s (the contract suite in
``tests/store`` proves it):

* A unit of work *stages* its writes in memory; reads inside it see the committed data with the
  staged changes on top (read-your-writes). Reads outside a write run in autocommit mode, each
  statement on the latest committed snapshot (read committed, like the in-memory store).
* ``commit`` runs one ``BEGIN IMMEDIATE`` transaction holding every changed interaction and
  every outbox entry. Each update is ``UPDATE ... WHERE id = ? AND version = ?``; a row count of
  0 is a ``ConcurrencyConflict`` carrying the version actually stored, and nothing of the unit
  of work is written. So a stale write is refused, never lost.
* No Python code runs while the write lock is held: only the statements of the commit. Writers
  of this process queue on a ``threading.Lock`` (immediate hand-over); writers of other
  processes wait in SQLite's busy handler up to ``busy_timeout``.
* Notifications and mail share one outbox table whose ``AUTOINCREMENT`` key is the one strictly
  increasing sequence; within a commit, notifications are numbered before mail. A published
  notification is kept (``published_us`` set) until ``purge_notifications`` deletes it, so a
  client that was away can catch up (``notifications_since``).
* A row never changes without its version changing. So the interactions this store wrote last
  are kept decoded (``cache_size`` per store), and loading one by id reuses the kept one when
  the stored version, read in the same statement, is still its version.

Connections: one per thread (``threading.local``), opened on first use with WAL, the configured
``synchronous`` level, ``busy_timeout`` and ``foreign_keys=ON``. A unit of work holds no
connection, so it may be created in one thread and used in another (never concurrently).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

from pydantic_core import to_json

from interactions_core.errors import AlreadyIngested, ConcurrencyConflict, Unavailable
from interactions_core.ids import SystemClock
from interactions_core.lifecycle import WAITING_STATES
from interactions_core.model import Interaction
from interactions_core.ports import (
    ChannelState,
    Clock,
    MailEntry,
    Notification,
    NotificationBacklog,
    OutgoingMail,
    StoredMessage,
)
from interactions_core.staging import (
    Matches,
    StagedUnitOfWork,
    kept_in,
    listed_for,
    merge_staged,
    waiting_in,
)

from .checkpoint import Checkpointer
from .migrations import migrate, waiting_predicate

if TYPE_CHECKING:
    from interactions_core.ports import Store, UnitOfWork

SYNCHRONOUS_LEVELS: Final = frozenset({"NORMAL", "FULL", "EXTRA"})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NEW_POSITION: Final = 2**62  # after every stored row: staged rows not yet in the database

# ----------------------------------------------------------------------------- SQL

_COLUMNS: Final = (
    "version, state, owner, offer_agent, current_queue, workbin, mailbox, message_id,"
    " received_us, data"
)
_INSERT: Final = (
    f"INSERT INTO interactions (id, {_COLUMNS}, ingest_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_BY_INGEST_KEY: Final = "SELECT id FROM interactions WHERE ingest_key = ?"
_CHANNEL: Final = "SELECT data FROM agent_channels WHERE agent_id = ?"
_CHANNELS: Final = "SELECT data FROM agent_channels ORDER BY agent_id"
_CHANNEL_VERSION: Final = "SELECT version FROM agent_channels WHERE agent_id = ?"
_PUT_CHANNEL: Final = (
    "INSERT INTO agent_channels (agent_id, version, data) VALUES (?, ?, ?)"
    " ON CONFLICT (agent_id) DO UPDATE SET version = excluded.version, data = excluded.data"
)
_UPDATE: Final = (
    "UPDATE interactions SET version = ?, state = ?, owner = ?, offer_agent = ?,"
    " current_queue = ?, workbin = ?, mailbox = ?, message_id = ?, received_us = ?, data = ?"
    " WHERE id = ? AND version = ?"
)
_GET: Final = "SELECT data FROM interactions WHERE id = ?"
# By id, for a store that holds a decoded copy at version ?1: the document is only sent when the
# stored version is another one (a row never changes without its version changing).
_GET_UNLESS: Final = (
    "SELECT CASE WHEN version = ? THEN NULL ELSE data END FROM interactions WHERE id = ?"
)
_VERSION: Final = "SELECT version FROM interactions WHERE id = ?"
_FOR_AGENT: Final = (
    "SELECT data FROM interactions WHERE owner = ? OR offer_agent = ? ORDER BY received_us, id"
)
_IN_WORKBIN: Final = "SELECT data FROM interactions WHERE workbin = ? ORDER BY received_us, id"
_BY_MESSAGE_ID: Final = "SELECT pos, id, data FROM interactions WHERE message_id = ?"
_INSERT_NOTIFICATION: Final = (
    "INSERT INTO outbox (kind, agent_id, topic, payload, queued_at)"
    " VALUES ('notification', ?, ?, ?, ?)"
)
_INSERT_MAIL: Final = (
    "INSERT INTO outbox (kind, interaction_id, payload, queued_at, next_attempt_at, due_us)"
    " VALUES ('mail', ?, ?, ?, ?, ?)"
)
# Notifications: pending ones (the dispatchers), one agent's after a seq (a client catching up)
# and published ones before a time (the purge), each by its own partial index.
_PENDING_NOTIFICATIONS: Final = (
    "SELECT seq, agent_id, topic, payload FROM outbox INDEXED BY ix_outbox_notifications"
    " WHERE kind = 'notification' AND published_us IS NULL AND seq > ? ORDER BY seq LIMIT ?"
)
_NOTIFICATIONS_SINCE: Final = (
    "SELECT seq, agent_id, topic, payload FROM outbox INDEXED BY ix_outbox_agent_notifications"
    " WHERE kind = 'notification' AND agent_id = ? AND seq > ? ORDER BY seq LIMIT ?"
)
_PURGEABLE: Final = (
    "SELECT seq, agent_id FROM outbox INDEXED BY ix_outbox_notifications_published"
    " WHERE kind = 'notification' AND published_us IS NOT NULL AND published_us < ?"
    " ORDER BY published_us LIMIT ?"
)
_PURGED_THROUGH: Final = "SELECT through_seq FROM notification_purges WHERE agent_id = ?"
_LAST_SEQ: Final = "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'"


def in_queue_sql(states: frozenset[str] = WAITING_STATES) -> str:
    """The routing query; its WHERE repeats the partial index's term so the index is used."""
    return (
        "SELECT data FROM interactions"
        f" WHERE current_queue = ? AND {waiting_predicate(states)}"
        " ORDER BY received_us, id LIMIT ?"
    )


_IN_QUEUE: Final = in_queue_sql()


def to_micros(when: datetime) -> int:
    """Microseconds since the epoch, UTC; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def row_values(i: Interaction) -> tuple[Any, ...]:
    """The column values of ``interaction`` in ``_COLUMNS`` order (the document last)."""
    return (i.version, *_indexed(i), i.model_dump_json())


# The columns between version and data: what the indexes and queries read.
_INDEXED: Final = (
    "state",
    "owner",
    "offer_agent",
    "current_queue",
    "workbin",
    "mailbox",
    "message_id",
    "received_us",
)


def _indexed(i: Interaction) -> tuple[Any, ...]:
    return (
        i.state,
        i.owner,
        i.offer.agent_id if i.offer is not None else None,
        i.current_queue,
        i.workbin,
        i.mailbox,
        i.email.message_id,
        to_micros(i.received_at),
    )


@lru_cache(maxsize=256)
def _update_sql(changed: tuple[str, ...]) -> str:
    """An UPDATE of the version, the document and only the ``changed`` indexed columns: SQLite
    maintains an index only when the UPDATE names one of its columns."""
    assigned = "".join(f", {column} = ?" for column in changed)
    return f"UPDATE interactions SET version = ?, data = ?{assigned} WHERE id = ? AND version = ?"


def _update(
    new: Interaction, values: tuple[Any, ...], loaded: Interaction | None, version: int
) -> tuple[str, tuple[Any, ...]]:
    """The statement and parameters writing ``new`` over the row stored at ``version``.

    When the row as loaded at that version is known, only the indexed columns that differ are
    set (a row never changes without its version changing, so its columns are the loaded
    ones); otherwise every column is.
    """
    if loaded is None or loaded.version != version:
        return _UPDATE, (*values, new.id, version)
    differ = [
        (column, value)
        for column, old, value in zip(_INDEXED, _indexed(loaded), values[1:-1], strict=True)
        if old != value
    ]
    changed = tuple(column for column, _ in differ)
    return _update_sql(changed), (values[0], values[-1], *(v for _, v in differ), new.id, version)


_validate_json: Final = Interaction.__pydantic_validator__.validate_json


def _load(data: str) -> Interaction:
    # Stored documents were valid when written: no address re-validation happens here.
    loaded: Interaction = _validate_json(data)
    return loaded


def _encode_json(value: Any) -> str:
    """Compact UTF-8 JSON, what ``json.dumps(separators=(",", ":"), ensure_ascii=False)`` writes,
    by pydantic-core's serialiser: about 4x faster on a notification."""
    return to_json(value).decode()


# ----------------------------------------------------------------------------- store


class InteractionCache:
    """The interactions a store committed last, decoded, by id: at most ``size``.

    An entry is only a candidate: a reader uses it when the version stored in the database,
    read in the same statement, is the entry's (rows are immutable per version, whichever
    process writes them). Evicts the entry written longest ago. Filled at commit only: a put
    costs about as much as the decoding it saves on a miss. Reads take no lock; changes take
    one, so concurrent threads never see a half-changed dict.
    """

    __slots__ = ("_entries", "_lock", "size")

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("cache_size must be >= 0")
        self.size = size
        self._entries: OrderedDict[str, Interaction] = OrderedDict()  # O(1) eviction of the oldest
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, interaction_id: str) -> Interaction | None:
        return self._entries.get(interaction_id)

    def put(self, interaction: Interaction) -> None:
        if not self.size:
            return
        interaction_id = interaction.id
        with self._lock:
            entries = self._entries
            entries[interaction_id] = interaction
            entries.move_to_end(interaction_id)  # the most recent
            if len(entries) > self.size:
                entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class _Connection:
    """A thread's connection; closed when its thread ends (the thread-local dies) or at close."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        with suppress(Exception):  # best effort, e.g. at interpreter shutdown
            self.conn.close()


class SqliteStore:
    """Store + outbox in one SQLite database file (WAL mode)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        busy_timeout: float = 5.0,
        clock: Clock | None = None,
        cache_size: int = 0,
        checkpoint: str = "background",
    ) -> None:
        """Open (creating and migrating as needed) the database at ``path``.

        ``synchronous``: ``NORMAL`` (default: a process crash loses nothing, a power cut may
        lose the last transactions but never corrupts) or ``FULL`` / ``EXTRA`` (every commit
        is fsynced). ``busy_timeout``: seconds a writer waits for another process's write lock.
        ``cache_size``: how many of the interactions committed last are kept decoded (default
        0: none); a kept one is reused only while its version is still the stored one. It pays
        off when operations come back to the interactions written last (docs/storage.md).
        ``checkpoint``: ``background`` (default: WAL checkpoints on a thread of their own,
        ``adapters.sqlite.checkpoint``, so no commit waits for one) or ``commit`` (SQLite's
        own: inside the commit that fills the log past 1,000 pages).
        """
        text = os.fspath(path)
        if text == ":memory:" or text.startswith("file::memory:") or not text:
            raise ValueError("SqliteStore needs a file: each thread opens its own connection")
        level = synchronous.upper()
        if level not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS_LEVELS)}")
        if busy_timeout < 0:
            raise ValueError("busy_timeout must be >= 0 seconds")
        if checkpoint not in ("background", "commit"):
            raise ValueError("checkpoint must be 'background' or 'commit'")
        self.path = Path(text)
        self.synchronous = level
        self.busy_timeout = busy_timeout
        self._clock: Clock = clock or SystemClock()
        self._cache = InteractionCache(cache_size)
        self._local = threading.local()
        self._open: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._registry_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._closed = False
        self._checkpointer = (
            Checkpointer(self._new_connection, f"{self.path}-wal", writers=self._write_lock)
            if checkpoint == "background"
            else None
        )
        conn = self.connection()
        with self._write_lock:
            migrate(conn)

    # -- connections
    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode: transactions are explicit)."""
        holder: _Connection | None = getattr(self._local, "holder", None)
        if holder is not None:
            return holder.conn
        if self._closed:
            raise sqlite3.ProgrammingError("the store is closed")
        conn = self._new_connection()
        holder = _Connection(conn)
        self._local.holder = holder
        with self._registry_lock:
            self._open.add(holder)
        return conn

    def _new_connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,  # only so close() may close it; used by its thread only
        )
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"could not enable WAL (journal_mode={mode})")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            if self._checkpointer is not None:  # the checkpointer's thread does them
                conn.execute("PRAGMA wal_autocheckpoint = 0")
                # The log truncated back to its bound when it starts over (checkpoint.py).
                conn.execute(f"PRAGMA journal_size_limit = {self._checkpointer.max_wal_bytes}")
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Close every connection of this store (call at shutdown, with no work in flight).

        Idempotent: a second call does nothing. Each commit was written (to the WAL) when it
        returned, so closing loses nothing committed; a store opened again on the file finds
        it all.
        """
        self._closed = True
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._registry_lock:
            holders = list(self._open)
            self._open.clear()
        for holder in holders:
            holder.conn.close()
        self._local = threading.local()
        self._cache.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on error."""
        conn = self.connection()
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                # Another process held the write lock past busy_timeout: a clear, retryable
                # error instead of a driver exception.
                raise Unavailable(f"the database is busy ({exc}); try again") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        if self._checkpointer is not None:
            self._checkpointer.committed()

    # -- the ports
    def unit_of_work(self) -> SqliteUnitOfWork:
        return SqliteUnitOfWork(self)

    def pending_notifications(self, after_seq: int = 0, limit: int = 500) -> list[Notification]:
        rows = self.connection().execute(_PENDING_NOTIFICATIONS, (after_seq, max(limit, 0)))
        return _notifications(rows)

    def mark_notifications_done(self, seqs: Sequence[int]) -> None:
        # Kept as published (status mirrors it) until purge_notifications deletes them.
        if not seqs:
            return
        now = self._clock.now()
        published = (to_micros(now), now.isoformat())
        wanted = sorted(set(seqs))
        with self._write() as conn:
            # One statement a batch (the drain's, up to its limit), not one per entry.
            for start in range(0, len(wanted), _MARK_CHUNK):
                chunk = wanted[start : start + _MARK_CHUNK]
                conn.execute(
                    "UPDATE outbox SET published_us = ?, status = 'sent', done_at = ?"
                    " WHERE kind = 'notification' AND published_us IS NULL"
                    f" AND seq IN ({','.join('?' * len(chunk))})",
                    (*published, *chunk),
                )

    def notifications_since(
        self, agent_id: str, after_seq: int, limit: int = 500
    ) -> NotificationBacklog:
        conn = self.connection()
        # One read transaction: the rows, the purge record and the last seq are one snapshot.
        conn.execute("BEGIN")
        try:
            found = _notifications(
                conn.execute(_NOTIFICATIONS_SINCE, (agent_id, after_seq, max(limit, 0)))
            )
            purged = conn.execute(_PURGED_THROUGH, (agent_id,)).fetchone()
            last = conn.execute(_LAST_SEQ).fetchone()
        finally:
            conn.execute("COMMIT")
        last_seq = int(last[0]) if last is not None else 0
        purged_through = int(purged[0]) if purged is not None else 0
        return NotificationBacklog.model_construct(
            notifications=found,
            complete=purged_through <= after_seq <= last_seq,
            last_seq=last_seq,
        )

    def purge_notifications(self, published_before: datetime, limit: int = 1000) -> int:
        if limit < 1:
            return 0
        cutoff = to_micros(published_before)
        if not self.connection().execute(_PURGEABLE, (cutoff, 1)).fetchall():
            return 0  # the usual case on a timer: no write lock taken
        with self._write() as conn:
            rows = conn.execute(_PURGEABLE, (cutoff, limit)).fetchall()
            conn.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq, _ in rows])
            through: dict[str, int] = {}
            for seq, agent_id in rows:
                through[agent_id] = max(through.get(agent_id, 0), seq)
            conn.executemany(
                "INSERT INTO notification_purges (agent_id, through_seq) VALUES (?, ?)"
                " ON CONFLICT (agent_id) DO UPDATE"
                " SET through_seq = max(through_seq, excluded.through_seq)",
                list(through.items()),
            )
        return len(rows)

    def pending_mail(self, due_before: datetime, limit: int = 100) -> list[MailEntry]:
        rows = self.connection().execute(
            "SELECT seq, payload, queued_at, attempts, next_attempt_at, last_error"
            " FROM outbox INDEXED BY ix_outbox_mail_due"
            " WHERE kind = 'mail' AND status = 'pending' AND due_us <= ?"
            " ORDER BY seq LIMIT ?",
            (to_micros(due_before), limit),
        )
        return [
            MailEntry(
                seq=seq,
                mail=OutgoingMail.model_validate_json(payload),
                queued_at=datetime.fromisoformat(queued_at),
                attempts=attempts,
                next_attempt_at=datetime.fromisoformat(next_attempt_at),
                last_error=last_error,
            )
            for seq, payload, queued_at, attempts, next_attempt_at, last_error in rows
        ]

    def mark_mail_sent(self, seq: int) -> None:
        self._finish_mail(seq, "sent", None)

    def mark_mail_failed(self, seq: int, error: str) -> None:
        self._finish_mail(seq, "failed", error)

    def reschedule_mail(self, seq: int, next_attempt_at: datetime, error: str) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, due_us = ?,"
                " last_error = ? WHERE seq = ? AND kind = 'mail' AND status = 'pending'",
                (next_attempt_at.isoformat(), to_micros(next_attempt_at), error, seq),
            )

    def _finish_mail(self, seq: int, status: str, error: str | None) -> None:
        # Kept (not deleted) as the delivery record; only pending entries change.
        with self._write() as conn:
            conn.execute(
                "UPDATE outbox SET status = ?, last_error = COALESCE(?, last_error), done_at = ?"
                " WHERE seq = ? AND kind = 'mail' AND status = 'pending'",
                (status, error, self._clock.now().isoformat(), seq),
            )

    # -- used by the unit of work
    def _get(self, interaction_id: str) -> Interaction | None:
        cached = self._cache.get(interaction_id)
        conn = self.connection()
        if cached is None:
            found = conn.execute(_GET, (interaction_id,)).fetchone()
        else:
            found = conn.execute(_GET_UNLESS, (cached.version, interaction_id)).fetchone()
        if found is None:
            return None
        if found[0] is None:  # the stored version is the cached one's: the document was not sent
            return cached  # (data is NOT NULL, so only _GET_UNLESS with a version gives NULL)
        return _load(found[0])

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Interaction]:
        return [_load(data) for (data,) in self.connection().execute(sql, params)]

    def _commit(
        self,
        expected: dict[str, int | None],
        rows: dict[str, Interaction],
        notifications: list[tuple[str, str, str]],
        mail: list[OutgoingMail],
        loaded: dict[str, Interaction] | None = None,
        channels: dict[str, ChannelState] | None = None,
        channels_expected: dict[str, int] | None = None,
    ) -> None:
        # Everything serialisable is prepared before the lock is taken.
        values = {iid: row_values(row) for iid, row in rows.items()}
        channel_rows = [
            (agent, state.version, state.model_dump_json())
            for agent, state in (channels or {}).items()
        ]
        updates = {
            iid: _update(rows[iid], values[iid], (loaded or {}).get(iid), version)
            for iid, version in expected.items()
            if version is not None and iid in values
        }
        notification_rows: list[tuple[str, str, str, str]] = []
        mail_rows: list[tuple[str, str, str, str, int]] = []
        if notifications or mail:
            now = self._clock.now()
            queued_at = now.isoformat()
            due = to_micros(now)
            notification_rows = [
                (agent, topic, payload, queued_at) for agent, topic, payload in notifications
            ]
            mail_rows = [
                (m.interaction_id, m.model_dump_json(), queued_at, queued_at, due) for m in mail
            ]
        with self._write() as conn:
            for iid, version in expected.items():
                if iid not in values:  # expected, not written: its version must be unchanged
                    actual = _version(conn, iid)
                    if actual != version:
                        raise ConcurrencyConflict(iid, version or 0, actual)
                elif version is None:
                    key = rows[iid].ingest_key
                    try:
                        conn.execute(_INSERT, (iid, *values[iid], key))
                    except sqlite3.IntegrityError:
                        actual = _version(conn, iid)
                        if actual is not None:
                            raise ConcurrencyConflict(iid, 0, actual) from None
                        holder = conn.execute(_BY_INGEST_KEY, (key,)).fetchone()
                        if key is None or holder is None:
                            raise  # neither a duplicate id nor key: a real violation
                        raise AlreadyIngested(str(holder[0])) from None
                elif conn.execute(*updates[iid]).rowcount != 1:
                    raise ConcurrencyConflict(iid, version, _version(conn, iid))
            for agent, want in (channels_expected or {}).items():
                found = conn.execute(_CHANNEL_VERSION, (agent,)).fetchone()
                actual = int(found[0]) if found is not None else 0
                if actual != want:
                    raise ConcurrencyConflict(agent, want, actual)
            for channel_row in channel_rows:
                conn.execute(_PUT_CHANNEL, channel_row)
            for sql, outbox_rows in (
                (_INSERT_NOTIFICATION, notification_rows),
                (_INSERT_MAIL, mail_rows),
            ):
                if len(outbox_rows) == 1:  # the usual case: no executemany machinery
                    conn.execute(sql, outbox_rows[0])
                elif outbox_rows:
                    conn.executemany(sql, outbox_rows)
        # Committed: these are now the stored interactions, at these versions.
        cache_put = self._cache.put
        for row in rows.values():
            cache_put(row)


_MARK_CHUNK = 500
"""Seqs per ``mark_notifications_done`` statement (SQLite allows 32,766 parameters)."""


def _notifications(rows: Iterable[tuple[int, str, str, str]]) -> list[Notification]:
    return [
        Notification.model_construct(  # the store's own rows: no validation
            agent_id=agent_id,
            topic=topic,
            payload=StoredMessage(payload),  # decoded when delivered, if ever
            seq=seq,
        )
        for seq, agent_id, topic, payload in rows
    ]


def _version(conn: sqlite3.Connection, interaction_id: str) -> int | None:
    row = conn.execute(_VERSION, (interaction_id,)).fetchone()
    return None if row is None else int(row[0])


# ----------------------------------------------------------------------------- unit of work


class SqliteInteractions:
    """The repository of one unit of work: the database with the staged changes on top."""

    def __init__(self, uow: SqliteUnitOfWork) -> None:
        self._uow = uow
        self._store = uow._store

    def get(self, interaction_id: str) -> Interaction | None:
        found = self._uow._staged.get(interaction_id, self._store._get)
        if found is not None and interaction_id not in self._uow._rows:
            self._uow._loaded[interaction_id] = found  # as stored: its columns, at its version
        return found

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
        return self._merged(
            self._store._query(_FOR_AGENT, (agent_id, agent_id)),
            listed_for(agent_id),
        )

    def in_queue(self, queue: str, limit: int | None = None) -> list[Interaction]:
        # Staged rows may displace database rows: fetch enough to cover them.
        fetch = -1 if limit is None else max(limit, 0) + len(self._uow._rows)
        return self._merged(
            self._store._query(_IN_QUEUE, (queue, fetch)),
            waiting_in(queue),
            limit,
        )

    def in_workbin(self, workbin: str) -> list[Interaction]:
        return self._merged(self._store._query(_IN_WORKBIN, (workbin,)), kept_in(workbin))

    def by_message_id(self, message_id: str, mailbox: str | None = None) -> Interaction | None:
        """The first stored (insertion order) interaction with this Message-ID."""
        conn = self._store.connection()
        if mailbox is None:
            cursor = conn.execute(_BY_MESSAGE_ID + " ORDER BY pos", (message_id,))
        else:
            cursor = conn.execute(
                _BY_MESSAGE_ID + " AND mailbox = ? ORDER BY pos", (message_id, mailbox)
            )
        found = cursor.fetchall()
        staged = self._uow._rows
        if not staged:
            return _load(found[0][2]) if found else None
        # A staged row keeps the position of its stored row; new rows come last, in order.
        candidates = [(pos, _load(data)) for pos, iid, data in found if iid not in staged]
        for n, i in enumerate(staged.values()):
            if i.email.message_id == message_id and (mailbox is None or i.mailbox == mailbox):
                row = conn.execute("SELECT pos FROM interactions WHERE id = ?", (i.id,)).fetchone()
                candidates.append((int(row[0]) if row is not None else _NEW_POSITION + n, i))
        return min(candidates, key=lambda c: c[0])[1] if candidates else None


class SqliteOutbox:
    def __init__(self, uow: SqliteUnitOfWork) -> None:
        self._uow = uow

    def add_notification(self, notification: Notification) -> None:
        # Serialised now, so a payload that is not JSON fails in the operation that made it.
        payload = _encode_json(notification.to_wire())
        self._uow._notifications.append((notification.agent_id, notification.topic, payload))

    def add_mail(self, mail: OutgoingMail) -> None:
        self._uow._mail.append(mail)


class SqliteUnitOfWork(StagedUnitOfWork[tuple[str, str, str]]):
    """One transaction: staged here, written by ``commit`` in one ``BEGIN IMMEDIATE``."""

    def __init__(self, store: SqliteStore) -> None:
        super().__init__()
        self._store = store
        self._interactions = SqliteInteractions(self)
        self._outbox = SqliteOutbox(self)

    def _reset(self) -> None:
        super()._reset()
        # What ``get`` read from the database, by id: an UPDATE then sets only what changed.
        self._loaded: dict[str, Interaction] = {}

    @property
    def interactions(self) -> SqliteInteractions:
        return self._interactions

    @property
    def outbox(self) -> SqliteOutbox:
        return self._outbox

    def commit(self) -> None:
        if self._has_writes():
            self._store._commit(
                self._expected,
                self._rows,
                self._notifications,
                self._mail,
                self._loaded,
                self._channels.rows,
                self._channels.expected,
            )
        self._reset()

    def _load_channel(self, agent_id: str) -> ChannelState | None:
        found = self._store.connection().execute(_CHANNEL, (agent_id,)).fetchone()
        return None if found is None else ChannelState.model_validate_json(found[0])

    def _load_channels(self) -> list[ChannelState]:
        rows = self._store.connection().execute(_CHANNELS).fetchall()
        return [ChannelState.model_validate_json(data) for (data,) in rows]


if TYPE_CHECKING:

    def _conforms(store: SqliteStore, uow: SqliteUnitOfWork) -> tuple[Store, UnitOfWork]:
        return store, uow
