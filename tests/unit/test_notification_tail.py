"""``NotificationTail`` reading only some agents' notifications (``take(agents)``): nothing
of theirs is skipped, whatever the pages' sizes and however the set of agents changes, and
nothing is delivered twice."""

from __future__ import annotations

import random

import pytest

from interactions_core.memory import InMemoryStore, RecordingNotifier
from interactions_core.outbox import NotificationTail, OutboxContractError
from interactions_core.ports import Notification, NotificationPage, RawMessage


def commit(store: InMemoryStore, agent_id: str, n: int) -> None:
    with store.unit_of_work() as uow:
        uow.outbox.add_notification(
            Notification(agent_id=agent_id, payload=RawMessage(data={"n": n}))
        )
        uow.commit()


def read_all(tail: NotificationTail, agents: set[str] | None) -> int:
    total, more = 0, True
    while more:
        page = tail.take(agents)
        tail.publish(page)
        total += len(page.notifications)
        more = page.more
    return total


def delivered(notifier: RecordingNotifier) -> list[tuple[str, int]]:
    return [(n.agent_id, n.to_wire()["n"]) for n in notifier.published]


def test_only_the_agents_asked_for_and_the_position_moves_past_the_others() -> None:
    store = InMemoryStore()
    notifier = RecordingNotifier()
    tail = NotificationTail(store, store, notifier)
    tail.start()
    commit(store, "alice", 1)
    commit(store, "bob", 2)
    commit(store, "carol", 3)
    assert read_all(tail, {"alice", "carol"}) == 2
    assert delivered(notifier) == [("alice", 1), ("carol", 3)]
    assert tail.position == store.feed_position()
    assert read_all(tail, {"alice", "carol"}) == 0
    assert tail.lag() == 0


@pytest.mark.parametrize("limit", [1, 2, 3, 500])
def test_full_pages_leave_nobody_behind(limit: int) -> None:
    store = InMemoryStore()
    notifier = RecordingNotifier()
    tail = NotificationTail(store, store, notifier, limit=limit)
    tail.start()
    for n in range(7):
        commit(store, ["alice", "bob", "carol"][n % 3], n)
    read_all(tail, {"alice", "bob"})
    assert delivered(notifier) == [(["alice", "bob", "carol"][n % 3], n) for n in (0, 1, 3, 4, 6)]


def test_an_agent_who_joined_during_a_read_gets_what_that_read_passed() -> None:
    """Bob's session appears while a read without him runs: that read's range is read again
    for him, once."""
    store = InMemoryStore()
    notifier = RecordingNotifier()
    tail = NotificationTail(store, store, notifier)
    tail.start()
    commit(store, "alice", 1)
    commit(store, "bob", 2)  # committed after bob's session began, read without him
    read_all(tail, {"alice"})
    commit(store, "bob", 3)
    read_all(tail, {"alice", "bob"})
    read_all(tail, {"alice", "bob"})
    assert delivered(notifier) == [("alice", 1), ("bob", 2), ("bob", 3)]


def test_random_joins_and_leaves_never_skip_nor_repeat() -> None:
    """Whatever the agents present at each read: a notification whose agent had a session
    from its commit on is delivered, none is delivered twice, and none to an agent absent."""
    rng = random.Random(7)
    agents = ["a", "b", "c", "d"]
    for limit in (1, 2, 5, 500):
        store = InMemoryStore()
        notifier = RecordingNotifier()
        tail = NotificationTail(store, store, notifier, limit=limit)
        tail.start()
        present = {"a"}
        owed: dict[int, str] = {}  # n -> agent, while its agent stayed present
        n = 0
        for _ in range(300):
            for _ in range(rng.randrange(4)):
                agent = rng.choice(agents)
                commit(store, agent, n)
                if agent in present:
                    owed[n] = agent
                n += 1
            if rng.random() < 0.3:
                present ^= {rng.choice(agents)}
            owed = {k: a for k, a in owed.items() if a in present}
            before = len(notifier.published)
            page = tail.take(set(present))
            tail.publish(page)
            assert {x.agent_id for x in notifier.published[before:]} <= present
        before = len(notifier.published)
        read_all(tail, set(present))
        assert {x.agent_id for x in notifier.published[before:]} <= present
        got = [k for _, k in delivered(notifier)]
        assert len(got) == len(set(got)), "delivered twice"
        assert set(owed) <= set(got), sorted(set(owed) - set(got))


def test_settle_marks_everyones_up_to_the_position_once() -> None:
    store = InMemoryStore()
    tail = NotificationTail(store, store, RecordingNotifier())
    commit(store, "bob", 0)  # before the tail started: the backlog
    tail.start()
    commit(store, "alice", 1)
    commit(store, "bob", 2)
    read_all(tail, {"alice"})
    assert tail.settle() == 3
    assert store.pending_notifications() == []
    assert tail.settle() == 0  # nothing moved: no call
    commit(store, "carol", 3)
    assert tail.settle() == 0  # the position has not passed carol's yet
    read_all(tail, set())
    assert tail.settle() == 1


class Broken(InMemoryStore):
    """Returns an agent nobody asked for."""

    def notifications_of(self, afters: object, limit: int = 500) -> NotificationPage:
        return super().notifications_of({"mallory": 0}, limit)


def test_a_feed_returning_another_agents_rows_is_a_contract_error() -> None:
    store = Broken()
    tail = NotificationTail(store, store, RecordingNotifier())
    tail.start()
    commit(store, "mallory", 1)
    with pytest.raises(OutboxContractError, match="mallory"):
        tail.take({"alice"})
