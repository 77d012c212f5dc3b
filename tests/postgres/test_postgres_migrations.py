"""Schema migrations: from an empty database, from the previous version (a database left at
version 1 by the previous release, with data in it), two processes migrating at once, and the
refusals (a newer schema; an outdated one without ``migrate``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

import adapters.postgres.migrations as migrations
from adapters.postgres import (
    LATEST_VERSION,
    MIGRATIONS,
    Migration,
    PostgresAttachmentStore,
    PostgresStore,
    SchemaTooNew,
    SchemaTooOld,
    migrate,
    schema_version,
)
from adapters.postgres.migrations import (
    MIGRATION_LOCK_KEY,
    apply_migrations,
    ensure_waiting_index,
)
from interactions_core.testing import ManualClock
from interactions_core.testing.contracts.store import T0, interaction, mail, note

from .helpers import Admin, wait_for

WORKER = Path(__file__).with_name("worker.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def tables(admin: Admin) -> set[str]:
    rows = admin.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    ).fetchall()
    return {name for (name,) in rows}


def versions(admin: Admin) -> list[int]:
    return [int(v) for (v,) in admin.execute("SELECT version FROM schema_version ORDER BY 1")]


def test_an_empty_database_is_migrated_to_the_latest_version_once(
    postgres_dsn: str, admin: Admin
) -> None:
    assert schema_version(postgres_dsn) == 0
    assert migrate(postgres_dsn) == [m.version for m in MIGRATIONS] == [1, 2, 3, 4]
    assert schema_version(postgres_dsn) == LATEST_VERSION == 4
    assert tables(admin) == {
        "schema_version",
        "interactions",
        "outbox",
        "notification_purges",
        "attachments",
        "attachment_chunks",
        "http_sessions",
        "login_addresses",
        "login_pairs",
        "agent_channels",
    }
    assert migrate(postgres_dsn) == []  # idempotent
    PostgresStore(postgres_dsn).close()  # the store's own migration: nothing either
    assert versions(admin) == [1, 2, 3, 4]


def test_a_database_at_the_previous_version_is_upgraded_with_its_data(
    postgres_dsn: str, admin: Admin
) -> None:
    """Version 1 as the previous release left it, with an interaction, a notification and a
    pending mail written the way version 1 wrote them (no claim columns); then the current code
    migrates it (version 2: mail claims) and finds everything, claims work on the old entry,
    and the sequence continues."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        assert apply_migrations(conn, target=1) == [1]
    assert schema_version(postgres_dsn) == 1
    columns = {
        c
        for (c,) in admin.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'outbox'"
        )
    }
    assert "claimed_by" not in columns
    i = interaction("I1")
    admin.execute(
        "INSERT INTO interactions (id, version, state, current_queue, mailbox, message_id,"
        " received_at, data) VALUES (%s, 1, %s, %s, %s, %s, %s, %s)",
        (
            i.id,
            i.state,
            i.current_queue,
            i.mailbox,
            i.email.message_id,
            i.received_at,
            i.model_copy(update={"version": 1}).model_dump_json(),
        ),
    )
    admin.execute(
        "INSERT INTO outbox (kind, agent_id, topic, payload, queued_at)"
        " VALUES ('notification', 'alice', '/me/interactions', %s, %s)",
        (json.dumps(note("alice", "old").to_wire()), T0),
    )
    admin.execute(
        "INSERT INTO outbox (kind, interaction_id, payload, queued_at, next_attempt_at)"
        " VALUES ('mail', 'I1', %s, %s, %s)",
        (mail("I1").model_dump_json(), T0, T0),
    )
    with pytest.raises(SchemaTooOld, match="version 1 is older"):
        PostgresStore(postgres_dsn, migrate=False)

    assert migrate(postgres_dsn) == [2, 3, 4]
    clock = ManualClock()
    with PostgresStore(postgres_dsn, clock=clock, migrate=False) as store:
        with store.unit_of_work() as uow:
            assert uow.interactions.get("I1") == i.model_copy(update={"version": 1})
            assert [x.id for x in uow.interactions.in_queue("Inbound")] == ["I1"]
            found = uow.interactions.by_message_id("<I1@example.org>")
            assert found is not None and found.id == "I1"
        [old] = store.pending_notifications()
        assert old.to_wire()["text"] == "old"
        [entry] = store.pending_mail(clock.now())
        assert entry.mail == mail("I1") and entry.queued_at == T0
        with PostgresStore(postgres_dsn, clock=clock) as other:  # the entry is claimed now
            assert other.pending_mail(clock.now() + timedelta(seconds=1)) == []
        store.mark_mail_sent(entry.seq)
        with store.unit_of_work() as uow:
            uow.outbox.add_notification(note("alice", "new"))
            uow.commit()
        assert [n.seq for n in store.pending_notifications()] == [old.seq, entry.seq + 1]


