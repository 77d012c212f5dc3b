"""What only the SQLite adapter has: pragmas, migrations, query plans, the attachment files."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest

import adapters.sqlite.migrations as migrations
from adapters.sqlite import (
    LATEST_VERSION,
    AttachmentTooLarge,
    FileAttachmentStore,
    Migration,
    SchemaTooNew,
    SqliteStore,
    migrate,
)
from adapters.sqlite.migrations import current_version, ensure_waiting_index, waiting_index_sql
from adapters.sqlite.store import (
    _BY_MESSAGE_ID,
    _FOR_AGENT,
    _GET,
    _GET_UNLESS,
    _IN_WORKBIN,
    in_queue_sql,
    row_values,
)
from adapters.sqlite.store import (
    _INDEXED as INDEXED_COLUMNS,
)
from interactions_core.errors import TooLarge, Unavailable
from interactions_core.lifecycle import WAITING_STATES
from interactions_core.model import Interaction, Offer
from interactions_core.testing import ManualClock
from interactions_core.testing.contracts.store import T0, interaction, mail, note

FIXTURES = Path(__file__).parent / "fixtures"


def pragmas(conn: sqlite3.Connection) -> dict[str, object]:
    return {
        name: conn.execute(f"PRAGMA {name}").fetchone()[0]
        for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
    }


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "interactions.sqlite3"


# --------------------------------------------------------------------------- configuration


def test_defaults_wal_normal_busy_timeout_foreign_keys(db: Path) -> None:
    with SqliteStore(db) as store:
        expected = {
            "journal_mode": "wal",
            "synchronous": 1,
            "busy_timeout": 5000,
            "foreign_keys": 1,
        }
        assert pragmas(store.connection()) == expected
        seen: list[dict[str, object]] = []
        worker = threading.Thread(target=lambda: seen.append(pragmas(store.connection())))
        worker.start()
        worker.join()
        assert seen == [expected]  # every thread's connection is configured the same way


def test_synchronous_full_and_busy_timeout_by_configuration(db: Path) -> None:
    with SqliteStore(db, synchronous="full", busy_timeout=0.25) as store:
        assert pragmas(store.connection())["synchronous"] == 2
        assert pragmas(store.connection())["busy_timeout"] == 250
    with SqliteStore(db, synchronous="EXTRA") as store:
        assert pragmas(store.connection())["synchronous"] == 3


@pytest.mark.parametrize("options", [{"synchronous": "OFF"}, {"busy_timeout": -1.0}])
def test_unsafe_or_invalid_settings_are_refused(db: Path, options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SqliteStore(db, **options)


def test_an_in_memory_database_is_refused() -> None:
    with pytest.raises(ValueError, match="file"):
        SqliteStore(":memory:")


def test_each_thread_has_its_own_connection_and_close_closes_them(db: Path) -> None:
    store = SqliteStore(db)
    mine = store.connection()
    assert store.connection() is mine
    theirs: list[sqlite3.Connection] = []
    done = threading.Event()
    release = threading.Event()

    def hold() -> None:
        theirs.append(store.connection())
        done.set()
        release.wait()

    worker = threading.Thread(target=hold)
    worker.start()
    done.wait()
    assert theirs[0] is not mine
    store.close()
    release.set()
    worker.join()
    for conn in (mine, theirs[0]):
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")
    with pytest.raises(sqlite3.ProgrammingError):
        store.connection()


def test_a_writer_waits_for_another_process_lock_then_fails_cleanly(db: Path) -> None:
    with SqliteStore(db, busy_timeout=0.05) as store:
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with store.unit_of_work() as uow:
            uow.interactions.add(interaction("I1"))
            uow.outbox.add_notification(note("alice"))
            with pytest.raises(Unavailable, match="database is busy"):
                uow.commit()
        other.execute("ROLLBACK")
        other.close()
        assert not store.connection().in_transaction
        with store.unit_of_work() as uow:
            assert uow.interactions.get("I1") is None
        assert store.pending_notifications() == []


def test_data_survives_reopening(db: Path) -> None:
    clock = ManualClock()
    with SqliteStore(db, clock=clock) as store, store.unit_of_work() as uow:
        uow.interactions.add(interaction("I1"))
        uow.outbox.add_notification(note("alice"))
        uow.outbox.add_mail(mail("I1"))
        uow.commit()
    with SqliteStore(db, clock=clock) as store:
        with store.unit_of_work() as uow:
            found = uow.interactions.get("I1")
        assert found == interaction("I1", version=1)
        assert [n.agent_id for n in store.pending_notifications()] == ["alice"]
        assert [e.mail for e in store.pending_mail(clock.now())] == [mail("I1")]


def test_updates_set_only_changed_columns_and_columns_always_match_the_document(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An UPDATE names only the indexed columns that changed since the row was read (SQLite
    then leaves the other indexes alone); whatever path a change takes, every column still
    equals what the stored document says."""
    statements: list[str] = []
    clock = ManualClock()
    with SqliteStore(db, clock=clock) as store:
        store.connection().set_trace_callback(statements.append)
        with store.unit_of_work() as uow:
            uow.interactions.add(interaction("I1", current_queue="Inbound"))
            uow.interactions.add(interaction("I2"))
            uow.commit()
        changes: list[dict[str, object]] = [
            {"state": "Invited", "offer": Offer(agent_id="alice", offered_at=T0)},
            {"state": "Accepted", "owner": "alice", "offer": None},
            {"comment": "only the document"},
            {"workbin": "agent:alice/Personal", "owner": None, "state": "InWorkbin"},
            {"current_queue": "Billing", "received_at": T0 + timedelta(seconds=1)},
        ]
        for change in changes:
            statements.clear()
            with store.unit_of_work() as uow:
                loaded = uow.interactions.get("I1")
                assert loaded is not None
                uow.interactions.update(loaded.model_copy(update=change))
                uow.commit()
            (update,) = [s for s in statements if s.startswith("UPDATE interactions")]
            named = {c for c in INDEXED_COLUMNS if f" {c} = " in update}
            columns = {"offer": "offer_agent", "received_at": "received_us"}
            expected = {columns.get(k, k) for k in change} & set(INDEXED_COLUMNS)
            assert named == expected, (change, update)
        # A change staged without a read of the row (no known columns) writes them all.
        with store.unit_of_work() as uow:
            uow.interactions.update(interaction("I2", version=1, owner="bob"))
            uow.commit()
        rows = store.connection().execute(
            f"SELECT {', '.join(INDEXED_COLUMNS)}, data FROM interactions"
        )
        for *columns_stored, data in rows:
            document = Interaction.model_validate_json(data)
            assert tuple(columns_stored) == row_values(document)[1:-1]


