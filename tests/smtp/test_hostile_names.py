"""Hostile display names end to end (issue 12, item 7): a mail delivered over SMTP to the real
receiver and the real service, answered with ReplyAll, built by the real MIME builder and sent
through the real transport to a real aiosmtpd relay. The sender is kept, the name neutralised,
and what goes out holds no injected header line.
"""

from __future__ import annotations

import asyncio
import base64
import smtplib
from datetime import timedelta

import pytest

from adapters.smtp import (
    MailDispatcher,
    ReceiverConfig,
    RelayConfig,
    SmtpReceiver,
    SmtpTransport,
    build_message,
)
from interactions_core.ingest import Envelope
from interactions_core.model import Address
from interactions_core.outbox import RetryPolicy
from interactions_core.ports import MailEntry
from interactions_core.testing import Harness

from .conftest import Sink, eventually

NEUTRALISED = "Evil Bcc: x@evil.org"
ISSUE_NAME = "=?utf-8?q?Evil=0D=0ABcc=3A_x=40evil=2Eorg?="  # From: of the issue
# An encoded word inside an encoded word: decoded once on the way in, the stdlib's writer would
# decode the rest into two header lines when the reply is built.
NESTED_NAME = "=?utf-8?b?" + base64.b64encode(ISSUE_NAME.encode()).decode() + "?="

CASES = {
    "issue": (ISSUE_NAME, NEUTRALISED),
    "nested": (NESTED_NAME, "= ?" + ISSUE_NAME[2:]),
}
HEADER_FIELDS = [
    "Date",
    "From",
    "To",
    "Cc",
    "Subject",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
]
POLICY = RetryPolicy(
    first_delay=timedelta(seconds=5), max_delay=timedelta(minutes=1), max_age=timedelta(hours=1)
)


def hostile_mail(name: str) -> bytes:
    return (
        f"From: {name} <c@example.org>\r\n"
        "To: support@example.com\r\n"
        f"Cc: {name} <d@example.org>\r\n"
        "Subject: Help\r\n"
        "Message-ID: <hostile-smtp@example.org>\r\n"
        "Date: Mon, 05 Jan 2026 08:00:00 +0000\r\n"
        "\r\n"
        "It broke.\r\n"
    ).encode("ascii")


async def deliver(harness: Harness, raw: bytes) -> str:
    """``raw`` over SMTP to the real receiver, ingested into the harness; the interaction id."""
    ingested: list[str] = []

    def ingest(data: bytes, envelope: Envelope, mailbox: str) -> object:
        result = harness.ingest(data, envelope=envelope, mailbox=mailbox)
        ingested.append(result.interaction_id)
        return result

    config = ReceiverConfig(port=0, recipients={"support@example.com": "support@example.com"})
    receiver = SmtpReceiver(config, ingest)
    await receiver.start()

    def send() -> object:
        with smtplib.SMTP("127.0.0.1", receiver.port, timeout=30) as s:
            return s.sendmail("c@example.org", ["support@example.com"], raw)

    try:
        assert await asyncio.to_thread(send) == {}
    finally:
        await receiver.stop()
    assert len(ingested) == 1
    return ingested[0]


def header_fields(data: bytes) -> list[str]:
    """The field names of the header block, in order (continuation lines skipped)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [line.split(":", 1)[0] for line in head.split("\r\n") if line[:1] not in (" ", "\t")]


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
async def test_a_hostile_name_over_smtp_is_answered_without_an_injected_header(
    harness: Harness, sink: Sink, case: tuple[str, str]
) -> None:
    name, expected = case
    harness.set_channel("alice", "Ready")
    iid = await deliver(harness, hostile_mail(name))

    interaction = harness.interaction(iid)
    assert interaction.contact_id == "c@example.org"
    assert interaction.email.from_ == Address(addr="c@example.org", name=expected)
    assert interaction.email.cc == (Address(addr="d@example.org", name=expected),)
    problems = interaction.user_data["ParseProblems"]
    assert isinstance(problems, str)
    assert "From: the display name of c@example.org held line breaks" in problems
    assert "Cc: the display name of d@example.org held line breaks" in problems

    # Accept, ReplyAll, Send straight on the service: the mail stays in the outbox for the
    # real transport (the harness would hand it to its recording one).
    service = harness.service
    assert service.execute_wire("alice", iid, {"operationName": "Accept"}) == {"status": "ok"}
    draft = service.execute_wire("alice", iid, {"operationName": "ReplyAll"})
    rid = draft["replyInteractionId"]
    sent = service.execute_wire(
        "alice", rid, {"operationName": "Send", "email_object": {"text": "Fixed."}}
    )
    assert sent == {"status": "ok"}, sent
    [entry] = harness.store.pending_mail(harness.clock.now())
    assert entry.mail.to == (Address(addr="c@example.org", name=expected),)

    built = build_message(entry.mail, harness.attachments)
    assert header_fields(built.data) == HEADER_FIELDS
    assert b"\r\nBcc:" not in built.data.split(b"\r\n\r\n", 1)[0]
    assert built.recipients == ("c@example.org", "d@example.org")

    failures: list[str] = []

    def failed(failed_entry: MailEntry, reason: str) -> None:
        failures.append(reason)

    transport = SmtpTransport(
        RelayConfig(
            host="127.0.0.1", port=sink.port, security="none", local_hostname="client.test"
        ),
        harness.attachments,
    )
    dispatcher = MailDispatcher(
        harness.store, transport, harness.clock, failed, POLICY, poll_interval=0.05
    )
    await dispatcher.start()
    try:
        await eventually(lambda: len(sink.received) == 1)
    finally:
        await dispatcher.stop()
        await transport.close()
    assert failures == []
    got = sink.received[0]
    assert sorted(got.rcpt_tos) == ["c@example.org", "d@example.org"]
    assert header_fields(got.data) == HEADER_FIELDS
    msg = got.message
    assert msg["Bcc"] is None
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        (expected, "c@example.org")
    ]
    assert [(a.display_name, a.addr_spec) for a in msg["Cc"].addresses] == [
        (expected, "d@example.org")
    ]
