"""MIME building rules that need no server: headers, encodings, refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest

from adapters.smtp import HeaderInjection, MimeError, build_message
from adapters.smtp.mime import to_a_label
from interactions_core.model import Address, Attachment
from interactions_core.ports import OutgoingMail

BASE = OutgoingMail(
    interaction_id="I1",
    mailbox="support@example.com",
    from_=Address(addr="support@example.com", name="Support Désk"),
    to=(Address(addr="bob@example.org", name="Bob, Jr."),),
    bcc=(Address(addr="hidden@example.net"),),
    subject="Re: Grüße",
    text="Hello",
    message_id="<m1@interactions.localhost>",
    date=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
)


def head(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def test_plain_ascii_reply() -> None:
    built = build_message(BASE)
    assert built.smtputf8 is False
    assert built.data.isascii()
    assert built.sender == "support@example.com"
    assert built.recipients == ("bob@example.org", "hidden@example.net")
    msg = message_from_bytes(built.data, policy=policy.default)
    assert msg["From"].addresses[0].display_name == "Support Désk"
    assert msg["To"].addresses[0].display_name == "Bob, Jr."
    assert msg["Subject"] == "Re: Grüße"
    assert msg["Bcc"] is None and b"hidden@" not in built.data
    assert msg["Auto-Submitted"] is None
    assert msg["Date"] == "Mon, 05 Jan 2026 09:00:00 +0000"
    assert msg.get_content_type() == "text/plain"
    assert b"\r\n" in built.data and b"\n" not in built.data.replace(b"\r\n", b"")


def test_idn_domain_becomes_a_label_everywhere() -> None:
    mail = BASE.model_copy(update={"to": (Address(addr="anna@bücher.de", name="Änna"),)})
    built = build_message(mail)
    assert built.smtputf8 is False
    assert "anna@xn--bcher-kva.de" in built.recipients
    assert b"<anna@xn--bcher-kva.de>" in head(built.data)
    assert to_a_label("Bücher.DE") == "xn--bcher-kva.de"
    assert to_a_label("Example.COM") == "example.com"


def test_non_ascii_local_part_uses_smtputf8_never_an_encoded_word() -> None:
    mail = BASE.model_copy(update={"to": (Address(addr="jörg@bücher.de", name="Jörg"),)})
    built = build_message(mail)
    assert built.smtputf8 is True
    assert "jörg@xn--bcher-kva.de" in built.recipients
    header = head(built.data)
    assert "jörg@xn--bcher-kva.de".encode() in header
    assert b"=?" not in header  # RFC 6532: raw UTF-8, no encoded-word anywhere
    assert "To: Jörg <jörg@xn--bcher-kva.de>".encode() in header


def test_duplicate_recipients_get_one_rcpt() -> None:
    mail = BASE.model_copy(
        update={"cc": (Address(addr="BOB@example.org"),), "bcc": (Address(addr="bob@example.org"),)}
    )
    assert build_message(mail).recipients == ("bob@example.org",)


@pytest.mark.parametrize(
    "update",
    [
        {"subject": "Hi\r\nBcc: victim@example.net"},
        {"subject": "Hi\nX-Evil: 1"},
        {"subject": "nul\x00byte"},
        {"to": (Address(addr="bob@example.org", name="Bob\r\nBcc: v@example.net"),)},
        {"from_": Address(addr="support@example.com", name="S\nX: y")},
        {"message_id": "<m1@x>\r\nBcc: v@example.net"},
        {"in_reply_to": "<a@b>\nX-Evil: 1"},
        {"references": ("<a@b>", "<c@d>\r\nX-Evil: 1")},
        {"to": (Address(addr="bob@example.org\r\nBcc: v@example.net"),)},
    ],
)
def test_header_injection_refused(update: dict[str, object]) -> None:
    with pytest.raises(HeaderInjection):
        build_message(BASE.model_copy(update=update))


def test_attachment_name_with_line_break_refused() -> None:
    att = Attachment(id="c", name="a\r\nb.pdf", size=1, mimetype="application/pdf")
    with pytest.raises(HeaderInjection):
        build_message(BASE.model_copy(update={"attachments": (att,)}), lambda _: b"x")


def test_attachments_rfc2231_names_and_safe_types() -> None:
    atts = (
        Attachment(id="a", name="Résumé été.pdf", size=3, mimetype="application/pdf"),
        Attachment(id="b", name="fwd.eml", size=3, mimetype="message/rfc822"),
        Attachment(id="c", name="weird", size=3, mimetype="not a type"),
    )
    blobs = {"a": b"%PDF", "b": b"Subject: x\r\n\r\nbody", "c": b"\x00\x01"}
    built = build_message(BASE.model_copy(update={"attachments": atts}), blobs.__getitem__)
    text = built.data.decode("ascii")
    assert "filename*=utf-8''R%C3%A9sum%C3%A9%20%C3%A9t%C3%A9.pdf" in text
    msg = message_from_bytes(built.data, policy=policy.default)
    parts = list(msg.iter_attachments())
    assert [p.get_filename() for p in parts] == ["Résumé été.pdf", "fwd.eml", "weird"]
    assert [p.get_content_type() for p in parts] == [
        "application/pdf",
        "application/octet-stream",
        "application/octet-stream",
    ]
    assert [p.get_content() for p in parts] == [blobs["a"], blobs["b"], blobs["c"]]
    assert text.count("MIME-Version") == 1


def test_missing_attachment_is_a_permanent_mime_error() -> None:
    att = Attachment(id="gone", name="x.pdf", size=1, mimetype="application/pdf")
    with pytest.raises(MimeError, match="missing"):
        build_message(BASE.model_copy(update={"attachments": (att,)}), {}.__getitem__)
    with pytest.raises(MimeError, match="no attachment store"):
        build_message(BASE.model_copy(update={"attachments": (att,)}))


def test_text_and_html_make_an_alternative() -> None:
    built = build_message(BASE.model_copy(update={"text": "Grüße", "html": "<b>Grüße</b>"}))
    assert built.data.isascii()  # quoted-printable bodies: no relay needs 8BITMIME
    msg = message_from_bytes(built.data, policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().strip() == "Grüße"
    assert html.get_content().strip() == "<b>Grüße</b>"


def test_malformed_threading_ids_are_dropped_not_sent() -> None:
    mail = BASE.model_copy(
        update={"in_reply_to": "not an id", "references": ("<ok@x>", "<bad id@x>", "<ö@x>")}
    )
    msg = message_from_bytes(build_message(mail).data, policy=policy.default)
    assert msg["In-Reply-To"] is None
    assert msg["References"] == "<ok@x>"


def test_threading_ids_without_at_sign_are_sent() -> None:
    """``<abc>`` is no RFC 5322 msg-id, but the parent's client threads on it: it is written."""
    mail = BASE.model_copy(update={"in_reply_to": "<abc>", "references": ("<root@x>", "<abc>")})
    built = build_message(mail)
    assert b"\r\nIn-Reply-To: <abc>\r\nReferences: <root@x> <abc>\r\n" in head(built.data)


