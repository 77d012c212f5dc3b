"""``ClusterTail`` (the server's notification tail): a leader whose marking of a batch fails
(the database went away between the read and the mark) marks it with the backlog next time,
so no notification stays unpublished (and unpurgeable) for good."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from adapters.runtime import ClusterTail, CoreRunner
from interactions_core.engine import SyncReport
from interactions_core.errors import Unavailable
from interactions_core.memory import InMemoryStore, RecordingNotifier
from interactions_core.outbox import NotificationTail
from interactions_core.ports import Notification, RawMessage


class FlakyMarks(InMemoryStore):
    """Refuses the first ``fail`` marks, as a database in an outage would."""

    fail = 1

    def mark_notifications_done(self, seqs: Sequence[int]) -> None:
        if self.fail:
            self.fail -= 1
            raise Unavailable("the database is unavailable")
        super().mark_notifications_done(seqs)


class Leading:
    """What ``ClusterTail`` asks of the engine: it leads, and its sync finds nothing."""

    leading = True

    def sync(self) -> SyncReport:
        return SyncReport()


def commit(store: InMemoryStore, n: int) -> None:
    with store.unit_of_work() as uow:
        uow.outbox.add_notification(
            Notification(agent_id="alice", payload=RawMessage(data={"n": n}))
        )
        uow.commit()


async def test_a_batch_whose_mark_failed_is_marked_with_the_backlog_next_time() -> None:
    store = FlakyMarks()
    notifier = RecordingNotifier()
    core = CoreRunner()
    engine: Any = Leading()
    tail = NotificationTail(store, store, notifier)
    tail.start()
    cluster_tail = ClusterTail(core, engine, tail)
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
