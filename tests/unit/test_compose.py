"""Reply/forward composition: subjects, recipients, threading, quoting, drafts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from email_reply_parser import EmailReplyParser

from interactions_core.compose import (
    BLOCKQUOTE_STYLE,
    DEFAULT_FORWARD_PREFIX,
    DEFAULT_INDENT,
    DEFAULT_REPLY_PREFIX,
    MAX_REFERENCES,
    Recipients,
    attribution_line,
    compose_forward,
    compose_reply,
    decode_subject,
    forward_header_html,
    forward_header_text,
    forward_subject,
    quote_html,
    quote_text,
    reply_recipients,
    reply_subject,
    strip_subject,
    text_to_html,
    thread_headers,
)
from interactions_core.ingest import parse_message
from interactions_core.model import Address, Attachment, EmailContent
from interactions_core.testing import InMemoryAttachmentStore

JANE = Address(addr="jane@customer.example", name="Jane Doe")
BOB = Address(addr="bob@customer.example", name="Bob")
CAROL = Address(addr="carol@partner.example")
DAVE = Address(addr="dave@partner.example")
SUPPORT = Address(addr="support@example.com", name="Support")
AGENT = Address(addr="alice@agents.example", name="Alice")
OWN = frozenset({"support@example.com", "alice@agents.example", "noreply@example.com"})
WHEN = datetime(2026, 3, 3, 10, 0, 0, tzinfo=UTC)


def keys(addresses: tuple[Address, ...]) -> list[str]:
    return [a.key for a in addresses]


def test_constants() -> None:
    assert DEFAULT_REPLY_PREFIX == "Re: "
    assert DEFAULT_FORWARD_PREFIX == "Fwd: "
    assert DEFAULT_INDENT == "> "
    assert MAX_REFERENCES == 20


# --------------------------------------------------------------------------- subjects


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("hello", "Re: hello"),
        ("Re: hello", "Re: hello"),
        ("RE: hello", "Re: hello"),
        ("re: hello", "Re: hello"),
        ("rE:hello", "Re: hello"),
        ("Re: Re: Re: hello", "Re: hello"),
        ("RE[2]: x", "Re: x"),
        ("Re[12]: x", "Re: x"),
        ("Re(3): x", "Re: x"),
        ("AW: x", "Re: x"),
        ("Antw: x", "Re: x"),
        ("SV: x", "Re: x"),
        ("Sv: x", "Re: x"),
        ("VS: x", "Re: x"),
        ("Odp: x", "Re: x"),
        ("RIF: x", "Re: x"),
        ("Réf: x", "Re: x"),
        ("Réf. : x", "Re: x"),
        ("RÉF. : x", "Re: x"),
        ("Réf.\u00a0: x", "Re: x"),
        ("Re\u0301f: x", "Re: x"),  # decomposed é
        ("Re : x", "Re: x"),
        ("Ответ: x", "Re: x"),
        ("回复：x", "Re: x"),
        ("回覆: x", "Re: x"),
        ("답장: x", "Re: x"),
        ("Yanıt: x", "Re: x"),
        ("YANIT: x", "Re: x"),
        ("Vá: x", "Re: x"),
        ("Fwd: x", "Re: x"),
        ("FW: x", "Re: x"),
        ("Fw: x", "Re: x"),
        ("WG: x", "Re: x"),
        ("TR: x", "Re: x"),
        ("Tr: x", "Re: x"),
        ("Enc: x", "Re: x"),
        ("ENC: x", "Re: x"),
        ("RV: x", "Re: x"),
        ("ПЕРЕСЛ: x", "Re: x"),
        ("转发：x", "Re: x"),
        ("Re: AW: WG: Fwd: x", "Re: x"),
        ("  Re:   AW:WG：Fwd: x  ", "Re: x"),
        ("Re: [Ticket#123] Re: hello", "Re: [Ticket#123] hello"),
        ("[Ticket#123] RE: hello", "Re: [Ticket#123] hello"),
        ("Re: [Ticket#123] Re: [Ticket#123] AW: hello", "Re: [Ticket#123] hello"),
        ("[support-list] Re: [support-list] hi", "Re: [support-list] hi"),
        ("Re: [list] [Ticket#9] Re: hi", "Re: [list] [Ticket#9] hi"),
        ("Re: hello [Ticket#123]", "Re: hello [Ticket#123]"),
        ("Re: Fwd: news: today", "Re: news: today"),
        # real words that only look like prefixes stay
        ("Q3: results", "Re: Q3: results"),
        ("R: budget", "Re: R: budget"),
        ("Réunion: x", "Re: Réunion: x"),
        ("Antwerp: trip", "Re: Antwerp: trip"),
        ("Sve: hello", "Re: Sve: hello"),
        ("Trip: Paris", "Re: Trip: Paris"),
        ("Recall: meeting", "Re: Recall: meeting"),
        ("Fwd hello", "Re: Fwd hello"),
        ("Re [2]: x", "Re: Re [2]: x"),
        ("Re: Q3: results", "Re: Q3: results"),
        # empty
        ("", "Re:"),
        ("   ", "Re:"),
        ("Re:", "Re:"),
        ("Re: Fwd:", "Re:"),
        ("[Ticket#1]", "Re: [Ticket#1]"),
        # RFC 2047
        ("=?utf-8?B?UmU6IGjDqWxsbw==?=", "Re: héllo"),
        ("=?UTF-8?Q?Re=3A_caf=C3=A9?= =?UTF-8?Q?_cr=C3=A8me?=", "Re: café crème"),
        ("Re: =?iso-8859-1?q?Gr=FC=DFe?=", "Re: Grüße"),
        ("=?utf-8?b?5Zue5aSN77yaeA==?=", "Re: x"),  # "回复：x"
        # folded
        ("Re: a long\r\n subject", "Re: a long subject"),
    ],
)
def test_reply_subject(subject: str, expected: str) -> None:
    assert reply_subject(subject) == expected
    assert reply_subject(expected) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("hello", "Fwd: hello"),
        ("Re: hello", "Fwd: hello"),
        ("FW: Fwd: hello", "Fwd: hello"),
        ("Re: [Ticket#123] hello", "Fwd: [Ticket#123] hello"),
        ("", "Fwd:"),
        ("=?utf-8?q?caf=C3=A9?=", "Fwd: café"),
    ],
)
def test_forward_subject(subject: str, expected: str) -> None:
    assert forward_subject(subject) == expected


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: hello", (None, "hello")),
        ("Re: [Ticket#123] Re: hello", ("[Ticket#123]", "hello")),
        ("[Ticket#123] RE: hello", ("[Ticket#123]", "hello")),
        ("[ticket#123] Re: [TICKET#123] hello", ("[ticket#123]", "hello")),
        ("Q3: results", (None, "Q3: results")),
        ("", (None, "")),
        ("=?utf-8?q?Re=3A_x?=", (None, "=?utf-8?q?Re=3A_x?=")),  # strip does not decode
    ],
)
def test_strip_subject(subject: str, expected: tuple[str | None, str]) -> None:
    assert strip_subject(subject) == expected


def test_subject_prefix_options() -> None:
    assert reply_subject("Re: hello", "") == "hello"
    assert reply_subject("", "") == ""
    assert reply_subject("hello", "RE: ") == "RE: hello"
    assert reply_subject("RE: Re: hello", "AW: ") == "AW: hello"
    # a configured prefix that is not a known token is still recognised on the next round
    once = reply_subject("hello", "Antwort: ")
    assert once == "Antwort: hello"
    assert reply_subject(once, "Antwort: ") == once
    assert reply_subject("", "Antwort: ") == "Antwort:"
    assert forward_subject("Re: x", "FWD: ") == "FWD: x"


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("plain", "plain"),
        ("=?utf-8?q?caf=C3=A9?=", "café"),
        ("=?UTF-8?B?Y2Fmw6k=?=", "café"),
        ("=?utf-8?B?Y2Fmw6k?=", "café"),  # missing padding
        ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # RFC 2047 §6.2
        ("=?utf-8?q?a?=\r\n =?utf-8?q?b?=", "ab"),
        ("x =?utf-8?q?a?= y", "x a y"),
        ("=?utf-8?q?=C3?= =?utf-8?q?=A9?=", "é"),  # a character split across words
        ("=?iso-8859-1?q?a?= =?utf-8?q?=C3=A9?=", "aé"),
        ("=?utf-8*en?q?hi?=", "hi"),  # RFC 2231 language
        ("=?x-unknown?q?caf=C3=A9?=", "café"),  # unknown charset: read as UTF-8
        ("=?base64?q?abc?=", "abc"),  # a non-text codec
        ("=?idna?q?=FF?=", "\ufffd"),
        ("=?utf-8?b?###?=", "=?utf-8?b?###?="),  # malformed: kept as written
        ("=?utf-8?x?abc?=", "=?utf-8?x?abc?="),
        ("=?utf-8?q?=FF?=", "\ufffd"),
        ("=?", "=?"),
    ],
)
def test_decode_subject(encoded: str, decoded: str) -> None:
    assert decode_subject(encoded) == decoded


# --------------------------------------------------------------------------- recipients


def inbound(**kw: object) -> EmailContent:
    base: dict[str, object] = {
        "from_": JANE,
        "to": (SUPPORT,),
        "subject": "Order 42",
        "text": "Where is my order?",
        "message_id": "<orig-1@customer.example>",
        "date": WHEN,
    }
    base.update(kw)
    return EmailContent.model_validate(base)


def test_reply_goes_to_from() -> None:
    r = reply_recipients(inbound(cc=(BOB,)), reply_all=False, own=OWN)
    assert r == Recipients(to=(JANE,), cc=())


def test_reply_to_wins_over_from() -> None:
    r = reply_recipients(inbound(reply_to=(BOB,)), reply_all=False, own=OWN)
    assert r.to == (BOB,)


def test_mail_reply_to_wins_over_reply_to() -> None:
    original = inbound(reply_to=(BOB,), mail_reply_to=(CAROL,))
    assert reply_recipients(original, reply_all=False, own=OWN).to == (CAROL,)


def test_reply_to_pointing_at_us_falls_back_to_from() -> None:
    original = inbound(reply_to=(Address(addr="SUPPORT@example.com"),))
    assert reply_recipients(original, reply_all=False, own=OWN).to == (JANE,)


def test_reply_without_any_target_is_empty() -> None:
    original = EmailContent(to=(SUPPORT,))
    assert reply_recipients(original, reply_all=True, own=OWN) == Recipients(to=(), cc=())


def test_seed_reply_all_rules() -> None:
    """Seed §2.2: ToAddress <- original reply-to address; CCAddresses <- original CC."""
    original = inbound(reply_to=(BOB,), cc=(CAROL, DAVE))
    r = reply_recipients(original, reply_all=True, own=OWN)
    assert r.to == (BOB,)
    assert r.cc == (CAROL, DAVE)
    assert r.bcc == ()


def test_reply_all_moves_other_to_into_cc_and_drops_own() -> None:
    original = inbound(to=(SUPPORT, BOB), cc=(CAROL, Address(addr="Alice@Agents.Example")))
    r = reply_recipients(original, reply_all=True, own=OWN)
    assert r.to == (JANE,)
    assert r.cc == (BOB, CAROL)


def test_reply_all_dedupes_case_insensitively() -> None:
    original = inbound(
        to=(SUPPORT, Address(addr="BOB@customer.example"), Address(addr="Jane@Customer.Example")),
        cc=(BOB, CAROL, Address(addr="carol@PARTNER.example", name="Carol")),
    )
    r = reply_recipients(original, reply_all=True, own=OWN)
    assert keys(r.to) == ["jane@customer.example"]
    assert keys(r.cc) == ["bob@customer.example", "carol@partner.example"]
    assert r.cc[0].addr == "BOB@customer.example"  # the first spelling is kept


def test_own_addresses_compared_case_insensitively() -> None:
    original = inbound(to=(Address(addr="Support@Example.COM"),), cc=(BOB,))
    r = reply_recipients(original, reply_all=True, own=["SUPPORT@EXAMPLE.COM"])
    assert r.to == (JANE,)
    assert r.cc == (BOB,)


def test_reply_all_never_reveals_bcc() -> None:
    original = inbound(to=(SUPPORT, BOB), cc=(CAROL,), bcc=(BOB, DAVE))
    r = reply_recipients(original, reply_all=True, own=OWN)
    assert r.to == (JANE,)
    assert r.cc == (CAROL,)
    assert r.bcc == ()


def test_reply_all_keeps_a_bcc_author() -> None:
    """An author who Bcc'd themselves is still who the reply is for."""
    original = inbound(cc=(CAROL,), bcc=(JANE,))
    r = reply_recipients(original, reply_all=True, own=OWN)
    assert r.to == (JANE,)
    assert r.cc == (CAROL,)


