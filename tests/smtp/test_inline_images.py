"""Inline images end to end: an HTML mail with ``cid:`` images comes in over SMTP, the agent
replies with the quote (and forwards), and what reaches a real relay still shows the images:
RFC 2392 ``cid:`` URLs, RFC 2387 ``multipart/related``."""

from __future__ import annotations

import asyncio
import smtplib
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from typing import Any

from adapters.smtp import MailDispatcher, ReceiverConfig, RelayConfig, SmtpReceiver, SmtpTransport
from interactions_core.outbox import RetryPolicy
from interactions_core.testing import Harness

from .conftest import Sink, eventually

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
PDF = b"%PDF-1.4 invoice"


def outlook_style_mail() -> bytes:
    """multipart/mixed [ multipart/alternative [ text, multipart/related [ html, image ] ], pdf ]"""
    msg = EmailMessage()
    msg["From"] = "Cee Customer <cee@example.org>"
    msg["To"] = "support@example.com"
    msg["Subject"] = "Broken screen"
    msg["Message-ID"] = "<inline-1@example.org>"
    msg.set_content("See the photo.\n")
    msg.add_alternative('<p>See the photo:</p><img src="cid:photo.1@example.org">', subtype="html")
    html = msg.get_body(("html",))
    assert isinstance(html, EmailMessage)
    html.add_related(PNG, "image", "png", cid="<photo.1@example.org>", filename="photo.png")
    msg.add_attachment(PDF, "application", "pdf", filename="invoice.pdf")
    return msg.as_bytes(policy=policy.SMTP)  # CRLF: smtplib sends bytes as they are


def deliver(port: int, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("cee@example.org", ["support@example.com"], raw)


async def send_all(h: Harness, sink: Sink, count: int) -> list[EmailMessage]:
    relay = RelayConfig(host="127.0.0.1", port=sink.port, security="none")
    transport = SmtpTransport(relay, h.attachments)
    policy = RetryPolicy(first_delay=timedelta(seconds=1), max_age=timedelta(hours=1))

    def failed(entry: Any, reason: str) -> None:
        raise AssertionError(reason)

    dispatcher = MailDispatcher(h.store, transport, h.clock, failed, policy, poll_interval=0.05)
    await dispatcher.start()
    await eventually(lambda: len(sink.received) == count)
    await dispatcher.stop()
    await transport.close()
    return [got.message for got in sink.received]


def parts_of_type(msg: EmailMessage, content_type: str) -> list[EmailMessage]:
    return [
        p
        for p in msg.walk()
        if isinstance(p, EmailMessage) and p.get_content_type() == content_type
    ]


async def test_inline_images_survive_ingest_reply_and_forward(harness: Harness, sink: Sink) -> None:
    h = harness
    h.set_channel("alice", "Ready")
    config = ReceiverConfig(port=0, recipients={"support@example.com": "support@example.com"})
    receiver = SmtpReceiver(config, lambda raw, env, box: h.ingest(raw, envelope=env, mailbox=box))
    await receiver.start()
    try:
        await asyncio.to_thread(deliver, receiver.port, outlook_style_mail())
    finally:
        await receiver.stop()

    # Ingested: the image keeps its Content-ID (without brackets), the PDF has none; the agent
    # sees both on the wire, contentId only where there is one.
    offered = h.last_notification("alice")
    iid = offered["id"]
    photo, invoice = h.interaction(iid).email.attachments
    assert (photo.name, photo.content_id) == ("photo.png", "photo.1@example.org")
    assert (invoice.name, invoice.content_id) == ("invoice.pdf", None)
    wire = offered["email_object"]["attachments"]
    assert wire[0]["contentId"] == "photo.1@example.org" and "contentId" not in wire[1]
    assert h.attachments.get(photo.id) == PNG

    # Reply with the quote: the inline image travels, the PDF does not.
    assert h.execute("alice", iid, {"operationName": "Accept"}) == {"status": "ok"}
    reply = h.execute("alice", iid, {"operationName": "ReplyAll"})["replyInteractionId"]
    assert [a.id for a in h.interaction(reply).email.attachments] == [photo.id]
    assert h.service.execute_wire("alice", reply, {"operationName": "Send"}) == {"status": "ok"}
    # (execute_wire: the harness's own recording transport must not take the mail first)
    forward = h.service.execute_wire(
        "alice", iid, {"operationName": "Forward", "toAddress": "repair@partner.example"}
    )["replyInteractionId"]
    assert h.service.execute_wire("alice", forward, {"operationName": "Send"}) == {"status": "ok"}

    sent = {msg["Subject"]: msg for msg in await send_all(h, sink, 2)}
    replied, forwarded = sent["Re: Broken screen"], sent["Fwd: Broken screen"]
    for msg in (replied, forwarded):
        html = msg.get_body(("html",))
        assert html is not None and 'src="cid:photo.1@example.org"' in html.get_content()
        related = parts_of_type(msg, "multipart/related")
        assert len(related) == 1 and related[0].get_param("type") == "text/html"
        (image,) = parts_of_type(related[0], "image/png")
        assert image["Content-ID"] == "<photo.1@example.org>"
        assert image.get_content_disposition() == "inline"
        assert image.get_content() == PNG
    assert [p.get_filename() for p in replied.iter_attachments()] == []
    assert [p.get_filename() for p in forwarded.iter_attachments()] == ["invoice.pdf"]
