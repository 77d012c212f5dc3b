"""MIME building: an ``OutgoingMail`` (+ attachment bytes) -> the exact bytes handed to a relay.

Rules (issue 5, ``docs/smtp.md``):

* stdlib ``email``: ``EmailMessage`` serialised with ``policy.SMTP`` (CRLF, 7-bit headers,
  RFC 2047 encoded-words only in the Subject and in display-name phrases), or with
  ``policy.SMTPUTF8`` when an address has a non-ASCII local part (RFC 6531/6532: raw UTF-8,
  only over a relay that offers SMTPUTF8 - the transport refuses permanently otherwise).
* IDN domains are written as A-labels (``xn--...``), in the headers and in the envelope, so an
  internationalised *domain* never needs SMTPUTF8.
* Python 3.11's ``email`` writes a non-ASCII local part as an encoded-word when ``utf8`` is
  off (``=?utf-8?q?j=C3=B6rg?=@...``, undeliverable). That can't happen here: such an address
  switches the whole message to the UTF-8 policy, and the serialised header block is checked
  to contain every addr-spec verbatim before the message is released.
* Bcc only in the envelope; ``Auto-Submitted`` is never added (agent replies are not
  automatic, RFC 3834); Message-ID comes from the outbox entry, so a retry is the same message.
* A CR, LF or NUL in any header value is refused (``HeaderInjection``), even though the core
  already refuses them at its input edge: defence in depth.
"""

from __future__ import annotations

import email.policy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import format_datetime

import idna

from interactions_core.model import (
    Address,
    Attachment,
    inline_attachments,
    parse_content_id,
)
from interactions_core.ports import AttachmentStore, OutgoingMail
from interactions_core.rfc5322 import defuse_encoded_words, msg_ids, writes_line_break

__all__ = [
    "BuiltMessage",
    "HeaderInjection",
    "MimeError",
    "build_message",
    "envelope_address",
    "to_a_label",
]

# refold_source="none": a header stored as a string (``_set_ids``) is written as it is; every
# other header is a header object, which folds itself.
_SMTP = email.policy.SMTP.clone(refold_source="none")
_SMTPUTF8 = email.policy.SMTPUTF8.clone(refold_source="none")
_LINE = 78  # RFC 5322 §2.1.1: lines SHOULD stay within 78 characters
_UNSAFE = re.compile(r'[\s<>"]')  # would end the <mailbox> or add a parameter
_QUOTED_LOCAL = re.compile(r'^"(?:[^"\\\r\n]|\\.)*"$')
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 2045 token (MIME type parts)


class MimeError(ValueError):
    """The mail can't be written as a valid message: it will never succeed (permanent)."""


class HeaderInjection(MimeError):
    """A CR, LF or NUL in a header value: it would start a header of its own."""


AttachmentSource = AttachmentStore | Callable[[str], bytes]


@dataclass(frozen=True, slots=True)
class BuiltMessage:
    """A message ready for the relay: its bytes and its envelope."""

    message: EmailMessage
    data: bytes  # CRLF line endings, not dot-stuffed (the SMTP client does that)
    sender: str  # MAIL FROM, domain as A-label
    recipients: tuple[str, ...]  # RCPT TO: To + Cc + Bcc, deduplicated, domains as A-labels
    smtputf8: bool  # True: needs a relay offering SMTPUTF8 (non-ASCII local part)
    message_id: str

    @property
    def eight_bit(self) -> bool:
        """True when the bytes are not 7-bit clean (BODY=8BITMIME, or SMTPUTF8)."""
        return not self.data.isascii()


# --------------------------------------------------------------------------- addresses


def _refuse_breaks(field: str, value: str) -> str:
    """Refuse a line break in a header value, typed or hidden in an RFC 2047 encoded word
    (the stdlib's writer decodes ``=?utf-8?q?=0D=0A?=`` and writes the CR LF raw)."""
    if writes_line_break(value):
        raise HeaderInjection(f"{field}: line breaks and NUL are not allowed in a header value")
    return value