def test_reply_all_with_mail_followup_to() -> None:
    original = inbound(
        to=(SUPPORT, BOB),
        cc=(CAROL,),
        reply_to=(DAVE,),
        mail_followup_to=(Address(addr="list@lists.example"), SUPPORT, BOB),
    )
    r = reply_recipients(original, reply_all=True, own=OWN)
    assert keys(r.to) == ["list@lists.example", "bob@customer.example"]
    assert r.cc == ()
    # a plain Reply ignores Mail-Followup-To
    assert reply_recipients(original, reply_all=False, own=OWN).to == (DAVE,)


def test_mail_followup_to_with_only_us_falls_back_to_reply_target() -> None:
    original = inbound(cc=(BOB,), mail_followup_to=(SUPPORT,))
    r = reply_recipients(original, reply_all=True, own=OWN)
    assert r.to == (JANE,)
    assert r.cc == (BOB,)


def test_reply_all_promotes_first_cc_when_to_is_empty() -> None:
    original = inbound(from_=None, to=(SUPPORT, BOB), cc=(CAROL,))
    r = reply_recipients(original, reply_all=True, own=OWN)
    assert r.to == (BOB,)
    assert r.cc == (CAROL,)


def test_reply_to_self_sent_message_is_a_follow_up() -> None:
    """RFC 5322 §3.6.3 / Thunderbird: the follow-up goes to the original recipients."""
    original = inbound(from_=SUPPORT, to=(JANE, AGENT), cc=(CAROL,), bcc=(DAVE,))
    reply = reply_recipients(original, reply_all=False, own=OWN)
    assert reply == Recipients(to=(JANE,), cc=())
    everyone = reply_recipients(original, reply_all=True, own=OWN)
    assert everyone == Recipients(to=(JANE,), cc=(CAROL,), bcc=(DAVE,))


