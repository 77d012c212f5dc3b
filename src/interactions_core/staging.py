"""What a unit of work has written but not yet committed: the semantics every store shares.

A store's repository puts these on top of what is committed: reads see the unit of work's own
writes; ``add`` and ``update`` return the record at its new version and remember the version
each interaction was loaded at, which the store checks at commit (never a lost update).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Generic, Self, TypeVar

from .errors import ConcurrencyConflict
from .lifecycle import WAITING_STATES
from .model import Interaction, evolve
from .ports import (
    ChannelRepository,
    ChannelState,
    InteractionRepository,
    Outbox,
    OutgoingMail,
    UnitOfWork,
)

Loader = Callable[[str], Interaction | None]
Matches = Callable[[Interaction], bool]
_N = TypeVar("_N")


# --- the repository's lists (ports.InteractionRepository), written once for every store ------
#
# A SQL store finds the committed rows with its own query; the unit of work's staged rows are
# matched in Python by the same rule, then both are merged in the lists' one order.


def listed_for(agent_id: str) -> Matches:
    """``for_agent``: owned by the agent, or offered to it."""
    return lambda i: i.owner == agent_id or (i.offer is not None and i.offer.agent_id == agent_id)


def waiting_in(queue: str) -> Matches:
    """``in_queue``: in the queue and in a waiting state (``lifecycle.WAITING_STATES``)."""
    return lambda i: i.current_queue == queue and i.state in WAITING_STATES


def kept_in(workbin: str) -> Matches:
    """``in_workbin``: placed in that workbin."""
    return lambda i: i.workbin == workbin


def listing_key(i: Interaction) -> tuple[datetime, str]:
    """The lists' order: oldest received first, then by id (a naive time is taken as UTC)."""
    when = i.received_at
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC), i.id)


def merge_staged(
    found: list[Interaction],
    staged: Mapping[str, Interaction],
    matches: Matches,
    limit: int | None = None,
) -> list[Interaction]:
    """``found`` (committed rows, in list order) with the unit of work's ``staged`` rows put
    on top: a staged row replaces its committed one, and is listed only if it still matches."""
    if not staged:
        return found if limit is None else found[:limit]
    merged = [i for i in found if i.id not in staged]
    merged.extend(i for i in staged.values() if matches(i))
    merged.sort(key=listing_key)
    return merged if limit is None else merged[:limit]


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
        stored = evolve(interaction, version=1)
        self.expected[interaction.id] = None
        self.rows[interaction.id] = stored
        return stored

    def expect(self, interaction: Interaction) -> None:
        """Commit only at this version: checked now against what this unit of work wrote,
        at commit against the store (the version it was first loaded at)."""
        iid = interaction.id
        staged = self.rows.get(iid)
        if staged is not None:
            if staged.version != interaction.version:
                raise ConcurrencyConflict(iid, interaction.version, staged.version)
        elif iid not in self.expected:
            self.expected[iid] = interaction.version

    def update(self, interaction: Interaction) -> Interaction:
        self.expect(interaction)
        stored = evolve(interaction, version=interaction.version + 1)
        self.rows[interaction.id] = stored
        return stored


class StagedChannels:
    """``ports.ChannelRepository`` for every store: the unit of work's own puts on top of the
    store's committed states (``load_one``, ``load_all``), each put remembering the version it
    was made against, for the store to check at commit."""

    __slots__ = ("_load_all", "_load_one", "expected", "rows")

    def __init__(
        self,
        load_one: Callable[[str], ChannelState | None],
        load_all: Callable[[], list[ChannelState]],
    ) -> None:
        self._load_one = load_one
        self._load_all = load_all
        self.rows: dict[str, ChannelState] = {}
        self.expected: dict[str, int] = {}  # agent id -> version stored at commit (0: none)

    def get(self, agent_id: str) -> ChannelState | None:
        staged = self.rows.get(agent_id)
        return staged if staged is not None else self._load_one(agent_id)

    def put(self, state: ChannelState) -> ChannelState:
        staged = self.rows.get(state.agent_id)
        if staged is not None and staged.version != state.version:
            raise ConcurrencyConflict(state.agent_id, state.version, staged.version)
        self.expected.setdefault(state.agent_id, state.version)
        stored = state.model_copy(update={"version": state.version + 1})
        self.rows[state.agent_id] = stored
        return stored

    def all(self) -> list[ChannelState]:
        merged = {s.agent_id: s for s in self._load_all()}
        merged.update(self.rows)
        return [merged[a] for a in sorted(merged)]

    def clear(self) -> None:
        self.rows.clear()
        self.expected.clear()