def _filename(value: str) -> str | None:
    """A file name as a Content-Disposition parameter: no line break, and no encoded word the
    stdlib would decode into the header (RFC 2047 §5 forbids them in parameters anyway)."""
    return _refuse_breaks("attachment name", defuse_encoded_words(value)) or None


def to_a_label(domain: str) -> str:
    """An IDN domain as A-labels (IDNA 2008 with UTS #46 mapping); ASCII domains lower-cased.

    Falls back to the stdlib's IDNA 2003 codec for names IDNA 2008 refuses but relays still
    route (e.g. some symbols); raises ``MimeError`` when neither can encode it.
    """
    if domain.startswith("[") and domain.endswith("]"):  # address literal
        if not domain.isascii():
            raise MimeError(f"invalid address literal {domain!r}")
        return domain
    if domain.isascii():
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        pass
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise MimeError(f"domain {domain!r} can't be written as A-labels: {exc}") from None


def _split(addr: str) -> tuple[str, str]:
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        raise MimeError(f"{addr!r} is not an addr-spec (local@domain)")
    return local, domain


def envelope_address(addr: str) -> tuple[str, bool]:
    """``addr`` as written in the envelope and headers: (A-label form, needs SMTPUTF8).

    Refuses what could not sit on a ``MAIL FROM:<...>`` / ``RCPT TO:<...>`` line as one
    mailbox (white space, angle brackets or quotes outside a quoted local part).
    """
    _refuse_breaks("address", addr)
    local, domain = _split(addr.strip())
    if _UNSAFE.search(_QUOTED_LOCAL.sub("", local, count=1)) or _UNSAFE.search(domain):
        raise MimeError(f"{addr!r} can't be written as one SMTP mailbox")
    return f"{local}@{to_a_label(domain)}", not local.isascii()


def _unquote_local(local: str) -> str:
    """``"john doe"`` -> ``john doe``: the header registry quotes it again where needed."""
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        return re.sub(r"\\(.)", r"\1", local[1:-1])
    return local


def _header_addresses(
    field: str, addresses: Iterable[Address], seen: list[str]
) -> tuple[list[HeaderAddress], bool]:
    out: list[HeaderAddress] = []
    utf8 = False
    for a in addresses:
        _refuse_breaks(field, a.name)
        wire, needs_utf8 = envelope_address(a.addr)
        utf8 = utf8 or needs_utf8
        local, domain = _split(wire)
        try:
            out.append(
                HeaderAddress(display_name=a.name, username=_unquote_local(local), domain=domain)
            )
        except (ValueError, TypeError) as exc:
            raise MimeError(f"{field}: {a.addr!r} can't be written: {exc}") from None
        seen.append(wire)
    return out, utf8


# --------------------------------------------------------------------------- the message


def _msg_ids(ids: Iterable[str]) -> list[str]:
    """The ids to write in In-Reply-To/References: old or hostile mail may carry anything there.

    ``rfc5322.msg_ids`` keeps only what can stand in a header as one ``<id>`` (no white space,
    bracket or control character inside, bounded length), ``<abc>`` included; an id with
    non-ASCII characters is dropped too, as the headers are written 7-bit.
    """
    out: list[str] = []
    for raw in ids:
        _refuse_breaks("references", raw)
        out.extend(found for found in msg_ids(raw) if found.isascii())
    return out


def _own_message_id(value: str) -> bool:
    """The Message-ID we originate: one ``<id-left@id-right>`` of visible ASCII, nothing else
    (the ids ``RandomIds`` makes are strict RFC 5322 msg-ids)."""
    left, at, right = value[1:-1].rpartition("@")
    return msg_ids(value) == [value] and value.isascii() and bool(at and left and right)


