"""Properties of reply composition, checked with generated mail.

The quoting property uses an independent oracle, ``email_reply_parser`` (a port of GitHub's
reply parser): whatever the agent types above our quote must come back as "the reply".
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

from email_reply_parser import EmailReplyParser
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from interactions_core.compose import (
    compose_reply,
    format_date,
    forward_subject,
    quote_text,
    reply_recipients,
    reply_subject,
    strip_subject,
    thread_headers,
)
from interactions_core.model import Address, EmailContent

SETTINGS = settings(max_examples=200, deadline=None)

# --------------------------------------------------------------------------- strategies

TOKENS = [
    "Re", "RE", "re", "AW", "Aw", "Antw", "SV", "Sv", "VS", "Odp", "RIF", "Réf", "Réf.", "RÉF",
    "Ответ", "回复", "回覆", "답장", "Yanıt", "YANIT", "Vá",
    "Fwd", "FWD", "Fw", "FW", "WG", "TR", "Tr", "Enc", "ENC", "RV", "ПЕРЕСЛ", "转发",
]  # fmt: skip
COUNTERS = st.sampled_from(["", "", "[2]", "(3)", "[12]"])
COLONS = st.sampled_from([":", ": ", ":  ", "：", " : ", "\u00a0: "])
TAGS = st.sampled_from(["[Ticket#123]", "[support-list]", "[ticket#123]", "[EXT]"])


@st.composite
def prefix_token(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(TOKENS)) + draw(COUNTERS) + draw(COLONS)


# Printable text: no control characters, surrogates or line/paragraph separators.
PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))


@st.composite
def subjects(draw: st.DrawFn) -> str:
    """Random stacks of reply/forward tokens and tags in front of random text."""
    parts = draw(st.lists(st.one_of(prefix_token(), TAGS, st.sampled_from([" ", ""])), max_size=8))
    core = draw(st.one_of(st.text(PRINTABLE, max_size=30), st.sampled_from(["Q3: x", "R: y"])))
    return "".join(parts) + core


REPLY_PREFIXES = st.sampled_from(["Re: ", "RE: ", "AW: ", "", "Antwort: ", "Fwd: ", "SV:"])


@given(subject=st.one_of(subjects(), st.text(max_size=40)), prefix=REPLY_PREFIXES)
@SETTINGS
def test_reply_subject_is_idempotent(subject: str, prefix: str) -> None:
    once = reply_subject(subject, prefix)
    assert reply_subject(once, prefix) == once
    assert reply_subject(reply_subject(once, prefix), prefix) == once
    assert forward_subject(forward_subject(subject)) == forward_subject(subject)


@given(tokens=st.lists(prefix_token(), min_size=1, max_size=6), core=st.text(PRINTABLE))
@SETTINGS
def test_reply_of_reply_has_exactly_one_prefix(tokens: list[str], core: str) -> None:
    core = core.strip()
    assume(strip_subject(core) == (None, core))  # the core itself starts with no token or tag
    subject = reply_subject("".join(tokens) + core)
    for _ in range(3):
        subject = reply_subject(subject)
    assert subject == ("Re: " + core if core else "Re:")


# --------------------------------------------------------------------------- recipients

POOL = [
    "jane@customer.example",
    "bob@customer.example",
    "carol@partner.example",
    "dave@partner.example",
    "support@example.com",
    "alice@agents.example",
    "noreply@example.com",
    "list@lists.example",
]


@st.composite
def address(draw: st.DrawFn) -> Address:
    addr = draw(st.sampled_from(POOL))
    if draw(st.booleans()):
        addr = addr.upper() if draw(st.booleans()) else addr.title()
    return Address(addr=addr, name=draw(st.sampled_from(["", "X", "=?utf-8?q?J=C3=B6rg?="])))


ADDRESSES = st.lists(address(), max_size=4).map(tuple)


@st.composite
def originals(draw: st.DrawFn) -> EmailContent:
    return EmailContent(
        from_=draw(st.one_of(st.none(), address())),
        to=draw(ADDRESSES),
        cc=draw(ADDRESSES),
        bcc=draw(ADDRESSES),
        reply_to=draw(st.one_of(st.just(()), ADDRESSES)),
        mail_reply_to=draw(st.one_of(st.just(()), ADDRESSES)),
        mail_followup_to=draw(st.one_of(st.just(()), ADDRESSES)),
    )


OWN = st.sets(st.sampled_from(POOL)).map(lambda s: frozenset(a.upper() for a in s))


@given(original=originals(), own=OWN, reply_all=st.booleans())
@SETTINGS
def test_own_addresses_never_addressed(
    original: EmailContent, own: frozenset[str], reply_all: bool
) -> None:
    r = reply_recipients(original, reply_all=reply_all, own=own)
    own_keys = {o.casefold() for o in own}
    assert not own_keys & {a.key for a in r.to + r.cc + r.bcc}


@given(original=originals(), own=OWN, reply_all=st.booleans())
@SETTINGS
def test_bcc_recipients_never_revealed(
    original: EmailContent, own: frozenset[str], reply_all: bool
) -> None:
    """RFC 5322 §3.6.3. The one exception is an author who names a Bcc'd address as where
    replies go (From, Reply-To, Mail-Reply-To, Mail-Followup-To): that address is public."""
    r = reply_recipients(original, reply_all=reply_all, own=own)
    author = (original.from_,) if original.from_ else ()
    chosen = {
        a.key
        for a in author + original.reply_to + original.mail_reply_to + original.mail_followup_to
    }
    hidden = {a.key for a in original.bcc} - chosen
    assert not hidden & {a.key for a in r.to + r.cc}


@given(original=originals(), own=OWN, reply_all=st.booleans())
@SETTINGS
def test_recipients_are_unique_and_to_filled_first(
    original: EmailContent, own: frozenset[str], reply_all: bool
) -> None:
    r = reply_recipients(original, reply_all=reply_all, own=own)
    everyone = [a.key for a in r.to + r.cc + r.bcc]
    assert len(everyone) == len(set(everyone))
    assert r.to or not r.cc
    assert all("=?" not in a.name for a in r.to + r.cc + r.bcc)
    if not reply_all:
        assert r.cc == () and r.bcc == ()


# --------------------------------------------------------------------------- threading

MSG_IDS = st.from_regex(r"<[a-z0-9.]{1,8}@[a-z]{1,5}\.example>", fullmatch=True)


@given(
    chain=st.lists(MSG_IDS, max_size=40),
    message_id=st.one_of(st.none(), MSG_IDS),
    bound=st.integers(min_value=2, max_value=25),
)
@SETTINGS
def test_references_bounded_root_and_parent_kept(
    chain: list[str], message_id: str | None, bound: int
) -> None:
    parent = EmailContent(message_id=message_id, references=tuple(chain))
    in_reply_to, refs = thread_headers(parent, bound)
    assert in_reply_to == message_id
    assert len(refs) <= bound
    assert len(refs) == len(set(refs))
    if message_id is not None:
        assert refs[-1] == message_id
    if chain and chain[0] != message_id:
        assert refs[0] == chain[0]


# --------------------------------------------------------------------------- quoting

_QUOTE_HEADER = re.compile(r"On.*wrote:$")
_HEADER = re.compile(r"^\*?(From|Sent|To|Subject):\*? .+")
_SIGNATURE = re.compile(r"(--|__|-\w)|(^Sent from my)")


def looks_special(line: str) -> bool:
    """A line a reply parser reads as a quote, a quote header, a header block or a signature."""
    return bool(
        line.startswith(">")
        or _QUOTE_HEADER.match(line)
        or _HEADER.match(line)
        or _SIGNATURE.match(line.strip())
    )


LINE = st.text(PRINTABLE, max_size=40)
NEW_TEXT = st.lists(LINE, min_size=1, max_size=6).map("\n".join)
# Anything at all may be in the original: quotes, headers, signatures, CR/LF, blank lines.
ORIGINAL_TEXT = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.one_of(
            LINE,
            st.sampled_from(
                ["", "> quoted", ">> deeper", "-- ", "On Mon, Bob wrote:", "From: x", "\r"]
            ),
        ),
        max_size=10,
    ).map("\n".join),
)
NAMES = st.one_of(st.sampled_from(["", "Jane Doe", "Doe, Jane", "On Time Ltd"]), LINE)
DATES = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
) | st.datetimes(timezones=st.just(timezone(timedelta(hours=-5))), min_value=datetime(1990, 1, 1))


@given(
    new_text=NEW_TEXT,
    text=ORIGINAL_TEXT,
    name=NAMES,
    date=DATES,
    reply_all=st.booleans(),
)
@SETTINGS
def test_reply_parser_recovers_the_new_text(
    new_text: str, text: str, name: str, date: datetime, reply_all: bool
) -> None:
    assume(new_text.strip())
    assume(not any(looks_special(line) for line in new_text.split("\n")))
    original = EmailContent(
        from_=Address(addr="jane@customer.example", name=name),
        to=(Address(addr="support@example.com"),),
        subject="Order 42",
        text=text,
        date=date,
        message_id="<orig@customer.example>",
    )
    draft = compose_reply(
        original,
        mailbox=Address(addr="support@example.com"),
        own=["support@example.com"],
        reply_all=reply_all,
        quote=True,
    )
    body = new_text + "\n" + draft.text
    assert EmailReplyParser.parse_reply(body).strip() == new_text.strip()


@given(text=st.text(max_size=200), indent=st.sampled_from(["> ", ">", "| ", "  "]))
@SETTINGS
def test_every_quoted_line_starts_with_the_marker(text: str, indent: str) -> None:
    out = quote_text(text, indent=indent)
    assert out == "" or out.endswith("\n")
    assert "\r" not in out
    marker = indent.rstrip()
    for line in out[:-1].split("\n") if out else []:
        assert line.startswith(marker)


@given(original=originals(), subject=st.text(max_size=40), text=st.text(max_size=100),
       html=st.text(max_size=100), quote=st.booleans(), reply_all=st.booleans())  # fmt: skip
@SETTINGS
def test_compose_reply_never_raises(
    original: EmailContent, subject: str, text: str, html: str, quote: bool, reply_all: bool
) -> None:
    original = original.model_copy(update={"subject": subject, "text": text, "html": html})
    draft = compose_reply(
        original,
        mailbox=Address(addr="support@example.com"),
        own=["support@example.com"],
        reply_all=reply_all,
        quote=quote,
    )
    assert draft.subject == reply_subject(draft.subject)


# --------------------------------------------------------------------------- fast paths


def _quote_line_by_line(text: str, start_line: str | None, indent: str) -> str:
    """The quoting rule written the obvious way: the oracle for the whole-string version."""
    out = [start_line.replace("\r\n", "\n").replace("\r", "\n")] if start_line else []
    body = text.replace("\r\n", "\n").replace("\r", "\n")
    body = body[:-1] if body.endswith("\n") else body
    marker = indent.rstrip()
    for line in body.split("\n") if text else []:
        if not line:
            out.append(marker)
        elif marker == ">" and line.startswith(">"):
            out.append(">" + line)
        else:
            out.append(indent + line)
    return "\n".join(out) + "\n" if out else ""


LINES = st.lists(
    st.sampled_from(["", "x", ">", "> y", ">>z", " >w", "\\1", "é", "a b ", "\r"]), max_size=8
)


@SETTINGS
@given(
    LINES,
    st.sampled_from(["\n", "\r\n"]),
    st.sampled_from(["> ", ">", ">  ", "| ", "    ", "", "\\1 ", " > ", "> \n"]),
    st.sampled_from([None, "", "On Monday, A wrote:"]),
)
def test_quote_text_is_the_line_by_line_rule(
    lines: list[str], newline: str, indent: str, start_line: str | None
) -> None:
    text = newline.join(lines)
    assert quote_text(text, start_line=start_line, indent=indent) == _quote_line_by_line(
        text, start_line, indent
    )


@SETTINGS
@given(
    st.datetimes(timezones=st.timezones()),
    st.integers(min_value=-1439, max_value=1439),
)
def test_format_date_is_what_email_utils_writes(value: datetime, minutes: int) -> None:
    shifted = value.replace(tzinfo=timezone(timedelta(minutes=minutes)))
    for candidate in (value, shifted, value.replace(tzinfo=None)):
        assert format_date(candidate) == format_datetime(candidate)
