"""The SQLite notification retention (migration 3): query plans, the upgrade of a version-2
database, and retained rows and purge records across a reopen."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.sqlite import SqliteStore, migrate
from adapters.sqlite.migrations import LATEST_VERSION, current_version
from adapters.sqlite.store import _NOTIFICATIONS_SINCE, _PENDING_NOTIFICATIONS, _PURGEABLE
from interactions_core.testing import ManualClock
from interactions_core.testing.contracts.store import T0, note


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "interactions.sqlite3"


def notify(store: SqliteStore, agent: str, *texts: str) -> None:
    for text in texts:
        with store.unit_of_work() as uow:
            uow.outbox.add_notification(note(agent, text))
            uow.commit()


@pytest.mark.parametrize(
    ("sql", "params", "index"),
    [
        (_PENDING_NOTIFICATIONS, (0, 500), "ix_outbox_notifications"),
        (_NOTIFICATIONS_SINCE, ("alice", 0, 500), "ix_outbox_agent_notifications"),
        (_PURGEABLE, (0, 1000), "ix_outbox_notifications_published"),
    ],
)
def test_the_notification_reads_use_their_partial_indexes(
    db: Path, sql: str, params: tuple[object, ...], index: str
) -> None:
    with SqliteStore(db) as store:
        for n in range(50):
            notify(store, f"agent{n % 5}", str(n))
        store.mark_notifications_done([n.seq for n in store.pending_notifications()][:40])
        conn = store.connection()
        conn.execute("ANALYZE")
        plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert plan.startswith(f"SEARCH outbox USING INDEX {index} ("), plan
        assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan


def test_the_pending_index_holds_only_unpublished_notifications(db: Path) -> None:
    with SqliteStore(db) as store:
        notify(store, "alice", "a", "b", "c")
        first, *_ = store.pending_notifications()
        store.mark_notifications_done([first.seq])
        conn = store.connection()
        (definition,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'ix_outbox_notifications'"
        ).fetchone()
        assert "published_us IS NULL" in definition
        # The dispatchers' read walks only the pending entries, however many are retained.
        rows = conn.execute(
            "SELECT seq FROM outbox INDEXED BY ix_outbox_notifications"
            " WHERE kind = 'notification' AND published_us IS NULL"
        ).fetchall()
        assert len(rows) == 2
        status, done_at, published_us = conn.execute(
            "SELECT status, done_at, published_us FROM outbox WHERE seq = ?", (first.seq,)
        ).fetchone()
        assert status == "sent" and done_at is not None and published_us is not None


def test_a_version_2_database_upgrades_with_its_pending_notifications(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    assert migrate(conn, target=2) == [1, 2]
    conn.execute(
        "INSERT INTO outbox (kind, agent_id, topic, payload, queued_at)"
        " VALUES ('notification', 'alice', '/me/interactions', '{\"state\":\"Invited\"}', ?)",
        (T0.isoformat(),),
    )
    conn.close()
    clock = ManualClock()
    with SqliteStore(db, clock=clock) as store:
        assert current_version(store.connection()) == LATEST_VERSION
        [pending] = store.pending_notifications()
        assert pending.to_wire() == {"state": "Invited"}
        backlog = store.notifications_since("alice", 0)
        assert [n.seq for n in backlog.notifications] == [pending.seq]
        assert backlog.complete and backlog.last_seq == pending.seq
        store.mark_notifications_done([pending.seq])
        assert store.pending_notifications() == []
        assert [n.seq for n in store.notifications_since("alice", 0).notifications] == [pending.seq]


def test_retained_notifications_and_purge_records_survive_a_reopen(db: Path) -> None:
    clock = ManualClock()
    with SqliteStore(db, clock=clock) as store:
        notify(store, "alice", "a0", "a1", "a2")
        a0, a1, a2 = (n.seq for n in store.pending_notifications())
        store.mark_notifications_done([a0, a1])
        clock.advance(60)
        store.mark_notifications_done([a2])
        assert store.purge_notifications(clock.now() - timedelta(seconds=30)) == 2
    with SqliteStore(db, clock=clock) as store:
        backlog = store.notifications_since("alice", a0)
        assert [n.to_wire()["text"] for n in backlog.notifications] == ["a2"]
        assert backlog.complete is False  # a1 was purged before the reopen
        assert store.notifications_since("alice", a1).complete is True
        assert store.pending_notifications() == []
        notify(store, "alice", "a3")
        [later] = store.pending_notifications()
        assert later.seq > a2 and store.notifications_since("alice", 0).last_seq == later.seq