def test_self_sent_follow_up_with_only_own_or_hidden_recipients() -> None:
    to_self = inbound(from_=SUPPORT, to=(AGENT,))
    assert reply_recipients(to_self, reply_all=True, own=OWN) == Recipients(to=(), cc=())
    cc_only = inbound(from_=SUPPORT, to=(AGENT,), cc=(BOB, CAROL))
    r = reply_recipients(cc_only, reply_all=True, own=OWN)
    assert (r.to, r.cc) == ((BOB,), (CAROL,))
    both = inbound(from_=SUPPORT, to=(BOB,), bcc=(BOB, DAVE))
    r = reply_recipients(both, reply_all=True, own=OWN)
    assert r == Recipients(to=(), cc=(), bcc=(BOB, DAVE))


def test_encoded_display_names_are_decoded() -> None:
    original = inbound(
        from_=Address(addr="jorg@müller.example", name="=?utf-8?q?J=C3=B6rg_M=C3=BCller?="),
        cc=(Address(addr="x@y.example", name="=?utf-8?b?w4lsb2RpZQ==?="),),
    )
    r = reply_recipients(original, reply_all=True, own=OWN)
    assert r.to == (Address(addr="jorg@müller.example", name="Jörg Müller"),)
    assert r.cc == (Address(addr="x@y.example", name="Élodie"),)


