"""What every step of ingestion shares: the API types and the parse-problem notes."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InteractionsError
from ..model import EmailContent

__all__ = ["MAX_PROBLEMS", "Envelope", "IngestLimits", "MessageRefused", "ParsedMessage"]

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


# --------------------------------------------------------------------------- problems

MAX_PROBLEMS = 50  # notes kept; the rest is counted


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
