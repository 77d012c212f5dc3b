"""Reply and forward composition: recipients, subject, threading headers and quoted bodies.

Pure functions over ``EmailContent``: no I/O, no clock, no MIME. Everything returned is Unicode
(decoded subjects, display names, IDN domains); encoding for the wire is the MIME builder's job.

The rules and their sources are listed in ``docs/composition.md``; the main ones are RFC 5322
§3.6.2-§3.6.5 (reply targets, Bcc, threading, "Re: "), the de-facto Mail-Reply-To and
Mail-Followup-To headers (D. J. Bernstein's notes, honoured by Thunderbird and Mutt), and RFC 3676
for the look of nested quotes.
"""

from __future__ import annotations

import html as _html
import re
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from email.utils import format_datetime
from functools import lru_cache
from typing import NamedTuple

from .addresses import dedupe, unseen
from .ingest.html import html_to_text
from .model import (
    HEADER_BREAKS,
    Address,
    Attachment,
    EmailContent,
    build,
    format_address,
    format_addresses,
    has_line_break,
    inline_attachments,
)
from .rfc5322 import MAX_REFERENCES, bound_references, msg_id, msg_ids
from .rfc5322 import decode_encoded_words as decode_subject

__all__ = [
    "DEFAULT_FORWARD_PREFIX",
    "DEFAULT_INDENT",
    "DEFAULT_REPLY_PREFIX",
    "MAX_REFERENCES",
    "Recipients",
    "attribution_line",
    "compose_forward",
    "compose_reply",
    "decode_subject",
    "format_date",
    "forward_header_html",
    "forward_header_text",
    "forward_subject",
    "html_to_text",
    "quote_html",
    "quote_text",
    "reply_recipients",
    "reply_subject",
    "strip_subject",
    "text_to_html",
    "thread_headers",
]

DEFAULT_REPLY_PREFIX = "Re: "
DEFAULT_FORWARD_PREFIX = "Fwd: "
DEFAULT_INDENT = "> "

FORWARD_SEPARATOR = "---------- Forwarded message ---------"
BLOCKQUOTE_STYLE = "margin:0 0 0 .8ex;border-left:1px solid #ccc;padding-left:1ex"


# --------------------------------------------------------------------------- display

_BREAKS = re.compile(f"[{HEADER_BREAKS}]+")


def _one_line(value: str) -> str:
    """Unfold (RFC 5322 §2.2.3) and replace any other line break (Unicode's too) by a space."""
    if not has_line_break(value):
        return value
    value = re.sub(r"(?:\r\n|\r|\n)+(?=[ \t])", "", value)
    return _BREAKS.sub(" ", value)


def _display(address: Address) -> Address:
    """The address with its display name decoded and on one line; the addr-spec is untouched."""
    name = address.name
    if "=?" in name:
        name = decode_subject(name)
    if has_line_break(name):
        name = " ".join(name.replace("\x00", " ").split())  # str.split() knows every break
    if name == address.name:
        return address
    return Address(addr=address.addr, name=name)


def _displays(addresses: Iterable[Address]) -> tuple[Address, ...]:
    return tuple(map(_display, addresses))


# --------------------------------------------------------------------------- subjects

# Reply and forward tokens seen in the wild (Thunderbird, Mutt, MHonArc, GNU Mailutils lists).
# Deliberately no one-letter token: "R: budget" and "I: ..." are real subjects. Accented letters
# are accepted precomposed or decomposed (NFD), as some clients send them.
_REPLY_TOKENS = (
    "re",
    "aw",  # German "Antwort"
    "antw",  # Dutch
    "sv",  # Swedish, Danish, Norwegian "svar"
    "vs",  # Finnish "vastaus" (also listed as a forward marker)
    "odp",  # Polish
    "rif",  # Italian "riferimento"
    "r(?:é|e\u0301)f\\.?",  # French "réf." ("Réf. :" with the French space before the colon)
    "ответ",  # Russian
    "回复",  # Chinese (simplified)
    "回覆",  # Chinese (traditional)
    "답장",  # Korean
    "yan[ıi]t",  # Turkish
    "v(?:á|a\u0301)",  # "Vá": in the prefix lists we drew on (language not verified)
)
_FORWARD_TOKENS = (
    "fwd",
    "fw",
    "wg",  # German "weitergeleitet"
    "tr",  # French "transféré"
    "enc",  # Portuguese "encaminhado"
    "rv",  # Spanish "reenviado"
    "пересл",  # Russian
    "转发",  # Chinese
)
# token, optional counter "[2]" / "(2)" (Thunderbird NS_MsgStripRE), optional (French, possibly
# no-break) space, an ASCII or full-width colon, then any whitespace.
_PREFIX = re.compile(
    "(?:"
    + "|".join(_REPLY_TOKENS + _FORWARD_TOKENS)
    + r")(?:\[[0-9]+\]|\([0-9]+\))?[ \t\u00a0\u202f]*[:：]\s*",
    re.IGNORECASE,
)
# "[Ticket#123]", "[support-list]": a ticket or list tag.
_TAG = re.compile(r"\[([^\[\]\r\n]+)\]\s*")
_SPACE = re.compile(r"\s*")


