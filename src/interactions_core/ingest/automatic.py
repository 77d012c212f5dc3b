"""Automatic mail (RFC 3834 and the older markers): mail that must never be auto-answered."""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.message import EmailMessage

from ..rfc5322 import safe_header_text
from .common import Envelope
from .headers import _clean, _first, _header_index, _strip_comments

__all__ = ["envelope_from", "is_automatic"]

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
        token = _strip_comments(_clean(value, "Auto-Submitted", None)).split(";")[0]
        token = safe_header_text(token).strip()  # shown in userData: no control characters
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
