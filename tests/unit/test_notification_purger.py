"""The retention purge: ``Engine.purge_notifications`` and the server's timer around it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from adapters.runtime import CoreRunner, NotificationPurger
from interactions_core.engine import Engine
from interactions_core.memory import InMemoryStore, ManualClock
from interactions_core.testing.contracts.store import note


def engine_with(published: int, pending: int) -> tuple[Engine, InMemoryStore, ManualClock]:
    clock = ManualClock()
    store = InMemoryStore(clock)
    for n in range(published + pending):
        with store.unit_of_work() as uow:
            uow.outbox.add_notification(note("alice", str(n)))
            uow.commit()
    store.mark_notifications_done([n.seq for n in store.pending_notifications()][:published])
    return Engine(store=store, clock=clock), store, clock


def test_engine_purges_what_was_published_more_than_the_retention_ago() -> None:
    engine, store, clock = engine_with(published=3, pending=1)
    retention = timedelta(minutes=5)
    clock.advance(retention)
    assert engine.purge_notifications(retention) == 0  # exactly the retention: still kept
    clock.advance(1)
    assert engine.purge_notifications(retention, limit=2) == 2
    assert engine.purge_notifications(retention) == 1
    assert [n.to_wire()["text"] for n in store.notifications_since("alice", 0).notifications] == [
        "3"
    ]
    assert len(store.pending_notifications()) == 1


async def test_the_purger_runs_batch_after_batch_until_one_is_not_full() -> None:
    engine, store, clock = engine_with(published=5, pending=2)
    clock.advance(301)
    core = CoreRunner()
    try:
        purger = NotificationPurger(core, engine, timedelta(seconds=300), batch=2)
        assert await purger.purge_once() == 5
        assert await purger.purge_once() == 0
        assert purger.purged == 5
        assert len(store.notifications_since("alice", 0).notifications) == 2  # the pending
    finally:
        core.shutdown()


def test_the_purge_period_is_a_fifth_of_the_retention_within_one_and_sixty_seconds() -> None:
    engine, _, _ = engine_with(published=0, pending=0)
    core = CoreRunner()
    try:
        periods = [
            NotificationPurger(core, engine, timedelta(seconds=s)).interval
            for s in (0, 100, 300, 3600)
        ]
        assert periods == [1.0, 20.0, 60.0, 60.0]
        with pytest.raises(ValueError):
            NotificationPurger(core, engine, timedelta(seconds=1), batch=0)
    finally:
        core.shutdown()