# --------------------------------------------------------------------------- threading


def test_thread_headers_from_references() -> None:
    parent = inbound(message_id="<c@x>", in_reply_to="<b@x>", references=("<a@x>", "<b@x>"))
    assert thread_headers(parent) == ("<c@x>", ("<a@x>", "<b@x>", "<c@x>"))


def test_thread_headers_falls_back_to_single_in_reply_to() -> None:
    parent = inbound(message_id="<c@x>", in_reply_to="<b@x>")
    assert thread_headers(parent) == ("<c@x>", ("<b@x>", "<c@x>"))
    several = inbound(message_id="<c@x>", in_reply_to="<a@x> <b@x>")
    assert thread_headers(several) == ("<c@x>", ("<c@x>",))


def test_thread_headers_of_first_message() -> None:
    assert thread_headers(inbound(message_id="<a@x>")) == ("<a@x>", ("<a@x>",))


def test_thread_headers_without_message_id() -> None:
    parent = inbound(message_id=None, references=("<a@x>", "<b@x>"))
    assert thread_headers(parent) == (None, ("<a@x>", "<b@x>"))
    assert thread_headers(inbound(message_id=None)) == (None, ())
    assert thread_headers(inbound(message_id=None, in_reply_to="<z@x>")) == (None, ("<z@x>",))