@lru_cache(maxsize=64)
def _literal_prefix(prefix: str) -> re.Pattern[str] | None:
    """A matcher for a configured prefix that is not one of the known tokens ("Antwort: ")."""
    literal = prefix.strip()
    if not literal or _PREFIX.fullmatch(literal):  # "Re:", "Fwd:": a known token already
        return None
    boundary = r"(?!\w)" if literal[-1].isalnum() else ""
    return re.compile(re.escape(literal) + boundary + r"\s*", re.IGNORECASE)


def _strip(subject: str, extra: re.Pattern[str] | None = None) -> tuple[str | None, str]:
    subject = _one_line(subject)
    tags: list[str] = []
    seen: set[str] = set()
    pos = 0
    while True:
        if extra is None and not _could_strip(subject, pos):
            break
        space = _SPACE.match(subject, pos)
        if space is not None:
            pos = space.end()
        match = _PREFIX.match(subject, pos)
        if match is None and extra is not None:
            match = extra.match(subject, pos)
        if match is not None and match.end() > pos:
            pos = match.end()
            continue
        tag = _TAG.match(subject, pos)
        if tag is not None:
            text = "[" + tag.group(1) + "]"
            if text.casefold() not in seen:
                seen.add(text.casefold())
                tags.append(text)
            pos = tag.end()
            continue
        break
    return (" ".join(tags) if tags else None), subject[pos:].strip()


def _could_strip(subject: str, pos: int) -> bool:
    """Every token ends with a colon and every tag starts with "[": without one, stop."""
    return (
        subject.find(":", pos) >= 0 or subject.find("：", pos) >= 0 or subject.find("[", pos) >= 0
    )


def strip_subject(subject: str) -> tuple[str | None, str]:
    """Split a subject into its ticket/list tag(s) and its core, dropping every reply/forward token.

    Stacked and localised prefixes ("Re: AW: WG: Fwd:", "RE[2]:", "回复：", "Réf. :") all go, so
    the core is what the thread is about. Tags found among the prefixes are returned once each,
    in order, joined by a space; ``None`` when there is none. The subject is not decoded here.
    """
    return _strip(subject)


def _prefixed(subject: str, prefix: str) -> str:
    tag, core = _strip(decode_subject(subject), _literal_prefix(prefix))
    rest = " ".join(part for part in (tag, core) if part)
    if not rest:
        return prefix.rstrip()
    return prefix + rest


def reply_subject(subject: str, prefix: str = DEFAULT_REPLY_PREFIX) -> str:
    """One prefix, one tag, the core: "Re: [Ticket#1] hello" however often it was replied to.

    RFC 5322 §3.6.5: only one "Re: " ought to be used. Idempotent for the default prefixes and
    any prefix made of a word and a colon.
    """
    return _prefixed(subject, prefix)


def forward_subject(subject: str, prefix: str = DEFAULT_FORWARD_PREFIX) -> str:
    """Like ``reply_subject``: earlier "Re:"/"Fwd:" tokens are dropped, the tag kept once."""
    return _prefixed(subject, prefix)


# --------------------------------------------------------------------------- recipients


class Recipients(NamedTuple):
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...] = ()


def _reply_target(original: EmailContent, exclude: frozenset[str]) -> tuple[Address, ...]:
    """Mail-Reply-To, else Reply-To, else From (never Sender: RFC 5322 §3.6.2).

    A candidate that holds only our own addresses is skipped: a Reply-To pointing at our own
    mailbox would make the reply loop back to us.
    """
    author = (original.from_,) if original.from_ is not None else ()
    for candidate in (original.mail_reply_to, original.reply_to, author):
        if candidate:
            kept = unseen(candidate, set(exclude))
            if kept:
                return kept
    return ()


