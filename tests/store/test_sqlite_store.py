"""The SQLite store against the store contract (default and FULL synchronous settings)."""

from __future__ import annotations

from pathlib import Path

from adapters.sqlite import SqliteStore
from interactions_core.model import Interaction
from interactions_core.ports import Store
from interactions_core.testing import ManualClock
from interactions_core.testing.contracts import StoreContract


class TestSqliteStore(StoreContract):
    def make_store(self, clock: ManualClock) -> Store:
        return SqliteStore(self.tmp_path / "store.sqlite3", clock=clock)


class TestSqliteStoreReopened(StoreContract):
    """On a file another store created, migrated and closed; every commit fsynced (FULL)."""

    def make_store(self, clock: ManualClock) -> Store:
        path = self.tmp_path / "store.sqlite3"
        SqliteStore(path, clock=clock).close()  # created and migrated by a first process
        return SqliteStore(path, clock=clock, synchronous="FULL")


class TestSqliteStoreWithRowCache(StoreContract):
    """With the optional row cache: the same semantics, row for row."""

    def make_store(self, clock: ManualClock) -> Store:
        return SqliteStore(self.tmp_path / "store.sqlite3", clock=clock, cache_size=64)


def test_a_kept_row_is_not_used_once_another_store_changed_it(tmp_path: Path) -> None:
    """The cache is checked against the stored version in the same read: a write by another
    connection (another process) is always seen."""
    path = tmp_path / "shared.sqlite3"
    clock = ManualClock()
    mine = SqliteStore(path, clock=clock, cache_size=64)
    theirs = SqliteStore(path, clock=clock)
    with mine.unit_of_work() as uow:
        uow.interactions.add(Interaction(id="I1", state="Queued"))
        uow.commit()
    with theirs.unit_of_work() as uow:
        found = uow.interactions.get("I1")
        assert found is not None
        uow.interactions.update(found.model_copy(update={"state": "Invited"}))
        uow.commit()
    with mine.unit_of_work() as uow:
        seen = uow.interactions.get("I1")
    assert seen is not None and (seen.state, seen.version) == ("Invited", 2)
    mine.close()
    theirs.close()
