"""Versioned, forward-only schema migrations, applied at start-up (``PostgresStore(migrate=True)``)
or by ``migrate(dsn)``.

Rules (the same as the SQLite adapter's, docs/storage.md):

* A migration is never edited once released: a change of schema is a new, higher version,
  appended to ``MIGRATIONS``.
* Each migration runs in its own transaction together with its ``schema_version`` row
  (PostgreSQL DDL is transactional), so a failure or a crash leaves the previous version, never
  half of one.
* **Two processes starting at once**: the whole run holds a session advisory lock
  (``pg_advisory_lock(MIGRATION_LOCK_KEY)``); the second waits, then re-reads the version and
  finds nothing left to do. Without it both would read version 0 and the second would fail on
  ``CREATE TABLE``. Running ``migrate`` again is a no-op.
* A database whose version is newer than this code knows is refused (``SchemaTooNew``): an old
  binary must not write into a schema it does not understand.

Statements are constants (identifiers and literals from the code, never from input); the only
composed one, the routing index, quotes its state names with ``psycopg.sql.Literal``.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Final

import psycopg
from psycopg import sql

from interactions_core.lifecycle import WAITING_STATES

from .connection import Connection, connect, connection_settings

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "MIGRATION_LOCK_KEY",
    "Migration",
    "SchemaTooNew",
    "SchemaTooOld",
    "apply_migrations",
    "current_version",
    "ensure_waiting_index",
    "migrate",
    "schema_version",
    "waiting_predicate",
]

Statement = str | sql.Composed

MIGRATION_LOCK_KEY: Final = 0x1A7E_0001
"""The advisory lock held while migrating (a fixed key: every process must use the same)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[Statement, ...]


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer version of this library."""


class SchemaTooOld(RuntimeError):
    """The database is not migrated to this library's version (and migrating was not asked)."""


def waiting_predicate(states: Iterable[str] = WAITING_STATES) -> sql.Composed:
    """``state IN ('A', 'B', ...)``: the same text in the partial index and in the query, which
    is what lets the planner prove the query may use the index."""
    return sql.SQL("state IN ({})").format(
        sql.SQL(", ").join(sql.Literal(s) for s in sorted(states))
    )


def _states_comment(states: Iterable[str]) -> str:
    return ",".join(sorted(states))


def _waiting_index(states: Iterable[str]) -> tuple[sql.Composed, sql.Composed]:
    """The routing index for ``states``, and the comment recording which states it holds."""
    frozen = tuple(states)
    return (
        sql.SQL(
            "CREATE INDEX ix_interactions_waiting"
            " ON interactions (current_queue, received_at, id) WHERE {}"
        ).format(waiting_predicate(frozen)),
        sql.SQL("COMMENT ON INDEX ix_interactions_waiting IS {}").format(
            sql.Literal(_states_comment(frozen))
        ),
    )


