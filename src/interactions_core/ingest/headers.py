"""Header fields: the raw index, cleaning, addresses, dates and Message-IDs.

Nothing here raises on hostile input: what is wrong is noted in ``_Problems``. Decoded display
names follow ``rfc5322.safe_header_text`` (no line break, control or bidi override character,
no encoded word left), the Subject ``rfc5322.defuse_encoded_words``; what they change is noted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.headerregistry import AddressHeader, HeaderRegistry
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any

from ..addresses import MAX_ADDRESS_LIST, mailbox_address, received_address
from ..model import Address
from ..rfc5322 import (
    defuse_encoded_words,
    is_strict_msg_id,
    msg_id,
    msg_ids,
    no_surrogates,
    safe_header_text,
)
from .common import _Problems

MAX_ADDRESS_HEADER_CHARS = 64 * 1024  # an address header is parsed up to here

# RFC 5322 §3.6: fields that may occur at most once.
_SINGLE_HEADERS = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "message-id",
    "in-reply-to",
    "references",
    "subject",
    "date",
    "content-type",
    "content-transfer-encoding",
)
_ADDRESS_FIELDS = (
    ("from", "From"),
    ("to", "To"),
    ("cc", "Cc"),
    ("bcc", "Bcc"),
    ("reply-to", "Reply-To"),
    ("mail-reply-to", "Mail-Reply-To"),
    ("mail-followup-to", "Mail-Followup-To"),
)

_REGISTRY = HeaderRegistry()

# ``HeaderRegistry[name]`` builds a new class on every lookup: build each one once.
_HEADER_CLASSES: dict[str, Any] = {
    name: _REGISTRY[name] for name in ("content-type", "content-disposition")
}


def _header(name: str, value: str) -> Any:
    """A parsed ``policy.default`` header object (may raise on hostile input)."""
    return _HEADER_CLASSES[name](name, value)


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_BREAKS = re.compile(r"[\r\n\x00]+")
_COMMENT = re.compile(r"\([^()]*\)")


# --------------------------------------------------------------------------- headers


def _header_index(msg: Message) -> dict[str, list[str]]:
    """Raw header values by lower-cased name, in order: no header parsing happens here."""
    index: dict[str, list[str]] = {}
    try:
        items = list(msg.raw_items())
    except Exception:  # defensive: raw_items is a plain copy of a list
        return index
    for name, value in items:
        index.setdefault(str(name).strip().lower(), []).append(str(value))
    return index


def _clean(value: str, name: str, problems: _Problems | None) -> str:
    """A raw header value as text: unfolded, 8-bit octets decoded, no line breaks or NULs.

    RFC 6532 allows raw UTF-8 in header fields; other 8-bit octets are read as windows-1252
    (what the WHATWG encoding standard does with latin-1 labels) and noted.
    """
    if not value.isascii():
        data = value.encode("utf-8", "surrogateescape")
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            if problems is not None:
                problems.add(
                    f"8-bit bytes in the {name} header are not UTF-8: read as windows-1252"
                )
            value = data.decode("cp1252", "replace")
    if "\n" in value or "\r" in value or "\x00" in value:
        value = _BREAKS.sub(" ", _FOLD.sub("", value))
    return value


def _first(
    index: Mapping[str, list[str]], key: str, name: str, problems: _Problems | None
) -> str | None:
    values = index.get(key)
    if not values:
        return None
    return _clean(values[0], name, problems)


def _strip_comments(value: str) -> str:
    for _ in range(10):  # nested comments, bounded
        stripped = _COMMENT.sub(" ", value)
        if stripped == value:
            break
        value = stripped
    return value


def _addresses(
    index: Mapping[str, list[str]], key: str, name: str, problems: _Problems
) -> tuple[Address, ...]:
    value = _first(index, key, name, problems)
    if value is None or not value.strip():
        return ()
    if len(value) > MAX_ADDRESS_HEADER_CHARS:
        cut = value.rfind(",", 0, MAX_ADDRESS_HEADER_CHARS)
        value = value[: cut if cut > 0 else MAX_ADDRESS_HEADER_CHARS]
        problems.add(
            f"{name} header over {MAX_ADDRESS_HEADER_CHARS} characters: only its start read"
        )
    try:
        # The parse of ``policy.default``'s address headers (Mail-Reply-To and Mail-Followup-To,
        # which the stdlib does not register, too), without building its ``Address`` objects:
        # they refuse a CR or LF, and a display name decoded from ``=?utf-8?q?Evil=0D=0A...?=``
        # holds them, which would cost the whole header. The name is neutralised below.
        mailboxes = [
            (m.display_name or "", m.local_part or "", m.domain or "")
            for m in AddressHeader.value_parser(value).all_mailboxes
        ]
    except Exception:
        problems.add(f"unparseable {name} header")
        return ()
    written = len(mailboxes)
    kept: list[Address] = []
    for display_name, local_part, domain in mailboxes:
        found = mailbox_address(display_name, local_part, domain)
        address = _valid(_tidy_address(found)) if found is not None else None
        if address is not None:
            kept.append(_safe_name(address, name, problems))
    parsed = tuple(kept)
    if len(parsed) < written:
        problems.add(f"{name}: {written - len(parsed)} malformed address(es) dropped")
    if not parsed and not written and "@" in value:
        problems.add(f"unparseable {name} header")
    if len(parsed) > MAX_ADDRESS_LIST:
        problems.add(f"{name}: more than {MAX_ADDRESS_LIST} addresses, the rest dropped")
        parsed = parsed[:MAX_ADDRESS_LIST]
    return parsed


def _valid(address: Address) -> Address | None:
    """The address normalised, or None when no reply could ever be written to it (``"x <@@>"``
    parses, and so does a domain decoded into mojibake): it is dropped and noted."""
    normal = received_address(address.addr)
    if normal is None:
        return None
    return address if normal == address.addr else Address(addr=normal, name=address.name)


def _tidy_address(address: Address) -> Address:
    """Valid Unicode (the stdlib leaves undecodable octets as surrogates)."""
    name, addr = address.name, address.addr
    if name.isascii() and addr.isascii():
        return address
    return Address(addr=no_surrogates(addr), name=no_surrogates(name))


def _safe_name(address: Address, field: str, problems: _Problems) -> Address:
    """The address with its display name as ``rfc5322.safe_header_text`` makes it: a hostile
    name costs the name, never the address (a reply still reaches the sender)."""
    safe = safe_header_text(address.name)
    if safe == address.name:
        return address
    problems.add(
        f"{field}: the display name of {address.addr} held line breaks, control or bidi "
        "characters or an undecoded encoded word: neutralised"
    )
    return Address(addr=address.addr, name=safe)


def _safe_subject(subject: str, problems: _Problems) -> str:
    """The decoded Subject as it came, but for an encoded word still in it (one the decoder
    could not read, or one inside an encoded word), which the stdlib would decode when a reply
    writes the Subject, CR and LF included: ``rfc5322.defuse_encoded_words``, noted. Line
    breaks stay: the composer puts a reply's Subject on one line."""
    safe = defuse_encoded_words(subject)
    if safe != subject:
        problems.add("Subject held an undecoded encoded word: its '=?' written '= ?'")
    return safe


