"""Inbound mail parsing: raw RFC 5322 bytes → ``EmailContent`` + automatic-mail verdict + notes.

Pure: no I/O except through the ``AttachmentStore`` port. The stdlib ``email`` package with
``policy.default`` does the MIME parse; everything read from it is guarded, because a parsed
message can still raise on header access, and hostile mail must never crash ingestion.

Contract of :func:`parse_message`:

* a message larger than ``IngestLimits.max_message_bytes`` is refused *before* parsing
  (``MessageRefused``, kind ``too_large``);
* input that is not a mail at all (empty, or no header field) is refused (kind ``invalid``);
* everything else becomes a :class:`ParsedMessage`; what was wrong with it is listed in
  ``problems`` (and in ``user_data["ParseProblems"]``). Parts beyond the limits are not lost:
  they stay in the raw message, which the caller keeps.

The only other exception that can escape is one raised by the attachment store for a reason
other than size (``TooLarge`` and ``ValueError`` are noted): a full disk or a locked database
(``Unavailable``) is not a property of the mail, and failing lets the SMTP adapter answer 4xx
so that the sender retries.

Rules and sources are in ``docs/ingestion.md``.

The package, by concern: ``headers`` (header index, cleaning, addresses, dates, Message-IDs),
``parts`` (the MIME walk, payload decoding, attachments), ``automatic`` (RFC 3834 automatic
mail), ``html`` (HTML to text, ``format=flowed``), ``common`` (the API types, problem notes);
the mail rules shared with composition and the MIME builder are in ``interactions_core.rfc5322``.
"""

from __future__ import annotations

from collections.abc import Iterable
from email import policy
from email.parser import BytesParser

from ..model import EmailContent
from ..ports import AttachmentStore
from ..rfc5322 import MAX_REFERENCES, bound_references, decode_encoded_words
from .automatic import _automatic, _sender_addr, is_automatic
from .automatic import envelope_from as envelope_from
from .common import Envelope, IngestLimits, MessageRefused, ParsedMessage, _Problems
from .headers import (
    _ADDRESS_FIELDS,
    _SINGLE_HEADERS,
    _addresses,
    _check_header_lines,
    _date,
    _first,
    _header_index,
    _message_id,
    _safe_subject,
    _thread_ids,
    _title,
)
from .html import html_to_text, unflow
from .parts import _top_type, _Walker

__all__ = [
    "Envelope",
    "IngestLimits",
    "MessageRefused",
    "ParsedMessage",
    "html_to_text",
    "is_automatic",
    "parse_message",
    "unflow",
]

MAX_USER_DATA_CHARS = 1000  # ParseProblems in userData is cut here
MAX_SUBJECT_CHARS = 2000

_PARSER = BytesParser(policy=policy.default)
_DEFAULT_LIMITS = IngestLimits()  # frozen: one shared default

# --------------------------------------------------------------------------- parse_message


