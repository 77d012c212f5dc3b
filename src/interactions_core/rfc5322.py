"""The mail rules that ingestion, composition and the MIME builder share: one copy of each.

* **Message-IDs** (RFC 5322 §3.6.4): :func:`msg_ids` reads the ids of an In-Reply-To or
  References field, :func:`msg_id` the one of a Message-ID field, :func:`is_strict_msg_id` says
  whether an id is a msg-id of the RFC's (non-obsolete) syntax.
* **The References bound** (RFC 5537 §3.4.4 practice): :data:`MAX_REFERENCES` and
  :func:`bound_references`.
* **RFC 2047 encoded words**: :func:`decode_encoded_words`.
* **Header text** shown and written back: :func:`safe_header_text` (a decoded display
  name), :func:`defuse_encoded_words` (a decoded Subject, a received file name), and
  :func:`writes_line_break` (what an agent typed, as a MIME writer would write it).
* **File names** of attachments, received or uploaded: :func:`safe_filename`.

Pure functions: no I/O, and none of them raises on hostile input.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from email.policy import SMTP as _SMTP_POLICY
from typing import NamedTuple

from .model import HEADER_BREAKS, has_line_break

__all__ = [
    "MAX_FILENAME_BYTES",
    "MAX_MSG_ID_CHARS",
    "MAX_REFERENCES",
    "MsgId",
    "bound_references",
    "decode_encoded_words",
    "defuse_encoded_words",
    "is_strict_msg_id",
    "msg_id",
    "msg_ids",
    "no_surrogates",
    "safe_filename",
    "safe_header_text",
    "writes_line_break",
]

# --------------------------------------------------------------------------- Message-IDs
#
# RFC 5322 §3.6.4:  msg-id = [CFWS] "<" id-left "@" id-right ">" [CFWS]
#                   id-left = dot-atom-text / obs-id-left
#                   id-right = dot-atom-text / no-fold-literal / obs-id-right
#
# The rule applied here, on every side (what is read from a received mail, what a reply refers
# to, what the MIME builder writes):
#
# * An id is found by its angle brackets: "<" [FWS] id [FWS] ">". White space just inside the
#   brackets is dropped (obsolete syntax, RFC 5322 §4.5.4); everything outside the brackets
#   (the phrases of pre-2822 In-Reply-To fields, RFC 5322 App. B, junk, commas) is ignored.
#   Comments are not parsed: an id is read wherever its brackets are.
# * Accepted between the brackets: 1 to MAX_MSG_ID_CHARS characters, each printable and not
#   white space, "<" or ">" (non-ASCII is allowed: RFC 6532 §3.2 extends atext with UTF-8).
#   Anything else (white space or a bracket inside, control or format characters, an empty or
#   an over-long id) is refused: the token is dropped, as it could not be written back into a
#   header as one id.
# * Leniency: an accepted id need not be strictly conformant. ``<abc>`` (no "@") or
#   ``<a..b@x>`` is kept, threaded and compared as it is, because the sender's client threads
#   on it; ingestion notes such an id as a parse problem. :func:`is_strict_msg_id` tells them
#   apart.
# * Canonical form: "<" + id + ">", the id byte for byte as received (ids are compared
#   exactly; RFC 5322 gives no case rule).

# RFC 5322 sets no limit but the 998-character line (§2.1.1); real ids stay under ~120
# characters. 250 keeps "References: <id>" well inside one line, and is the bound Content-IDs
# (the same msg-id syntax, RFC 2045 §7) get in ``model.parse_content_id``.
MAX_MSG_ID_CHARS = 250

_BRACKETED = re.compile(r"<\s*([^<>\s]+)\s*>")
# The fast path: exactly one id of visible ASCII (no "<", ">" or space) and nothing else.
_CANONICAL = re.compile(rf"<[!-;=?-~]{{1,{MAX_MSG_ID_CHARS}}}>")
_BARE = re.compile(r"[^<>\s,;]+@[^<>\s,;]+")

# RFC 5322 §3.2.3 atext and §3.4.1 dtext, both extended with UTF8-non-ascii (RFC 6532 §3.2).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]"
_DOT_ATOM_TEXT = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_NO_FOLD_LITERAL = r"\[[!-Z^-~\u0080-\U0010ffff]*\]"
_STRICT = re.compile(rf"<{_DOT_ATOM_TEXT}@(?:{_DOT_ATOM_TEXT}|{_NO_FOLD_LITERAL})>")


def _usable(inner: str) -> bool:
    """An id (without its brackets) that can be kept: see the rule above."""
    return len(inner) <= MAX_MSG_ID_CHARS and inner.isprintable()


def msg_ids(value: str | None, *, bare: bool = False) -> list[str]:
    """The ids of an In-Reply-To or References field value, in order, as ``"<id>"``.

    Only bracketed ids count (phrases of old mail are dropped, RFC 5322 App. B and §4.5.4).
    With ``bare=True``, a value holding no angle bracket at all is read as ids written without
    them (white space, comma or semicolon separated tokens holding an "@"): for values that did
    not come from a header, such as a Message-ID typed into an API. Duplicates are kept.
    """
    if not value:
        return []
    if _CANONICAL.fullmatch(value):  # the usual case: exactly one "<id>"
        return [value]
    if "<" in value or ">" in value:
        return [f"<{inner}>" for inner in _BRACKETED.findall(value) if _usable(inner)]
    if not bare:
        return []
    return [f"<{token}>" for token in _BARE.findall(value) if _usable(token)]


class MsgId(NamedTuple):
    """The id of a Message-ID field."""

    id: str  # canonical "<id>"
    bracketed: bool  # False: written without its angle brackets ("id@host"), bracketed here


def msg_id(value: str | None) -> MsgId | None:
    """The id of a Message-ID field value (RFC 5322 §3.6.4); None when there is no usable one.

    The first bracketed id (as :func:`msg_ids` reads them); else, when the whole value is one
    token holding an "@" and no white space or angle bracket, that token bracketed (a common
    mistake of old software, reported through ``bracketed=False``).
    """
    if not value:
        return None
    ids = msg_ids(value)
    if ids:
        return MsgId(ids[0], True)
    token = value.strip()
    if "@" not in token or "<" in token or ">" in token or _has_space(token):
        return None
    return MsgId(f"<{token}>", False) if _usable(token) else None


def _has_space(text: str) -> bool:
    return any(c.isspace() for c in text)


def is_strict_msg_id(value: str) -> bool:
    """True when ``value`` (with its brackets) is an RFC 5322 §3.6.4 msg-id in the current
    syntax: ``"<" dot-atom-text "@" (dot-atom-text / no-fold-literal) ">"``, UTF-8 allowed
    (RFC 6532 §3.2), at most :data:`MAX_MSG_ID_CHARS` between the brackets.

    False for ``<abc>`` (no "@"), ``<a..b@x>``, ``<"q"@x>`` (obsolete forms) and for anything
    :func:`msg_ids` would not keep.
    """
    return _STRICT.fullmatch(value) is not None and _usable(value[1:-1])


# --------------------------------------------------------------------------- References

# The one bound, for the ids kept from a received References field and for the References of a
# reply. RFC 5322 §3.6.4 sets none; RFC 5537 §3.4.4 (Netnews, the origin of the field) requires
# trimming once the unfolded field exceeds 998 characters, never removing the first id nor the
# last two, and the USEFOR drafts before it trimmed to 21 ids. 20 ids of a typical length
# (about 45 characters) fit in those 998 characters; Mutt writes 10, helpdesks every article's.
MAX_REFERENCES = 20


def bound_references(ids: Sequence[str], limit: int = MAX_REFERENCES) -> list[str]:
    """At most ``limit`` ids of a References chain: the first (the thread's root) and the
    newest ones (the parent is last), as RFC 5537 §3.4.4 trims: from the second id onwards.

    ``limit`` 1 keeps only the newest id (the parent matters most); 0 or less keeps none.
    """
    if limit <= 0:
        return []
    if len(ids) <= limit:
        return list(ids)
    if limit == 1:
        return list(ids[-1:])
    return [ids[0], *ids[len(ids) - (limit - 1) :]]


# --------------------------------------------------------------------------- RFC 2047

# RFC 2047 §2: =?charset?encoding?encoded-text?= ; an RFC 2231 §5 language suffix ("*en") may
# follow the charset. Encoded text is printable ASCII without "?" or space.
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([QqBb])\?([!->@-~]*)\?=")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def _word_bytes(encoding: str, text: str) -> bytes | None:
    """The octets of one encoded word, or None when they cannot be recovered."""
    data = text.encode("ascii")
    if encoding in "Qq":
        # RFC 2047 §4.2: "_" is a space, "=XX" an octet.
        return _Q_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data.replace(b"_", b" "))
    data += b"=" * (-len(data) % 4)  # senders often drop the padding
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def _to_text(data: bytes, charset: str) -> str:
    """Bytes to text in the declared charset; an unknown or broken charset falls back to UTF-8."""
    try:
        return data.decode(charset, "replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        # LookupError: unknown charset or a non-text codec ("base64"); UnicodeError: codecs
        # such as "idna" that only decode strictly.
        return data.decode("utf-8", "replace")


def decode_encoded_words(text: str) -> str:
    """Decode the RFC 2047 encoded-words of a header value (Subject, a display name, a file
    name some clients encode that way).

    Unchanged when there is none. Never raises: a malformed word stays as written, an unknown
    charset is read as UTF-8. Adjacent words are joined without the whitespace between them
    (RFC 2047 §6.2), and their octets are decoded together when they share a charset, because
    some senders split a multi-byte character across two words.
    """
    if "=?" not in text:
        return text
    out: list[str] = []
    pending = b""
    pending_charset = ""
    previous_was_word = False
    pos = 0

    for match in _ENCODED_WORD.finditer(text):
        gap = text[pos : match.start()]
        pos = match.end()
        charset, encoding, encoded = match.groups()
        data = _word_bytes(encoding, encoded)
        if data is None:
            if pending:
                out.append(_to_text(pending, pending_charset))
                pending = b""
            out.append(gap + match.group(0))
            previous_was_word = False
            continue
        if not (previous_was_word and not gap.strip()):
            if pending:
                out.append(_to_text(pending, pending_charset))
                pending = b""
            out.append(gap)
        charset = charset.lower()
        if pending and charset != pending_charset:
            out.append(_to_text(pending, pending_charset))
            pending = b""
        pending += data
        pending_charset = charset
        previous_was_word = True

    if pending:
        out.append(_to_text(pending, pending_charset))
    out.append(text[pos:])
    return "".join(out)


def no_surrogates(text: str) -> str:
    """``text`` as valid Unicode: octets the ``email`` parser could not decode (kept as
    surrogate escapes) are read as UTF-8 (RFC 6532), what is not UTF-8 becomes U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:  # a lone surrogate that is no escaped octet
            return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


# --------------------------------------------------------------------------- header text
#
# The rule for text that came in a header field and may be written into one again: a decoded
# display name (a reply copies it into its To or Cc, and the stdlib's header writer takes it as
# it is). A Subject and a received file name get the last point only (a reply's Subject is put
# on one line by the composer; a file name keeps only printable characters).
#
# * Line breaks (``model.HEADER_BREAKS``: CR, LF, VT, FF, FS, GS, RS, NEL, U+2028, U+2029, NUL)
#   and every other control character (C0 but TAB, DEL, C1): each run of them, with the spaces
#   around it, becomes one space. Decoded from an encoded word (``=?utf-8?q?Evil=0D=0ABcc:...?=``)
#   they would start a new header line when written back.
# * Bidi embeddings, overrides and isolates (U+202A..U+202E, U+2066..U+2069): removed. They make
#   text display in another order than it is read (CVE-2021-42574, "Trojan Source"). The marks
#   (LRM, RLM, ALM) are kept: they override no run of text, and right-to-left names use them.
# * An RFC 2047 encoded word still in the text: its "=?" is written "= ?". The text is decoded
#   already, so such a word is one that was not (broken base64, or an encoded word inside an
#   encoded word), and the stdlib decodes it when the text is written into a header again, CR
#   and LF included: writing it could inject a header line. Only the start of an encoded word
#   is touched, ``=?charset?Q?`` or ``=?charset?B?`` (the stdlib needs no closing "?=" after a
#   Q text starting with "=XX", and allows white space inside): "Is 2+2=?" stays as it is.
#
# A changed text is stripped of white space at both ends. Text with none of these is unchanged.

_BIDI_CONTROLS = re.compile(r"[\u202a-\u202e\u2066-\u2069]+")
_CONTROL_RUNS = re.compile(rf"(?:[ \t]*[{HEADER_BREAKS}\x01-\x08\x0a-\x1f\x7f-\x9f])+[ \t]*")
# The stdlib splits an encoded word on "?" into exactly "=", charset, Q or B, text, "=": so
# every word it decodes starts "=?" charset "?" (Q|B) "?", charset without "?". This matches
# the "=?" of each (and of a few it would refuse).
_ENCODED_WORD_OPENING = re.compile(r"=\?(?=[^?]*\?[QqBb]\?)")


def safe_header_text(text: str) -> str:
    """``text`` with no line break, control or bidi override character and no RFC 2047 encoded
    word left in it: see the rule above. Never raises."""
    if text.isprintable() and "=?" not in text:
        return text
    safe = defuse_encoded_words(_CONTROL_RUNS.sub(" ", _BIDI_CONTROLS.sub("", text)))
    return safe.strip() if safe != text else text


def defuse_encoded_words(text: str) -> str:
    """``text`` (decoded already) with the "=?" of each RFC 2047 encoded word left in it
    written "= ?", so that no decoder reads it again: see the rule above. Never raises."""
    if "=?" not in text:
        return text
    return _ENCODED_WORD_OPENING.sub("= ?", text)


def writes_line_break(value: str) -> bool:
    """Whether ``value``, set as an unstructured header (a Subject), holds a line break once
    written: literally, or through an RFC 2047 encoded word (``=?utf-8?q?a=0D=0ABcc:...?=``),
    which the stdlib's header writer decodes and then writes raw, CR LF included, as a new
    header line. Asked of the header parser the MIME builder uses, so the answer is the one
    that matters. Never raises: a value the parser refuses counts as a break."""
    if has_line_break(value):
        return True
    if "=?" not in value:
        return False
    try:
        written = str(_SMTP_POLICY.header_factory("subject", value))
    except Exception:  # whatever the stdlib parser raises: it could not be written safely
        return True
    return has_line_break(written)


# --------------------------------------------------------------------------- file names

# ext4, XFS and Btrfs allow 255 octets per name, NTFS and HFS+ 255 UTF-16 units (never more
# than the UTF-8 octets): a name of at most 255 UTF-8 octets can be saved anywhere.
MAX_FILENAME_BYTES = 255
_MAX_EXTENSION_CHARS = 10  # an extension kept when a long name is cut

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


def safe_filename(
    name: str,
    *,
    content_type: str | None = None,
    number: int | None = None,
    mime_parameter: bool = False,
) -> str:
    """A file name safe to show and to save.

    No path (the part after the last "/" or "\\"), no control, format (bidi) or other
    non-printable character, no leading or trailing dot or space, at most
    :data:`MAX_FILENAME_BYTES` UTF-8 octets (a longer name is cut before its extension, which
    is kept when it has at most 10 characters).

    When nothing is left, the fallback is "attachment", then "-<number>" when ``number`` is
    given, then the usual extension of ``content_type`` when it is given (".bin" for a type
    without one): ``attachment-2.pdf``.

    ``mime_parameter=True``: the name is a MIME parameter of a received mail, so RFC 2047
    encoded words are decoded first (RFC 2047 §5 forbids them there, but Outlook and Gmail
    send them) and octets the parser could not decode are read as UTF-8.

    Either way, an encoded word still in the name (typed in an upload's name, one the decoder
    could not read, or one inside an encoded word) has its "=?" written "= ?"
    (:func:`defuse_encoded_words`): a MIME writer would decode it into the
    Content-Disposition header of the mail that carries the file, CR and LF included.
    """
    if mime_parameter:
        if "=?" in name:
            name = decode_encoded_words(name)
        name = no_surrogates(name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable())
    name = defuse_encoded_words(name)
    name = name.strip(" .")
    if len(name) * 4 > MAX_FILENAME_BYTES and len(name.encode("utf-8")) > MAX_FILENAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        ext = dot + ext if dot and len(ext) <= _MAX_EXTENSION_CHARS else ""
        room = MAX_FILENAME_BYTES - len(ext.encode("utf-8"))
        name = _cut(stem if ext else name, room).rstrip(" .") + ext
    if not name:
        name = "attachment"
        if number is not None:
            name += f"-{number}"
        if content_type is not None:
            name += _EXTENSIONS.get(content_type.lower(), ".bin")
    return name


def _cut(text: str, octets: int) -> str:
    """The longest start of ``text`` that fits in ``octets`` UTF-8 octets."""
    return text.encode("utf-8")[:octets].decode("utf-8", "ignore")
