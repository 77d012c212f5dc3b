"""What every outbound transport of this package offers (SMTP relay or local Maildir)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from interactions_core.ports import OutgoingMail


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """The outcome of one accepted hand-over.

    ``refused`` lists the recipients the relay refused while accepting others (address ->
    the relay's reply). The mail *was* delivered to the rest, so the outbox entry is done; the
    dispatcher reports the refused ones (see ``docs/smtp.md``, "Partial refusal").
    """

    accepted: tuple[str, ...] = ()
    refused: Mapping[str, str] = field(default_factory=dict)
    response: str = ""


class AsyncMailTransport(Protocol):
    """An asynchronous mail transport, driven by ``MailDispatcher``.

    ``send`` raises ``interactions_core.ports.TransientMailError`` (try again later) or
    ``PermanentMailError`` (will never succeed); anything else is treated as transient.
    """

    @property
    def pool_size(self) -> int:
        """How many mails it can hand over at the same time."""
        ...

    async def send(self, mail: OutgoingMail) -> DeliveryReport: ...

    async def close(self) -> None: ...