# The waiting states as of migration 1, frozen on purpose (a released migration never changes);
# ``ensure_waiting_index`` re-creates the index when the core's WAITING_STATES differ.
_WAITING_AT_V1: Final = ("Queued", "Rejected", "Revoked", "Transferred")

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "interactions (JSON document + query columns), the outbox, retention, attachments",
        (
            # Text columns that are compared or ordered use the "C" collation: byte order is
            # code-point order, the order the core (Python's str) sorts ids in, whatever the
            # database's locale; and it is the cheapest comparison.
            # ``pos`` is the order interactions were stored in (commit order: new rows are
            # inserted under the outbox lock, see outbox.py), for ``by_message_id``.
            "CREATE TABLE interactions ("
            " pos bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            ' id text COLLATE "C" NOT NULL UNIQUE,'
            " version integer NOT NULL CHECK (version >= 1),"
            ' state text COLLATE "C" NOT NULL,'
            ' owner text COLLATE "C",'
            ' offer_agent text COLLATE "C",'
            ' current_queue text COLLATE "C",'
            ' workbin text COLLATE "C",'
            " mailbox text COLLATE \"C\" NOT NULL DEFAULT '',"
            ' message_id text COLLATE "C",'
            " received_at timestamptz NOT NULL,"
            # The Interaction as model_dump_json() wrote it. text, not jsonb: it comes back
            # byte for byte (jsonb reorders keys, rewrites numbers and refuses \u0000), and
            # is decoded by pydantic straight from the text, with no parse on the server.
            " data text NOT NULL)",
            "CREATE INDEX ix_interactions_owner ON interactions (owner) WHERE owner IS NOT NULL",
            "CREATE INDEX ix_interactions_offer_agent"
            " ON interactions (offer_agent) WHERE offer_agent IS NOT NULL",
            *_waiting_index(_WAITING_AT_V1),
            "CREATE INDEX ix_interactions_workbin"
            " ON interactions (workbin, received_at, id) WHERE workbin IS NOT NULL",
            "CREATE INDEX ix_interactions_message_id"
            " ON interactions (message_id, mailbox, pos) WHERE message_id IS NOT NULL",
            # One sequence for notifications and mail: a sequence never hands a number out
            # twice, rolled back or not, so seqs are never reused.
            "CREATE SEQUENCE outbox_seq AS bigint",
            "CREATE TABLE outbox ("
            " seq bigint PRIMARY KEY DEFAULT nextval('outbox_seq'),"
            " kind text NOT NULL CHECK (kind IN ('notification', 'mail')),"
            ' agent_id text COLLATE "C",'
            " topic text,"
            " interaction_id text,"
            " payload text NOT NULL,"
            " queued_at timestamptz NOT NULL,"
            " attempts integer NOT NULL DEFAULT 0,"
            " next_attempt_at timestamptz,"
            " last_error text,"
            " status text NOT NULL DEFAULT 'pending'"
            "  CHECK (status IN ('pending', 'sent', 'failed')),"
            " done_at timestamptz,"
            " published_at timestamptz)",  # notifications: NULL until published
            "ALTER SEQUENCE outbox_seq OWNED BY outbox.seq",
            # The dispatchers' read: pending notifications only, however many are retained.
            "CREATE INDEX ix_outbox_pending_notifications ON outbox (seq)"
            " WHERE kind = 'notification' AND published_at IS NULL",
            # A client catching up: one agent's notifications after a seq.
            "CREATE INDEX ix_outbox_agent_notifications"
            " ON outbox (agent_id, seq) WHERE kind = 'notification'",
            # The purge: published notifications, oldest first.
            "CREATE INDEX ix_outbox_published_notifications ON outbox (published_at)"
            " WHERE kind = 'notification' AND published_at IS NOT NULL",
            "CREATE INDEX ix_outbox_mail_due ON outbox (next_attempt_at)"
            " WHERE kind = 'mail' AND status = 'pending'",
            # Per agent, the highest seq purged: a history after a lower seq has a gap.
            "CREATE TABLE notification_purges ("
            ' agent_id text COLLATE "C" PRIMARY KEY,'
            " through_seq bigint NOT NULL)",
            # Attachment bytes by content address, in chunks (why: attachments.py).
            "CREATE TABLE attachments ("
            ' content_id text COLLATE "C" PRIMARY KEY,'
            " size bigint NOT NULL CHECK (size >= 0),"
            " stored_at timestamptz NOT NULL DEFAULT now())",
            "CREATE TABLE attachment_chunks ("
            ' content_id text COLLATE "C" NOT NULL'
            "  REFERENCES attachments (content_id) ON DELETE CASCADE,"
            " n integer NOT NULL CHECK (n >= 0),"
            " data bytea NOT NULL,"
            " PRIMARY KEY (content_id, n))",
        ),
    ),
    Migration(
        2,
        "mail claims: several dispatchers share the outbox (claimed_by, claimed_until)",
        (
            # NULL: not claimed. Every entry of version 1 is unclaimed (one dispatcher then).
            "ALTER TABLE outbox ADD COLUMN claimed_by text, ADD COLUMN claimed_until timestamptz",
            # A store closing releases its claims at once: find them without a scan.
            "CREATE INDEX ix_outbox_mail_claims ON outbox (claimed_by)"
            " WHERE kind = 'mail' AND claimed_by IS NOT NULL",
        ),
    ),
    Migration(
        3,
        "HTTP sessions and the failed-login limits, shared by every server process",
        (
            # Times are seconds since the epoch (double precision), as HttpAuth's clock gives
            # them: compared as they are, no conversion per request (adapters.postgres.sessions).
            # A session by the SHA-256 of its cookie: a dump holds no usable cookie. Its expiry
            # is used_s + the TTL; the bounds drop the lowest used_s first.
            "CREATE TABLE http_sessions ("
            " id_hash bytea PRIMARY KEY CHECK (length(id_hash) = 32),"
            ' agent_id text COLLATE "C" NOT NULL,'
            " csrf_token text NOT NULL,"
            " opened_s double precision NOT NULL,"
            " used_s double precision NOT NULL)",
            "CREATE INDEX ix_http_sessions_used ON http_sessions (used_s)",
            "CREATE INDEX ix_http_sessions_agent ON http_sessions (agent_id, used_s)",
            # Per client address: its last failures' times and its verifications in flight (the
            # ends of their leases); its row is the lock every limiter update of it takes.
            "CREATE TABLE login_addresses ("
            ' address text COLLATE "C" PRIMARY KEY,'
            " failures double precision[] NOT NULL,"
            " expires_s double precision NOT NULL,"
            " in_flight double precision[] NOT NULL,"
            " stale_s double precision NOT NULL)",
            "CREATE INDEX ix_login_addresses_stale ON login_addresses (stale_s)",
            # Per (address, SHA-256 of the name as sent): a name is whatever a client typed,
            # up to 3 KB, too long for an index entry as it is.
            "CREATE TABLE login_pairs ("
            ' address text COLLATE "C" NOT NULL,'
            " name_hash bytea NOT NULL,"
            " failures integer NOT NULL,"
            " blocked_until_s double precision NOT NULL,"
            " expires_s double precision NOT NULL,"
            " in_flight double precision[] NOT NULL,"
            " stale_s double precision NOT NULL,"
            " PRIMARY KEY (address, name_hash))",
            "CREATE INDEX ix_login_pairs_stale ON login_pairs (stale_s)",
        ),
    ),
    Migration(
        4,
        "several processes: the change feed, agents' channel states, unique ingestion",
        (
            # The change feed (ports.ChangeFeed): the outbox seq of the commit that last wrote
            # the row, taken under the outbox lock, so in commit order (outbox.py).
            "ALTER TABLE interactions ADD COLUMN change_seq bigint, ADD COLUMN ingest_key text",
            "CREATE INDEX ix_interactions_change ON interactions (change_seq)"
            " WHERE change_seq IS NOT NULL",
            # intake.ingest_key: the same message delivered to two processes at once is one
            # interaction, by this index (a check-then-insert would let both in).
            "CREATE UNIQUE INDEX ux_interactions_ingest_key ON interactions (ingest_key)"
            " WHERE ingest_key IS NOT NULL",
            # ports.ChannelState, as its JSON document, versioned like the interactions.
            "CREATE TABLE agent_channels ("
            ' agent_id text COLLATE "C" PRIMARY KEY,'
            " version integer NOT NULL CHECK (version >= 1),"
            " data text NOT NULL,"
            " change_seq bigint)",
            "CREATE INDEX ix_agent_channels_change ON agent_channels (change_seq)",
        ),
    ),
)