def test_long_threading_ids_are_written_verbatim() -> None:
    """Python 3.11 folds In-Reply-To/References as unstructured text: an id longer than a line
    came out RFC 2047-encoded (``=?utf-8?q?=3CAM0PR...``), breaking the thread with Outlook."""
    long_id = (
        "<AM0PR01MB6571D2C8B0E4A1F2C3D4E5F6A7B8C9D0E1F2A3B4C5@"
        "AM0PR01MB6571.eurprd01.prod.exchangelabs.com>"
    )
    chain = (*(f"<r{i}@example.org>" for i in range(8)), long_id)
    built = build_message(BASE.model_copy(update={"in_reply_to": long_id, "references": chain}))
    block = head(built.data)
    assert f"\r\nIn-Reply-To: {long_id}\r\n".encode() in block
    assert f"\r\n {long_id}\r\n".encode() in block  # References: folded before it, not inside
    assert all(len(line) <= 78 or long_id.encode() in line for line in block.split(b"\r\n"))
    msg = message_from_bytes(built.data, policy=policy.default)
    assert str(msg["In-Reply-To"]) == long_id
    assert str(msg["References"]).split() == list(chain)


def test_a_reply_all_to_an_id_without_at_sign_is_threaded_on_the_wire() -> None:
    from interactions_core.ports import Agent
    from interactions_core.testing import Harness

    h = Harness(agents=[Agent(id="alice", mailboxes=("support@example.com",))])
    raw = (
        b"From: Jane <jane@example.org>\r\nTo: support@example.com, bob@example.org\r\n"
        b"Subject: hi\r\nMessage-ID: <abc>\r\nReferences: <root@example.org>\r\n\r\nHello\r\n"
    )
    result = h.service.ingest(raw, mailbox="support@example.com")
    assert any("Message-ID <abc> is not an RFC 5322 msg-id" in p for p in result.problems)
    iid = result.interaction_id
    assert iid is not None
    h.service.offer(iid, "alice")
    assert h.service.execute_wire("alice", iid, {"operationName": "Accept"})["status"] == "ok"
    reply = h.service.execute_wire("alice", iid, {"operationName": "ReplyAll"})
    draft = reply["replyInteractionId"]
    assert h.service.execute_wire("alice", draft, {"operationName": "Send"})["status"] == "ok"
    (entry,) = h.store.pending_mail(h.clock.now())
    msg = message_from_bytes(build_message(entry.mail).data, policy=policy.default)
    assert msg["In-Reply-To"] == "<abc>"
    assert str(msg["References"]).split() == ["<root@example.org>", "<abc>"]


