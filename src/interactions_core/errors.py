"""Typed errors, each with a stable ``kind`` an adapter maps to its own status codes.

The core knows nothing of HTTP; ``kind`` says what went wrong, ``description`` says it to a
person and becomes the seed's ``errorDescription``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar


class InteractionsError(Exception):
    kind: ClassVar[str] = "error"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class InvalidRequest(InteractionsError):
    """The request itself is malformed: unknown operation, missing or bad fields."""

    kind = "invalid"

    def __init__(self, description: str, problems: Iterable[str] = ()) -> None:
        self.problems = tuple(problems)
        if self.problems:
            description = description + ": " + "; ".join(self.problems)
        super().__init__(description)


class InvalidAddress(InvalidRequest):
    def __init__(self, description: str) -> None:
        super().__init__(description)


class NotFound(InteractionsError):
    """Unknown id, or an interaction the agent may not see: the same answer, so ids leak nothing."""

    kind = "not_found"

    def __init__(self, what: str, ident: str) -> None:
        super().__init__(f"{what} {ident!r} not found")
        self.ident = ident


class InteractionNotFound(NotFound):
    def __init__(self, interaction_id: str) -> None:
        super().__init__("Interaction", interaction_id)


class OperationNotAllowed(InteractionsError):
    """The lifecycle refuses the operation in the current state."""

    kind = "not_allowed"

    def __init__(self, operation: str, state: str, allowed: Iterable[str]) -> None:
        self.operation = operation
        self.state = state
        self.allowed = tuple(allowed)
        allowed_text = ", ".join(self.allowed) if self.allowed else "none"
        super().__init__(
            f"Operation {operation} is not allowed in state {state}; allowed now: {allowed_text}"
        )


class Refused(InteractionsError):
    """Allowed by the lifecycle but refused by a business rule (e.g. no such queue)."""

    kind = "not_allowed"


class ConcurrencyConflict(InteractionsError):
    """A write against a stale version: somebody else changed the interaction first."""

    kind = "conflict"

    def __init__(self, interaction_id: str, expected: int, actual: int | None) -> None:
        self.interaction_id = interaction_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"Interaction {interaction_id!r} was changed concurrently "
            f"(expected version {expected}, found {actual}); reload and retry"
        )


class AlreadyIngested(InteractionsError):
    """A store refused a new interaction because another one already holds its
    ``ingest_key``: the same message was ingested already (by another process, at the same
    moment). ``existing_id`` names that interaction. Raised by commit; never retried."""

    kind = "conflict"

    def __init__(self, existing_id: str) -> None:
        self.existing_id = existing_id
        super().__init__(f"This message was ingested already, as interaction {existing_id!r}")


class TooLarge(InteractionsError):
    kind = "too_large"


class Unavailable(InteractionsError):
    """A backing service is busy or down (e.g. the database stayed locked); try again later."""

    kind = "unavailable"
