"""parse_message feature by feature, is_automatic rule by rule, html_to_text and unflow."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from interactions_core.ingest import (
    Envelope,
    IngestLimits,
    MessageRefused,
    html_to_text,
    is_automatic,
    parse_message,
    unflow,
)
from interactions_core.model import Address
from interactions_core.rfc5322 import MAX_REFERENCES
from interactions_core.testing import InMemoryAttachmentStore

HEAD = (
    "From: Customer <customer@example.org>\r\n"
    "To: support@example.com\r\n"
    "Subject: Help\r\n"
    "Date: Mon, 05 Jan 2026 10:00:00 +0000\r\n"
    "Message-ID: <m1@example.org>\r\n"
)


def mail(extra_headers: str = "", body: str = "Hello.\r\n", head: str = HEAD) -> bytes:
    return (head + extra_headers + "\r\n" + body).encode("utf-8")


def parse(raw: bytes, **kwargs: object):
    return parse_message(raw, attachments=kwargs.pop("store", InMemoryAttachmentStore()), **kwargs)


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Plain", "Plain"),
        ("=?utf-8?q?caf=C3=A9?=", "café"),
        ("=?UTF-8?B?R3LDvMOfZQ==?= und mehr", "Grüße und mehr"),
        ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # RFC 2047 §6.2: space between words dropped
        ("=?iso-8859-1?q?r=E9sum=E9?=", "résumé"),
        ("=?utf-8?B?4oKs?= =?utf-8?B?IDEw?=", "€ 10"),
        ("Re: =?utf-8?q?=E2=9C=93?= done", "Re: ✓ done"),
    ],
)
def test_subject_rfc2047(subject: str, expected: str) -> None:
    head = HEAD.replace("Subject: Help", f"Subject: {subject}")
    assert parse(mail(head=head)).email.subject == expected


def test_addresses_and_reply_headers() -> None:
    raw = mail(
        "Cc: =?utf-8?q?J=C3=B6rg?= <j@example.de>, x@example.net\r\n"
        "Reply-To: Replies <replies@example.org>\r\n"
        "Mail-Reply-To: personal@example.org\r\n"
        "Mail-Followup-To: list@example.org, customer@example.org\r\n"
    )
    e = parse(raw).email
    assert e.from_ == Address(addr="customer@example.org", name="Customer")
    assert e.to == (Address(addr="support@example.com"),)
    assert e.cc == (Address(addr="j@example.de", name="Jörg"), Address(addr="x@example.net"))
    assert e.reply_to == (Address(addr="replies@example.org", name="Replies"),)
    assert e.mail_reply_to == (Address(addr="personal@example.org"),)
    assert [a.addr for a in e.mail_followup_to] == ["list@example.org", "customer@example.org"]


def test_addresses_are_kept_only_when_a_reply_could_be_written_to_them() -> None:
    """A quoted local part stays quoted (the stdlib hands it back bare); addresses no reply
    could ever reach are dropped and noted; domains are normalised like input ones."""
    head = HEAD.replace("From: Customer <customer@example.org>", 'From: "john doe"@Example.ORG')
    raw = (
        head
        + "Cc: a:b c@d <r@example.org>;, ok@EXAMPLE.net, x <@@>, u@xn--bcher-kva.de\r\n"
        + "\r\nHi\r\n"
    ).encode()
    result = parse(raw)
    assert result.email.from_ == Address(addr='"john doe"@example.org')
    assert [a.addr for a in result.email.cc] == ["ok@example.net", "u@bücher.de"]
    assert any("Cc: " in p and "malformed address(es) dropped" in p for p in result.problems)


def test_a_domain_decoded_into_mojibake_is_dropped_not_kept() -> None:
    # One invalid UTF-8 sequence makes the whole raw header read as windows-1252.
    raw = (
        b'From: "\xed\xa0\x80" <a@\xe4\xbe\x8b\xe3\x81\x88.jp>\r\nTo: support@example.com\r\n'
        b"Subject: x\r\n\r\nHi\r\n"
    )
    result = parse(raw)
    assert result.email.from_ is None
    assert any("From: 1 malformed address(es) dropped" in p for p in result.problems)


@pytest.mark.parametrize(
    ("headers", "message_id", "in_reply_to", "references"),
    [
        ("", "<m1@example.org>", None, ()),
        (
            "In-Reply-To: <p@x>\r\nReferences: <r@x> <p@x>\r\n",
            "<m1@example.org>",
            "<p@x>",
            ("<r@x>", "<p@x>"),
        ),
        (  # RFC 5322 App. B: phrases of old mail dropped
            'In-Reply-To: "Your message of Monday" <p@x>\r\nReferences: junk <r@x>\r\n',
            "<m1@example.org>",
            "<p@x>",
            ("<r@x>",),
        ),
        ("In-Reply-To: <a@x> <b@x>\r\n", "<m1@example.org>", "<a@x>", ()),
        ("References:\r\n <r1@x>\r\n\t<r2@x>\r\n", "<m1@example.org>", None, ("<r1@x>", "<r2@x>")),
        (  # ids without "@" are kept (and noted): the sender's client threads on them
            "In-Reply-To: <p>\r\nReferences: <r@x> <p>\r\n",
            "<m1@example.org>",
            "<p>",
            ("<r@x>", "<p>"),
        ),
        ("References: <bad id@x> <ok@x> <\x01@x>\r\n", "<m1@example.org>", None, ("<ok@x>",)),
    ],
)
def test_threading_ids(
    headers: str, message_id: str, in_reply_to: str | None, references: tuple[str, ...]
) -> None:
    e = parse(mail(headers)).email
    assert (e.message_id, e.in_reply_to, e.references) == (message_id, in_reply_to, references)


@pytest.mark.parametrize(
    ("value", "message_id", "notes"),
    [
        ("<m1@example.org>", "<m1@example.org>", ()),
        ("<abc>", "<abc>", ("Message-ID <abc> is not an RFC 5322 msg-id (<left@right>): kept",)),
        ("<a..b@x>", "<a..b@x>", ("Message-ID <a..b@x> is not an RFC 5322 msg-id",)),
        ("bare@x", "<bare@x>", ("Message-ID without angle brackets",)),
        ("abc", None, ("unusable Message-ID",)),
        ("<a b@x>", None, ("unusable Message-ID",)),
    ],
)
def test_message_id_rule(value: str, message_id: str | None, notes: tuple[str, ...]) -> None:
    result = parse(mail(head=HEAD.replace("<m1@example.org>", value)))
    assert result.email.message_id == message_id
    for note in notes:
        assert any(p.startswith(note) for p in result.problems), result.problems
    if not notes:
        assert result.problems == ()


def test_references_bound_keeps_the_first_and_the_newest() -> None:
    ids = [f"<r{i}@x>" for i in range(30)]
    result = parse(mail("References: " + " ".join(ids) + "\r\n"))
    assert result.email.references == (ids[0], *ids[-(MAX_REFERENCES - 1) :])
    assert "References holds 30 ids: the first and the newest kept" in result.problems


def test_an_id_without_at_sign_is_used_for_duplicate_detection() -> None:
    from interactions_core.ports import Agent
    from interactions_core.testing import Harness

    h = Harness(agents=[Agent(id="alice", mailboxes=("support@example.com",))])
    raw = mail(head=HEAD.replace("<m1@example.org>", "<abc>"))
    first = h.service.ingest(raw, mailbox="support@example.com")
    again = h.service.ingest(b"Received: from relay2\r\n" + raw, mailbox="support@example.com")
    assert again.duplicate and again.interaction_id == first.interaction_id


def test_date() -> None:
    assert parse(mail()).email.date == datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    head = HEAD.replace("+0000", "-0000")
    assert parse(mail(head=head)).email.date == datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def test_missing_headers_kept_none() -> None:
    result = parse(b"X-Nothing: 1\r\n\r\nbody\r\n")
    e = result.email
    assert (e.from_, e.date, e.message_id, e.subject) == (None, None, None, "")
    assert {"missing From", "missing Date", "missing Message-ID"} <= set(result.problems)
    assert result.user_data["ParseProblems"] == "; ".join(result.problems)


def test_duplicate_header_noted_first_kept() -> None:
    result = parse(mail("From: Other <other@example.org>\r\n"))
    assert result.email.from_ is not None and result.email.from_.addr == "customer@example.org"
    assert "duplicate From header (2): the first is used" in result.problems


# --------------------------------------------------------------------------- bodies


def build(*, text: str | None = None, html: str | None = None) -> EmailMessage:
    m = EmailMessage()
    m["From"] = "c@example.org"
    m["To"] = "support@example.com"
    m["Subject"] = "x"
    m["Date"] = "Mon, 05 Jan 2026 10:00:00 +0000"
    m["Message-ID"] = "<b@example.org>"
    if text is not None:
        m.set_content(text)
        if html is not None:
            m.add_alternative(html, subtype="html")
    elif html is not None:
        m.set_content(html, subtype="html")
    return m


def test_alternative_text_and_html() -> None:
    e = parse(build(text="plain body\n", html="<p>html body</p>\n").as_bytes()).email
    assert e.text == "plain body\n"
    assert e.html == "<p>html body</p>\n"
    assert (e.text_mime_type, e.html_mime_type) == ("text/plain", "text/html")


def test_alternative_prefers_the_last_of_each_type() -> None:
    raw = mail(
        'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="a"\r\n',
        "--a\r\nContent-Type: text/plain\r\n\r\nfirst\r\n"
        "--a\r\nContent-Type: text/html\r\n\r\n<p>first</p>\r\n"
        "--a\r\nContent-Type: text/plain\r\n\r\nsecond\r\n"
        "--a\r\nContent-Type: text/html\r\n\r\n<p>second</p>\r\n--a--\r\n",
    )
    e = parse(raw).email
    assert (e.text, e.html) == ("second", "<p>second</p>")


def test_html_only_gets_a_derived_text() -> None:
    html = (
        "<html><body><h1>Title</h1><p>One&nbsp;&amp; two<br>three</p>"
        "<script>x()</script></body></html>"
    )
    e = parse(build(html=html).as_bytes()).email
    assert e.html.startswith("<html>")
    assert e.text == "Title\n\nOne & two\nthree"


@pytest.mark.parametrize(
    ("params", "body", "expected"),
    [
        ("format=flowed", "one \r\ntwo\r\n", "one two\n"),
        ("format=flowed; delsp=yes", "one\xa0 \r\ntwo\r\n", "one\xa0two\n"),
        ("format=flowed", "> quoted \r\n> more\r\nreply\r\n", "> quoted more\nreply\n"),
        ("format=flowed", " From stuffed\r\n", "From stuffed\n"),
        ("format=flowed", "-- \r\nsig\r\n", "-- \nsig\n"),
        ("format=fixed", "one \r\ntwo\r\n", "one \ntwo\n"),
    ],
)
def test_format_flowed(params: str, body: str, expected: str) -> None:
    raw = mail(f"Content-Type: text/plain; charset=utf-8; {params}\r\n", body)
    assert parse(raw).email.text == expected


def test_text_truncated_and_noted() -> None:
    result = parse(mail(body="x" * 1000), limits=IngestLimits(max_text_chars=100))
    assert len(result.email.text) == 100
    assert "Text over 100 characters: truncated" in result.problems


# --------------------------------------------------------------------------- attachments


def test_attachments_stored_through_the_port() -> None:
    m = build(text="see attached\n")
    m.add_attachment(b"%PDF-1.4 one", maintype="application", subtype="pdf", filename="a.pdf")
    m.add_attachment(b"\x89PNG two", maintype="image", subtype="png", filename="Résumé.png")
    inner = build(text="forwarded\n")
    m.add_attachment(inner)
    store = InMemoryAttachmentStore()
    e = parse(m.as_bytes(), store=store).email
    assert [(a.name, a.mimetype) for a in e.attachments] == [
        ("a.pdf", "application/pdf"),
        ("Résumé.png", "image/png"),
        ("attachment-3.eml", "message/rfc822"),
    ]
    assert store.get(e.attachments[0].id) == b"%PDF-1.4 one"
    assert e.attachments[0].size == len(b"%PDF-1.4 one")
    forwarded = message_from_bytes(store.get(e.attachments[2].id), policy=policy.default)
    assert forwarded["Message-ID"] == "<b@example.org>"
    assert e.text == "see attached\n"


@pytest.mark.parametrize(
    ("disposition", "name"),
    [
        ("attachment; filename*=utf-8''R%C3%A9sum%C3%A9.pdf", "Résumé.pdf"),
        ("attachment; filename*0*=utf-8''R%C3%A9; filename*1=sum.pdf", "Résum.pdf"),
        ("attachment; filename*=iso-8859-1'fr'caf%E9.txt", "café.txt"),
        ('attachment; filename="=?utf-8?q?na=C3=AFve?=.txt"', "naïve.txt"),
        ('attachment; filename="C:\\\\Users\\\\x\\\\evil.exe"', "evil.exe"),
        ('attachment; filename="../../.."', "attachment-1.bin"),
        ("attachment", "attachment-1.bin"),
        # rfc5322.safe_filename: at most 255 UTF-8 octets, the extension kept
        ('attachment; filename="' + "a" * 300 + '.pdf"', "a" * 251 + ".pdf"),
    ],
)
def test_rfc2231_and_safe_filenames(disposition: str, name: str) -> None:
    raw = mail(
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n',
        "--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
        f"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: {disposition}\r\n"
        "\r\ndata\r\n--b--\r\n",
    )
    e = parse(raw).email
    assert [a.name for a in e.attachments] == [name]


def test_inline_image_with_content_id_is_an_attachment() -> None:
    m = build(text="t\n", html='<p><img src="cid:logo"></p>')
    html_part = m.get_payload()[1]
    html_part.add_related(b"\x89PNG", maintype="image", subtype="png", cid="<logo>")
    e = parse(m.as_bytes()).email
    assert [a.mimetype for a in e.attachments] == ["image/png"]
    assert [a.content_id for a in e.attachments] == ["logo"]  # RFC 2392: without the brackets
    assert e.html.startswith("<p><img")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("<part1.A9@example.org>", "part1.A9@example.org"),
        ("part1.A9@example.org", "part1.A9@example.org"),  # bare, as some senders write it
        ("  < image001.png@01D9 >  ", "image001.png@01D9"),
        ("<two words@x>", None),  # not one token: no usable Content-ID
        ("<a<b@x>", None),
        ("<" + "x" * 300 + ">", None),
        ("<ünï@x>", None),
    ],
)
def test_content_id_kept_when_it_is_one_visible_token(header: str, expected: str | None) -> None:
    raw = mail(
        'Content-Type: multipart/mixed; boundary="b"\r\nMIME-Version: 1.0\r\n',
        "--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        f"--b\r\nContent-Type: image/png\r\nContent-ID: {header}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\niVBORw==\r\n--b--\r\n",
    )
    (image,) = parse(raw).email.attachments
    assert image.content_id == expected


def test_a_content_id_used_twice_stays_on_the_first_part() -> None:
    m = build(text="t\n", html='<img src="cid:x">')
    html_part = m.get_payload()[1]
    html_part.add_related(b"one", maintype="image", subtype="png", cid="<x>")
    html_part.add_related(b"two", maintype="image", subtype="png", cid="<x>")
    result = parse(m.as_bytes())
    assert [a.content_id for a in result.email.attachments] == ["x", None]
    assert any("Content-ID <x> used by two parts" in p for p in result.problems)


def test_store_size_error_is_noted() -> None:
    m = build(text="t\n")
    m.add_attachment(b"x" * 100, maintype="application", subtype="zip", filename="big.zip")
    result = parse(m.as_bytes(), store=InMemoryAttachmentStore(max_size=10))
    assert result.email.attachments == ()
    assert any(p.startswith("attachment 'big.zip' not stored") for p in result.problems)


def test_attachment_limit() -> None:
    m = build(text="t\n")
    for i in range(5):
        m.add_attachment(b"%d" % i, maintype="application", subtype="octet-stream")
    result = parse(m.as_bytes(), limits=IngestLimits(max_attachments=2))
    assert len(result.email.attachments) == 2
    assert "too many attachments: kept 2 of 5" in result.problems


# --------------------------------------------------------------------------- refusals


def test_size_refused_before_parsing() -> None:
    with pytest.raises(MessageRefused) as info:
        parse(mail(body="x" * 2000), limits=IngestLimits(max_message_bytes=1000))
    assert info.value.kind == "too_large"


@pytest.mark.parametrize("raw", [b"", b"\r\n\r\n", b"\r\n\r\nno header at all"])
def test_not_a_mail_refused(raw: bytes) -> None:
    with pytest.raises(MessageRefused) as info:
        parse(raw)
    assert info.value.kind == "invalid"


def test_wrong_type_refused() -> None:
    with pytest.raises(MessageRefused):
        parse("From: a@b\r\n\r\nx")


# --------------------------------------------------------------------------- automatic


@pytest.mark.parametrize(
    ("headers", "envelope", "reason"),
    [
        ("Auto-Submitted: auto-replied\r\n", None, "Auto-Submitted: auto-replied"),
        ("Auto-Submitted: Auto-Generated (bounce)\r\n", None, "Auto-Submitted: auto-generated"),
        (
            "Auto-Submitted: auto-notified; owner-email=x@y\r\n",
            None,
            "Auto-Submitted: auto-notified",
        ),
        ("Auto-Submitted: no\r\nPrecedence: bulk\r\n", None, "Precedence: bulk"),
        ("Precedence: junk\r\n", None, "Precedence: junk"),
        ("Precedence: LIST\r\n", None, "Precedence: list"),
        ("List-Id: Users <users.lists.example.org>\r\n", None, "List-Id"),
        ("List-Unsubscribe: <https://example.org/u>\r\n", None, "List-Unsubscribe"),
        ("", Envelope(mail_from=""), "null return path"),
        ("", Envelope(mail_from="<>"), "null return path"),
        ("Return-Path: <>\r\n", None, "null return path"),
        ("X-Autoreply: yes\r\n", None, "X-Autoreply"),
        ("X-Autorespond: vacation\r\n", None, "X-Autorespond"),
        ("", Envelope(mail_from="MAILER-DAEMON@mx.example.org"), "envelope sender mailer-daemon@"),
    ],
)
def test_automatic_rules(headers: str, envelope: Envelope | None, reason: str) -> None:
    result = parse(mail(headers), envelope=envelope)
    assert result.automatic == reason
    assert result.user_data["AutoSubmitted"] == reason


def test_postmaster_sender_is_automatic() -> None:
    head = HEAD.replace("Customer <customer@example.org>", "postmaster@example.org")
    assert parse(mail(head=head)).automatic == "sender postmaster@"


def test_delivery_report_is_automatic() -> None:
    raw = mail(
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n',
        "--r\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        "--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        "Final-Recipient: rfc822; a@b\r\nAction: failed\r\n--r--\r\n",
    )
    assert parse(raw).automatic == "delivery report (multipart/report; report-type=delivery-status)"


@pytest.mark.parametrize(
    "headers",
    [
        "",
        "Auto-Submitted: no\r\n",
        "Auto-Submitted: No (a person)\r\n",
        "X-Auto-Response-Suppress: All\r\n",  # a request to Exchange, not a marker
        "Precedence: first-class\r\n",
        "X-Autoreply: no\r\n",
    ],
)
def test_a_persons_mail_is_not_automatic(headers: str) -> None:
    result = parse(mail(headers), envelope=Envelope(mail_from="customer@example.org"))
    assert result.automatic is None
    assert "AutoSubmitted" not in result.user_data


def test_is_automatic_on_a_parsed_message() -> None:
    msg = message_from_bytes(mail("Precedence: bulk\r\n"), policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert is_automatic(msg, None) == "Precedence: bulk"
    assert is_automatic(message_from_bytes(mail(), policy=policy.default), None) is None


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>a</p><p>b</p>", "a\n\nb"),
        ("a<br>b<br/>c", "a\nb\nc"),
        ("<ul><li>one</li><li>two</li></ul>", "- one\n- two"),
        ("<style>x{}</style><script>y()</script>kept", "kept"),
        ("&lt;tag&gt; &amp; &eacute; &#8364;", "<tag> & é €"),
        ("<a href='https://x.example/p'>site</a>", "site <https://x.example/p>"),
        ("<a href='https://x.example/'>https://x.example/</a>", "https://x.example/"),
        ("<blockquote><p>quoted</p></blockquote>after", "> quoted\n\nafter"),
        ("<blockquote>a<blockquote>b</blockquote></blockquote>", "> a\n> > b"),
        ("<pre>a\n  b</pre>", "a\n  b"),
        ("<p>unclosed <b>tags", "unclosed tags"),
        ("<<<>>>&&&;", "<<<>>>&&&;"),
        ("", ""),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_unflow_direct() -> None:
    assert unflow("a \nb \nc\n") == "a b c\n"
    assert unflow(">> x \n>> y\n> z\n") == ">> x y\n> z\n"