def _follow_up(original: EmailContent, reply_all: bool, own: frozenset[str]) -> Recipients:
    """Replying to our own sent message continues it to the same people (Thunderbird, Mutt)."""
    hidden = frozenset(a.key for a in original.bcc)
    to = dedupe(original.to, own | hidden)
    if not reply_all:
        return Recipients(to=_displays(to), cc=())
    cc = dedupe(original.cc, own | hidden | {a.key for a in to})
    bcc = dedupe(original.bcc, own | {a.key for a in to + cc})
    if not to and cc:
        to, cc = cc[:1], cc[1:]
    return Recipients(to=_displays(to), cc=_displays(cc), bcc=_displays(bcc))


@lru_cache(maxsize=1024)
def _own_keys(own: frozenset[str]) -> frozenset[str]:
    return frozenset(o.strip().casefold() for o in own)


def reply_recipients(
    original: EmailContent, *, reply_all: bool, own: Collection[str]
) -> Recipients:
    """Who a Reply or ReplyAll goes to.

    ``own`` holds the addr-specs of our mailbox(es), the agent and system addresses: they never
    appear in the result (compared case-insensitively, like Mutt and Thunderbird).
    """
    own_keys = _own_keys(own if isinstance(own, frozenset) else frozenset(own))
    if original.from_ is not None and original.from_.key in own_keys:
        return _follow_up(original, reply_all, own_keys)

    if reply_all and original.mail_followup_to:
        # Mail-Followup-To is the complete list for a follow-up: no extra Cc (Thunderbird).
        to = dedupe(original.mail_followup_to, own_keys)
        if to:
            return Recipients(to=_displays(to), cc=())

    to = _reply_target(original, own_keys)
    if not reply_all:
        return Recipients(to=_displays(to), cc=())

    # RFC 5322 §3.6.3: original To and Cc go to Cc (Mutt's group-reply); Bcc recipients must not
    # be revealed. The reply target is exempt: the author chose to show it.
    seen = set(own_keys)
    seen.update(a.addr.casefold() for a in original.bcc)
    seen.update(a.addr.casefold() for a in to)
    cc = unseen(original.to + original.cc, seen)
    if not to and cc:
        to, cc = cc[:1], cc[1:]
    return Recipients(to=_displays(to), cc=_displays(cc))


# --------------------------------------------------------------------------- threading


def thread_headers(
    parent: EmailContent, max_references: int = MAX_REFERENCES
) -> tuple[str | None, tuple[str, ...]]:
    """In-Reply-To and References for a reply to ``parent`` (RFC 5322 §3.6.4).

    Ids are read by the one rule of ``rfc5322`` (an id without "@", such as ``<abc>``, is
    kept: the parent's client threads on it). References keeps the first id (the thread root)
    and the newest ones (``rfc5322.bound_references``): clients thread on the root and on the
    parent, which stays last.
    """
    own = msg_id(parent.message_id)
    message_id = own.id if own is not None else None

    chain: list[str] = []
    for item in parent.references:
        chain.extend(msg_ids(item, bare=True))
    if not chain:
        replied_to = msg_ids(parent.in_reply_to, bare=True)
        if len(replied_to) == 1:
            chain = replied_to

    seen: set[str] = set()
    ordered: list[str] = []
    for found in chain:
        if found != message_id and found not in seen:
            seen.add(found)
            ordered.append(found)
    if message_id is not None:
        ordered.append(message_id)
    return message_id, tuple(bound_references(ordered, max_references))


# --------------------------------------------------------------------------- quoting


def _lf(text: str) -> str:
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_date(value: datetime) -> str:
    """RFC 5322 §3.3 date-time ("Wed, 25 Nov 2026 17:15:59 +0000"), as ``email.utils``
    writes it, without its strftime round trips; odd offsets (seconds) are left to it."""
    offset = value.utcoffset()
    if offset is None or offset.microseconds or offset.seconds % 60:
        return format_datetime(value)
    # %-formatting: half the cost of the equivalent f-string with format specs here.
    return "%s, %02d %s %04d %02d:%02d:%02d %s" % (  # noqa: UP031
        _DAYS[value.weekday()],
        value.day,
        _MONTHS[value.month - 1],
        value.year,
        value.hour,
        value.minute,
        value.second,
        _zone(offset),
    )


