"""Concurrency on one database: units of work from threads of several stores and from several
processes (exactly one wins a version race; no update is lost), and the mail outbox shared by
several dispatchers (``FOR UPDATE SKIP LOCKED`` claims with a lease).

Races are forced with barriers (threads) or with a go-signal sent once every process has loaded
(processes), never with sleeps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.postgres import PostgresStore
from interactions_core.errors import ConcurrencyConflict
from interactions_core.model import Interaction
from interactions_core.testing import ManualClock
from interactions_core.testing.contracts.store import interaction, mail

WORKER = Path(__file__).with_name("worker.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def worker(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def add(store: PostgresStore, *items: Interaction) -> None:
    with store.unit_of_work() as uow:
        for i in items:
            uow.interactions.add(i)
        uow.commit()


# --------------------------------------------------------------------------- version races


def test_stores_of_their_own_racing_from_threads_exactly_one_commits(postgres_dsn: str) -> None:
    """Each thread has its own store (its own pool), as separate processes would."""
    workers = 6
    stores = [PostgresStore(postgres_dsn, pool_size=1) for _ in range(workers)]
    add(stores[0], interaction("I1"))
    loaded = threading.Barrier(workers)
    outcomes: list[str] = []

    def race(n: int) -> None:
        with stores[n].unit_of_work() as uow:
            current = uow.interactions.get("I1")
            assert current is not None
            loaded.wait()
            uow.interactions.update(current.model_copy(update={"owner": f"agent{n}"}))
            try:
                uow.commit()
                outcomes.append(f"agent{n}")
            except ConcurrencyConflict as exc:
                assert (exc.expected, exc.actual) == (1, 2)
                outcomes.append("conflict")

    threads = [threading.Thread(target=race, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o != "conflict"]
    assert len(outcomes) == workers and len(winners) == 1
    with stores[1].unit_of_work() as uow:
        stored = uow.interactions.get("I1")
    assert stored is not None and (stored.owner, stored.version) == (winners[0], 2)
    for store in stores:
        store.close()


def test_crossed_dependencies_never_deadlock(postgres_dsn: str) -> None:
    """A expects P and updates Q while B expects Q and updates P: rows are locked in id order,
    so one waits for the other instead of deadlocking; whoever commits second conflicts."""
    with PostgresStore(postgres_dsn) as store:
        add(store, interaction("P"), interaction("Q"))
        for _ in range(5):
            start = threading.Barrier(2)
            outcomes: list[str] = []

            def run(
                expected: str,
                updated: str,
                start: threading.Barrier = start,
                outcomes: list[str] = outcomes,
            ) -> None:
                with store.unit_of_work() as uow:
                    dep, mine = uow.interactions.get(expected), uow.interactions.get(updated)
                    assert dep is not None and mine is not None
                    uow.interactions.expect(dep)
                    uow.interactions.update(mine.model_copy(update={"comment": updated}))
                    start.wait()
                    try:
                        uow.commit()
                        outcomes.append("ok")
                    except ConcurrencyConflict:
                        outcomes.append("conflict")

            threads = [
                threading.Thread(target=run, args=("P", "Q")),
                threading.Thread(target=run, args=("Q", "P")),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(outcomes) == ["conflict", "ok"]


def test_two_processes_racing_on_one_version_exactly_one_commits(postgres_dsn: str) -> None:
    with PostgresStore(postgres_dsn) as store:
        add(store, interaction("I1"))
        racers = [worker("race", postgres_dsn, "I1") for _ in range(2)]
        try:
            for p in racers:  # both hold version 1 before either writes
                assert p.stdout is not None
                assert p.stdout.readline().strip() == "loaded", p.stderr
            for p in racers:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            results = [p.communicate(timeout=60) for p in racers]
        finally:
            for p in racers:
                if p.poll() is None:
                    p.kill()
        assert [p.returncode for p in racers] == [0, 0], [err for _, err in results]
        assert sorted(out.strip() for out, _ in results) == ["conflict", "won"]
        with store.unit_of_work() as uow:
            stored = uow.interactions.get("I1")
        assert stored is not None and stored.version == 2
        winner = racers[[out.strip() for out, _ in results].index("won")]
        assert stored.owner == f"pid{winner.pid}"


def test_two_processes_incrementing_one_counter_lose_no_update(postgres_dsn: str) -> None:
    rounds = 30
    with PostgresStore(postgres_dsn) as store:
        add(store, interaction("I1", user_data={"count": 0}))
        bumpers = [worker("bump", postgres_dsn, "I1", str(rounds)) for _ in range(2)]
        results = [p.communicate(timeout=120) for p in bumpers]
        assert [p.returncode for p in bumpers] == [0, 0], [err for _, err in results]
        assert all(out.startswith("done ") for out, _ in results)
        with store.unit_of_work() as uow:
            stored = uow.interactions.get("I1")
        assert stored is not None
        assert stored.user_data["count"] == 2 * rounds
        assert stored.version == 1 + 2 * rounds


# --------------------------------------------------------------------------- mail claims


def queue_mail(store: PostgresStore, count: int) -> None:
    with store.unit_of_work() as uow:
        for n in range(count):
            uow.outbox.add_mail(mail(f"I{n}", n))
        uow.commit()


def test_dispatchers_on_one_database_never_get_the_same_mail(postgres_dsn: str) -> None:
    """Several stores (as several processes would) drain the outbox at once, each marking sent
    what it got: every mail is handed out, and to exactly one of them."""
    total, dispatchers = 120, 4
    stores = [PostgresStore(postgres_dsn, pool_size=1) for _ in range(dispatchers)]
    queue_mail(stores[0], total)
    start = threading.Barrier(dispatchers)
    got: list[list[int]] = [[] for _ in range(dispatchers)]

    def dispatch(n: int) -> None:
        store = stores[n]
        start.wait()
        while True:
            entries = store.pending_mail(store._clock.now() + timedelta(days=1), limit=7)
            if not entries:
                return
            for entry in entries:
                got[n].append(entry.seq)
                store.mark_mail_sent(entry.seq)

    threads = [threading.Thread(target=dispatch, args=(n,)) for n in range(dispatchers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handed_out = Counter(seq for seqs in got for seq in seqs)
    assert len(handed_out) == total
    assert set(handed_out.values()) == {1}, "a mail was handed to two dispatchers"
    assert sum(1 for seqs in got if seqs) >= 2  # they really shared the work
    for store in stores:
        store.close()


def test_a_claim_holds_until_its_lease_ends_and_is_offered_again_after(
    postgres_dsn: str,
) -> None:
    clock = ManualClock()
    lease = 60.0
    first = PostgresStore(postgres_dsn, clock=clock, mail_lease_seconds=lease)
    second = PostgresStore(postgres_dsn, clock=clock, mail_lease_seconds=lease)
    queue_mail(first, 3)
    now = clock.now()
    a, b = (e.seq for e in first.pending_mail(now, limit=2))
    assert second.pending_mail(now, limit=1)[0].seq > b  # the third, unclaimed
    second.close()  # (which releases it again)
    second = PostgresStore(postgres_dsn, clock=clock, mail_lease_seconds=lease)
    # Claimed by the first store: offered to it again (and now the third too), not to others.
    entries = first.pending_mail(now)
    assert [e.seq for e in entries][:2] == [a, b] and len(entries) == 3
    c = entries[2].seq
    assert second.pending_mail(now) == []
    first.mark_mail_sent(a)
    first.reschedule_mail(b, now, "421 later")  # a reschedule ends the claim at once
    assert [(e.seq, e.attempts) for e in second.pending_mail(now)] == [(b, 1)]
    # The first store "dies" holding c: its claim ends with the lease, then c is offered.
    clock.advance(lease - 1)
    assert [e.seq for e in second.pending_mail(clock.now())] == [b]
    clock.advance(1)
    assert [e.seq for e in second.pending_mail(clock.now())] == [b, c]
    assert first.pending_mail(clock.now()) == []  # the second holds both now
    first.close()
    second.close()


def test_closing_a_store_releases_its_claims(postgres_dsn: str) -> None:
    clock = ManualClock()
    first = PostgresStore(postgres_dsn, clock=clock)
    second = PostgresStore(postgres_dsn, clock=clock)
    queue_mail(first, 2)
    assert len(first.pending_mail(clock.now())) == 2
    assert second.pending_mail(clock.now()) == []
    first.close()
    assert len(second.pending_mail(clock.now())) == 2
    second.close()


@pytest.mark.parametrize("limit", [1, 3])
def test_the_limit_counts_only_what_is_claimed(postgres_dsn: str, limit: int) -> None:
    clock = ManualClock()
    with (
        PostgresStore(postgres_dsn, clock=clock) as first,
        PostgresStore(postgres_dsn, clock=clock) as second,
    ):
        queue_mail(first, 2 * limit)
        mine = [e.seq for e in first.pending_mail(clock.now(), limit=limit)]
        theirs = [e.seq for e in second.pending_mail(clock.now(), limit=limit)]
        assert len(mine) == len(theirs) == limit
        assert not set(mine) & set(theirs)
        assert max(mine) < min(theirs)  # each in seq order, the second after the first's
