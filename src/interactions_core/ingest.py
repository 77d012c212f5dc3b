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
"""

from __future__ import annotations

import binascii
import html as _html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.generator import BytesGenerator
from email.headerregistry import AddressHeader, HeaderRegistry
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from functools import lru_cache
from html.parser import HTMLParser
from io import BytesIO
from typing import Any, cast

from .addresses import MAX_ADDRESS_LIST, addresses_from_header, received_address
from .compose import decode_subject
from .errors import InteractionsError, TooLarge
from .model import Address, Attachment, EmailContent, parse_content_id
from .ports import AttachmentStore

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

# --------------------------------------------------------------------------- API types


@dataclass(frozen=True, slots=True)
class Envelope:
    """The SMTP envelope. ``mail_from`` None = unknown; "" = the null return path ``<>``."""

    mail_from: str | None = None
    rcpt_tos: tuple[str, ...] = ()


@dataclass(frozen=True)
class IngestLimits:
    max_message_bytes: int = 25 * 1024 * 1024
    max_parts: int = 500  # MIME parts walked at most
    max_depth: int = 20  # multipart nesting
    max_attachments: int = 100  # attachments extracted at most (the rest is noted)
    max_header_line: int = 998  # RFC 5322 §2.1.1: longer lines are noted, not fatal
    max_text_chars: int = 5_000_000  # Text / StructuredText kept at most (truncation noted)


class MessageRefused(InteractionsError):
    """Not ingestible: too large (kind ``too_large``) or not a mail at all (kind ``invalid``)."""

    kind = "invalid"

    def __init__(self, reason: str, kind: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        # ``kind`` is a class attribute on the base; this instance shadows it.
        setattr(self, "kind", kind)  # noqa: B010


@dataclass(frozen=True)
class ParsedMessage:
    email: EmailContent
    automatic: str | None  # why the mail is automatic (RFC 3834 etc.); None for a person's mail
    problems: tuple[str, ...]  # parse-problem notes, human readable
    user_data: dict[str, str] = field(default_factory=dict)  # short flags for userData


# --------------------------------------------------------------------------- constants

MAX_PROBLEMS = 50  # notes kept; the rest is counted
MAX_USER_DATA_CHARS = 1000  # ParseProblems in userData is cut here
MAX_REFERENCES = 200  # ids kept from References: the first one and the newest
MAX_SUBJECT_CHARS = 2000
MAX_ADDRESS_HEADER_CHARS = 64 * 1024  # an address header is parsed up to here
MAX_NAME_CHARS = 200  # attachment file names

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
# Not registered by the stdlib: parse them as the address lists they are.
_REGISTRY.map_to_type("mail-reply-to", cast(Any, AddressHeader))
_REGISTRY.map_to_type("mail-followup-to", cast(Any, AddressHeader))

# ``HeaderRegistry[name]`` builds a new class on every lookup: build each one once.
_HEADER_CLASSES: dict[str, Any] = {
    name: _REGISTRY[name]
    for name, _ in (*_ADDRESS_FIELDS, ("content-type", ""), ("content-disposition", ""))
}


def _header(name: str, value: str) -> Any:
    """A parsed ``policy.default`` header object (may raise on hostile input)."""
    return _HEADER_CLASSES[name](name, value)


_PARSER = BytesParser(policy=policy.default)
# Re-serialising a message/rfc822 part: header lines exactly as received, CRLF.
_RESERIALISE = policy.default.clone(refold_source="none", linesep="\r\n")

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_MSG_ID = re.compile(r"<\s*([^<>\s]+)\s*>")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_BREAKS = re.compile(r"[\r\n\x00]+")
_COMMENT = re.compile(r"\([^()]*\)")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n"
_B64_KEEP = re.compile(rb"[^A-Za-z0-9+/]")

_EXTENSIONS = {
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "application/octet-stream": ".bin",
    "application/pgp-signature": ".asc",
    "application/pkcs7-signature": ".p7s",
    "application/ms-tnef": ".dat",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/svg+xml": ".svg",
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "message/delivery-status": ".txt",
    "message/disposition-notification": ".txt",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "text/csv": ".csv",
    "text/rfc822-headers": ".txt",
}

_DEFECT_NOTES = {
    "NoBoundaryInMultipartDefect": "multipart part without a boundary: kept as text",
    "StartBoundaryNotFoundDefect": "multipart boundary never found: the body is kept as text",
    "CloseBoundaryNotFoundDefect": "multipart not closed (truncated message?)",
    "FirstHeaderLineIsContinuationDefect": "the first header line is a continuation line",
    "MisplacedEnvelopeHeaderDefect": "an mbox 'From ' line among the header fields",
    "MissingHeaderBodySeparatorDefect": "a line in the header is not a header field: "
    "the rest is read as body",
    "MultipartInvariantViolationDefect": "multipart part without subparts",
    "InvalidMultipartContentTransferEncodingDefect": "multipart part with a "
    "Content-Transfer-Encoding other than 7bit/8bit/binary",
}

# --------------------------------------------------------------------------- problems


class _Problems:
    """Ordered, de-duplicated, capped notes."""

    __slots__ = ("_dropped", "_notes")

    def __init__(self) -> None:
        self._notes: dict[str, None] = {}
        self._dropped = 0

    def add(self, note: str) -> None:
        if note in self._notes:
            return
        if len(self._notes) >= MAX_PROBLEMS:
            self._dropped += 1
            return
        self._notes[note] = None

    def result(self) -> tuple[str, ...]:
        notes = tuple(self._notes)
        if self._dropped:
            notes += (f"… and {self._dropped} more problems",)
        return notes


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
        header = _header(key, value)
        parsed = addresses_from_header(header)
        written = len(header.addresses)
    except Exception:
        problems.add(f"unparseable {name} header")
        return ()
    checked = (_valid(_tidy_address(a)) for a in parsed)
    parsed = tuple(a for a in checked if a is not None)
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
    """Display names as text on one line (the stdlib leaves undecodable octets as surrogates)."""
    name, addr = address.name, address.addr
    if name.isascii() and addr.isascii():
        return address
    return Address(addr=_no_surrogates(addr), name=_no_surrogates(name))


def _no_surrogates(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


def _msg_ids(value: str | None) -> list[str]:
    """RFC 5322 App. B: only ``<...>`` tokens; phrases of pre-2822 mail are dropped."""
    if not value:
        return []
    return [f"<{m}>" for m in _MSG_ID.findall(value)]


def _message_id(value: str | None, problems: _Problems) -> str | None:
    if value is None:
        problems.add("missing Message-ID")
        return None
    ids = _msg_ids(value)
    if ids:
        return ids[0]
    token = value.strip()
    if token and " " not in token and "@" in token and "<" not in token and ">" not in token:
        problems.add("Message-ID without angle brackets")
        return f"<{token}>"
    problems.add("unusable Message-ID")
    return None


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


# --------------------------------------------------------------------------- content headers


@lru_cache(maxsize=2048)
def _parse_content_type(value: str) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    try:
        header: Any = _header("content-type", value)
        ctype = str(header.content_type).lower()
        params = tuple((str(k).lower(), str(v)) for k, v in header.params.items())
    except Exception:
        return None
    return ctype, params


@lru_cache(maxsize=1024)
def _parse_disposition(value: str) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    try:
        header: Any = _header("content-disposition", value)
        disposition = str(header.content_disposition or "").lower()
        params = tuple((str(k).lower(), str(v)) for k, v in header.params.items())
    except Exception:
        return None
    return disposition, params


@dataclass(slots=True)
class _PartInfo:
    ctype: str
    params: dict[str, str]
    disposition: str
    filename: str
    cte: str
    content_id: str | None = None


def _part_info(part: Message, problems: _Problems) -> _PartInfo:
    raw_ct = raw_cd = raw_cte = raw_cid = None
    for name, value in part.raw_items():
        lname = name.lower()
        if lname == "content-type" and raw_ct is None:
            raw_ct = value
        elif lname == "content-id" and raw_cid is None:
            raw_cid = value
        elif lname == "content-disposition" and raw_cd is None:
            raw_cd = value
        elif lname == "content-transfer-encoding" and raw_cte is None:
            raw_cte = value
    ctype, params = "", {}
    if raw_ct is not None:
        parsed = _parse_content_type(_clean(raw_ct, "Content-Type", problems))
        if parsed is None:
            problems.add("unparseable Content-Type: read as text/plain")
        else:
            ctype, params = parsed[0], dict(parsed[1])
    if "/" not in ctype:
        try:
            ctype = part.get_default_type()
        except Exception:
            ctype = "text/plain"
    disposition, filename = "", ""
    if raw_cd is not None:
        parsed = _parse_disposition(_clean(raw_cd, "Content-Disposition", problems))
        if parsed is not None:
            disposition = parsed[0]
            filename = dict(parsed[1]).get("filename", "")
    if not filename:
        filename = params.get("name", "")
    cte = _clean(raw_cte, "Content-Transfer-Encoding", None).strip().lower() if raw_cte else ""
    content_id = parse_content_id(_clean(raw_cid, "Content-ID", problems)) if raw_cid else None
    return _PartInfo(ctype, params, disposition, filename, cte, content_id)


# --------------------------------------------------------------------------- payloads


def _b64decode(data: bytes, label: str, problems: _Problems) -> bytes:
    if data.translate(None, _B64_ALPHABET):  # anything left is not base64 (C speed)
        problems.add(f"invalid characters in base64 {label}: ignored")
    try:
        return binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        pass
    problems.add(f"bad base64 padding in {label}: decoded what could be")
    kept = _B64_KEEP.sub(b"", data)
    kept = kept[: len(kept) - len(kept) % 4] if len(kept) % 4 == 1 else kept
    kept += b"=" * (-len(kept) % 4)
    try:
        return binascii.a2b_base64(kept)
    except (binascii.Error, ValueError):
        return b""


def _payload(part: Message, info: _PartInfo, label: str, problems: _Problems) -> bytes:
    # ``_payload`` holds the body as parsed (8-bit octets as surrogates). The public
    # ``get_payload()`` would already decode 8-bit octets with replacement, losing them.
    payload = getattr(part, "_payload", None)
    if not isinstance(payload, str):
        return b""
    data = payload.encode("utf-8", "surrogateescape")
    cte = info.cte
    if cte in ("", "7bit", "8bit", "binary"):
        return data
    if cte == "base64":
        return _b64decode(data, label, problems)
    if cte == "quoted-printable":
        try:
            return binascii.a2b_qp(data)
        except (binascii.Error, ValueError):
            problems.add(f"bad quoted-printable in {label}: kept as received")
            return data
    if cte in ("x-uuencode", "uuencode", "x-uue", "uue"):
        try:
            decoded = part.get_payload(decode=True)
        except Exception:
            decoded = None
        if isinstance(decoded, bytes):
            return decoded
        problems.add(f"bad uuencode in {label}: kept as received")
        return data
    problems.add(f"unknown Content-Transfer-Encoding {cte[:40]!r} in {label}: kept undecoded")
    return data


_ASCII_LABELS = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968", "iso646-us", "us"})
_LATIN1_LABELS = frozenset({"iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "iso_8859-1"})


def _decode_text(data: bytes, charset: str, label: str, problems: _Problems) -> str:
    """Text in its declared charset, never raising.

    No charset or us-ascii: UTF-8 (a superset) is tried first; latin-1 labels are read as
    windows-1252, as browsers do (WHATWG encoding standard). An unknown charset: UTF-8, else
    windows-1252 with replacement, noted.
    """
    charset = charset.strip().strip('"').lower()
    if not charset or charset in _ASCII_LABELS:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            if charset:
                problems.add(f"8-bit bytes in a us-ascii {label}: read as windows-1252")
            return data.decode("cp1252", "replace")
    if charset in _LATIN1_LABELS:
        return data.decode("cp1252", "replace")
    try:
        return data.decode(charset)
    except LookupError:
        pass
    except (UnicodeError, ValueError):
        problems.add(f"invalid bytes for charset {charset[:40]!r} in {label}: replaced")
        try:
            return data.decode(charset, "replace")
        except Exception:
            return data.decode("cp1252", "replace")
    except Exception:  # a codec misbehaving on hostile input
        pass
    try:
        text = data.decode("utf-8")
        fallback = "utf-8"
    except UnicodeDecodeError:
        text = data.decode("cp1252", "replace")
        fallback = "windows-1252 with replacement"
    problems.add(f"undecodable charset {charset[:40]!r} in {label}, decoded as {fallback}")
    return text


# --------------------------------------------------------------------------- format=flowed


def unflow(text: str, delsp: bool = False) -> str:
    """Join the soft line breaks of RFC 3676 ``format=flowed`` text (§4.1-§4.5).

    Quote depth is the number of leading ``>``; one space-stuffing space is removed; a line
    ending in a space continues on the next line of the same depth; the signature separator
    ``-- `` is never flowed. Quoted lines come back as ``>>`` + one space (mutt's style).
    """
    out: list[str] = []
    para: str | None = None
    para_depth = 0

    def prefix(depth: int) -> str:
        return ">" * depth + " " if depth else ""

    for line in text.split("\n"):
        stripped = line.lstrip(">")
        depth = len(line) - len(stripped)
        if stripped.startswith(" "):
            stripped = stripped[1:]
        flowed = stripped.endswith(" ") and stripped != "-- "
        if flowed and delsp:
            stripped = stripped[:-1]
        if para is not None and depth == para_depth:
            para += stripped
        else:
            if para is not None:
                out.append(prefix(para_depth) + para)
            para, para_depth = stripped, depth
        if not flowed:
            out.append(prefix(para_depth) + para)
            para = None
    if para is not None:
        out.append(prefix(para_depth) + para)
    return "\n".join(out)


# --------------------------------------------------------------------------- HTML → text

_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "center",
        "dd",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "hr",
        "main",
        "nav",
        "ol",
        "section",
        "table",
        "tbody",
        "thead",
        "tfoot",
        "tr",
        "ul",
        "br",
    ]
)
_PARAGRAPH_TAGS = frozenset(["p", "h1", "h2", "h3", "h4", "h5", "h6", "pre"])
_SKIP_TAGS = frozenset(["script", "style", "template", "title", "noscript", "svg"])
_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_TAG = re.compile(r"<[^>]*>")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.pre = 0
        self.quote = 0
        self.line_start = True
        self.pending_space = False
        self.link: tuple[str, int] | None = None
        self.trailing = 0  # newlines at the end of ``out``

    def newline(self, count: int = 1) -> None:
        if self.out:  # never at the very start
            for _ in range(max(0, count - self.trailing)):
                self.out.append("\n")
            self.trailing = max(self.trailing, count)
        self.line_start = True
        self.pending_space = False

    def write(self, text: str) -> None:
        if not text:
            return
        if self.line_start:
            if self.quote:
                self.out.append("> " * self.quote)
            self.line_start = False
        elif self.pending_space:
            self.out.append(" ")
        self.pending_space = False
        self.out.append(text)
        self.trailing = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
            return
        if self.skip:
            return
        if tag in _PARAGRAPH_TAGS:
            self.newline(2)
            if tag == "pre":
                self.pre += 1
        elif tag == "blockquote":
            self.newline(1)
            self.quote += 1
        elif tag == "li":
            self.newline(1)
            self.write("- ")
        elif tag in _BLOCK_TAGS:
            self.newline(1)
        elif tag in ("td", "th"):
            self.pending_space = True
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            if href.startswith(("http://", "https://", "mailto:")):
                self.link = (href, len(self.out))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
            return
        if self.skip:
            return
        if tag in _PARAGRAPH_TAGS:
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
            self.newline(2)
        elif tag == "blockquote":
            self.quote = max(0, self.quote - 1)
            self.newline(1)
        elif tag in _BLOCK_TAGS or tag == "li":
            self.newline(1)
        elif tag == "a" and self.link is not None:
            href, start = self.link
            self.link = None
            label = "".join(self.out[start:]).strip()
            target = href[7:] if href.startswith("mailto:") else href
            if label and label != target and label != href:
                self.pending_space = True
                self.write(f"<{href}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            return
        self.handle_starttag(tag, attrs)
        if tag not in _PARAGRAPH_TAGS and tag != "blockquote":
            return
        self.handle_endtag(tag)

    def handle_data(self, data: str) -> None:
        if self.skip or not data:
            return
        if self.pre:
            lines = data.split("\n")
            for i, line in enumerate(lines):
                if i:
                    self.out.append("\n")
                    self.trailing += 1
                    self.line_start = True
                self.write(line)
            return
        if data[0].isspace() and not self.line_start:
            self.pending_space = True
        words = data.split()
        if words:
            self.write(" ".join(words))
            if data[-1].isspace():
                self.pending_space = True


def html_to_text(html: str) -> str:
    """Plain text from HTML (stdlib ``html.parser``): scripts and styles dropped, block elements
    on their own lines, entities decoded, blockquotes quoted with ``> ``. Never raises."""
    try:
        parser = _TextExtractor()
        parser.feed(html)
        parser.close()
        text = "".join(parser.out)
    except Exception:
        text = _html.unescape(_TAG.sub(" ", html))
    text = _TRAILING_SPACE.sub("\n", text.replace("\xa0", " "))
    return _BLANK_LINES.sub("\n\n", text).strip()


# --------------------------------------------------------------------------- automatic mail

_PRECEDENCE_AUTOMATIC = frozenset({"bulk", "junk", "list"})
# RFC 2919 (List-Id) and RFC 2369 (the others): only list managers and bulk senders add them.
_LIST_HEADERS = (
    ("list-id", "List-Id"),
    ("list-unsubscribe", "List-Unsubscribe"),
    ("list-post", "List-Post"),
    ("list-help", "List-Help"),
    ("list-subscribe", "List-Subscribe"),
    ("list-owner", "List-Owner"),
    ("list-archive", "List-Archive"),
)
# Vacation/autoresponder markers older than RFC 3834 (Zammad and Frappe check them too).
_AUTORESPONDER_HEADERS = (("x-autoreply", "X-Autoreply"), ("x-autorespond", "X-Autorespond"))
_NO_VALUES = frozenset({"no", "false", "0"})
_SYSTEM_SENDERS = frozenset({"mailer-daemon", "postmaster"})
_REPORT_TYPES = frozenset(
    {
        "message/delivery-status",
        "message/global-delivery-status",
        "message/disposition-notification",
    }
)


def is_automatic(msg: EmailMessage, envelope: Envelope | None) -> str | None:
    """Why ``msg`` is automatic (and must never be auto-answered), or None for a person's mail.

    The first matching rule wins; the rules and their sources are in ``docs/ingestion.md``.
    """
    try:
        ctype = msg.get_content_type()
        report_type = str(msg.get_param("report-type", "") or "")
    except Exception:
        ctype, report_type = "text/plain", ""
    index = _header_index(msg)
    sender = _sender_addr(index)
    return _automatic(index, ctype, report_type, sender, envelope)


def _sender_addr(index: Mapping[str, list[str]]) -> str:
    value = _first(index, "from", "From", None)
    if not value:
        return ""
    ids = re.findall(r"<([^<>]*)>", value)
    return (ids[0] if ids else value).strip()


def _automatic(
    index: Mapping[str, list[str]],
    ctype: str,
    report_type: str,
    sender: str,
    envelope: Envelope | None,
) -> str | None:
    # RFC 3834 §2: anything but "no" (comments and parameters ignored).
    for value in index.get("auto-submitted", ()):
        token = _strip_comments(_clean(value, "Auto-Submitted", None)).split(";")[0].strip()
        if token.lower() != "no":
            return f"Auto-Submitted: {token.lower()[:60] or '(empty)'}"
    # RFC 3834 §3.1.x / RFC 5321 §4.5.5: notifications are sent with a null return path.
    if envelope is not None and envelope.mail_from is not None and not envelope_from(envelope):
        return "null return path"
    for value in index.get("return-path", ()):
        if "".join(_strip_comments(_clean(value, "Return-Path", None)).split()) == "<>":
            return "null return path"
    # RFC 6522 multipart/report: DSNs (RFC 3464), MDNs (RFC 8098), feedback reports.
    if ctype == "multipart/report":
        kind = report_type.strip().lower()[:40] or "unknown"
        return f"delivery report (multipart/report; report-type={kind})"
    if ctype in _REPORT_TYPES:
        return f"delivery report ({ctype})"
    for value in index.get("precedence", ()):
        token = _strip_comments(_clean(value, "Precedence", None)).strip().lower()
        if token in _PRECEDENCE_AUTOMATIC:
            return f"Precedence: {token}"
    for key, name in _LIST_HEADERS:
        if key in index:
            return name
    for key, name in _AUTORESPONDER_HEADERS:
        for value in index.get(key, ()):
            token = _clean(value, name, None).strip().lower()
            if token not in _NO_VALUES:
                return name
    for who, addr in (("sender", sender), ("envelope sender", envelope_from(envelope))):
        local = addr.rpartition("@")[0].strip().strip('"').lower() if "@" in addr else ""
        if local in _SYSTEM_SENDERS:
            return f"{who} {local}@"
    return None


def envelope_from(envelope: Envelope | None) -> str:
    if envelope is None or not envelope.mail_from:
        return ""
    return envelope.mail_from.strip().strip("<>")


# --------------------------------------------------------------------------- the walk


class _Walker:
    """Depth-first walk of the MIME tree within the limits: bodies and attachments."""

    def __init__(self, limits: IngestLimits, store: AttachmentStore, problems: _Problems) -> None:
        self.limits = limits
        self.store = store
        self.problems = problems
        self.parts = 0
        self.attachment_parts = 0
        self.attachments: list[Attachment] = []
        self.parts_exhausted = False

    def walk(self, part: Message, depth: int) -> tuple[list[str], list[str]]:
        """(text bodies, html bodies) found under ``part``, in order."""
        if self.parts >= self.limits.max_parts:
            self.parts_exhausted = True
            return [], []
        self.parts += 1
        self._defects(part)
        info = _part_info(part, self.problems)
        maintype = info.ctype.partition("/")[0]
        try:
            children = part.get_payload() if part.is_multipart() else None
        except Exception:
            children = None
        if isinstance(children, list):
            if maintype == "message":
                self._attach_message(part, info)
                return [], []
            if depth >= self.limits.max_depth:
                self.problems.add(
                    f"MIME nesting deeper than {self.limits.max_depth}: "
                    "rest kept only in the raw message"
                )
                return [], []
            texts: list[str] = []
            htmls: list[str] = []
            for child in children:
                if not isinstance(child, Message):
                    continue
                t, h = self.walk(child, depth + 1)
                texts += t
                htmls += h
            if info.ctype == "multipart/alternative":
                # RFC 2046 §5.1.4: the last alternative is the preferred one.
                return texts[-1:], htmls[-1:]
            return texts, htmls
        if maintype == "multipart":
            info.ctype = "text/plain"  # no usable boundary: the body as text (defect noted)
        is_body = (
            info.ctype in ("text/plain", "text/html")
            and info.disposition != "attachment"
            and not info.filename
        )
        if is_body:
            label = f"{info.ctype} part"
            data = _payload(part, info, label, self.problems)
            text = _decode_text(data, info.params.get("charset", ""), label, self.problems)
            if "\r" in text:  # CRLF, and the bare CRs RFC 5322 forbids, are line breaks
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            if "\x00" in text:
                text = text.replace("\x00", "\ufffd")
                self.problems.add(f"NUL characters in a {label}: replaced")
            if info.ctype == "text/html":
                return [], [text]
            if info.params.get("format", "").lower() == "flowed":
                text = unflow(text, info.params.get("delsp", "").lower() == "yes")
            return [text], []
        self._attach(part, info)
        return [], []

    def _defects(self, part: Message) -> None:
        for defect in getattr(part, "defects", ()):
            note = _DEFECT_NOTES.get(type(defect).__name__)
            if note:
                self.problems.add(note)

    def _room(self) -> bool:
        self.attachment_parts += 1
        return len(self.attachments) < self.limits.max_attachments

    def _attach(self, part: Message, info: _PartInfo) -> None:
        if not self._room():
            return
        data = _payload(part, info, f"{info.ctype} attachment", self.problems)
        self._store(data, info)

    def _attach_message(self, part: Message, info: _PartInfo) -> None:
        if not self._room():
            return
        try:
            buffer = BytesIO()
            generator = _bytes_generator(buffer)
            for inner in part.get_payload():
                generator.flatten(inner, linesep="\r\n")
            data = buffer.getvalue()
        except Exception:
            self.problems.add(
                f"{info.ctype} part could not be re-serialised: kept only in the raw message"
            )
            return
        self._store(data, info)

    def _store(self, data: bytes, info: _PartInfo) -> None:
        name = _safe_name(info.filename, info.ctype, len(self.attachments) + 1)
        try:
            content_id = self.store.put(data)
        except (TooLarge, ValueError) as exc:  # the store's size limit: noted, not fatal
            self.problems.add(f"attachment {name!r} not stored: {str(exc)[:200]}")
            return
        cid = info.content_id
        if cid is not None and any(a.content_id == cid for a in self.attachments):
            self.problems.add(f"Content-ID <{cid}> used by two parts: kept on the first only")
            cid = None
        self.attachments.append(
            Attachment(
                id=content_id, name=name, size=len(data), mimetype=info.ctype, content_id=cid
            )
        )


def _bytes_generator(buffer: BytesIO) -> BytesGenerator:
    return BytesGenerator(buffer, mangle_from_=False, policy=_RESERIALISE)


def _safe_name(raw: str, ctype: str, number: int) -> str:
    """A file name safe to show and to save: no path, no control or bidi characters."""
    name = raw
    if "=?" in name:  # RFC 2047 words in a parameter: wrong, but Outlook and Gmail send them
        name = decode_subject(name)
    name = _no_surrogates(name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip(" .")
    if len(name) > MAX_NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        ext = dot + ext if dot and len(ext) <= 10 else ""
        name = (stem if ext else name)[: MAX_NAME_CHARS - len(ext)] + ext
    if not name:
        name = f"attachment-{number}{_EXTENSIONS.get(ctype, '.bin')}"
    return name


# --------------------------------------------------------------------------- parse_message


def parse_message(
    raw: bytes,
    *,
    envelope: Envelope | None = None,
    attachments: AttachmentStore,
    limits: IngestLimits = IngestLimits(),
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
    subject = decode_subject(subject).strip()
    if len(subject) > MAX_SUBJECT_CHARS:
        problems.add(f"Subject over {MAX_SUBJECT_CHARS} characters: truncated")
        subject = subject[:MAX_SUBJECT_CHARS]

    message_id = _message_id(_first(index, "message-id", "Message-ID", problems), problems)
    in_reply_to_ids = _msg_ids(_first(index, "in-reply-to", "In-Reply-To", problems))
    references = _msg_ids(_first(index, "references", "References", problems))
    if len(references) > MAX_REFERENCES:
        problems.add(f"References holds {len(references)} ids: the first and the newest kept")
        references = references[:1] + references[-(MAX_REFERENCES - 1) :]
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


def _top_type(msg: Message, problems: _Problems) -> tuple[str, str]:
    """The top-level content type and its ``report-type`` parameter."""
    info = _part_info(msg, problems)
    return info.ctype, info.params.get("report-type", "")


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