def _set_ids(msg: EmailMessage, name: str, ids: list[str]) -> None:
    """Write a list of ids folded between ids (RFC 5322 §2.2.3), each one on one line.

    Python 3.11 treats In-Reply-To and References as unstructured text: set as usual, an id
    longer than a line would be RFC 2047-encoded (``=?utf-8?q?=3Cid...?=``), which no client
    reads as an id any more. The ids are checked (``_msg_ids``), so the value is safe as it is.
    """
    lines: list[str] = []
    line = ""
    used = len(name) + 1  # "Name:"
    for found in ids:
        if line and used + 1 + len(found) > _LINE:
            lines.append(line)
            line, used = "", 0
        line = f"{line} {found}" if line else found
        used += 1 + len(found)
    lines.append(line)
    msg.set_raw(name, "\r\n ".join(lines))


def _set_body(msg: EmailMessage, text: str, html: str) -> None:
    def cte(s: str) -> str | None:
        # Non-ASCII bodies go quoted-printable: 7-bit clean, so no relay needs 8BITMIME.
        return None if s.isascii() else "quoted-printable"

    if html and text:
        msg.set_content(text, charset="utf-8", cte=cte(text))
        msg.add_alternative(html, subtype="html", charset="utf-8", cte=cte(html))
    elif html:
        msg.set_content(html, subtype="html", charset="utf-8", cte=cte(html))
    else:
        msg.set_content(text, charset="utf-8", cte=cte(text))


def _part_type(attachment: Attachment) -> tuple[str, str]:
    mimetype = _refuse_breaks("attachment type", attachment.mimetype).split(";")[0].strip()
    maintype, _, subtype = mimetype.lower().partition("/")
    if not (_TOKEN.fullmatch(maintype) and _TOKEN.fullmatch(subtype)):
        return "application", "octet-stream"
    if maintype in ("multipart", "message"):
        # Never base64 a message/* or multipart/* body (RFC 2046): ship the bytes opaque.
        return "application", "octet-stream"
    return maintype, subtype


def _attach(msg: EmailMessage, attachment: Attachment, data: bytes) -> None:
    maintype, subtype = _part_type(attachment)
    # stdlib writes a non-ASCII filename as RFC 2231 ``filename*=utf-8''...``.
    msg.add_attachment(
        data, maintype=maintype, subtype=subtype, filename=_filename(attachment.name)
    )


def _inline(mail: OutgoingMail) -> tuple[Attachment, ...]:
    """The attachments the HTML shows through ``cid:`` URLs and whose Content-ID can be written
    (one token of visible ASCII, as ingestion keeps them)."""
    if not mail.html:
        return ()
    return tuple(
        a
        for a in inline_attachments(mail.html, mail.attachments)
        if a.content_id and parse_content_id(a.content_id) == a.content_id
    )


def _relate(html_part: EmailMessage, attachment: Attachment, data: bytes) -> None:
    """RFC 2387: the image beside the HTML in its multipart/related, under its Content-ID."""
    maintype, subtype = _part_type(attachment)
    html_part.add_related(
        data,
        maintype=maintype,
        subtype=subtype,
        cid=f"<{attachment.content_id}>",
        disposition="inline",
        filename=_filename(attachment.name),
    )


def _attachment_bytes(source: AttachmentSource | None, attachment: Attachment) -> bytes:
    if source is None:
        raise MimeError(f"attachment {attachment.name!r}: no attachment store configured")
    get = source if callable(source) else source.get
    try:
        return get(attachment.blob)  # the content address; ``id`` names the attachment
    except KeyError:
        raise MimeError(
            f"attachment {attachment.name!r} ({attachment.blob}) is missing from the store"
        ) from None


def build_message(mail: OutgoingMail, attachments: AttachmentSource | None = None) -> BuiltMessage:
    """Compose the message for ``mail``; raises ``MimeError`` (permanent) when it can't.

    ``attachments`` gives the bytes of each ``Attachment.blob`` (an ``AttachmentStore`` or a
    ``get`` callable); it may be None for mail without attachments.
    """
    try:
        return _build(mail, attachments)
    except MimeError:
        raise
    except UnicodeError as exc:  # e.g. lone surrogates in a body
        raise MimeError(f"the mail can't be encoded: {exc}") from None
    except (ValueError, TypeError) as exc:
        # Whatever else the email package refuses: permanent, so the agent is told (Failed)
        # instead of the dispatcher retrying a mail that can never be built.
        raise MimeError(f"the mail can't be built: {exc}") from None