def test_thread_headers_normalise_and_drop_garbage() -> None:
    parent = inbound(
        message_id="  c@x ",
        in_reply_to="Your message of Tuesday",
        references=(
            "<a@x> <b@x>",
            "garbage",
            "<no-at-sign>",  # kept: not strictly RFC 5322, but the sender threads on it
            "<bad id@x>",  # refused: white space inside
            "< d@x >",
            "<a@x>",
            "<c@x>",
        ),
    )
    assert thread_headers(parent) == (
        "<c@x>",
        ("<a@x>", "<b@x>", "<no-at-sign>", "<d@x>", "<c@x>"),
    )
    phrase = inbound(message_id="<c@x>", in_reply_to='<b@x> ("Jane\'s message")')
    assert thread_headers(phrase) == ("<c@x>", ("<b@x>", "<c@x>"))


def test_thread_headers_bounded_keep_first_and_newest() -> None:
    chain = tuple(f"<m{i}@x>" for i in range(30))
    parent = inbound(message_id="<parent@x>", references=chain)
    reply_to, refs = thread_headers(parent)
    assert reply_to == "<parent@x>"
    assert len(refs) == MAX_REFERENCES
    assert refs[0] == "<m0@x>"
    assert refs[-1] == "<parent@x>"
    assert refs[1:-1] == chain[-(MAX_REFERENCES - 2) :]
    assert thread_headers(parent, max_references=3)[1] == ("<m0@x>", "<m29@x>", "<parent@x>")
    assert thread_headers(parent, max_references=1)[1] == ("<parent@x>",)
    assert thread_headers(parent, max_references=0)[1] == ()


# --------------------------------------------------------------------------- quoting


def test_attribution_line() -> None:
    assert (
        attribution_line(inbound())
        == "On Tue, 03 Mar 2026 10:00:00 +0000, Jane Doe <jane@customer.example> wrote:"
    )
    tz = timezone(timedelta(hours=1))
    dated = inbound(from_=CAROL, date=datetime(2026, 3, 3, 11, 0, tzinfo=tz))
    assert (
        attribution_line(dated)
        == "On Tue, 03 Mar 2026 11:00:00 +0100, carol@partner.example wrote:"
    )
    assert attribution_line(inbound(date=None)) == "Jane Doe <jane@customer.example> wrote:"
    assert attribution_line(inbound(from_=None)) == ""
    odd = inbound(date=None, from_=Address(addr="d@x.example", name="Doe, J.\r\n (Sales)"))
    assert attribution_line(odd) == '"Doe, J. (Sales)" <d@x.example> wrote:'


