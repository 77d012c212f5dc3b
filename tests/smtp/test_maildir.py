"""The embedded default: no relay configured -> outgoing mail in a local Maildir."""

from __future__ import annotations

import json
import mailbox
import os
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from adapters.smtp import MaildirTransport, MailDispatcher
from adapters.smtp.maildir import read_envelope
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


async def test_the_envelope_sidecar_names_every_recipient_bcc_included(
    tmp_path: Path, harness: Harness
) -> None:
    """As an MTA's local delivery keeps the envelope: a consumer delivering the outbox on
    finds the sender and all recipients, the Bcc ones (in no header) included, beside each
    message, written before the message reached ``new/``."""
    entry = queued_reply(
        harness,
        send={
            "toAddress": "Bob <bob@example.org>",
            "ccAddress": ["carol@bücher.de", "Dan <dan@example.org>"],
            "bccAddress": ["Boss <boss@example.net>", "audit@example.net"],
        },
        attach=False,
    )
    outbox = tmp_path / "outbox"
    transport = MaildirTransport(outbox, harness.attachments)
    d = MailDispatcher(
        harness.store,
        transport,
        harness.clock,
        lambda e, r: harness.service.mail_failed(e.mail.interaction_id, r),
    )
    assert await d.drain_once() == 1
    await transport.close()

    (message,) = (outbox / "new").iterdir()
    (sidecar,) = (outbox / "envelope").iterdir()
    assert sidecar.name == message.name + ".json"
    assert list((outbox / "tmp").iterdir()) == []
    envelope = json.loads(sidecar.read_text(encoding="utf-8"))
    assert envelope == {
        "version": 1,
        "mail_from": "support@example.com",
        "rcpt_to": [
            "bob@example.org",
            "carol@xn--bcher-kva.de",
            "dan@example.org",
            "boss@example.net",
            "audit@example.net",
        ],
        "message_id": entry.mail.message_id,
        "smtputf8": False,
    }
    data = message.read_bytes()
    assert b"boss@example.net" not in data and b"audit@example.net" not in data
    headers = message_from_bytes(data, policy=policy.default)
    assert headers["Return-Path"] == "<support@example.com>"
    assert headers["Bcc"] is None and headers["Delivered-To"] is None

    # Only new/ and cur/ hold messages: no Maildir reader takes the sidecar for one.
    box = mailbox.Maildir(outbox, factory=None, create=False)
    (key,) = box.keys()
    assert read_envelope(outbox, key) == envelope
    # A reader that marks the message seen (cur/<key>:2,S) still finds it by the same key.
    seen = box.get_message(key)
    seen.set_subdir("cur")
    seen.add_flag("S")
    box[key] = seen
    (moved,) = (outbox / "cur").iterdir()
    assert moved.name.endswith(":2,S") and read_envelope(outbox, moved.name) == envelope


async def test_a_failed_write_leaves_no_envelope_and_no_message(
    tmp_path: Path, harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message's move into new/ fails (a full disk, say): neither file is left, and the
    mail is retried."""
    queued_reply(harness, attach=False)
    outbox = tmp_path / "outbox"
    transport = MaildirTransport(outbox, harness.attachments)
    real_rename = os.rename

    def rename(source: Any, target: Any) -> None:
        if Path(target).parent.name == "new":
            raise OSError(28, "No space left on device")
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", rename)
    d = MailDispatcher(
        harness.store,
        transport,
        harness.clock,
        lambda e, r: harness.service.mail_failed(e.mail.interaction_id, r),
    )
    assert await d.drain_once() == 1
    assert d.stats.retried == 1 and d.stats.sent == 0
    for folder in ("new", "tmp", "envelope"):
        assert list((outbox / folder).iterdir()) == [], folder
