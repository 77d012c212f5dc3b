"""What an operation answers: the seed's response, and for callers the error's kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import InteractionsError


@dataclass(frozen=True, slots=True)
class OperationResult:
    """The seed's success response; ``reply_interaction_id`` when a new interaction was made."""

    reply_interaction_id: str | None = None

    def to_wire(self) -> Result:
        out = Result(status="ok")
        if self.reply_interaction_id is not None:
            out["replyInteractionId"] = self.reply_interaction_id
        return out


class Result(dict[str, Any]):
    """The seed's response as a dict, exactly what goes on the wire (``{"status": "ok"}``,
    with ``replyInteractionId`` when an interaction was created, or ``{"status": "error",
    "errorDescription": ...}``), that also carries, off the wire, the error's ``kind``
    (``invalid``, ``not_found``, ``not_allowed``, ``conflict``, ``too_large``,
    ``unavailable``), so a caller maps it to a status without parsing the text. It compares
    equal to the plain dict."""

    __slots__ = ("error",)

    def __init__(self, *args: Any, error: InteractionsError | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error = error

    @classmethod
    def failed(cls, error: InteractionsError) -> Result:
        return cls(status="error", errorDescription=error.description, error=error)

    @property
    def ok(self) -> bool:
        return self.get("status") == "ok"

    @property
    def kind(self) -> str | None:
        """The error kind, or None for a success."""
        return self.error.kind if self.error is not None else None

    @property
    def description(self) -> str | None:
        """``errorDescription``, or None for a success."""
        found = self.get("errorDescription")
        return found if isinstance(found, str) else None

    @property
    def reply_interaction_id(self) -> str | None:
        found = self.get("replyInteractionId")
        return found if isinstance(found, str) else None


def error_response(error: InteractionsError) -> Result:
    """The seed's failure response."""
    return Result.failed(error)
