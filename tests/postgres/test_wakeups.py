"""Wake-ups on a real PostgreSQL (``adapters.postgres.wakeups``, ``wake.py``): a commit's
wake-up names who committed and whose notifications it queued, so a listener skips its own
store's commits and other processes' agents, and wakes for the rest."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from adapters.postgres import PostgresStore
from adapters.postgres.wake import WakeUp, wake_payload
from adapters.postgres.wakeups import Wakeups
from interactions_core.testing.contracts.store import note


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def notify(store: PostgresStore, agent_id: str) -> None:
    with store.unit_of_work() as uow:
        uow.outbox.add_notification(note(agent_id, "hello"))
        uow.commit()


def test_a_listener_skips_its_own_commits_and_other_agents(postgres_dsn: str) -> None:
    here, there = PostgresStore(postgres_dsn), PostgresStore(postgres_dsn)
    present = {"alice"}
    seen: list[WakeUp] = []
    lock = threading.Lock()
    calls = [0]

    def wanted(wake: WakeUp) -> bool:
        with lock:
            seen.append(wake)
        if wake.by == here.origin:
            return False
        return wake.agents is None or not wake.agents.isdisjoint(present)

    def wake() -> None:
        calls[0] += 1

    listener = Wakeups(postgres_dsn, wake, wanted=wanted)
    listener.start()
    try:
        wait_for(lambda: calls[0] == 1, "the wake-up after connecting")
        notify(here, "alice")  # this process's own commit
        notify(there, "bob")  # another process's, for an agent not here
        wait_for(lambda: listener.skipped == 2, "both skipped")
        assert calls[0] == 1
        notify(there, "alice")
        wait_for(lambda: calls[0] == 2, "the wake-up for alice")
        with lock:
            assert [(w.by, w.agents) for w in seen] == [
                (here.origin, frozenset({"alice"})),
                (there.origin, frozenset({"bob"})),
                (there.origin, frozenset({"alice"})),
            ]
    finally:
        listener.stop()
        here.close()
        there.close()


def test_the_payload_reads_back_and_says_nothing_when_it_cannot() -> None:
    assert WakeUp.parse(wake_payload("p:1", ["b", "a", "b"])) == WakeUp("p:1", frozenset("ab"))
    assert WakeUp.parse(wake_payload("p:1", [])) == WakeUp("p:1", frozenset())
    many = wake_payload("p:1", [f"agent-{n:05d}" for n in range(2000)])
    assert len(many.encode()) < 8000
    assert WakeUp.parse(many) == WakeUp("p:1", None)  # too many to name: anyone's
    for junk in ["", "not json", "[]", '{"by": 3, "agents": "x"}', '{"agents": [1]}']:
        assert WakeUp.parse(junk).agents is None
    assert WakeUp.parse('{"by": 3}').by is None