# --------------------------------------------------------------------------- migrations


def versions(conn: sqlite3.Connection) -> list[int]:
    return [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")]


def test_migrations_are_recorded_and_safe_to_run_twice(db: Path) -> None:
    with SqliteStore(db) as store:
        conn = store.connection()
        assert versions(conn) == [m.version for m in migrations.MIGRATIONS]
        assert current_version(conn) == LATEST_VERSION
        assert migrate(conn) == []
        assert migrate(conn) == []
    with SqliteStore(db) as again:  # a second start-up applies nothing
        assert versions(again.connection()) == [m.version for m in migrations.MIGRATIONS]


def test_a_failing_migration_leaves_the_previous_version(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SqliteStore(db).close()
    broken = Migration(
        LATEST_VERSION + 1,
        "half-way failure",
        ("CREATE TABLE extra (x INTEGER)", "INSERT INTO no_such_table VALUES (1)"),
    )
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, broken))
    monkeypatch.setattr(migrations, "LATEST_VERSION", broken.version)
    conn = sqlite3.connect(db, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn)
    assert current_version(conn) == LATEST_VERSION
    tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "extra" not in tables  # the DDL was rolled back with the failed statement
    assert not conn.in_transaction
    conn.close()


def test_a_database_from_a_newer_version_is_refused(db: Path) -> None:
    SqliteStore(db).close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO schema_version VALUES (99, 'from the future', '2030-01-01')")
    conn.close()
    with pytest.raises(SchemaTooNew, match="99"):
        SqliteStore(db)


