"""``ClusterTail`` (the server's notification tail): a leader whose settling fails (the
database went away between the read and the mark) settles it with the next read, so no
notification stays unpublished (and unpurgeable) for good; an audience limits what is read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Any

import pytest

from adapters.runtime import ClusterTail, CoreRunner
from interactions_core.engine import SyncReport
from interactions_core.errors import Unavailable
from interactions_core.memory import InMemoryStore, RecordingNotifier
from interactions_core.outbox import NotificationTail
from interactions_core.ports import Notification, RawMessage


class FlakyMarks(InMemoryStore):
    """Refuses the first ``fail`` settles, as a database in an outage would."""

    fail = 1

    def settle_notifications(self, through_seq: int, after_seq: int = 0) -> int:
        if self.fail:
            self.fail -= 1
            raise Unavailable("the database is unavailable")
        return super().settle_notifications(through_seq, after_seq)


class Leading:
    """What ``ClusterTail`` asks of the engine: it leads, and its sync finds nothing."""

    leading = True

    def sync(self) -> SyncReport:
        return SyncReport()


def commit(store: InMemoryStore, n: int, agent_id: str = "alice") -> None:
    with store.unit_of_work() as uow:
        uow.outbox.add_notification(
            Notification(agent_id=agent_id, payload=RawMessage(data={"n": n}))
        )
        uow.commit()


def leading_tail(
    store: InMemoryStore, audience: Callable[[], Collection[str]] | None = None
) -> tuple[RecordingNotifier, CoreRunner, ClusterTail]:
    """A ``ClusterTail`` on ``store`` whose engine leads: its notifier, core and the tail."""
    notifier = RecordingNotifier()
    core = CoreRunner()
    engine: Any = Leading()
    tail = NotificationTail(store, store, notifier)
    tail.start()
    return notifier, core, ClusterTail(core, engine, tail, audience=audience)


async def test_a_read_whose_settle_failed_is_settled_by_the_next_one() -> None:
    store = FlakyMarks()
    notifier, core, cluster_tail = leading_tail(store)
    for n in range(3):
        commit(store, n)
    try:
        with pytest.raises(Unavailable):  # the first mark fails
            await cluster_tail.read_once()
        assert len(notifier.published) == 3  # delivered all the same
        assert len(store.pending_notifications()) == 3  # but not marked
        commit(store, 3)
        await cluster_tail.read_once()
        assert len(notifier.published) == 4  # nothing twice
        assert store.pending_notifications() == []
    finally:
        await asyncio.wait_for(cluster_tail.stop(), 10)
        core.shutdown()


async def test_an_audience_limits_what_is_read_and_the_leader_settles_everyones() -> None:
    store = InMemoryStore()
    here = {"alice"}
    notifier, core, cluster_tail = leading_tail(store, lambda: here)
    try:
        commit(store, 1, "alice")
        commit(store, 2, "bob")
        assert await cluster_tail.read_once() == 1
        assert [n.agent_id for n in notifier.published] == ["alice"]
        assert cluster_tail.position == store.feed_position()  # past bob's too
        assert store.pending_notifications() == []  # the leader settled both
        here.add("bob")  # his first session: the last read is read again for him (it may
        # have begun while his session was made; earlier ones are for its replay)
        commit(store, 3, "bob")
        assert await cluster_tail.read_once() == 2  # bob's 2 (joined since), and 3
        assert [n.to_wire()["n"] for n in notifier.published] == [1, 2, 3]
        assert await cluster_tail.read_once() == 0
    finally:
        await asyncio.wait_for(cluster_tail.stop(), 10)
        core.shutdown()
