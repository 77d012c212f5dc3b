"""How an interaction and an outbox payload become a row, and back.

The same encoding as the SQLite store's (so moving an installation copies documents as they
are): the interaction is its ``model_dump_json()`` document, read back with pydantic's
``validate_json`` (stored data was valid when written: addresses are not re-validated), next to
the columns the queries and indexes need, all taken from the same object.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from pydantic_core import to_json

from interactions_core.model import Interaction

__all__ = ["COLUMNS", "decode", "encode_json", "row_values", "text", "to_micros", "utc"]

COLUMNS: Final = (
    "id, version, state, owner, offer_agent, current_queue, workbin, mailbox, message_id,"
    " received_at, data"
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def utc(when: datetime) -> datetime:
    """``when`` with a time zone: a naive datetime is taken as UTC (as the SQLite store does)."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def to_micros(when: datetime) -> int:
    """Microseconds since the epoch, UTC; a naive datetime is taken as UTC."""
    delta = utc(when) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def text(value: str | None) -> str | None:
    """A string PostgreSQL can store: ``text`` cannot hold NUL, so it becomes U+FFFD. Applied
    alike to the values written and to the values looked up, so lookups still match. (The
    documents hold NUL as the JSON escape ``\\u0000``, which is stored as it is.)"""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd")


def row_values(i: Interaction) -> tuple[Any, ...]:
    """The row of ``interaction`` in ``COLUMNS`` order (the document last)."""
    return (
        text(i.id),
        i.version,
        text(i.state),
        text(i.owner),
        text(i.offer.agent_id if i.offer is not None else None),
        text(i.current_queue),
        text(i.workbin),
        text(i.mailbox),
        text(i.email.message_id),
        utc(i.received_at),
        i.model_dump_json(),
    )


_validate_json: Final = Interaction.__pydantic_validator__.validate_json


def decode(data: str) -> Interaction:
    """The interaction a ``data`` column holds."""
    loaded: Interaction = _validate_json(data)
    return loaded


def encode_json(value: Any) -> str:
    """Compact UTF-8 JSON by pydantic-core's serialiser (what the SQLite store writes)."""
    return to_json(value).decode()
