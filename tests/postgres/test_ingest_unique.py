"""Ingestion is idempotent across processes by a unique constraint (issue: scale-out, item 6):
the same message delivered to two processes at the same moment becomes one interaction, even
when both looked for it before either had stored it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from adapters.postgres import PostgresStore
from adapters.postgres.store import PostgresInteractions
from interactions_core import Agent, Engine, ServiceConfig
from interactions_core.intake import IngestResult
from interactions_core.memory import InMemoryAttachmentStore

MAILBOX = "support@example.com"


def raw(n: int) -> bytes:
    return (
        f"From: Customer <c@example.org>\r\nTo: {MAILBOX}\r\nSubject: Case {n}\r\n"
        f"Message-ID: <retry-{n}@example.org>\r\nDate: Mon, 05 Jan 2026 09:00:00 +0000\r\n"
        f"\r\nHello {n}\r\n"
    ).encode()


@pytest.fixture
def stores(postgres_dsn: str) -> Iterator[list[PostgresStore]]:
    made = [PostgresStore(postgres_dsn, pool_size=2) for _ in range(4)]
    try:
        yield made
    finally:
        for store in made:
            store.close()


def engine(store: PostgresStore, attachments: InMemoryAttachmentStore) -> Engine:
    return Engine(
        store=store,
        agents=[Agent(id="alice", mailboxes=(MAILBOX,))],
        attachments=attachments,
        config=ServiceConfig(mailbox_queues={MAILBOX: "support"}),
    )


def test_concurrent_deliveries_that_all_missed_each_other_store_one_interaction(
    stores: list[PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every process looks for the message and finds nothing (the race a check-then-insert
    # loses): only the unique index stands between them and a duplicate.
    monkeypatch.setattr(PostgresInteractions, "by_message_id", lambda self, *a, **k: None)
    attachments = InMemoryAttachmentStore()
    engines = [engine(s, attachments) for s in stores]
    for e in engines:
        e.start(lead=False)
    results: dict[int, list[IngestResult]] = {n: [] for n in range(10)}
    barrier = threading.Barrier(len(engines))
    lock = threading.Lock()

    def deliver(e: Engine) -> None:
        barrier.wait()
        for n in range(10):
            got = e.ingest(raw(n))
            with lock:
                results[n].append(got)

    threads = [threading.Thread(target=deliver, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with stores[0].connection() as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT ingest_key) FROM interactions"
        ).fetchone()
    assert row == (10, 10)
    for n, got in results.items():
        assert len({r.interaction_id for r in got}) == 1, n  # every delivery names the one
        assert sum(not r.duplicate for r in got) == 1, n


def test_a_reused_message_id_with_other_content_is_a_new_interaction_once(
    stores: list[PostgresStore],
) -> None:
    attachments = InMemoryAttachmentStore()
    e = engine(stores[0], attachments)
    e.start()
    first = e.ingest(raw(1))
    other = raw(1).replace(b"Hello 1", b"Something else")
    second = e.ingest(other)
    assert not second.duplicate and second.interaction_id != first.interaction_id
    # The relay retries the second message: found by its key, not as the first one.
    again = engine(stores[1], attachments).ingest(other)
    assert again.duplicate and again.interaction_id == second.interaction_id
