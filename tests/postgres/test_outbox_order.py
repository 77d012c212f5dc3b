"""Notifications are read in commit order: a tailer reading ``seq > last`` never skips one.

Many writers (threads, each with a store and a connection of its own) commit notifications,
each sleeping a random moment between its inserts and its ``COMMIT``: exactly the window in
which a transaction that took a seq earlier commits after one that took a later seq. One tailer
reads ``pending_notifications(after_seq=last)`` in a loop, as the dispatchers do. Then every
committed seq must have been seen.

The same run against ``NaiveStore`` (the store with the outbox lock left out: seqs in
allocation order only) must catch a skip, or the test would prove nothing.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

import psycopg
import pytest

from adapters.postgres import PostgresStore
from adapters.postgres.connection import Connection
from interactions_core.testing.contracts.store import note

WRITERS = 8
COMMITS = 12
MAX_DELAY = 0.004  # seconds between a commit's inserts and its COMMIT


class SlowCommitStore(PostgresStore):
    """Waits a random moment (seeded per store) right before each ``COMMIT``."""

    def __init__(self, dsn: str, seed: int) -> None:
        super().__init__(dsn, pool_size=1)
        self.rng = random.Random(seed)

    def _before_commit(self, conn: Connection) -> None:
        time.sleep(self.rng.uniform(0, MAX_DELAY))


class NaiveStore(SlowCommitStore):
    """Takes no outbox lock: a seq is allocated at insert, committed whenever (a broken store)."""

    def _lock_outbox(self, conn: Connection) -> None:
        pass


@dataclass
class Run:
    committed: list[int]
    seen: list[int]

    @property
    def skipped(self) -> list[int]:
        return sorted(set(self.committed) - set(self.seen))


def tail_while_writing(
    dsn: str, store_class: type[SlowCommitStore], seed: int, filtered: bool = False
) -> Run:
    """``filtered``: the tailer reads half the agents' alone, as a process of a cluster does
    (``notifications_of``, moving to each page's position: the high-water mark)."""
    stores = [store_class(dsn, seed * 100 + n) for n in range(WRITERS)]
    reader = PostgresStore(dsn, pool_size=1)
    start = threading.Barrier(WRITERS + 1)
    writing = [True]
    errors: list[BaseException] = []
    seen: list[int] = []
    mine = {f"agent{n}" for n in range(0, WRITERS, 2)}

    def write(n: int) -> None:
        try:
            start.wait()
            for k in range(COMMITS):
                with stores[n].unit_of_work() as uow:
                    uow.outbox.add_notification(note(f"agent{n}", f"{n}-{k}"))
                    uow.commit()
        except BaseException as exc:
            errors.append(exc)

    def tail() -> None:
        last = 0
        start.wait()
        while True:
            finished = not writing[0]  # read before the batch: a last pass after the writers
            if filtered:
                page = reader.notifications_of({a: last for a in mine}, limit=7)
                seen.extend(n.seq for n in page.notifications)
                assert page.position >= last
                moved, last = page.position != last, page.position
                if not moved and finished:
                    return
                continue
            batch = reader.pending_notifications(after_seq=last)
            seen.extend(n.seq for n in batch)
            if batch:
                last = batch[-1].seq
            elif finished:
                return

    writers = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    tailer = threading.Thread(target=tail)
    for t in [*writers, tailer]:
        t.start()
    for t in writers:
        t.join()
    writing[0] = False
    tailer.join()
    for store in [*stores, reader]:
        store.close()
    assert errors == []
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT seq, agent_id FROM outbox ORDER BY seq").fetchall()
    assert len(rows) == WRITERS * COMMITS
    committed = [int(seq) for seq, agent in rows if not filtered or agent in mine]
    assert seen == sorted(seen) and len(set(seen)) == len(seen)  # in order, each once
    return Run(committed, seen)


def test_a_tailer_never_skips_a_notification_committed_late(postgres_dsn: str) -> None:
    run = tail_while_writing(postgres_dsn, SlowCommitStore, seed=1)
    assert run.skipped == []
    assert run.seen == run.committed


def test_a_tailer_of_some_agents_never_skips_one_of_theirs(postgres_dsn: str) -> None:
    run = tail_while_writing(postgres_dsn, SlowCommitStore, seed=3, filtered=True)
    assert run.skipped == []
    assert run.seen == run.committed


@pytest.mark.parametrize("filtered", [False, True], ids=["every", "some-agents"])
def test_without_the_outbox_lock_the_same_tailer_skips_notifications(
    postgres_dsn: str, filtered: bool
) -> None:
    """The tests above can fail: the naive allocation is caught skipping."""
    skipped: list[int] = []
    for attempt in range(3):  # one run practically always skips; three make it certain
        run = tail_while_writing(postgres_dsn, NaiveStore, seed=2 + attempt, filtered=filtered)
        skipped = run.skipped
        if skipped:
            break
    assert skipped, "the naive store was never caught skipping a notification"
