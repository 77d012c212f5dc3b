"""The MIME tree: part headers, payload decoding, the walk that finds bodies and attachments."""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from email import policy
from email.generator import BytesGenerator
from email.message import Message
from functools import lru_cache
from io import BytesIO
from typing import Any

from ..errors import TooLarge
from ..model import Attachment, parse_content_id
from ..ports import AttachmentStore
from ..rfc5322 import safe_filename
from .common import IngestLimits, _Problems
from .headers import _clean, _header
from .html import unflow

# Re-serialising a message/rfc822 part: header lines exactly as received, CRLF.
_RESERIALISE = policy.default.clone(refold_source="none", linesep="\r\n")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n"
_B64_KEEP = re.compile(rb"[^A-Za-z0-9+/]")

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
        name = safe_filename(
            info.filename,
            content_type=info.ctype,
            number=len(self.attachments) + 1,
            mime_parameter=True,
        )
        try:
            blob = self.store.put(data)
        except (TooLarge, ValueError) as exc:  # the store's size limit: noted, not fatal
            self.problems.add(f"attachment {name!r} not stored: {str(exc)[:200]}")
            return
        cid = info.content_id
        if cid is not None and any(a.content_id == cid for a in self.attachments):
            self.problems.add(f"Content-ID <{cid}> used by two parts: kept on the first only")
            cid = None
        # The attachment's own id, unique within the message and the same every time the
        # message is parsed (duplicate detection compares them): the blob for the first part
        # with these bytes, as ids always were; "<blob>-<n>" (n: its place among the
        # attachments) for a later part repeating them.
        taken = {a.id for a in self.attachments}
        own = blob
        number = len(self.attachments) + 1
        while own in taken:  # (a store's own ids could end in "-<n>": never two the same)
            own = f"{blob}-{number}"
            number += 1
        self.attachments.append(
            Attachment(
                id=own, blob=blob, name=name, size=len(data), mimetype=info.ctype, content_id=cid
            )
        )


def _bytes_generator(buffer: BytesIO) -> BytesGenerator:
    return BytesGenerator(buffer, mangle_from_=False, policy=_RESERIALISE)


def _top_type(msg: Message, problems: _Problems) -> tuple[str, str]:
    """The top-level content type and its ``report-type`` parameter."""
    info = _part_info(msg, problems)
    return info.ctype, info.params.get("report-type", "")
