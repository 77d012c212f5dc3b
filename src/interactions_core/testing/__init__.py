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
from typing import Any, cast

from ..addresses import parse_address_list
from ..drafts import new_attachment_id
from ..engine import Engine, PumpReport
from ..ingest import Envelope
from ..intake import IngestResult
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
from ..model import Attachment, EmailContent, Interaction
from ..outbox import RetryPolicy
from ..ports import TOPIC_INTERACTIONS, Agent, AttachmentStore, OutgoingMail
from ..registry import OperationSpec
from ..results import Result
from ..routing import Router, RoutingConfig
from ..service import InteractionService, ServiceConfig
from ..wire import InteractionMessage

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

# An attachment for ``inbound_email``: a stored ``Attachment``, or (name, bytes[, mimetype]).
AttachmentInput = Attachment | tuple[str, bytes] | tuple[str, bytes, str]


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
    attachments: Sequence[AttachmentInput] = (),
    store: AttachmentStore | None = None,
) -> EmailContent:
    """A validated inbound ``EmailContent`` from plain strings (for tests and examples).

    ``attachments`` are ``Attachment`` records already stored, or ``(name, data)`` /
    ``(name, data, mimetype)`` tuples, whose bytes are put in ``store`` (required for those;
    ``Harness.email`` passes its own).
    """
    senders = parse_address_list(sender, field="from")
    parts: list[Attachment] = []
    for given in attachments:
        if isinstance(given, Attachment):
            parts.append(given)
            continue
        if store is None:
            raise ValueError("inbound_email needs store= to keep attachment bytes")
        name, data = given[0], given[1]
        mimetype = given[2] if len(given) == 3 else "application/octet-stream"
        # Its own id, its bytes under their content address: as ingestion makes them, so two
        # names for the same bytes are two attachments sharing one blob.
        own = new_attachment_id({p.id for p in parts})
        parts.append(
            Attachment(id=own, blob=store.put(data), name=name, size=len(data), mimetype=mimetype)
        )
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
        attachments=tuple(parts),
    )


class Harness:
    """The whole core on in-memory ports, for unit tests of business rules: a thin layer over
    an ``Engine`` that pumps after every call (as the server does), with a manual clock,
    predictable ids, and everything published or sent kept for the test to read."""

    def __init__(
        self,
        agents: Iterable[Agent] = (),
        config: ServiceConfig | None = None,
        clock: ManualClock | None = None,
        retry_policy: RetryPolicy | None = None,
        routing: RoutingConfig | None = None,
        operations: Iterable[OperationSpec[Any]] = (),
    ) -> None:
        self.clock = clock or ManualClock()
        self.store = InMemoryStore(self.clock)
        self.attachments = InMemoryAttachmentStore()
        self.ids = SequentialIds()
        self.directory = InMemoryAgentDirectory(agents)
        self.notifier = RecordingNotifier()
        self.transport = RecordingTransport()
        self.retry_policy = retry_policy or RetryPolicy()
        self.engine = Engine(
            store=self.store,
            agents=self.directory,
            attachments=self.attachments,
            notifier=self.notifier,
            transport=self.transport,
            clock=self.clock,
            ids=self.ids,
            config=config,
            routing=routing,
            retry_policy=self.retry_policy,
            operations=operations,
        )

    @property
    def service(self) -> InteractionService:
        return self.engine.service

    @property
    def router(self) -> Router:
        return self.engine.router

    def register_operation(self, spec: OperationSpec[Any]) -> None:
        self.engine.register_operation(spec)

    def execute(self, agent_id: str, interaction_id: str | None, body: Any) -> Result:
        """Run a wire body for an agent, then pump; the seed's response (``.kind`` holds the
        error's kind)."""
        result = self.engine.execute(agent_id, interaction_id, body)
        self.drain()
        return result

    def email(self, **fields: Any) -> EmailContent:
        """``inbound_email`` with this harness's attachment store."""
        return inbound_email(store=self.attachments, **fields)

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
        self.drain()
        return interaction.id

    def ingest(
        self, raw: bytes, *, envelope: Envelope | None = None, mailbox: str | None = None
    ) -> IngestResult:
        """Ingest raw RFC 5322 bytes as the SMTP receiver would, then route and pump."""
        result = self.engine.ingest(raw, envelope=envelope, mailbox=mailbox)
        self.drain()
        return result

    def set_channel(self, agent_id: str, operation: str = "Ready") -> Result:
        """``POST /me/channels/email`` with ``{"operationName": operation}``."""
        response = self.engine.set_channel_state(agent_id, {"operationName": operation})
        self.drain()
        return response

    def tick(self, seconds: float = 0) -> None:
        """Let time pass, then run the timers (offer timeouts) and pump."""
        if seconds:
            self.clock.advance(seconds)
        self.engine.tick()
        self.drain()

    def drain(self) -> PumpReport:
        """Route, publish and send until nothing is left (``Engine.pump``)."""
        return self.engine.pump()

    def notifications(
        self, agent_id: str, *, interaction_id: str | None = None
    ) -> list[InteractionMessage]:
        """The ``InteractionStateMessage``s ``agent_id`` was sent on ``/me/interactions``,
        oldest first; with ``interaction_id``, only those about it."""
        found = [
            cast(InteractionMessage, w)
            for w in self.notifier.for_agent(agent_id, TOPIC_INTERACTIONS)
        ]
        if interaction_id is not None:
            found = [w for w in found if w["id"] == interaction_id]
        return found

    def messages(self, agent_id: str, topic: str | None = None) -> list[dict[str, Any]]:
        """Everything ``agent_id`` was sent on ``topic`` (None: every topic), oldest first,
        in wire form (``/me/channels``, ``/me/workbins``...)."""
        return self.notifier.for_agent(agent_id, topic)

    def last_notification(
        self, agent_id: str, interaction_id: str | None = None
    ) -> InteractionMessage:
        """The latest ``/me/interactions`` notification (about ``interaction_id`` if given)."""
        found = self.notifications(agent_id, interaction_id=interaction_id)
        if not found:
            raise LookupError(
                f"no notification for {agent_id}"
                + (f" about {interaction_id}" if interaction_id else "")
            )
        return found[-1]

    @property
    def sent_mail(self) -> list[OutgoingMail]:
        return self.transport.sent

    def interaction(self, interaction_id: str) -> Interaction:
        with self.store.unit_of_work() as uow:
            found = uow.interactions.get(interaction_id)
        if found is None:
            raise KeyError(interaction_id)
        return found
