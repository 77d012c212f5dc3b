"""In-memory implementations of every port, and a harness for unit-testing business rules.

These ship in the library on purpose: users embed the core and test their own rules with
exactly the same service the server runs, without a database, a relay or a CometD client::

    h = Harness(agents=[Agent(id="alice", mailboxes=("support@example.com",))])
    iid = h.deliver(inbound_email(sender="bob@example.org", to="support@example.com",
                                  subject="Help", text="It broke."), offer_to="alice")
    assert h.execute("alice", iid, {"operationName": "Accept"}) == {"status": "ok"}
    h.notifications("alice")[-1]["state"]   # "Accepted"
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from ..addresses import parse_address_list
from ..ingest import Envelope
from ..memory import (
    InMemoryAgentDirectory,
    InMemoryAttachmentStore,
    InMemoryStore,
    InMemoryUnitOfWork,
    ManualClock,
    RecordingNotifier,
    RecordingTransport,
    SequentialIds,
)
from ..model import EmailContent, Interaction
from ..outbox import RetryPolicy, drain_mail, drain_notifications
from ..ports import TOPIC_INTERACTIONS, Agent, OutgoingMail
from ..routing import Router, RoutingConfig
from ..service import IngestResult, InteractionService, ServiceConfig

__all__ = [
    "Harness",
    "InMemoryAgentDirectory",
    "InMemoryAttachmentStore",
    "InMemoryStore",
    "InMemoryUnitOfWork",
    "ManualClock",
    "RecordingNotifier",
    "RecordingTransport",
    "SequentialIds",
    "inbound_email",
]

# --------------------------------------------------------------------------- harness


def inbound_email(
    *,
    sender: str,
    to: str | Sequence[str],
    subject: str = "",
    text: str = "",
    html: str = "",
    cc: str | Sequence[str] | None = None,
    reply_to: str | Sequence[str] | None = None,
    message_id: str | None = None,
    date: datetime | None = None,
) -> EmailContent:
    """A validated inbound ``EmailContent`` from plain strings (for tests and examples)."""
    senders = parse_address_list(sender, field="from")
    return EmailContent(
        from_=senders[0] if senders else None,
        to=parse_address_list(to, field="to"),
        cc=parse_address_list(cc, field="cc"),
        reply_to=parse_address_list(reply_to, field="reply_to"),
        subject=subject,
        text=text,
        html=html,
        message_id=message_id,
        date=date,
    )


class Harness:
    """The whole core on in-memory ports: execute wire bodies, read back what happened."""

    def __init__(
        self,
        agents: Iterable[Agent] = (),
        config: ServiceConfig | None = None,
        clock: ManualClock | None = None,
        retry_policy: RetryPolicy | None = None,
        routing: RoutingConfig | None = None,
    ) -> None:
        self.clock = clock or ManualClock()
        self.store = InMemoryStore(self.clock)
        self.attachments = InMemoryAttachmentStore()
        self.ids = SequentialIds()
        self.directory = InMemoryAgentDirectory(agents)
        self.notifier = RecordingNotifier()
        self.transport = RecordingTransport()
        self.retry_policy = retry_policy or RetryPolicy()
        self.service = InteractionService(
            self.store, self.directory, self.attachments, self.clock, self.ids, config
        )
        self.router = Router(self.service, routing)

    def execute(self, agent_id: str, interaction_id: str | None, body: Any) -> dict[str, Any]:
        """Run a wire body for an agent; then drain the outbox like the server does."""
        response = self.service.execute_wire(agent_id, interaction_id, body)
        self.router.route()
        self.drain()
        return response

    def deliver(
        self,
        email: EmailContent,
        *,
        mailbox: str | None = None,
        queue: str | None = None,
        offer_to: str | None = None,
    ) -> str:
        """Put an inbound mail in a queue and optionally offer it to an agent (``Invited``)."""
        box = mailbox or (email.to[0].addr if email.to else "")
        interaction = self.service.receive(email, mailbox=box, queue=queue)
        if offer_to is not None:
            self.service.offer(interaction.id, offer_to)
        else:
            self.router.route()
        self.drain()
        return interaction.id

    def ingest(
        self, raw: bytes, *, envelope: Envelope | None = None, mailbox: str | None = None
    ) -> IngestResult:
        """Ingest raw RFC 5322 bytes as the SMTP receiver would, then route and drain."""
        result = self.service.ingest(raw, envelope=envelope, mailbox=mailbox)
        self.router.route()
        self.drain()
        return result

    def set_channel(self, agent_id: str, operation: str = "Ready") -> dict[str, Any]:
        """``POST /me/channels/email`` with ``{"operationName": operation}``."""
        response = self.router.set_channel_state(agent_id, "email", {"operationName": operation})
        self.drain()
        return response

    def tick(self, seconds: float = 0) -> None:
        """Let time pass, then run the router's timers (offer timeouts) and route."""
        if seconds:
            self.clock.advance(seconds)
        self.router.tick()
        self.drain()

    def drain(self) -> None:
        drain_notifications(self.store, self.notifier)
        drain_mail(
            self.store,
            self.transport,
            self.clock,
            lambda entry, reason: self.service.mail_failed(entry.mail.interaction_id, reason),
            self.retry_policy,
        )
        drain_notifications(self.store, self.notifier)

    def notifications(self, agent_id: str, topic: str | None = None) -> list[dict[str, Any]]:
        return self.notifier.for_agent(agent_id, topic)

    def last_notification(self, agent_id: str, topic: str = TOPIC_INTERACTIONS) -> dict[str, Any]:
        """The latest notification on ``topic`` (default: ``/me/interactions``)."""
        return self.notifications(agent_id, topic)[-1]

    @property
    def sent_mail(self) -> list[OutgoingMail]:
        return self.transport.sent

    def interaction(self, interaction_id: str) -> Interaction:
        with self.store.unit_of_work() as uow:
            found = uow.interactions.get(interaction_id)
        if found is None:
            raise KeyError(interaction_id)
        return found
