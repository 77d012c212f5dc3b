"""Ports: what the core needs from the outside world, as ``typing.Protocol``.

Each is the minimum its user needs. Adapters (``adapters.sqlite``, ``adapters.smtp``,
``adapters.cometd``...) implement them; ``interactions_core.testing`` ships in-memory versions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from .model import Address, Attachment, Interaction

# CometD topics (seed: /me/interactions; GWS also names /me/channels and /me/workbins).
TOPIC_INTERACTIONS = "/me/interactions"
TOPIC_CHANNELS = "/me/channels"
TOPIC_WORKBINS = "/me/workbins"


# --------------------------------------------------------------------------- records


class Agent(BaseModel):
    """An agent as the core sees it: who, what they may handle, where they may send from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str = ""
    addresses: tuple[str, ...] = ()  # the agent's own e-mail addresses (never reply-all targets)
    skills: frozenset[str] = frozenset()
    mailboxes: tuple[str, ...] = ()  # mailbox addresses the agent may send from
    capacity: int = 5  # max concurrent e-mail interactions (issue: routing)


class OutgoingMail(BaseModel):
    """One mail to hand to the relay. Message-ID is fixed here, so a retry is the same message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interaction_id: str
    mailbox: str
    from_: Address
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    subject: str = ""
    text: str = ""
    html: str = ""
    message_id: str
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    date: datetime
    attachments: tuple[Attachment, ...] = ()

    @property
    def envelope_recipients(self) -> tuple[str, ...]:
        return tuple(a.addr for a in (*self.to, *self.cc, *self.bcc))


class WireMessage(Protocol):
    def to_wire(self) -> dict[str, Any]: ...


class RawMessage(BaseModel):
    """A notification payload already in wire form (e.g. read back from storage)."""

    model_config = ConfigDict(frozen=True)

    data: dict[str, Any] = Field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return self.data


class Notification(BaseModel):
    """A message for one agent on one topic, committed with the change that caused it."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    agent_id: str
    topic: str = TOPIC_INTERACTIONS
    payload: Any  # a WireMessage
    seq: int = 0

    def to_wire(self) -> dict[str, Any]:
        data: dict[str, Any] = self.payload.to_wire()
        return data


class MailEntry(BaseModel):
    """A mail in the outbox with its delivery bookkeeping."""

    model_config = ConfigDict(frozen=True)

    seq: int
    mail: OutgoingMail
    queued_at: datetime
    attempts: int = 0
    next_attempt_at: datetime
    last_error: str | None = None


# --------------------------------------------------------------------------- storage


class InteractionRepository(Protocol):
    def get(self, interaction_id: str) -> Interaction | None: ...

    def add(self, interaction: Interaction) -> Interaction:
        """Store a new interaction; returns it at version 1."""
        ...

    def update(self, interaction: Interaction) -> Interaction:
        """Store a change made to ``interaction`` as loaded; returns it at version + 1.

        Raises ``ConcurrencyConflict`` at commit (or earlier) when the stored version is no
        longer ``interaction.version``: never a lost update.
        """
        ...

    def expect(self, interaction: Interaction) -> None:
        """Commit only if ``interaction`` is still stored at its version, without writing it.

        For a transaction that depends on an interaction it does not change (a reply depends
        on its parent's state): a concurrent change of it makes the commit raise
        ``ConcurrencyConflict``, while the interaction itself keeps its version.
        """
        ...

    def for_agent(self, agent_id: str) -> list[Interaction]:
        """Interactions owned by, or offered to, ``agent_id``, ordered by (received_at, id)."""
        ...

    def in_queue(self, queue: str, limit: int | None = None) -> list[Interaction]:
        """Interactions waiting in ``queue``, oldest first (the routing order)."""
        ...

    def in_workbin(self, workbin: str) -> list[Interaction]:
        """Interactions in ``workbin``, ordered by (received_at, id)."""
        ...

    def by_message_id(self, message_id: str, mailbox: str | None = None) -> Interaction | None:
        """The first stored interaction with that Message-ID (in ``mailbox`` when given)."""
        ...


class Outbox(Protocol):
    def add_notification(self, notification: Notification) -> None: ...

    def add_mail(self, mail: OutgoingMail) -> None: ...


class UnitOfWork(Protocol):
    """One transaction: interactions changed, notifications and mail queued, all or nothing."""

    @property
    def interactions(self) -> InteractionRepository: ...

    @property
    def outbox(self) -> Outbox: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Roll back whatever was not committed."""
        ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


class OutboxReader(Protocol):
    """What the dispatchers read after commit, each entry marked done once handled."""

    def pending_notifications(self, after_seq: int = 0, limit: int = 500) -> list[Notification]: ...

    def mark_notifications_done(self, seqs: Sequence[int]) -> None: ...

    def pending_mail(self, due_before: datetime, limit: int = 100) -> list[MailEntry]: ...

    def mark_mail_sent(self, seq: int) -> None: ...

    def reschedule_mail(self, seq: int, next_attempt_at: datetime, error: str) -> None: ...

    def mark_mail_failed(self, seq: int, error: str) -> None: ...


class Store(OutboxReader, Protocol):
    def unit_of_work(self) -> UnitOfWork: ...


# --------------------------------------------------------------------------- the rest


class AttachmentStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store bytes; return their content id (the same bytes give the same id)."""
        ...

    def get(self, content_id: str) -> bytes:
        """Raise ``KeyError`` when unknown."""
        ...


class Notifier(Protocol):
    def publish(self, notification: Notification) -> None: ...


class MailTransport(Protocol):
    def send(self, mail: OutgoingMail) -> None:
        """Hand one mail to the relay. Raise ``TransientMailError`` or ``PermanentMailError``."""
        ...


class TransientMailError(Exception):
    """Try again later (connection refused, timeout, 4xx)."""


class PermanentMailError(Exception):
    """Will never succeed (5xx, every recipient refused)."""


class Clock(Protocol):
    def now(self) -> datetime: ...


class IdGenerator(Protocol):
    def interaction_id(self) -> str: ...

    def message_id(self, domain: str) -> str:
        """A new RFC 5322 §3.6.4 msg-id, with its angle brackets."""
        ...


@runtime_checkable
class AgentDirectory(Protocol):
    def get(self, agent_id: str) -> Agent | None: ...

    def agents(self) -> Iterable[Agent]: ...
