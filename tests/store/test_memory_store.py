"""The reference in-memory store against the store contract."""

from __future__ import annotations

from interactions_core.memory import InMemoryStore, ManualClock
from interactions_core.ports import Store
from interactions_core.testing.contracts import StoreContract


class TestInMemoryStore(StoreContract):
    def make_store(self, clock: ManualClock) -> Store:
        return InMemoryStore(clock)