def test_two_processes_migrating_at_once_apply_each_version_once(
    postgres_dsn: str, admin: Admin
) -> None:
    """Both start while the migration lock is held (as by a third process migrating), so both
    wait on it and then race: one applies everything, the other finds nothing to do."""
    admin.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    children = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "migrate", postgres_dsn],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:

        def both_waiting() -> bool:
            row = admin.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            return row is not None and row[0] == 2

        wait_for(both_waiting, timeout=60)
    finally:
        admin.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    results = [child.communicate(timeout=60) for child in children]
    assert [c.returncode for c in children] == [0, 0], [err for _, err in results]
    applied = sorted(json.loads(out) for out, _ in results)
    assert applied == [[], [1, 2, 3, 4]]
    assert versions(admin) == [1, 2, 3, 4]


def test_a_newer_schema_is_refused(postgres_dsn: str, admin: Admin) -> None:
    migrate(postgres_dsn)
    admin.execute("INSERT INTO schema_version (version, description) VALUES (99, 'future')")
    for make in (
        lambda: PostgresStore(postgres_dsn),
        lambda: PostgresStore(postgres_dsn, migrate=False),
        lambda: PostgresAttachmentStore(postgres_dsn, max_size=10),
        lambda: migrate(postgres_dsn),
    ):
        with pytest.raises(SchemaTooNew, match="version 99 is newer"):
            make()


def test_a_failing_migration_leaves_the_previous_version(
    postgres_dsn: str, admin: Admin, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(postgres_dsn)
    following = LATEST_VERSION + 1
    broken = Migration(
        following, "broken", ("CREATE TABLE half_done (x integer)", "SELECT no_such_function()")
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", (*MIGRATIONS, broken))
    monkeypatch.setattr(migrations, "LATEST_VERSION", following)
    with pytest.raises(psycopg.errors.UndefinedFunction):
        migrations.migrate(postgres_dsn)
    assert schema_version(postgres_dsn) == LATEST_VERSION
    assert "half_done" not in tables(admin)
    # And the lock was released: the next migration runs.
    fixed = Migration(following, "fixed", ("CREATE TABLE half_done (x integer)",))
    monkeypatch.setattr(migrations, "MIGRATIONS", (*MIGRATIONS, fixed))
    assert migrations.migrate(postgres_dsn) == [following]


def test_the_routing_index_follows_the_cores_waiting_states(
    postgres_dsn: str, admin: Admin
) -> None:
    migrate(postgres_dsn)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        assert ensure_waiting_index(conn) is False  # as migrated: the core's states
        assert ensure_waiting_index(conn, {"Queued"}) is True
        (definition,) = admin.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_interactions_waiting'"
        ).fetchone() or ("",)
        assert "'Queued'" in definition and "Revoked" not in definition
    migrate(postgres_dsn)  # every migration run puts the right one back
    (definition,) = admin.execute(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_interactions_waiting'"
    ).fetchone() or ("",)
    assert "Revoked" in definition and "Transferred" in definition
