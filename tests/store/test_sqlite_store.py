"""The SQLite store against the store contract (default and FULL synchronous settings)."""

from __future__ import annotations

from adapters.sqlite import SqliteStore
from interactions_core.ports import Store
from interactions_core.testing import ManualClock

from .contract import StoreContract


class TestSqliteStore(StoreContract):
    def make_store(self, clock: ManualClock) -> Store:
        return SqliteStore(self.tmp_path / "store.sqlite3", clock=clock)


class TestSqliteStoreReopened(StoreContract):
    """On a file another store created, migrated and closed; every commit fsynced (FULL)."""

    def make_store(self, clock: ManualClock) -> Store:
        path = self.tmp_path / "store.sqlite3"
        SqliteStore(path, clock=clock).close()  # created and migrated by a first process
        return SqliteStore(path, clock=clock, synchronous="FULL")
