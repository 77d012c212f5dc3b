"""The embedded default: no relay configured -> outgoing mail in a local Maildir."""

from __future__ import annotations

import mailbox
from email import message_from_bytes, policy
from pathlib import Path

from adapters.smtp import MaildirTransport, MailDispatcher
from interactions_core.testing import Harness

from .conftest import queued_reply


async def test_maildir_default_writes_a_parseable_file(tmp_path: Path, harness: Harness) -> None:
    entry = queued_reply(harness, send={"bccAddress": "boss@example.net"})
    transport = MaildirTransport(tmp_path / "outbox", harness.attachments)
    d = MailDispatcher(
        harness.store,
        transport,
        harness.clock,
        lambda e, r: harness.service.mail_failed(e.mail.interaction_id, r),
    )
    assert await d.drain_once() == 1
    assert d.stats.sent == 1
    assert harness.store.pending_mail(harness.clock.now()) == []
    assert harness.interaction(entry.mail.interaction_id).state == "Sent"

    files = list((tmp_path / "outbox" / "new").iterdir())
    assert len(files) == 1
    assert list((tmp_path / "outbox" / "tmp").iterdir()) == []  # written atomically
    data = files[0].read_bytes()
    assert b"\r\n" not in data  # LF, as Maildir readers expect
    msg = message_from_bytes(data, policy=policy.default)
    assert msg["Return-Path"] == "<support@example.com>"
    assert msg["Message-ID"] == entry.mail.message_id
    assert msg["Subject"] == "Re: Grüße aus Köln"
    assert msg["Bcc"] is None and b"boss@example.net" not in data
    assert [p.get_filename() for p in msg.iter_attachments()] == ["Rechnung März.pdf"]
    # And through the stdlib mailbox API, as a user would look at it.
    stored = list(mailbox.Maildir(tmp_path / "outbox", create=False))
    assert len(stored) == 1 and stored[0]["Message-ID"] == entry.mail.message_id
    await transport.close()