def test_quote_text_basic() -> None:
    assert quote_text("a\nb") == "> a\n> b\n"
    assert quote_text("a\nb\n") == "> a\n> b\n"
    assert quote_text("a", start_line="Jane wrote:") == "Jane wrote:\n> a\n"
    assert quote_text("a", start_line="") == "> a\n"
    assert quote_text("") == ""
    assert quote_text("", start_line="Jane wrote:") == "Jane wrote:\n"


def test_quote_text_nested_quotes_stay_contiguous() -> None:
    text = "new\n> old\n>> older\n\nend"
    assert quote_text(text) == "> new\n>> old\n>>> older\n>\n> end\n"


def test_quote_text_custom_indent() -> None:
    assert quote_text("a\n> b\n\nc", indent="| ") == "| a\n| > b\n|\n| c\n"
    assert quote_text("a\n>b", indent=">") == ">a\n>>b\n"
    assert quote_text("a\n\nb", indent="    ") == "    a\n\n    b\n"


def test_quote_text_normalises_line_ends() -> None:
    assert quote_text("a\r\nb\rc\r\n") == "> a\n> b\n> c\n"
    assert quote_text("x", start_line="On it\r\nwrote:") == "On it\nwrote:\n> x\n"


def test_quote_text_keeps_unicode_line_separators_inside_lines() -> None:
    assert quote_text("a\u2028b\x0cc") == "> a\u2028b\x0cc\n"


def test_quote_html_blockquote_with_inline_style() -> None:
    out = quote_html("<p>Hi</p>", start_line="Jane <j@x> wrote: & more")
    assert out == (
        "<div>Jane &lt;j@x&gt; wrote: &amp; more</div>\n"
        f'<blockquote type="cite" style="{BLOCKQUOTE_STYLE}"><p>Hi</p></blockquote>\n'
    )
    assert "border-left:1px solid #ccc" in BLOCKQUOTE_STYLE
    assert quote_html("<p>Hi</p>").startswith('<blockquote type="cite" style="')


@pytest.mark.parametrize(
    ("document", "body"),
    [
        ("<html><head><title>t</title></head><body><p>Hi</p></body></html>", "<p>Hi</p>"),
        ('<!DOCTYPE html>\n<HTML><BODY class="x" style="a">Hi</BODY></HTML>', "Hi"),
        ("<html><body>no closing tag", "no closing tag"),
        ("<html><head><style>p{}</style></head><p>no body tag</p></html>", "<p>no body tag</p>"),
        ('<?xml version="1.0"?><html><body >x</body ></html>', "x"),
        ("<p>fragment</p>", "<p>fragment</p>"),
        ("<header>kept</header>", "<header>kept</header>"),
        ("", ""),
    ],
)
def test_quote_html_takes_body_of_full_document(document: str, body: str) -> None:
    expected = f'<blockquote type="cite" style="{BLOCKQUOTE_STYLE}">{body}</blockquote>\n'
    assert quote_html(document) == expected


def test_text_to_html() -> None:
    assert text_to_html("a < b\r\n& c") == "<div>a &lt; b<br>\n&amp; c</div>"
    assert text_to_html("") == "<div></div>"


# --------------------------------------------------------------------------- forward blocks


def test_forward_header_text() -> None:
    original = inbound(cc=(BOB,), subject="=?utf-8?q?caf=C3=A9?=")
    assert forward_header_text(original) == (
        "---------- Forwarded message ---------\n"
        "From: Jane Doe <jane@customer.example>\n"
        "Date: Tue, 03 Mar 2026 10:00:00 +0000\n"
        "Subject: café\n"
        "To: Support <support@example.com>\n"
        "Cc: Bob <bob@customer.example>\n"
        "\n"
    )
    bare = EmailContent(subject="s")
    assert forward_header_text(bare) == "---------- Forwarded message ---------\nSubject: s\n\n"


def test_forward_header_html_is_escaped() -> None:
    out = forward_header_html(inbound(subject="<b>x</b>"))
    assert out.startswith("<div>---------- Forwarded message ---------<br>\n")
    assert "From: Jane Doe &lt;jane@customer.example&gt;<br>\n" in out
    assert "Subject: &lt;b&gt;x&lt;/b&gt;<br>\n" in out
    assert "<b>" not in out