def test_a_version_1_database_opens_and_upgrades(db: Path) -> None:
    """A file created by version 1 (frozen fixture), with its data, upgrades without loss."""
    conn = sqlite3.connect(db, isolation_level=None)
    lines = (FIXTURES / "schema_v1.sql").read_text().splitlines()
    script = "\n".join(line for line in lines if not line.startswith("--"))
    for statement in script.split(";\n"):
        if statement.strip():
            conn.execute(statement)
    assert current_version(conn) == 1
    rows = [
        interaction("Q1", 2).model_copy(update={"version": 1}),
        interaction("Q0", 1, state="Revoked").model_copy(update={"version": 3}),
        interaction(
            "A1",
            0,
            state="Invited",
            offer=Offer(agent_id="alice", offered_at=T0),
        ).model_copy(update={"version": 2}),
    ]
    for row in rows:
        # Version 1's columns: everything but message_id (it did not exist yet).
        values = row_values(row)
        conn.execute(
            "INSERT INTO interactions (id, version, state, owner, offer_agent, current_queue,"
            " workbin, mailbox, received_us, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.id, *values[:7], *values[8:]),
        )
    conn.execute(
        "INSERT INTO outbox (kind, agent_id, topic, payload, queued_at)"
        " VALUES ('notification', 'alice', '/me/interactions', '{\"state\":\"Invited\"}', ?)",
        (T0.isoformat(),),
    )
    conn.execute(
        "INSERT INTO outbox (kind, interaction_id, payload, queued_at, next_attempt_at, due_us)"
        " VALUES ('mail', 'Q1', ?, ?, ?, 0)",
        (mail("Q1").model_dump_json(), T0.isoformat(), T0.isoformat()),
    )
    conn.close()

    clock = ManualClock()
    with SqliteStore(db, clock=clock) as store:
        conn = store.connection()
        assert versions(conn) == [m.version for m in migrations.MIGRATIONS]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        with store.unit_of_work() as uow:
            for row in rows:
                assert uow.interactions.get(row.id) == row
            found = uow.interactions.by_message_id("<Q1@example.org>", "support@example.com")
            assert found is not None and found.id == "Q1"  # back-filled column
            assert [i.id for i in uow.interactions.in_queue("Inbound")] == ["Q0", "Q1"]
            assert [i.id for i in uow.interactions.for_agent("alice")] == ["A1"]
            q0 = uow.interactions.get("Q0")
            assert q0 is not None
            assert uow.interactions.update(q0.model_copy(update={"comment": "x"})).version == 4
            uow.outbox.add_notification(note("bob"))
            uow.commit()
        pending = store.pending_notifications()
        assert pending[0].to_wire() == {"state": "Invited"}
        assert pending[0].seq < pending[1].seq  # the sequence continues after version 1's
        [entry] = store.pending_mail(clock.now())
        assert entry.mail == mail("Q1") and entry.seq > pending[0].seq


def test_the_routing_index_follows_the_core_waiting_states(db: Path) -> None:
    with SqliteStore(db) as store:
        conn = store.connection()
        assert ensure_waiting_index(conn) is False  # already right: nothing rebuilt
        assert ensure_waiting_index(conn, {"Queued"}) is True  # as if the core had changed
    with SqliteStore(db) as store:  # start-up puts the index for WAITING_STATES back
        row = store.connection().execute(
            "SELECT sql FROM sqlite_master WHERE name = 'ix_interactions_waiting'"
        )
        assert row.fetchone()[0] == waiting_index_sql(WAITING_STATES)


# --------------------------------------------------------------------------- query plans


@pytest.mark.parametrize(
    ("sql", "params", "index"),
    [
        (_GET, ("I1",), "sqlite_autoindex_interactions_1"),
        (_GET_UNLESS, (1, "I1"), "sqlite_autoindex_interactions_1"),
        (_FOR_AGENT, ("alice", "alice"), "ix_interactions_owner"),
        (_FOR_AGENT, ("alice", "alice"), "ix_interactions_offer_agent"),
        (in_queue_sql(), ("Inbound", 10), "ix_interactions_waiting"),
        (_IN_WORKBIN, ("agent:alice/Personal",), "ix_interactions_workbin"),
        (_BY_MESSAGE_ID + " ORDER BY pos", ("<m@x>",), "ix_interactions_message_id"),
        (
            _BY_MESSAGE_ID + " AND mailbox = ? ORDER BY pos",
            ("<m@x>", "support@example.com"),
            "ix_interactions_message_id",
        ),
    ],
)
def test_every_query_uses_its_index(
    db: Path, sql: str, params: tuple[object, ...], index: str
) -> None:
    with SqliteStore(db) as store:
        conn = store.connection()
        # Some rows and statistics, so the planner chooses with real numbers.
        with store.unit_of_work() as uow:
            for n in range(200):
                uow.interactions.add(
                    interaction(f"I{n}", n, state="Done" if n % 3 else "Queued", owner=f"a{n % 7}")
                )
            uow.commit()
        conn.execute("ANALYZE")
        plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        assert f"USING INDEX {index}" in plan
        assert "SCAN interactions" not in plan