@lru_cache(maxsize=256)
def _zone(offset: timedelta) -> str:
    minutes = offset.days * 1440 + offset.seconds // 60
    hours, minutes = divmod(abs(minutes), 60)
    return f"{'-' if offset < timedelta(0) else '+'}{hours:02d}{minutes:02d}"


def attribution_line(original: EmailContent) -> str:
    """ "On <date>, <author> wrote:" — the form reply parsers look for (Thunderbird default).

    Without a date: "<author> wrote:"; without an author: "".
    """
    if original.from_ is None or not original.from_.addr:
        return ""
    author = format_address(_display(original.from_))
    if original.date is None:
        return f"{author} wrote:"
    return f"On {format_date(original.date)}, {author} wrote:"


def quote_text(text: str, *, start_line: str | None = None, indent: str = DEFAULT_INDENT) -> str:
    """Quote ``text`` line by line under an optional start line.

    With a ">" indent, already quoted lines get one more ">" with no space, so depth stays
    readable and machine-countable (">> x", RFC 3676 §4.5). Empty lines get the bare marker.
    Returns "" when there is nothing to write, else text ending with a newline.
    """
    head = _lf(start_line) + "\n" if start_line else ""
    if not text:
        return head
    body = _lf(text)
    if body.endswith("\n"):
        body = body[:-1]
    return head + _quote_lines(body, indent) + "\n"


def _quote_lines(body: str, indent: str) -> str:
    """Every line of ``body`` indented, then the two exceptions patched: a quoted line gets ">"
    alone, an empty line the bare marker. Whole-string operations, as this runs on every
    reply with a quote; the line-by-line form is kept for an indent holding a line break."""
    marker = indent.rstrip()
    if "\n" in indent:
        return "\n".join(_quote_line(line, indent, marker) for line in body.split("\n"))
    out = indent + body.replace("\n", "\n" + indent)
    if marker == ">" and ">" in body:
        if body.startswith(">"):
            out = ">" + out[len(indent) :]
        out = out.replace("\n" + indent + ">", "\n>>")
    if marker != indent:
        gap = "\n" + indent + "\n"
        if gap in out:
            bare = "\n" + marker + "\n"
            # Adjacent empty lines share a line break, so one pass leaves every other one.
            out = out.replace(gap, bare).replace(gap, bare)
        if out == indent or out.startswith(indent + "\n"):
            out = marker + out[len(indent) :]
        if out.endswith("\n" + indent):
            out = out[: len(out) - len(indent)] + marker
    return out


def _quote_line(line: str, indent: str, marker: str) -> str:
    if not line:
        return marker
    if marker == ">" and line.startswith(">"):
        return ">" + line
    return indent + line


_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
_SCAFFOLDING = (
    re.compile(r"<\?xml[^>]*>", re.IGNORECASE),
    re.compile(r"<!doctype[^>]*>", re.IGNORECASE),
    re.compile(r"<head\b[^>]*>.*?</head\s*>", re.IGNORECASE | re.DOTALL),
    re.compile(r"</?html\b[^>]*>", re.IGNORECASE),
)


def _html_body(html: str) -> str:
    """The content of a full HTML document (what is inside <body>); a fragment as it is.

    A second <html> inside a blockquote is invalid and clients render it unpredictably.
    """
    opening = _BODY_OPEN.search(html)
    if opening is not None:
        closing = _BODY_CLOSE.search(html, opening.end())
        return html[opening.end() : closing.start() if closing else len(html)]
    for pattern in _SCAFFOLDING:
        html = pattern.sub("", html)
    return html


def _escape_lines(text: str) -> str:
    return _html.escape(_lf(text)).replace("\n", "<br>\n")


def quote_html(html: str, *, start_line: str | None = None) -> str:
    """The original HTML in a cite blockquote under an optional start line.

    The style is inline because Gmail and Outlook drop the default styling of a bare
    ``<blockquote type="cite">``.
    """
    return _blockquote(_html_body(html), start_line)


def _blockquote(fragment: str, start_line: str | None) -> str:
    head = f"<div>{_escape_lines(start_line)}</div>\n" if start_line else ""
    return f'{head}<blockquote type="cite" style="{BLOCKQUOTE_STYLE}">{fragment}</blockquote>\n'