# --------------------------------------------------------------------------- drafts


def test_reply_all_to_an_original_whose_message_id_has_no_at_sign() -> None:
    """Bug: ``Message-ID: <abc>`` was ingested as is but the reply had no In-Reply-To and no
    References. One rule now reads ids on both sides: the reply threads on ``<abc>``."""
    raw = (
        b"From: Jane Doe <jane@customer.example>\r\nTo: support@example.com\r\n"
        b"Cc: bob@customer.example\r\nSubject: Order 42\r\n"
        b"Date: Tue, 03 Mar 2026 10:00:00 +0000\r\nMessage-ID: <abc>\r\n"
        b"References: <root@customer.example>\r\n\r\nWhere is my order?\r\n"
    )
    original = parse_message(raw, attachments=InMemoryAttachmentStore()).email
    assert original.message_id == "<abc>"
    draft = compose_reply(original, mailbox=SUPPORT, own=OWN, reply_all=True, quote=False)
    assert draft.in_reply_to == "<abc>"
    assert draft.references == ("<root@customer.example>", "<abc>")
    assert keys(draft.to + draft.cc) == ["jane@customer.example", "bob@customer.example"]


def test_compose_reply_bounds_references_by_max_references() -> None:
    chain = tuple(f"<m{i}@x>" for i in range(30))
    original = inbound(references=chain)
    draft = compose_reply(original, mailbox=SUPPORT, own=OWN, reply_all=False, quote=False)
    assert len(draft.references) == MAX_REFERENCES
    short = compose_reply(
        original, mailbox=SUPPORT, own=OWN, reply_all=False, quote=False, max_references=3
    )
    assert short.references == ("<m0@x>", "<m29@x>", "<orig-1@customer.example>")
    assert short.in_reply_to == "<orig-1@customer.example>"


def test_compose_reply_without_quote() -> None:
    original = inbound(subject="Order 42", cc=(BOB,), references=("<root@x>",))
    draft = compose_reply(original, mailbox=SUPPORT, own=OWN, reply_all=True, quote=False)
    assert draft.from_ == SUPPORT
    assert draft.to == (JANE,)
    assert draft.cc == (BOB,)
    assert draft.subject == "Re: Order 42"
    assert draft.in_reply_to == "<orig-1@customer.example>"
    assert draft.references == ("<root@x>", "<orig-1@customer.example>")
    assert draft.message_id is None
    assert draft.text == ""
    assert draft.html == ""
    assert draft.attachments == ()


def test_compose_reply_quotes_text_and_html() -> None:
    original = inbound(text="Hi\n> earlier", html="<html><body><p>Hi</p></body></html>")
    draft = compose_reply(original, mailbox=SUPPORT, own=OWN, reply_all=False, quote=True)
    line = "On Tue, 03 Mar 2026 10:00:00 +0000, Jane Doe <jane@customer.example> wrote:"
    assert draft.text == f"\n{line}\n> Hi\n>> earlier\n"
    assert draft.html == (
        "<div>On Tue, 03 Mar 2026 10:00:00 +0000, Jane Doe &lt;jane@customer.example&gt; "
        f'wrote:</div>\n<blockquote type="cite" style="{BLOCKQUOTE_STYLE}"><p>Hi</p>'
        "</blockquote>\n"
    )


def test_compose_reply_options() -> None:
    """Seed Reply parameters: subjectPrefix, replyToStartLine, indentCharacter."""
    original = inbound(text="a\nb", subject="Re: x")
    draft = compose_reply(
        original,
        mailbox=SUPPORT,
        own=OWN,
        reply_all=False,
        quote=True,
        subject_prefix="AW: ",
        start_line="-- original --",
        indent="| ",
    )
    assert draft.subject == "AW: x"
    assert draft.text == "\n-- original --\n| a\n| b\n"
    # text-only original: the HTML part quotes its text
    assert draft.html == (
        "<div>-- original --</div>\n"
        f'<blockquote type="cite" style="{BLOCKQUOTE_STYLE}"><div>a<br>\nb</div></blockquote>\n'
    )
    no_line = compose_reply(
        original, mailbox=SUPPORT, own=OWN, reply_all=False, quote=True, start_line=""
    )
    assert no_line.text == "\n> a\n> b\n"
    assert no_line.html.startswith("<blockquote")


