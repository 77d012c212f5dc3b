"""The dispatcher's scheduling: wake-ups from other threads, parallel sends without doubles,
a stop that lets in-flight sends finish, and the per-mail deadline."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta

import pytest

from adapters.smtp import MailDispatcher, RelayConfig, SmtpTransport
from interactions_core.ports import MailEntry, TransientMailError
from interactions_core.testing import Harness

from .conftest import Sink, eventually, queued_reply


def transport_for(sink: Sink, **kw: object) -> SmtpTransport:
    return SmtpTransport(RelayConfig(host="127.0.0.1", port=sink.port, security="none", **kw))


def dispatcher(h: Harness, transport: SmtpTransport, poll: float = 60.0) -> MailDispatcher:
    return MailDispatcher(
        h.store,
        transport,
        h.clock,
        lambda e, r: h.service.mail_failed(e.mail.interaction_id, r),
        poll_interval=poll,
    )


async def test_wake_from_another_thread_sends_at_once(harness: Harness, sink: Sink) -> None:
    transport = transport_for(sink)
    d = dispatcher(harness, transport)  # the poll alone would take a minute
    await d.start()
    await eventually(lambda: d.stats.sent == 0 and not d._inflight)
    queued_reply(harness, attach=False)
    threading.Thread(target=d.wake).start()  # e.g. a commit in a worker thread
    await eventually(lambda: len(sink.received) == 1)
    await d.stop()
    await transport.close()
    assert d.stats.sent == 1


async def test_parallel_sends_never_duplicate_and_stop_finishes_them(
    harness: Harness, sink: Sink
) -> None:
    sink.handler.delay = 0.2
    entries = [queued_reply(harness, attach=False) for _ in range(6)]
    transport = transport_for(sink, pool_size=3)
    d = dispatcher(harness, transport, poll=0.01)
    await d.start()
    for _ in range(20):  # wake-ups and polls while the sends are in flight
        d.wake()
        await asyncio.sleep(0.005)
    await asyncio.to_thread(sink.handler.in_data.wait, 10)
    assert 1 <= len(d._inflight) <= 3
    await eventually(lambda: len(sink.received) >= 3)
    await d.stop()  # lets the sends in flight finish, starts no new one
    sent = len(sink.received)
    # Every mail the relay got was marked sent before stop() returned; the rest wait.
    assert len(harness.store.pending_mail(harness.clock.now())) == 6 - sent
    # A second run (a restart) sends whatever is left; nothing goes twice.
    d2 = dispatcher(harness, transport, poll=0.01)
    await d2.start()
    await eventually(lambda: len(sink.received) == 6)
    await d2.stop()
    await transport.close()
    ids = sorted(r.message["Message-ID"] for r in sink.received)
    assert ids == sorted(e.mail.message_id for e in entries)
    assert d.stats.sent + d2.stats.sent == 6


async def test_a_relay_that_does_not_answer_is_transient(harness: Harness, sink: Sink) -> None:
    sink.handler.delay = 2.0
    entry = queued_reply(harness, attach=False)
    transport = transport_for(sink, transaction_timeout=0.3)
    with pytest.raises(TransientMailError, match="no answer"):
        await transport.send(entry.mail)
    await transport.close()
    d = dispatcher(harness, transport_for(sink, transaction_timeout=0.3))
    await d.drain_once()
    pending = harness.store.pending_mail(harness.clock.now() + timedelta(hours=1))
    assert pending[0].attempts == 1 and "no answer" in (pending[0].last_error or "")


async def test_a_database_outage_is_one_warning_and_the_mail_still_goes(
    harness: Harness, sink: Sink, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """While the store is ``Unavailable`` (PostgreSQL lost), each poll fails: that is one
    warning when it starts and one when it ends, never a traceback per poll; then the queued
    mail is sent."""
    from interactions_core.errors import Unavailable

    real = harness.store.pending_mail
    failures = {"left": 5}

    def flaky(due_before: datetime, limit: int = 100) -> list[MailEntry]:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise Unavailable("PostgreSQL at db:5432/x is unavailable: connection refused")
        return real(due_before, limit)

    queued_reply(harness, attach=False)
    monkeypatch.setattr(harness.store, "pending_mail", flaky)
    d = dispatcher(harness, transport_for(sink), poll=0.01)
    with caplog.at_level("WARNING", logger="adapters.smtp.dispatcher"):
        await d.start()
        try:
            await eventually(lambda: len(sink.received) == 1)
        finally:
            await d.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "adapters.smtp.dispatcher"]
    assert failures["left"] == 0 and d.stats.errors == 5
    assert [m for m in messages if "retrying until the database is back" in m] == [
        "mail dispatcher: PostgreSQL at db:5432/x is unavailable: connection refused; "
        "retrying until the database is back"
    ]
    assert sum("the database is back" in m and "retrying" not in m for m in messages) == 1
    assert not any(r.exc_info for r in caplog.records)
