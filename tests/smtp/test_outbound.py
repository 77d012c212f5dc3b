"""Outbound: replies composed by the real core, sent through our transport and dispatcher to a
real aiosmtpd server, parsed back with the stdlib."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from adapters.smtp import MailDispatcher, RelayConfig, SmtpTransport
from adapters.smtp.mime import envelope_address
from interactions_core.outbox import RetryPolicy
from interactions_core.ports import MailEntry, PermanentMailError, TransientMailError
from interactions_core.testing import Harness

from .conftest import Sink, eventually, free_port, queued_reply

POLICY = RetryPolicy(
    first_delay=timedelta(seconds=5), max_delay=timedelta(minutes=1), max_age=timedelta(hours=1)
)


def relay(port: int, **kw: Any) -> RelayConfig:
    options: dict[str, Any] = {"security": "none", "local_hostname": "client.test"}
    options.update(kw)
    return RelayConfig(host="127.0.0.1", port=port, **options)


def dispatcher_for(
    h: Harness, transport: SmtpTransport, **kw: Any
) -> tuple[MailDispatcher, list[tuple[str, str]]]:
    failures: list[tuple[str, str]] = []

    def failed(entry: MailEntry, reason: str) -> None:
        failures.append((entry.mail.interaction_id, reason))
        h.service.mail_failed(entry.mail.interaction_id, reason)

    d = MailDispatcher(
        h.store, transport, h.clock, failed, POLICY, rng=lambda: 0.5, poll_interval=0.05, **kw
    )
    return d, failures


def done(h: Harness) -> bool:
    return not h.store.pending_mail(h.clock.now() + timedelta(days=30))


async def test_reply_is_received_exactly_as_composed(harness: Harness, sink: Sink) -> None:
    entry = queued_reply(
        harness,
        send={
            "bccAddress": "Boss <boss@example.net>",
            "ccAddress": "dora@bücher.de",
            "text": "Hallo Bob,\nwir prüfen das.\n",
            "structuredText": "<p>Hallo Bob, wir prüfen das.</p>",
        },
    )
    transport = SmtpTransport(relay(sink.port), harness.attachments)
    d, failures = dispatcher_for(harness, transport)
    await d.start()
    await eventually(lambda: len(sink.received) == 1 and done(harness))
    await d.stop()
    await transport.close()
    assert failures == []
    got = sink.received[0]

    # Envelope: To + Cc + Bcc, IDN domain as A-label; sender = the mailbox.
    assert got.mail_from == "support@example.com"
    assert sorted(got.rcpt_tos) == sorted(
        ["bob@example.org", "dora@xn--bcher-kva.de", "boss@example.net"]
    )
    assert b"boss@example.net" not in got.data  # Bcc: envelope only
    msg = got.message
    assert msg["Bcc"] is None
    assert msg["Auto-Submitted"] is None
    assert [a.addr_spec for a in msg["To"].addresses] == ["bob@example.org"]
    assert msg["To"].addresses[0].display_name == "Bob Müller"  # RFC 2047 round trip
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["dora@xn--bcher-kva.de"]
    assert msg["Subject"] == "Re: Grüße aus Köln"
    assert got.data.isascii()  # encoded-words in Subject / phrase, QP bodies: 7-bit clean
    assert "=?utf-8?" in got.data.decode().split("\r\n\r\n")[0]

    # Threading, fixed Message-ID.
    assert msg["Message-ID"] == entry.mail.message_id
    parent = entry.mail.in_reply_to
    assert parent is not None and parent.startswith("<orig-")
    assert msg["In-Reply-To"] == parent
    assert msg["References"].split() == ["<older-1@example.org>", parent]

    # Bodies: multipart/alternative inside multipart/mixed; the attachment with its name.
    assert msg.get_content_type() == "multipart/mixed"
    kinds = [part.get_content_type() for part in msg.walk()]
    assert kinds[:4] == ["multipart/mixed", "multipart/alternative", "text/plain", "text/html"]
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().replace("\r\n", "\n") == "Hallo Bob,\nwir prüfen das.\n"
    assert html.get_content().strip() == "<p>Hallo Bob, wir prüfen das.</p>"
    parts = list(msg.iter_attachments())
    assert len(parts) == 1
    assert parts[0].get_filename() == "Rechnung März.pdf"
    assert "filename*=utf-8''Rechnung%20M%C3%A4rz.pdf" in got.data.decode()
    assert parts[0].get_content() == harness.attachments.get(entry.mail.attachments[0].id)

    # The core: the outbound interaction is Sent, nothing failed.
    assert harness.interaction(entry.mail.interaction_id).state == "Sent"


async def test_relay_down_for_a_while_then_delivered_once(harness: Harness) -> None:
    sink = Sink()  # not started: the relay is down
    entry = queued_reply(harness, attach=False)
    transport = SmtpTransport(relay(sink.port, connect_timeout=2.0), harness.attachments)
    d, failures = dispatcher_for(harness, transport)
    await d.start()
    try:
        await eventually(lambda: d.stats.retried >= 1)
        await eventually(lambda: harness.store.pending_mail(harness.clock.now()) == [])
        pending = harness.store.pending_mail(harness.clock.now() + timedelta(hours=1))
        assert pending[0].attempts == 1
        assert "connect" in (pending[0].last_error or "")
        # Still down at the next attempt.
        harness.clock.advance(timedelta(seconds=5))
        d.wake()
        await eventually(lambda: d.stats.retried >= 2)
        # Back up: the next due attempt delivers it.
        sink.start()
        harness.clock.advance(timedelta(seconds=15))
        d.wake()
        await eventually(lambda: len(sink.received) == 1 and done(harness))
        # More polls and wake-ups send nothing more.
        harness.clock.advance(timedelta(minutes=10))
        d.wake()
        await asyncio.sleep(0.2)
    finally:
        await d.stop()
        await transport.close()
        sink.stop()
    assert len(sink.received) == 1
    assert sink.received[0].message["Message-ID"] == entry.mail.message_id
    assert failures == []
    assert d.stats.sent == 1


async def test_5xx_fails_and_notifies_the_agent(harness: Harness, sink: Sink) -> None:
    sink.handler.data_replies.append("554 5.7.1 Message rejected as spam")
    entry = queued_reply(harness, attach=False)
    transport = SmtpTransport(relay(sink.port), harness.attachments)
    d, failures = dispatcher_for(harness, transport)
    await d.start()
    await eventually(lambda: d.stats.failed == 1)
    await d.stop()
    await transport.close()
    assert sink.received == []
    assert done(harness)
    iid = entry.mail.interaction_id
    assert failures and failures[0][0] == iid
    assert "554 5.7.1" in failures[0][1]
    interaction = harness.interaction(iid)
    assert interaction.state == "Failed"
    assert interaction.owner == "alice"
    # The agent is told: a Failed notification for that interaction.
    harness.drain()
    last = harness.last_notification("alice")
    assert (last["id"], last["state"]) == (iid, "Failed")


async def test_4xx_then_success_is_delivered_once(harness: Harness, sink: Sink) -> None:
    sink.handler.data_replies.append("451 4.3.0 Try again later")
    queued_reply(harness, attach=False)
    transport = SmtpTransport(relay(sink.port), harness.attachments)
    d, failures = dispatcher_for(harness, transport)
    await d.start()
    await eventually(lambda: d.stats.retried == 1)
    assert sink.received == []
    harness.clock.advance(timedelta(seconds=10))
    d.wake()
    await eventually(lambda: len(sink.received) == 1 and done(harness))
    await d.stop()
    await transport.close()
    assert len(sink.received) == 1
    assert failures == []
    assert d.stats.sent == 1


async def test_transient_failures_give_up_after_max_age(harness: Harness) -> None:
    port = free_port()  # nothing listens here
    entry = queued_reply(harness, attach=False)
    transport = SmtpTransport(relay(port, connect_timeout=2.0), harness.attachments)
    d, failures = dispatcher_for(harness, transport)
    await d.drain_once()
    assert d.stats.retried == 1
    harness.clock.advance(timedelta(hours=2))  # older than max_age
    await d.drain_once()
    assert d.stats.failed == 1
    assert failures[0][0] == entry.mail.interaction_id
    assert "gave up after 2 attempts" in failures[0][1]
    assert harness.interaction(entry.mail.interaction_id).state == "Failed"
    await transport.close()


async def test_smtputf8_only_over_a_relay_that_offers_it(
    harness: Harness, sink: Sink, sink_ascii: Sink
) -> None:
    entry = queued_reply(harness, attach=False, send={"toAddress": "Jörg <jörg@bücher.de>"})
    mail = entry.mail

    # A relay without SMTPUTF8: a clear permanent failure, nothing sent.
    t_ascii = SmtpTransport(relay(sink_ascii.port))
    with pytest.raises(PermanentMailError, match="SMTPUTF8"):
        await t_ascii.send(mail)
    await t_ascii.close()
    assert sink_ascii.received == []

    # A relay with SMTPUTF8: raw UTF-8 local part, A-label domain, never an encoded-word.
    t_utf8 = SmtpTransport(relay(sink.port))
    report = await t_utf8.send(mail)
    await t_utf8.close()
    assert "jörg@xn--bcher-kva.de" in report.accepted
    got = sink.received[0]
    assert "SMTPUTF8" in got.mail_options
    assert "jörg@xn--bcher-kva.de" in got.rcpt_tos
    head = got.data.split(b"\r\n\r\n")[0]
    assert "jörg@xn--bcher-kva.de".encode() in head
    assert b"=?utf-8?q?j" not in head.lower()
    assert got.message["To"].addresses[0].username == "jörg"


async def test_header_injection_is_refused_permanently(harness: Harness, sink: Sink) -> None:
    entry = queued_reply(harness, attach=False)
    bad = entry.mail.model_copy(update={"subject": "Hi\r\nBcc: victim@example.net"})
    transport = SmtpTransport(relay(sink.port))
    with pytest.raises(PermanentMailError, match="line breaks and NUL are not allowed"):
        await transport.send(bad)
    name = entry.mail.to[0].model_copy(update={"name": "Bob\nX-Evil: 1"})
    with pytest.raises(PermanentMailError, match="line breaks and NUL are not allowed"):
        await transport.send(entry.mail.model_copy(update={"to": (name,)}))
    await transport.close()
    assert sink.received == []


async def test_partial_refusal_delivers_to_the_others_and_reports(
    harness: Harness, sink: Sink
) -> None:
    sink.handler.refuse_rcpt["boss@example.net"] = "550 5.1.1 No such user"
    queued_reply(harness, attach=False, send={"bccAddress": "boss@example.net"})
    transport = SmtpTransport(relay(sink.port))
    refused: list[dict[str, str]] = []
    d, failures = dispatcher_for(
        harness, transport, on_recipients_refused=lambda e, r: refused.append(dict(r))
    )
    await d.drain_once()
    await transport.close()
    assert len(sink.received) == 1
    assert "boss@example.net" not in sink.received[0].rcpt_tos
    assert refused == [{"boss@example.net": "550 5.1.1 No such user"}]
    assert failures == []
    assert done(harness)


async def test_every_recipient_refused(harness: Harness, sink: Sink) -> None:
    entry = queued_reply(harness, attach=False)
    # RCPT TO names each recipient as the wire has it (an IDN domain as A-labels).
    wire = [envelope_address(rcpt)[0] for rcpt in entry.mail.envelope_recipients]
    for rcpt in wire:
        sink.handler.refuse_rcpt[rcpt] = "550 5.1.1 No such user"
    transport = SmtpTransport(relay(sink.port))
    with pytest.raises(PermanentMailError, match="every recipient refused"):
        await transport.send(entry.mail)
    for rcpt in wire:
        sink.handler.refuse_rcpt[rcpt] = "450 4.2.1 Mailbox busy"
    with pytest.raises(TransientMailError, match="temporarily"):
        await transport.send(entry.mail)
    # The connection was reset (RSET) and is reused for the next good mail.
    sink.handler.refuse_rcpt.clear()
    await transport.send(entry.mail)
    await transport.close()
    assert len(sink.received) == 1
    assert sink.handler.sessions == 1


async def test_connections_are_reused_and_bounded(harness: Harness, sink: Sink) -> None:
    entry = queued_reply(harness, attach=False)
    mails = [
        entry.mail.model_copy(update={"message_id": f"<n{i}@interactions.localhost>"})
        for i in range(20)
    ]
    one = SmtpTransport(relay(sink.port, pool_size=1))
    for m in mails[:10]:
        await one.send(m)
    await one.close()
    assert sink.handler.sessions == 1

    four = SmtpTransport(relay(sink.port, pool_size=4))
    await asyncio.gather(*(four.send(m) for m in mails[10:]))
    await four.close()
    assert 2 <= sink.handler.sessions <= 5  # 1 before + at most 4 parallel
    ids = sorted(r.message["Message-ID"] for r in sink.received)
    assert ids == sorted(m.message_id for m in mails)


async def test_dropped_connection_is_replaced(harness: Harness, sink: Sink) -> None:
    entry = queued_reply(harness, attach=False)
    transport = SmtpTransport(relay(sink.port, pool_size=1))
    await transport.send(entry.mail)
    sink.stop()  # closes the idle connection on the server side
    sink.start()
    await transport.send(entry.mail.model_copy(update={"message_id": "<again@x.test>"}))
    await transport.close()
    assert len(sink.received) == 2


async def test_restart_resumes_unsent_mail(harness: Harness, sink: Sink) -> None:
    entries = [queued_reply(harness, attach=False) for _ in range(3)]
    pending = harness.store.pending_mail(harness.clock.now())
    assert len(pending) == 3
    # A first process stops before sending anything (no start): a second one sends it all.
    transport = SmtpTransport(relay(sink.port))
    d, failures = dispatcher_for(harness, transport)
    await d.start()
    await eventually(lambda: len(sink.received) == 3 and done(harness))
    await d.stop()
    await transport.close()
    ids = sorted(r.message["Message-ID"] for r in sink.received)
    assert ids == sorted(e.mail.message_id for e in entries)
    assert failures == []