def _message_id(value: str | None, problems: _Problems) -> str | None:
    """The id of the Message-ID field (``rfc5322.msg_id``); what is odd about it is noted."""
    if value is None:
        problems.add("missing Message-ID")
        return None
    found = msg_id(value)
    if found is None:
        problems.add("unusable Message-ID")
        return None
    if not found.bracketed:
        problems.add("Message-ID without angle brackets")
    if not is_strict_msg_id(found.id):
        # RFC 5322 §3.6.4 wants "<" id-left "@" id-right ">"; the sender threads on it anyway.
        problems.add(f"Message-ID {found.id} is not an RFC 5322 msg-id (<left@right>): kept")
    return found.id


def _thread_ids(value: str | None, name: str, problems: _Problems) -> list[str]:
    """The ids of an In-Reply-To or References field (``rfc5322.msg_ids``); ids kept although
    they are not RFC 5322 msg-ids (``<abc>``) are noted."""
    ids = msg_ids(value)
    odd = sum(1 for found in ids if not is_strict_msg_id(found))
    if odd:
        problems.add(f"{name} holds {odd} id(s) that are not RFC 5322 msg-ids: kept")
    return ids


def _date(value: str | None, problems: _Problems) -> datetime | None:
    if value is None:
        problems.add("missing Date")
        return None
    try:
        date = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        problems.add("unparseable Date")
        return None
    if date.tzinfo is None:  # "-0000": UTC, local zone unknown (RFC 5322 §3.3)
        date = date.replace(tzinfo=UTC)
    return date


def _check_header_lines(data: bytes, limit: int, problems: _Problems) -> None:
    end = _HEADER_END.search(data)
    head = data[: end.start()] if end else data
    if len(head) <= limit:
        return
    longest = max(len(line.rstrip(b"\r")) for line in head.split(b"\n"))
    if longest > limit:
        problems.add(f"header line over {limit} octets ({longest})")


def _title(key: str) -> str:
    special = {"message-id": "Message-ID", "cc": "Cc", "bcc": "Bcc", "reply-to": "Reply-To"}
    return special.get(key) or "-".join(w.capitalize() for w in key.split("-"))
