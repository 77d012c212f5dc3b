"""Versioned, forward-only schema migrations, applied at start-up.

Rules (docs/storage.md):

* A migration is never edited once released: a change of schema is a new, higher version.
* Each migration runs in its own ``BEGIN IMMEDIATE`` transaction (SQLite DDL is transactional)
  together with its ``schema_version`` row, so a crash leaves the database at the previous
  version, never half-way.
* The current version is re-read inside that transaction, so two processes starting at once
  (or one started twice) apply each migration exactly once: running ``migrate`` again is a
  no-op.
* A database whose version is newer than this code knows is refused (``SchemaTooNew``): an old
  binary must not write into a schema it does not understand.

Statements are executed one by one with ``execute`` (never ``executescript``, which commits
the open transaction first).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from interactions_core.lifecycle import WAITING_STATES


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


class SchemaTooNew(RuntimeError):
    """The database was written by a newer version of this library."""


SCHEMA_VERSION_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY,"
    " description TEXT NOT NULL,"
    " applied_at TEXT NOT NULL)"
)

# The waiting states as of migration 2, frozen here on purpose (a released migration never
# changes). ``ensure_waiting_index`` re-creates the index when the core's WAITING_STATES differ.
_WAITING_AT_V2: Final = ("Queued", "Rejected", "Revoked", "Transferred")


def waiting_predicate(states: Iterable[str]) -> str:
    """The SQL term selecting waiting states; the same text in the index and in the query.

    A partial index is only used when the query repeats its WHERE term, so both are built here.
    """
    quoted = ", ".join("'" + s.replace("'", "''") + "'" for s in sorted(states))
    return f"state IN ({quoted})"


def waiting_index_sql(states: Iterable[str]) -> str:
    return (
        "CREATE INDEX ix_interactions_waiting"
        " ON interactions(current_queue, received_us, id)"
        f" WHERE {waiting_predicate(states)}"
    )


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "interactions (JSON document + query columns) and the transactional outbox",
        (
            # ``pos`` is the insertion order, stable across VACUUM (an implicit rowid is not).
            "CREATE TABLE interactions ("
            " pos INTEGER PRIMARY KEY,"
            " id TEXT NOT NULL UNIQUE,"
            " version INTEGER NOT NULL CHECK (version >= 1),"
            " state TEXT NOT NULL,"
            " owner TEXT,"
            " offer_agent TEXT,"
            " current_queue TEXT,"
            " workbin TEXT,"
            " mailbox TEXT NOT NULL DEFAULT '',"
            " received_us INTEGER NOT NULL,"
            " data TEXT NOT NULL)",
            # One table for notifications and mail: AUTOINCREMENT gives the one shared,
            # strictly increasing, never reused sequence without a counter row.
            "CREATE TABLE outbox ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " kind TEXT NOT NULL CHECK (kind IN ('notification', 'mail')),"
            " agent_id TEXT,"
            " topic TEXT,"
            " interaction_id TEXT,"
            " payload TEXT NOT NULL,"
            " queued_at TEXT NOT NULL,"
            " attempts INTEGER NOT NULL DEFAULT 0,"
            " next_attempt_at TEXT,"
            " due_us INTEGER,"
            " last_error TEXT,"
            " status TEXT NOT NULL DEFAULT 'pending'"
            "  CHECK (status IN ('pending', 'sent', 'failed')),"
            " done_at TEXT)",
        ),
    ),
    Migration(
        2,
        "message-id column (back-filled from the documents) and an index for every query",
        (
            "ALTER TABLE interactions ADD COLUMN message_id TEXT",
            "UPDATE interactions SET message_id = json_extract(data, '$.email.message_id')",
            "CREATE INDEX ix_interactions_owner ON interactions(owner) WHERE owner IS NOT NULL",
            "CREATE INDEX ix_interactions_offer_agent"
            " ON interactions(offer_agent) WHERE offer_agent IS NOT NULL",
            waiting_index_sql(_WAITING_AT_V2),
            "CREATE INDEX ix_interactions_workbin"
            " ON interactions(workbin, received_us, id) WHERE workbin IS NOT NULL",
            "CREATE INDEX ix_interactions_message_id"
            " ON interactions(message_id, mailbox) WHERE message_id IS NOT NULL",
            "CREATE INDEX ix_outbox_notifications ON outbox(seq) WHERE kind = 'notification'",
            "CREATE INDEX ix_outbox_mail_due"
            " ON outbox(due_us) WHERE kind = 'mail' AND status = 'pending'",
        ),
    ),
    Migration(
        3,
        "published notifications are retained: published_us, per-agent index, purge record",
        (
            # NULL until published (every notification of version 2 is pending: published ones
            # were deleted). Published ones are kept until purged.
            "ALTER TABLE outbox ADD COLUMN published_us INTEGER",
            # The dispatchers' read: pending notifications only, however many are retained.
            "DROP INDEX ix_outbox_notifications",
            "CREATE INDEX ix_outbox_notifications ON outbox(seq)"
            " WHERE kind = 'notification' AND published_us IS NULL",
            # A client catching up: one agent's notifications after a seq.
            "CREATE INDEX ix_outbox_agent_notifications"
            " ON outbox(agent_id, seq) WHERE kind = 'notification'",
            # The purge: published notifications, oldest first.
            "CREATE INDEX ix_outbox_notifications_published"
            " ON outbox(published_us) WHERE kind = 'notification' AND published_us IS NOT NULL",
            # Per agent, the highest seq purged: a history after a lower seq has a gap.
            "CREATE TABLE notification_purges ("
            " agent_id TEXT PRIMARY KEY,"
            " through_seq INTEGER NOT NULL) WITHOUT ROWID",
        ),
    ),
    Migration(
        4,
        "HTTP sessions and the failed-login limits (adapters.sqlite.sessions)",
        (
            # Times are seconds since the epoch (REAL), as HttpAuth's clock gives them.
            # A session by the SHA-256 of its cookie: the file holds no usable cookie. Its
            # expiry is used_s + the TTL; the bounds drop the lowest used_s first.
            "CREATE TABLE http_sessions ("
            " id_hash BLOB PRIMARY KEY CHECK (length(id_hash) = 32),"
            " agent_id TEXT NOT NULL,"
            " csrf_token TEXT NOT NULL,"
            " opened_s REAL NOT NULL,"
            " used_s REAL NOT NULL) WITHOUT ROWID",
            "CREATE INDEX ix_http_sessions_used ON http_sessions(used_s)",
            "CREATE INDEX ix_http_sessions_agent ON http_sessions(agent_id, used_s)",
            # Per client address: its last failures' times and its verifications in flight
            # (the ends of their leases), JSON arrays; swept once past stale_s.
            "CREATE TABLE login_addresses ("
            " address TEXT PRIMARY KEY,"
            " failures TEXT NOT NULL,"
            " expires_s REAL NOT NULL,"
            " in_flight TEXT NOT NULL,"
            " stale_s REAL NOT NULL) WITHOUT ROWID",
            "CREATE INDEX ix_login_addresses_stale ON login_addresses(stale_s)",
            # Per (address, SHA-256 of the name as sent): a name is whatever a client typed.
            "CREATE TABLE login_pairs ("
            " address TEXT NOT NULL,"
            " name_hash BLOB NOT NULL,"
            " failures INTEGER NOT NULL,"
            " blocked_until_s REAL NOT NULL,"
            " expires_s REAL NOT NULL,"
            " in_flight TEXT NOT NULL,"
            " stale_s REAL NOT NULL,"
            " PRIMARY KEY (address, name_hash)) WITHOUT ROWID",
            "CREATE INDEX ix_login_pairs_stale ON login_pairs(stale_s)",
        ),
    ),
    Migration(
        5,
        "agents' channel states; ingested mail unique by its ingest key",
        (
            # ports.ChannelState: Ready/NotReady survive a restart.
            "CREATE TABLE agent_channels ("
            " agent_id TEXT PRIMARY KEY,"
            " version INTEGER NOT NULL CHECK (version >= 1),"
            " data TEXT NOT NULL) WITHOUT ROWID",
            # intake.ingest_key: a message ingested twice is refused by the index itself.
            "ALTER TABLE interactions ADD COLUMN ingest_key TEXT",
            "CREATE UNIQUE INDEX ux_interactions_ingest_key ON interactions(ingest_key)"
            " WHERE ingest_key IS NOT NULL",
        ),
    ),
)

LATEST_VERSION: Final = MIGRATIONS[-1].version


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version of the database (0 when empty)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


def migrate(conn: sqlite3.Connection, target: int | None = None) -> list[int]:
    """Bring the database up to ``target`` (default: the latest); returns the versions applied.

    ``conn`` must be in autocommit mode (``isolation_level=None``) with no open transaction.
    """
    target = LATEST_VERSION if target is None else target
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.version > target:
            break
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(SCHEMA_VERSION_TABLE)
            version = current_version(conn)
            if version > LATEST_VERSION:
                raise SchemaTooNew(
                    f"database schema version {version} is newer than this library's "
                    f"{LATEST_VERSION}: upgrade the library, never downgrade a database"
                )
            if version >= migration.version:
                conn.execute("ROLLBACK")
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, datetime.now(UTC).isoformat()),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(migration.version)
    if target >= 2:
        ensure_waiting_index(conn)
    return applied


def ensure_waiting_index(conn: sqlite3.Connection, states: Iterable[str] = WAITING_STATES) -> bool:
    """Re-create the routing index when the core's waiting states changed; True if it did.

    The index is derived from ``lifecycle.WAITING_STATES`` rather than from the schema: a
    mismatch never gives a wrong answer (the query then simply cannot use the index), and this
    check, run at every start, puts the right index back in one transaction.
    """
    wanted = waiting_index_sql(states)
    row = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'ix_interactions_waiting'"
    ).fetchone()
    if row is not None and row[0] == wanted:
        return False
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DROP INDEX IF EXISTS ix_interactions_waiting")
        conn.execute(wanted)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return True
