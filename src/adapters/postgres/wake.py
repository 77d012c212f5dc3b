"""What a commit's wake-up says: who committed, and whose notifications it holds.

Every commit that writes something sends ``pg_notify(WAKE_CHANNEL, payload)`` in its
transaction (``PostgresStore._commit``), delivered to the listeners (``Wakeups``) when, and
only if, it commits. The payload lets a listener skip what it does not need:

* ``by``: the committing store's origin (``PostgresStore.origin``). A process wakes its own
  tail after its own commits already, so its listener skips those.
* ``agents``: the agents the commit queued notifications for (``[]``: none). A follower
  wakes only for the agents with a session on it; the leader wakes for every commit of
  another process (its router follows them all, ``Engine.sync``).

A wake-up is only a hint: what changed is read from the tables, from the reader's own
position, and every reader also polls. So a payload that cannot be read (another version's,
say an empty one) means "anything may have changed": every listener wakes. Agents too many
for PostgreSQL's payload limit (8,000 bytes) are left out, with the same meaning.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["WAKE_CHANNEL", "WakeUp", "wake_payload"]

WAKE_CHANNEL: Final = "interactions_changes"
"""The LISTEN/NOTIFY channel every commit that wrote something notifies (``Wakeups``)."""

_MAX_PAYLOAD: Final = 7_000
"""Bytes; PostgreSQL refuses a payload of 8,000 or more."""


def wake_payload(by: str, agents: Iterable[str]) -> str:
    """The payload of one commit's wake-up (JSON; ``agents`` left out when too long)."""
    named = sorted(set(agents))
    payload = json.dumps({"by": by, "agents": named}, separators=(",", ":"))
    if len(payload.encode()) > _MAX_PAYLOAD:
        payload = json.dumps({"by": by}, separators=(",", ":"))
    return payload


@dataclass(frozen=True, slots=True)
class WakeUp:
    """One commit's wake-up, read back. ``None`` fields: not said (anything may have)."""

    by: str | None
    agents: frozenset[str] | None

    @classmethod
    def parse(cls, payload: str) -> WakeUp:
        try:
            data = json.loads(payload)
        except ValueError:
            return cls(None, None)
        if not isinstance(data, dict):
            return cls(None, None)
        by = data.get("by")
        agents = data.get("agents")
        if not isinstance(agents, list) or not all(isinstance(a, str) for a in agents):
            agents = None
        return cls(
            by if isinstance(by, str) else None,
            frozenset(agents) if agents is not None else None,
        )