def _build(mail: OutgoingMail, attachments: AttachmentSource | None) -> BuiltMessage:
    _refuse_breaks("subject", mail.subject)
    message_id = _refuse_breaks("message-id", mail.message_id).strip()
    if not _own_message_id(message_id):
        raise MimeError(f"Message-ID {mail.message_id!r} is not a valid <id@domain>")

    written: list[str] = []  # every addr-spec put in a header, to verify the bytes
    from_, utf8_from = _header_addresses("from", (mail.from_,), written)
    reply_to, utf8_rt = _header_addresses("reply-to", mail.reply_to, written)
    to, utf8_to = _header_addresses("to", mail.to, written)
    cc, utf8_cc = _header_addresses("cc", mail.cc, written)

    sender, utf8_sender = envelope_address(mail.from_.addr)
    recipients: list[str] = []
    keys: set[str] = set()
    utf8_rcpt = False
    for a in (*mail.to, *mail.cc, *mail.bcc):
        wire, needs = envelope_address(a.addr)
        utf8_rcpt = utf8_rcpt or needs
        if wire.casefold() not in keys:
            keys.add(wire.casefold())
            recipients.append(wire)
    if not recipients:
        raise MimeError("the mail has no recipient")
    smtputf8 = utf8_from or utf8_rt or utf8_to or utf8_cc or utf8_sender or utf8_rcpt

    policy = _SMTPUTF8 if smtputf8 else _SMTP
    msg = EmailMessage(policy=policy)
    date = mail.date if mail.date.tzinfo is not None else mail.date.replace(tzinfo=UTC)
    msg["Date"] = format_datetime(date)
    msg["From"] = from_
    if reply_to:
        msg["Reply-To"] = reply_to
    if to:
        msg["To"] = to
    if cc:
        msg["Cc"] = cc
    # Bcc: envelope only, never a header.
    if mail.subject:
        msg["Subject"] = mail.subject
    msg["Message-ID"] = message_id
    parents = _msg_ids([mail.in_reply_to] if mail.in_reply_to else [])
    if parents:
        _set_ids(msg, "In-Reply-To", parents[:1])
    references = _msg_ids(mail.references)
    if references:
        _set_ids(msg, "References", references)

    _set_body(msg, mail.text, mail.html)
    inline = _inline(mail)
    if inline:
        html_part = msg.get_body(("html",))
        assert isinstance(html_part, EmailMessage)  # _set_body just wrote it
        for attachment in inline:
            _relate(html_part, attachment, _attachment_bytes(attachments, attachment))
        html_part.set_param("type", "text/html")  # RFC 2387 §3.1: the root part's type
    for attachment in mail.attachments:
        if attachment not in inline:
            _attach(msg, attachment, _attachment_bytes(attachments, attachment))

    for part in msg.walk():
        if part is not msg:
            del part["MIME-Version"]  # the stdlib repeats it on parts it creates
    data = msg.as_bytes(policy=policy)
    _verify_addresses(data, written, smtputf8)
    return BuiltMessage(
        message=msg,
        data=data,
        sender=sender,
        recipients=tuple(recipients),
        smtputf8=smtputf8,
        message_id=message_id,
    )


def _verify_addresses(data: bytes, written: list[str], smtputf8: bool) -> None:
    """Every addr-spec must be in the header block verbatim: never an encoded-word inside one."""
    head = data.split(b"\r\n\r\n", 1)[0]
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", head)
    for addr in written:
        local, domain = _split(addr)
        local = _unquote_local(local)
        if local.encode("utf-8") not in unfolded or domain.encode("ascii") not in unfolded:
            raise MimeError(f"{addr!r} would not be written verbatim in the headers")
    if not smtputf8 and not head.isascii():
        raise MimeError("non-ASCII header bytes in a message that does not use SMTPUTF8")