def test_the_outbox_reads_use_their_partial_indexes(db: Path) -> None:
    with SqliteStore(db) as store:
        store.pending_notifications()
        store.pending_mail(T0 + timedelta(days=1))
        conn = store.connection()
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM outbox INDEXED BY ix_outbox_mail_due"
            " WHERE kind = 'mail' AND status = 'pending' AND due_us <= 0 ORDER BY seq LIMIT 5"
        ).fetchall()
        assert "ix_outbox_mail_due" in " ".join(r[3] for r in plan)


# --------------------------------------------------------------------------- attachments


def test_attachments_are_content_addressed_files(tmp_path: Path) -> None:
    store = FileAttachmentStore(tmp_path / "att")
    data = b"%PDF-1.7 some bytes \x00\xff"
    cid = store.put(data)
    assert cid == hashlib.sha256(data).hexdigest()
    assert store.put(bytes(data)) == cid  # same bytes, same id, stored once
    assert store.path_for(cid) == tmp_path / "att" / cid[:2] / cid
    assert store.get(cid) == data and cid in store
    assert FileAttachmentStore(tmp_path / "att").get(cid) == data  # durable across instances
    assert store.get(store.put(b"")) == b""


def test_attachment_store_beside_the_database(db: Path) -> None:
    store = FileAttachmentStore.beside(db)
    assert store.directory == db.parent / (db.name + ".attachments")
    assert store.get(store.put(b"x")) == b"x"


@pytest.mark.parametrize(
    "content_id",
    ["0" * 64, "../../etc/passwd", "A" * 64, "", "0" * 63, hashlib.sha256(b"x").hexdigest()],
)
def test_unknown_or_malformed_ids_raise_key_error(tmp_path: Path, content_id: str) -> None:
    store = FileAttachmentStore(tmp_path)
    with pytest.raises(KeyError):
        store.get(content_id)
    assert content_id not in store


def test_attachment_size_limit(tmp_path: Path) -> None:
    store = FileAttachmentStore(tmp_path, max_size=10)
    assert store.get(store.put(b"x" * 10)) == b"x" * 10
    with pytest.raises(AttachmentTooLarge) as caught:
        store.put(b"x" * 11)
    assert isinstance(caught.value, TooLarge) and isinstance(caught.value, ValueError)
    assert (caught.value.size, caught.value.limit) == (11, 10)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        hashlib.sha256(b"x" * 10).hexdigest()
    ]


def test_attachment_write_is_temp_fsync_rename_fsync_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileAttachmentStore(tmp_path)
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        assert Path(src).parent == Path(dst).parent and Path(src).name.startswith(".tmp-")
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.put(b"payload")
    assert events[-3:] == ["fsync-file", "rename", "fsync-dir"]


def test_a_failed_attachment_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileAttachmentStore(tmp_path)

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        store.put(b"payload")
    monkeypatch.undo()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    with pytest.raises(KeyError):
        store.get(hashlib.sha256(b"payload").hexdigest())


def test_stale_temporary_files_are_removed_at_start(tmp_path: Path) -> None:
    folder = tmp_path / "ab"
    folder.mkdir()
    stale, fresh = folder / ".tmp-crashed", folder / ".tmp-in-progress"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(stale, (0, 0))
    FileAttachmentStore(tmp_path)
    assert not stale.exists() and fresh.exists()


def test_a_drain_batch_larger_than_one_statement_is_all_marked(db: Path) -> None:
    """``mark_notifications_done`` marks in statements of up to 500 seqs: 1,234 in one call
    are all marked, and only those."""
    store = SqliteStore(db)
    try:
        with store.unit_of_work() as uow:
            for _ in range(1300):
                uow.outbox.add_notification(note("alice"))
            uow.commit()
        pending = store.pending_notifications(limit=2000)
        assert len(pending) == 1300
        store.mark_notifications_done([n.seq for n in pending[:1234]] + [pending[0].seq])
        left = store.pending_notifications(limit=2000)
        assert [n.seq for n in left] == [n.seq for n in pending[1234:]]
    finally:
        store.close()