def text_to_html(text: str) -> str:
    """Plain text as an HTML fragment, so a text-only original can be quoted in the HTML part."""
    return f"<div>{_escape_lines(text)}</div>"


# --------------------------------------------------------------------------- forward


def _forward_fields(original: EmailContent) -> list[str]:
    lines = [FORWARD_SEPARATOR]
    if original.from_ is not None:
        lines.append("From: " + format_address(_display(original.from_)))
    if original.date is not None:
        lines.append("Date: " + format_date(original.date))
    lines.append("Subject: " + _one_line(decode_subject(original.subject)))
    if original.to:
        lines.append("To: " + format_addresses(_displays(original.to)))
    if original.cc:
        lines.append("Cc: " + format_addresses(_displays(original.cc)))
    return lines


def forward_header_text(original: EmailContent) -> str:
    """Gmail's forward block: people and parsers (quotequail, talon) recognise it.

    Fields the original lacks (From, Date, To, Cc) are left out rather than written empty.
    """
    return "\n".join(_forward_fields(original)) + "\n\n"


def forward_header_html(original: EmailContent) -> str:
    """The same block as ``forward_header_text``, HTML-escaped."""
    escaped = "<br>\n".join(_html.escape(line) for line in _forward_fields(original))
    return f"<div>{escaped}</div>\n<br>\n"


# --------------------------------------------------------------------------- drafts


def compose_reply(
    original: EmailContent,
    *,
    mailbox: Address,
    own: Collection[str],
    reply_all: bool,
    subject_prefix: str | None = None,
    quote: bool,
    start_line: str | None = None,
    indent: str | None = None,
    max_references: int = MAX_REFERENCES,
) -> EmailContent:
    """The draft of a Reply/ReplyAll: addressed, threaded, optionally quoting the original.

    ``start_line=None`` means the attribution line; "" means none. ``max_references`` bounds
    the References (``ServiceConfig.max_references``). The mailbox is always treated
    as one of our own addresses. The text starts with an empty line for the agent to type on,
    which also puts the blank line reply parsers need above the quote.
    """
    own = own | {mailbox.key} if isinstance(own, frozenset) else {*own, mailbox.key}
    recipients = reply_recipients(original, reply_all=reply_all, own=own)
    in_reply_to, references = thread_headers(original, max_references)
    prefix = DEFAULT_REPLY_PREFIX if subject_prefix is None else subject_prefix
    text = html = ""
    inline: tuple[Attachment, ...] = ()
    if quote:
        line = attribution_line(original) if start_line is None else start_line
        text = "\n" + quote_text(original.text, start_line=line, indent=indent or DEFAULT_INDENT)
        if original.html:
            html = quote_html(original.html, start_line=line)
            # The quote still shows the original's inline images: they travel with the reply
            # (as Thunderbird and Outlook do); its other attachments do not.
            inline = inline_attachments(original.html, original.attachments)
        elif original.text:
            html = _blockquote(text_to_html(original.text), line)
    return build(
        EmailContent,
        from_=mailbox,
        to=recipients.to,
        cc=recipients.cc,
        bcc=recipients.bcc,
        subject=reply_subject(original.subject, prefix),
        text=text,
        html=html,
        message_id=None,
        in_reply_to=in_reply_to,
        references=references,
        attachments=inline,
    )


def compose_forward(
    original: EmailContent,
    *,
    mailbox: Address,
    to: tuple[Address, ...] = (),
    cc: tuple[Address, ...] = (),
    subject_prefix: str | None = None,
    note: str | None = None,
) -> EmailContent:
    """The draft of an inline forward: a new thread that carries the original and its attachments.

    No In-Reply-To/References: the third party starts a conversation of their own.
    """
    prefix = DEFAULT_FORWARD_PREFIX if subject_prefix is None else subject_prefix
    to = dedupe(to)
    cc = dedupe(cc, [a.key for a in to])
    text = (_lf(note) + "\n\n" if note else "") + forward_header_text(original) + _lf(original.text)
    html = ""
    if original.html:
        html = (
            (text_to_html(note) + "\n<br>\n" if note else "")
            + forward_header_html(original)
            + _html_body(original.html)
        )
    return build(
        EmailContent,
        from_=mailbox,
        to=to,
        cc=cc,
        subject=forward_subject(original.subject, prefix),
        text=text,
        html=html,
        message_id=None,
        in_reply_to=None,
        references=(),
        attachments=original.attachments,
    )
