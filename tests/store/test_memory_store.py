"""The reference in-memory store against the store contract."""

from __future__ import annotations

from interactions_core.ports import Store
from interactions_core.testing import InMemoryStore, ManualClock

from .contract import StoreContract


class TestInMemoryStore(StoreContract):
    def make_store(self, clock: ManualClock) -> Store:
        return InMemoryStore(clock)
