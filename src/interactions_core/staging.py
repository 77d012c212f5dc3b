"""What a unit of work has written but not yet committed: the semantics every store shares.

A store's repository puts these on top of what is committed: reads see the unit of work's own
writes; ``add`` and ``update`` return the record at its new version and remember the version
each interaction was loaded at, which the store checks at commit (never a lost update).
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import ConcurrencyConflict
from .model import Interaction

Loader = Callable[[str], Interaction | None]


class Staged:
    __slots__ = ("expected", "rows")

    def __init__(self) -> None:
        self.rows: dict[str, Interaction] = {}
        # id -> version it was loaded at; None = new, must still not exist at commit.
        self.expected: dict[str, int | None] = {}

    def get(self, interaction_id: str, load: Loader) -> Interaction | None:
        staged = self.rows.get(interaction_id)
        return staged if staged is not None else load(interaction_id)

    def add(self, interaction: Interaction, load: Loader) -> Interaction:
        existing = self.get(interaction.id, load)
        if existing is not None:
            raise ConcurrencyConflict(interaction.id, 0, existing.version)
        stored = interaction.model_copy(update={"version": 1})
        self.expected[interaction.id] = None
        self.rows[interaction.id] = stored
        return stored

    def update(self, interaction: Interaction) -> Interaction:
        iid = interaction.id
        staged = self.rows.get(iid)
        if staged is not None:
            if staged.version != interaction.version:
                raise ConcurrencyConflict(iid, interaction.version, staged.version)
        elif iid not in self.expected:
            self.expected[iid] = interaction.version
        stored = interaction.model_copy(update={"version": interaction.version + 1})
        self.rows[iid] = stored
        return stored
