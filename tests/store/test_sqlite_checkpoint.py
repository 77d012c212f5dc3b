"""WAL checkpoints on the store's own thread (adapters.sqlite.checkpoint), never in a commit,
and the log bounded under a sustained load."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from adapters.sqlite import SqliteStore
from waiting import eventually


def _commits(store: SqliteStore, n: int, size: int = 4000) -> None:
    blob = "x" * size
    for i in range(n):
        with store._write() as conn:
            conn.execute(
                "INSERT INTO outbox (kind, agent_id, topic, payload, queued_at)"
                " VALUES ('notification', 'a', '/t', ?, '2026-01-01T00:00:00+00:00')",
                (f'{{"n": {i}, "pad": "{blob}"}}',),
            )


def test_commits_do_not_checkpoint_the_thread_does(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3")
    try:
        conn = store.connection()
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        checkpointer = store._checkpointer
        assert checkpointer is not None
        _commits(store, checkpointer.every_commits * 3)
        eventually(lambda: checkpointer.checkpoints >= 1)
        threads = [t for t in threading.enumerate() if t.name == "sqlite-checkpoint"]
        assert threads
    finally:
        store.close()
    assert not any(t.is_alive() for t in threads)  # close stops it
    assert not Path(f"{tmp_path / 'db.sqlite3'}-wal").exists()  # the last close checkpointed


def test_the_log_stays_bounded_under_a_sustained_load(tmp_path: Path) -> None:
    """A PASSIVE checkpoint alone never catches up with commits made while it runs, so the
    log would grow with everything written; past max_wal_bytes a RESTART lets it start over.
    Sizes, not times: some 75 MB of log is written (each commit is several pages), ~600 times
    the bound; without the RESTART the log ends at about all of it, so it must stay under a
    third of it. The writer commits in a tight loop, holding the GIL between statements: the
    switch interval is cut for the test (5 ms to 0.1 ms) so that the checkpointer's thread is
    not starved of it on a busy machine (CI once saw 14 MB with a bound of 100 times)."""
    store = SqliteStore(tmp_path / "db.sqlite3")
    wal = Path(f"{tmp_path / 'db.sqlite3'}-wal")
    checkpointer = store._checkpointer
    assert checkpointer is not None
    checkpointer.max_wal_bytes = 128 * 1024
    checkpointer.every_commits = 10
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        largest = 0
        for _ in range(60):  # 60 x 50 commits of a ~4 KB row
            _commits(store, 50)
            largest = max(largest, wal.stat().st_size)
        eventually(lambda: checkpointer.restarts >= 1)
        assert largest < 200 * checkpointer.max_wal_bytes, largest  # a third of the 75 MB
        rows = store.connection().execute("SELECT count(*) FROM outbox").fetchone()[0]
        assert rows == 3000  # nothing lost by the checkpoints
    finally:
        sys.setswitchinterval(interval)
        store.close()


def test_checkpoint_at_commit_is_sqlites_own(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3", checkpoint="commit")
    try:
        assert store._checkpointer is None
        assert store.connection().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        _commits(store, 10)
    finally:
        store.close()
    assert not any(t.name == "sqlite-checkpoint" for t in threading.enumerate())


def test_a_bad_checkpoint_mode_is_a_clear_error(tmp_path: Path) -> None:
    try:
        SqliteStore(tmp_path / "db.sqlite3", checkpoint="sometimes")
    except ValueError as exc:
        assert "checkpoint must be" in str(exc)
    else:
        raise AssertionError("accepted")
    assert os.listdir(tmp_path) == []  # refused before opening anything