def parse_message(
    raw: bytes,
    *,
    envelope: Envelope | None = None,
    attachments: AttachmentStore,
    limits: IngestLimits = _DEFAULT_LIMITS,
) -> ParsedMessage:
    """Parse one raw message; see the module docstring for the contract."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise MessageRefused(f"a raw message is bytes, not {type(raw).__name__}")
    size = len(raw) if not isinstance(raw, memoryview) else raw.nbytes
    if size > limits.max_message_bytes:
        raise MessageRefused(
            f"message of {size} bytes exceeds the limit of {limits.max_message_bytes}",
            kind="too_large",
        )
    data = bytes(raw)
    if not data.strip():
        raise MessageRefused("empty message")
    problems = _Problems()
    _check_header_lines(data, limits.max_header_line, problems)

    body_parsed = True
    try:
        msg = _PARSER.parsebytes(data)
    except RecursionError:
        body_parsed = False
        problems.add("MIME structure too deep for the parser: body kept only in the raw message")
        try:
            msg = _PARSER.parsebytes(data, headersonly=True)
        except Exception as exc:
            raise MessageRefused(f"unparseable message: {type(exc).__name__}") from None
    except Exception as exc:  # the stdlib parser is lenient; this is a last resort
        raise MessageRefused(f"unparseable message: {type(exc).__name__}") from None

    index = _header_index(msg)
    if not index:
        raise MessageRefused("not an e-mail message: no header field found")

    for key in _SINGLE_HEADERS:
        count = len(index.get(key, ()))
        if count > 1:
            problems.add(f"duplicate {_title(key)} header ({count}): the first is used")

    addresses = {
        key: _addresses(index, key, name, problems) for key, name in _ADDRESS_FIELDS if key in index
    }
    senders = addresses.get("from", ())
    if "from" not in index:
        problems.add("missing From")
    elif len(senders) > 1:
        problems.add(f"From holds {len(senders)} mailboxes: the first is kept")

    subject = _first(index, "subject", "Subject", problems) or ""
    subject = _safe_subject(decode_encoded_words(subject).strip(), problems)
    if len(subject) > MAX_SUBJECT_CHARS:
        problems.add(f"Subject over {MAX_SUBJECT_CHARS} characters: truncated")
        subject = subject[:MAX_SUBJECT_CHARS]

    message_id = _message_id(_first(index, "message-id", "Message-ID", problems), problems)
    in_reply_to_ids = _thread_ids(
        _first(index, "in-reply-to", "In-Reply-To", problems), "In-Reply-To", problems
    )
    references = _thread_ids(
        _first(index, "references", "References", problems), "References", problems
    )
    if len(references) > MAX_REFERENCES:
        problems.add(f"References holds {len(references)} ids: the first and the newest kept")
        references = bound_references(references)
    date = _date(_first(index, "date", "Date", problems), problems)

    walker = _Walker(limits, attachments, problems)
    texts: list[str] = []
    htmls: list[str] = []
    if body_parsed:
        texts, htmls = walker.walk(msg, 1)
    if walker.parts_exhausted:
        problems.add(
            f"more than {limits.max_parts} MIME parts: the rest kept only in the raw message"
        )
    if walker.attachment_parts > len(walker.attachments) and walker.attachment_parts > (
        limits.max_attachments
    ):
        more = "at least " if walker.parts_exhausted else ""
        problems.add(
            f"too many attachments: kept {len(walker.attachments)} of "
            f"{more}{walker.attachment_parts}"
        )

    text = "\n".join(texts)
    html = "\n".join(htmls)
    if len(html) > limits.max_text_chars:
        problems.add(f"StructuredText over {limits.max_text_chars} characters: truncated")
        html = html[: limits.max_text_chars]
    if not text and html:
        text = html_to_text(html)
    if len(text) > limits.max_text_chars:
        problems.add(f"Text over {limits.max_text_chars} characters: truncated")
        text = text[: limits.max_text_chars]

    top = _top_type(msg, problems)
    sender = senders[0].addr if senders else _sender_addr(index)
    automatic = _automatic(index, top[0], top[1], sender, envelope)

    email = EmailContent(
        from_=senders[0] if senders else None,
        to=addresses.get("to", ()),
        cc=addresses.get("cc", ()),
        bcc=addresses.get("bcc", ()),
        reply_to=addresses.get("reply-to", ()),
        mail_reply_to=addresses.get("mail-reply-to", ()),
        mail_followup_to=addresses.get("mail-followup-to", ()),
        subject=subject,
        text=text,
        html=html,
        message_id=message_id,
        in_reply_to=in_reply_to_ids[0] if in_reply_to_ids else None,
        references=tuple(references),
        date=date,
        attachments=tuple(walker.attachments),
    )
    notes = problems.result()
    return ParsedMessage(
        email=email, automatic=automatic, problems=notes, user_data=_user_data(automatic, notes)
    )


def _user_data(automatic: str | None, notes: Iterable[str]) -> dict[str, str]:
    data: dict[str, str] = {}
    if automatic:
        data["AutoSubmitted"] = automatic[:200]
    joined = "; ".join(notes)
    if joined:
        if len(joined) > MAX_USER_DATA_CHARS:
            joined = joined[: MAX_USER_DATA_CHARS - 1] + "…"
        data["ParseProblems"] = joined
    return data
