"""The INFO lines of mail in and out: the receiver names the sender, the mailbox and the
interaction (or why it refused), the dispatcher each attempt with the mail's Message-ID
(``mail sent``, ``mail retry``, ``mail failed``). Over real SMTP both ways: ``smtplib`` into
our receiver, our dispatcher to an aiosmtpd relay."""

from __future__ import annotations

import asyncio
import logging
import smtplib
from datetime import timedelta

import pytest

from adapters.smtp import MailDispatcher, ReceiverConfig, RelayConfig, SmtpReceiver, SmtpTransport
from interactions_core.outbox import RetryPolicy
from interactions_core.testing import Harness

from .conftest import Sink, eventually, queued_reply

MAIL = (
    b"From: Bob <bob@example.org>\r\n"
    b"To: support@example.com\r\n"
    b"Subject: Help\r\n"
    b"Message-ID: <log-1@example.org>\r\n"
    b"\r\n"
    b"It broke.\r\n"
)


def lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger]


async def test_mail_in_and_its_refusals(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    harness.set_channel("alice", "Ready")
    config = ReceiverConfig(
        port=0, recipients={"support@example.com": "support@example.com"}, max_message_size=4096
    )
    receiver = SmtpReceiver(
        config, lambda raw, env, box: harness.ingest(raw, envelope=env, mailbox=box)
    )
    await receiver.start()

    def deliver(data: bytes, rcpts: list[str]) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", receiver.port, timeout=30) as s:
            return s.sendmail("bob@example.org", rcpts, data)

    def deliver_unsized(data: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", receiver.port, timeout=30) as s:
            s.ehlo("client.test")
            s.mail("bob@example.org")
            s.rcpt("support@example.com")
            code, reply = s.data(data)
            raise smtplib.SMTPDataError(code, reply)

    caplog.set_level(logging.INFO, logger="adapters.smtp.receiver")
    try:
        refused = await asyncio.to_thread(
            deliver, MAIL, ["support@example.com", "nobody@example.com"]
        )
        assert list(refused) == ["nobody@example.com"]
        # Too big, without SIZE= on MAIL FROM (with it, aiosmtpd refuses before any data).
        with pytest.raises(smtplib.SMTPDataError):
            await asyncio.to_thread(deliver_unsized, MAIL + (b"x" * 70 + b"\r\n") * 120)
    finally:
        await receiver.stop()

    records = lines(caplog, "adapters.smtp.receiver")
    messages = [r.getMessage() for r in records if not r.getMessage().startswith("SMTP receiver")]
    stored = next(r for r in records if r.getMessage().startswith("mail in"))
    iid = stored.__dict__["interaction"]
    assert harness.interaction(iid).email.message_id == "<log-1@example.org>"
    assert stored.__dict__["mailbox"] == "support@example.com"
    assert messages == [
        "recipient refused: from=bob@example.org rcpt=nobody@example.com reason=unknown",
        f"mail in: from=bob@example.org mailbox=support@example.com interaction={iid} "
        f"message_id=<log-1@example.org> size={len(MAIL)}",
        'mail refused: from=bob@example.org reason="too large"',  # aiosmtpd's, before ours
    ]
    assert all(r.levelno == logging.INFO for r in records)


async def test_mail_out_retry_sent_and_failed_with_the_message_id(
    harness: Harness, sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    sink.handler.data_replies.extend(["451 4.3.0 Try again later"])
    first = queued_reply(harness, attach=False)
    transport = SmtpTransport(
        RelayConfig(host="127.0.0.1", port=sink.port, security="none"), harness.attachments
    )
    policy = RetryPolicy(first_delay=timedelta(seconds=5), max_age=timedelta(hours=1))
    d = MailDispatcher(
        harness.store,
        transport,
        harness.clock,
        lambda e, r: harness.service.mail_failed(e.mail.interaction_id, r),
        policy,
        rng=lambda: 0.5,
        poll_interval=0.05,
    )
    caplog.set_level(logging.INFO, logger="adapters.smtp.dispatcher")
    await d.start()
    try:
        await eventually(lambda: d.stats.retried == 1)
        harness.clock.advance(timedelta(seconds=10))
        d.wake()
        await eventually(lambda: d.stats.sent == 1)
        sink.handler.data_replies.append("554 5.7.1 Rejected as spam")
        second = queued_reply(harness, attach=False)
        d.wake()
        await eventually(lambda: d.stats.failed == 1)
    finally:
        await d.stop()
        await transport.close()

    records = lines(caplog, "adapters.smtp.dispatcher")
    got = [(r.levelname, r.getMessage().split(":")[0], r.__dict__) for r in records]
    assert [(level, what) for level, what, _ in got] == [
        ("INFO", "mail retry"),
        ("INFO", "mail sent"),
        ("WARNING", "mail failed"),
    ]
    retry, sent, failed = (fields for _, _, fields in got)
    assert retry["message_id"] == sent["message_id"] == first.mail.message_id
    assert (retry["attempt"], sent["attempt"]) == (1, 2)
    assert "451 4.3.0" in retry["reason"]
    assert sent["interaction"] == first.mail.interaction_id
    assert sent["recipients"] == len(first.mail.envelope_recipients)
    assert sent["response"].startswith("250")
    assert failed["message_id"] == second.mail.message_id and "554 5.7.1" in failed["reason"]
    assert f"message_id={first.mail.message_id}" in records[1].getMessage()