def test_invalid_message_id_refused() -> None:
    with pytest.raises(MimeError):
        build_message(BASE.model_copy(update={"message_id": "no-brackets@x"}))


def test_no_recipient_refused() -> None:
    with pytest.raises(MimeError, match="no recipient"):
        build_message(BASE.model_copy(update={"to": (), "bcc": ()}))


def test_inline_images_go_beside_the_html_in_multipart_related() -> None:
    logo = Attachment(id="l", name="logo.png", size=3, mimetype="image/png", content_id="logo@x")
    bad = Attachment(id="b", name="b.png", size=3, mimetype="image/png", content_id="a b")
    unused = Attachment(id="u", name="u.png", size=3, mimetype="image/png", content_id="u@x")
    blobs = {"l": b"PNG", "b": b"BAD", "u": b"UNU"}
    html = '<p><img src="cid:logo@x"><img src="cid:a b"></p>'
    mail = BASE.model_copy(update={"text": "", "html": html, "attachments": (logo, bad, unused)})
    msg = message_from_bytes(build_message(mail, blobs.__getitem__).data, policy=policy.default)
    # HTML only: the related part is the body; the rest are ordinary attachments.
    assert msg.get_content_type() == "multipart/mixed"
    related = msg.get_payload()[0]
    assert related.get_content_type() == "multipart/related"
    assert related.get_param("type") == "text/html"
    root, image = related.get_payload()
    assert root.get_content_type() == "text/html"
    assert (image["Content-ID"], image.get_content_disposition()) == ("<logo@x>", "inline")
    assert image.get_content() == b"PNG"
    # A Content-ID that cannot be written ("a b") and an unreferenced one are attachments.
    assert [p.get_filename() for p in msg.iter_attachments()] == ["b.png", "u.png"]
    assert b"<a b>" not in build_message(mail, blobs.__getitem__).data


@pytest.mark.parametrize("brk", ["\u2028", "\x85", "\x0b", "\x1c"])
def test_unicode_line_breaks_in_a_header_are_a_permanent_error(brk: str) -> None:
    with pytest.raises(HeaderInjection):
        build_message(BASE.model_copy(update={"subject": f"a{brk}b"}))


def test_a_reply_to_a_quoted_local_part_is_written_and_addressed_quoted() -> None:
    from interactions_core.ports import Agent
    from interactions_core.testing import Harness

    h = Harness(agents=[Agent(id="alice", mailboxes=("support@example.com",))])
    raw = (
        b'From: "john doe"@example.org\r\nTo: support@example.com\r\nSubject: hi\r\n'
        b"Message-ID: <q@example.org>\r\n\r\nHello\r\n"
    )
    iid = h.service.ingest(raw, mailbox="support@example.com").interaction_id
    assert iid is not None
    h.service.offer(iid, "alice")
    assert h.service.execute_wire("alice", iid, {"operationName": "Accept"})["status"] == "ok"
    draft = h.service.execute_wire("alice", iid, {"operationName": "Reply"})["replyInteractionId"]
    assert h.service.execute_wire("alice", draft, {"operationName": "Send"})["status"] == "ok"
    (entry,) = h.store.pending_mail(h.clock.now())
    built = build_message(entry.mail)
    assert built.recipients == ('"john doe"@example.org',)
    msg = message_from_bytes(built.data, policy=policy.default)
    assert [a.addr_spec for a in msg["To"].addresses] == ['"john doe"@example.org']