def test_compose_reply_to_empty_original() -> None:
    original = inbound(text="", html="")
    draft = compose_reply(original, mailbox=SUPPORT, own=OWN, reply_all=False, quote=True)
    assert draft.text == "\n" + attribution_line(original) + "\n"
    assert draft.html == ""


def test_compose_reply_never_addresses_the_mailbox() -> None:
    original = inbound(to=(Address(addr="Shared@Example.com"),), cc=(BOB,))
    draft = compose_reply(
        original, mailbox=Address(addr="shared@example.com"), own=(), reply_all=True, quote=False
    )
    assert draft.to == (JANE,)
    assert draft.cc == (BOB,)


def test_compose_reply_is_recognised_by_reply_parser() -> None:
    original = inbound(text="Where is my order?\n\n-- \nJane")
    draft = compose_reply(original, mailbox=SUPPORT, own=OWN, reply_all=False, quote=True)
    body = "It ships today.\n\nRegards\nAlice" + "\n" + draft.text
    assert EmailReplyParser.parse_reply(body) == "It ships today.\n\nRegards\nAlice"


def test_a_quoted_reply_carries_the_inline_images_its_quote_shows() -> None:
    logo = Attachment(id="l", name="logo.png", size=1, mimetype="image/png", content_id="logo@x")
    unused = Attachment(id="u", name="u.png", size=1, mimetype="image/png", content_id="gone@x")
    invoice = Attachment(id="i", name="invoice.pdf", size=1, mimetype="application/pdf")
    original = inbound(
        html='<p>Hi</p><img src="cid:logo%40x">', attachments=(invoice, logo, unused)
    )
    quoted = compose_reply(original, mailbox=SUPPORT, own=OWN, reply_all=True, quote=True)
    assert quoted.attachments == (logo,)  # referenced (URL-decoded); the rest stay behind
    assert 'src="cid:logo%40x"' in quoted.html
    bare = compose_reply(original, mailbox=SUPPORT, own=OWN, reply_all=True, quote=False)
    assert bare.attachments == ()
    text_only = inbound(text="cid:logo@x", html="", attachments=(logo,))
    draft = compose_reply(text_only, mailbox=SUPPORT, own=OWN, reply_all=False, quote=True)
    assert draft.attachments == ()


def test_compose_forward() -> None:
    attachment = Attachment(id="att-1", name="invoice.pdf", size=10, mimetype="application/pdf")
    original = inbound(
        subject="Re: [Ticket#7] Invoice",
        text="See attached\r\n",
        html="<html><body><p>See attached</p></body></html>",
        references=("<root@x>",),
        in_reply_to="<root@x>",
        attachments=(attachment,),
    )
    draft = compose_forward(
        original,
        mailbox=SUPPORT,
        to=(CAROL,),
        cc=(DAVE, Address(addr="CAROL@partner.example")),
        note="Please check",
    )
    assert draft.from_ == SUPPORT
    assert draft.to == (CAROL,)
    assert draft.cc == (DAVE,)
    assert draft.subject == "Fwd: [Ticket#7] Invoice"
    assert draft.in_reply_to is None
    assert draft.references == ()
    assert draft.message_id is None
    assert draft.attachments == (attachment,)
    assert draft.text == "Please check\n\n" + forward_header_text(original) + "See attached\n"
    assert draft.html == (
        "<div>Please check</div>\n<br>\n" + forward_header_html(original) + "<p>See attached</p>"
    )


def test_compose_forward_without_note_or_html() -> None:
    original = inbound(text="body", html="")
    draft = compose_forward(original, mailbox=SUPPORT, subject_prefix="FW: ")
    assert draft.to == ()
    assert draft.subject == "FW: Order 42"
    assert draft.text == forward_header_text(original) + "body"
    assert draft.html == ""