class StagedUnitOfWork(Generic[_N]):
    """The bookkeeping every store's unit of work shares: staged rows and outbox entries (the
    notifications in whatever form the store keeps them), dropped by ``rollback`` and on
    leaving the ``with`` block unless committed."""

    def __init__(self) -> None:
        self._channels = StagedChannels(self._load_channel, self._load_channels)
        self._reset()

    def _reset(self) -> None:
        self._staged = Staged()
        self._rows = self._staged.rows
        self._expected = self._staged.expected
        self._notifications: list[_N] = []
        self._mail: list[OutgoingMail] = []
        self._channels.clear()

    @property
    def channels(self) -> ChannelRepository:
        return self._channels

    def _load_channel(self, agent_id: str) -> ChannelState | None:
        """The committed state of ``agent_id``: every store overrides both loaders."""
        raise NotImplementedError(f"{type(self).__name__} does not read channel states")

    def _load_channels(self) -> list[ChannelState]:
        """Every committed channel state."""
        raise NotImplementedError(f"{type(self).__name__} does not read channel states")

    def _has_writes(self) -> bool:
        return bool(self._expected or self._notifications or self._mail or self._channels.rows)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.rollback()

    def rollback(self) -> None:
        if self._has_writes():
            self._reset()


class TrackedRepository:
    """Delegates to the store's repository and remembers what the transaction wrote."""

    def __init__(self, inner: InteractionRepository, changed: dict[str, Interaction]) -> None:
        self._inner = inner
        self._changed = changed

    def get(self, interaction_id: str) -> Interaction | None:
        return self._inner.get(interaction_id)

    def add(self, interaction: Interaction) -> Interaction:
        stored = self._inner.add(interaction)
        self._changed[stored.id] = stored
        return stored

    def update(self, interaction: Interaction) -> Interaction:
        stored = self._inner.update(interaction)
        self._changed[stored.id] = stored
        return stored

    def expect(self, interaction: Interaction) -> None:
        self._inner.expect(interaction)

    def for_agent(self, agent_id: str) -> list[Interaction]:
        return self._inner.for_agent(agent_id)

    def in_queue(self, queue: str, limit: int | None = None) -> list[Interaction]:
        return self._inner.in_queue(queue, limit)

    def in_workbin(self, workbin: str) -> list[Interaction]:
        return self._inner.in_workbin(workbin)

    def by_message_id(self, message_id: str, mailbox: str | None = None) -> Interaction | None:
        return self._inner.by_message_id(message_id, mailbox)


class TrackedUnitOfWork:
    """A store's unit of work that also collects what it wrote, for the commit listeners."""

    def __init__(self, inner: UnitOfWork) -> None:
        self._inner = inner
        self.changed: dict[str, Interaction] = {}
        self._repository = TrackedRepository(inner.interactions, self.changed)

    @property
    def interactions(self) -> InteractionRepository:
        return self._repository

    @property
    def outbox(self) -> Outbox:
        return self._inner.outbox

    @property
    def channels(self) -> ChannelRepository:
        return self._inner.channels

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def commit(self) -> None:
        self._inner.commit()

    def rollback(self) -> None:
        self._inner.rollback()