LATEST_VERSION: Final = MIGRATIONS[-1].version

_SCHEMA_VERSION_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version integer PRIMARY KEY,"
    " description text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())"
)


def current_version(conn: Connection) -> int:
    """The schema version of the database (0 when it has none)."""
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    found = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(found[0]) if found is not None and found[0] is not None else 0


def _refuse_newer(version: int) -> None:
    if version > LATEST_VERSION:
        raise SchemaTooNew(
            f"database schema version {version} is newer than this library's "
            f"{LATEST_VERSION}: upgrade the library, never downgrade a database"
        )


def check_version(conn: Connection) -> int:
    """The version, when it is this library's; ``SchemaTooNew`` / ``SchemaTooOld`` if not."""
    version = current_version(conn)
    _refuse_newer(version)
    if version < LATEST_VERSION:
        raise SchemaTooOld(
            f"database schema version {version} is older than this library's "
            f"{LATEST_VERSION}: run the migrations (migrate(dsn), or open the store with "
            "migrate=True)"
        )
    return version


def apply_migrations(conn: Connection, target: int | None = None) -> list[int]:
    """Bring the database up to ``target`` (default: the latest); returns the versions applied.

    ``conn`` is in autocommit mode with no transaction open. ``target`` below the latest is
    for tests (a database "at the previous version").
    """
    target = LATEST_VERSION if target is None else target
    applied: list[int] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    try:
        for migration in MIGRATIONS:
            if migration.version > target:
                break
            with conn.transaction():
                conn.execute(_SCHEMA_VERSION_TABLE)
                version = current_version(conn)
                _refuse_newer(version)
                if version >= migration.version:
                    continue
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, description) VALUES (%s, %s)",
                    (migration.version, migration.description),
                )
            applied.append(migration.version)
        if target >= 1:
            ensure_waiting_index(conn)
    finally:
        if not conn.broken:
            with suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied


def ensure_waiting_index(conn: Connection, states: Iterable[str] = WAITING_STATES) -> bool:
    """Re-create the routing index when the core's waiting states changed; True if it did.

    The index follows ``lifecycle.WAITING_STATES`` (the core's, not the schema's): a stale one
    never gives a wrong answer (the query then cannot use it), and this check, run at every
    migration, puts the right one back. The states it holds are its comment.
    """
    wanted = tuple(states)
    row = conn.execute(
        "SELECT obj_description(to_regclass('ix_interactions_waiting'), 'pg_class')"
    ).fetchone()
    if row is not None and row[0] == _states_comment(wanted):
        return False
    with conn.transaction():
        conn.execute("DROP INDEX IF EXISTS ix_interactions_waiting")
        for statement in _waiting_index(wanted):
            conn.execute(statement)
    return True


def migrate(dsn: str, *, connect_timeout_s: float = 10.0) -> list[int]:
    """Migrate the database at ``dsn`` to the latest version; returns the versions applied now
    (``[]`` when it was up to date). ``DatabaseUnreachable`` when it cannot be reached."""
    settings = connection_settings(
        dsn,
        application_name="interactions-migrate",
        statement_timeout_ms=None,  # an index on a big table may take long: no limit
        connect_timeout_s=connect_timeout_s,
    )
    with connect(dsn, settings) as conn:
        return apply_migrations(conn)


def schema_version(dsn: str, *, connect_timeout_s: float = 10.0) -> int:
    """The schema version of the database at ``dsn`` (0: never migrated)."""
    settings = connection_settings(
        dsn,
        application_name="interactions-migrate",
        statement_timeout_ms=None,
        connect_timeout_s=connect_timeout_s,
    )
    with connect(dsn, settings) as conn:
        return current_version(conn)
