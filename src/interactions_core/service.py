"""The application service: executes an operation for an agent, in one unit of work.

Flow (DESIGN.md "One operation, end to end"): load the interaction with its version; refuse if
the agent may not see it (same answer as unknown); ask the lifecycle whether the operation is
allowed for this agent now and fire its trigger, once; run the operation's handler
(``handlers``), which records the changed interactions, the notifications and the mail in the
same transaction; commit. A version conflict re-runs the whole operation against fresh state
(safe: nothing was committed), so two agents racing to Accept the same offer get exactly one
winner and one clear refusal.

The rest lives beside it, one concern a module: ``handlers`` (one function per operation),
``policy`` (who may see and act), ``reads`` (the read side), ``intake`` (ingestion),
``drafts`` (attachments of drafts), ``notices`` (notification building), ``registry`` (the
operations an engine knows). Most users drive all of it through ``Engine``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

from . import drafts, handlers, reads
from .addresses import parse_address_list
from .errors import (
    ConcurrencyConflict,
    InteractionNotFound,
    InteractionsError,
    InvalidRequest,
    NotFound,
    OperationNotAllowed,
    Refused,
)
from .ingest import Envelope, IngestLimits
from .intake import IngestResult, Intake
from .lifecycle import Lifecycle, State
from .model import (
    Address,
    Attachment,
    EmailContent,
    Interaction,
    InteractionView,
    SubType,
    build,
    evolve,
)
from .notices import interaction_notice, queue_workbin_notices
from .operations import CreateEmail, Operation, OperationModel
from .policy import (
    PERSONAL_WORKBIN_PREFIX,
    Workbins,
    entitled,
    visible,
    workbin_audience,
)
from .policy import resolve_workbin as _resolve_workbin
from .ports import (
    Agent,
    AgentDirectory,
    AttachmentStore,
    Clock,
    IdGenerator,
    Store,
    UnitOfWork,
)
from .registry import DEFAULT_REGISTRY, OperationRegistry
from .results import OperationResult, Result, error_response
from .rfc5322 import MAX_REFERENCES, safe_filename
from .staging import TrackedUnitOfWork
from .wire import InteractionMessage, WorkbinInfo

__all__ = [
    "PERSONAL_WORKBIN_PREFIX",
    "IngestResult",
    "InteractionService",
    "OperationResult",
    "Result",
    "ServiceConfig",
    "error_response",
    "safe_filename",
]

_T = TypeVar("_T")
_log = logging.getLogger(__name__)


@lru_cache(maxsize=1024)
def _mailbox(addr: str) -> Address:
    """A mailbox address from configuration or storage (validated when it was set)."""
    return Address(addr=addr)


@dataclass(frozen=True)
class ServiceConfig:
    """Business settings of the service; the server fills them from its configuration."""

    message_id_domain: str = "interactions.localhost"
    draft_queue: str = "Drafts"  # where a draft waits while the agent composes it
    sent_queue: str = "Sent"  # where a sent outbound interaction is filed
    done_queue: str = "Done"  # where StopProcessing files an inbound interaction
    default_queue: str = "Inbound"  # for mail whose mailbox has no queue of its own
    # Known queues; None = any name is accepted (created on first use).
    queues: frozenset[str] | None = None
    personal_workbins: tuple[str, ...] = ("Personal",)
    # Shared workbins: name -> agent ids allowed (an empty set = every agent).
    shared_workbins: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Message-IDs a reply's References keeps (the first one and the newest).
    max_references: int = MAX_REFERENCES
    max_conflict_retries: int = 3
    # Mailbox address (any case) -> the queue its mail waits in; others go to default_queue.
    mailbox_queues: Mapping[str, str] = field(default_factory=dict)
    # Automatic mail (RFC 3834: auto-replies, bulk, lists, bounces) waits here, never answered
    # and never routed: the one place this queue is named (the router reads it from here).
    automatic_queue: str = "Automatic"
    ingest_limits: IngestLimits = field(default_factory=IngestLimits)
    # Extra addresses that are never recipients of a reply-all (system, no-reply...).
    system_addresses: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.max_references < 2:
            raise ValueError("max_references must be at least 2 (the first id and the parent)")
        if self.max_conflict_retries < 0:
            raise ValueError("max_conflict_retries must be >= 0")


class InteractionService:
    def __init__(
        self,
        store: Store,
        agents: AgentDirectory,
        attachments: AttachmentStore,
        clock: Clock,
        ids: IdGenerator,
        config: ServiceConfig | None = None,
        registry: OperationRegistry | None = None,
    ) -> None:
        self.store = store
        self.agents = agents
        self.attachments = attachments
        self.clock = clock
        self.ids = ids
        self.config = c = config or ServiceConfig()
        self._registry = registry or DEFAULT_REGISTRY
        self.lifecycle: Lifecycle = self._registry.lifecycle
        self.workbin_rules = Workbins(c.personal_workbins, c.shared_workbins)
        self._builtin_queues = frozenset(
            {c.draft_queue, c.sent_queue, c.done_queue, c.default_queue, c.automatic_queue}
        )
        self._listeners: list[Callable[[Sequence[Interaction]], None]] = []
        self._system_addresses = frozenset(a.casefold() for a in c.system_addresses)
        # (agent addresses, agent mailboxes, mailbox) -> the casefolded addresses that are ours.
        self._own_cache: dict[tuple[tuple[str, ...], tuple[str, ...], str], frozenset[str]] = {}
        self.intake = Intake(self)

    @property
    def registry(self) -> OperationRegistry:
        """The operations this service knows (``lifecycle`` is the registry's)."""
        return self._registry

    @registry.setter
    def registry(self, registry: OperationRegistry) -> None:
        self._registry = registry
        self.lifecycle = registry.lifecycle

    # ------------------------------------------------------------------ entry points

    def execute_wire(self, agent_id: str, interaction_id: str | None, body: Any) -> Result:
        """Execute a body exactly as on the wire; return the seed's response.

        ``interaction_id`` None is ``POST /me/interactions``, where only CreateEmail goes (the
        one place that rule is written). Never raises for a domain error: it becomes
        ``{"status":"error","errorDescription":...}``, with the error's kind on the result.
        """
        try:
            operation = self.registry.parse(body)
            if interaction_id is None:
                if not isinstance(operation, CreateEmail):
                    raise InvalidRequest(
                        f"{operation.canonical} needs an interaction id "
                        "(POST /me/interactions/{id}); only CreateEmail goes to /me/interactions"
                    )
                return self.create_email(agent_id, operation).to_wire()
            return self.execute(agent_id, interaction_id, operation).to_wire()
        except InteractionsError as exc:
            return error_response(exc)

    def execute(
        self, agent_id: str, interaction_id: str, operation: Operation | OperationModel
    ) -> OperationResult:
        """Execute ``operation`` on ``interaction_id`` for ``agent_id`` (raises typed errors)."""
        if isinstance(operation, CreateEmail):
            raise InvalidRequest("CreateEmail is not an operation on an existing interaction")
        agent = self.agent(agent_id)
        try:
            handler = self.registry.handler(operation)
        except LookupError:
            raise InvalidRequest(
                f"{type(operation).__name__} is not an operation this engine knows"
            ) from None
        trigger = operation.canonical
        lifecycle = self.lifecycle

        def run(uow: UnitOfWork) -> OperationResult:
            i = self.load_visible(uow, agent, interaction_id)
            self.check_allowed(agent, i, trigger)
            offer = i.offer
            state = lifecycle.fire(
                trigger,
                i.state,
                outbound=i.interaction_subtype.startswith("Outbound"),
                returning=offer is not None and offer.returns_to is not None,
            )
            ctx = handlers.Context(self, uow, agent, state)
            return OperationResult(handler(ctx, i, operation))

        return self.in_transaction(run)

    def create_email(self, agent_id: str, operation: CreateEmail) -> OperationResult:
        agent = self.agent(agent_id)

        def run(uow: UnitOfWork) -> OperationResult:
            mailbox = self.sender_mailbox(agent, operation.from_address, default=None)
            parent: Interaction | None = None
            if operation.parent_id:
                parent = self.load_visible(uow, agent, operation.parent_id)
            draft = self.new_draft(
                agent,
                EmailContent(from_=mailbox),
                mailbox=mailbox.addr,
                subtype=SubType.OUTBOUND_NEW,
                queue=operation.queue_name,
                parent=parent,
                interaction_type=operation.interaction_type,
            )
            draft = uow.interactions.add(draft)
            self.notify(uow, agent.id, draft)
            return OperationResult(draft.id)

        return self.in_transaction(run)

    # ------------------------------------------------------------------ the executor

    def in_transaction(self, run: Callable[[UnitOfWork], _T]) -> _T:
        """Run ``run`` in a unit of work and commit; on a version conflict, run it again
        against fresh state (at most ``max_conflict_retries`` times), then tell subscribers."""
        attempts = self.config.max_conflict_retries + 1
        for attempt in range(attempts):
            tracked: TrackedUnitOfWork | None = None
            try:
                with self.store.unit_of_work() as inner:
                    # What a transaction wrote is collected only when someone listens.
                    if self._listeners:
                        tracked = TrackedUnitOfWork(inner)
                    result = run(tracked or inner)
                    inner.commit()
            except ConcurrencyConflict:
                if attempt == attempts - 1:
                    raise
                continue
            if tracked is not None and tracked.changed:
                self._after_commit(list(tracked.changed.values()))
            return result
        raise ConcurrencyConflict("(transaction)", 0, None)  # attempts >= 1: not reached

    def subscribe(self, listener: Callable[[Sequence[Interaction]], None]) -> None:
        """Call ``listener`` after every commit with the interactions it changed (the router
        keeps its indexes this way). A failing listener is logged, never undoes the commit."""
        self._listeners.append(listener)

    def _after_commit(self, changed: Sequence[Interaction]) -> None:
        for listener in self._listeners:
            try:
                listener(changed)
            except Exception:
                _log.exception("commit listener %r failed", listener)

    # ------------------------------------------------------------------ policy

    def agent(self, agent_id: str) -> Agent:
        found = self.agents.get(agent_id)
        if found is None:
            raise NotFound("Agent", agent_id)
        return found

    def load_visible(self, uow: UnitOfWork, agent: Agent, interaction_id: str) -> Interaction:
        found = uow.interactions.get(interaction_id)
        if found is None or not visible(self.workbin_rules, agent.id, found):
            raise InteractionNotFound(interaction_id)
        return found

    def allowed_operations(self, agent_id: str, interaction: Interaction) -> tuple[str, ...]:
        """Capabilities for this agent: the machine's, when the agent is the one entitled."""
        if not entitled(self.workbin_rules, agent_id, interaction):
            return ()
        return self.lifecycle.capabilities(interaction.state)

    def check_allowed(self, agent: Agent, i: Interaction, operation: str) -> None:
        allowed = self.allowed_operations(agent.id, i)
        if operation not in allowed:
            raise OperationNotAllowed(operation, i.state, allowed)

    def resolve_workbin(self, agent_id: str, name: str | None) -> str:
        """Workbin key: ``agent:<id>/<name>`` for a personal workbin, else the shared name."""
        return _resolve_workbin(self.workbin_rules, agent_id, name)

    def queue(self, name: str) -> str:
        known = self.config.queues
        if known is not None and name not in known and name not in self._builtin_queues:
            raise NotFound("Queue", name)
        return name

    # ------------------------------------------------------------------ notifications

    def view_for(
        self, agent_id: str, interaction: Interaction, state: str | None = None
    ) -> InteractionView:
        """What ``agent_id`` is shown; with ``state``, the event the agent is told about
        (Rejected, Revoked) with no capabilities."""
        if state is not None:
            return InteractionView(interaction, (), state)
        return InteractionView(interaction, self.allowed_operations(agent_id, interaction))

    def notify(
        self, uow: UnitOfWork, agent_id: str, interaction: Interaction, state: str | None = None
    ) -> None:
        caps = () if state is not None else self.allowed_operations(agent_id, interaction)
        uow.outbox.add_notification(interaction_notice(agent_id, interaction, caps, state))

    def notify_workbin(self, uow: UnitOfWork, workbin: str, i: Interaction, change: str) -> None:
        audience = workbin_audience(
            self.workbin_rules, workbin, lambda: [a.id for a in self.agents.agents()]
        )
        queue_workbin_notices(uow, audience, workbin, i, change)

    # ------------------------------------------------------------------ mailboxes and drafts

    def reply_mailbox(self, parent: Interaction, agent: Agent) -> Address:
        """FromAddress of a reply: the mailbox the original was sent to."""
        if parent.mailbox:
            return _mailbox(parent.mailbox)
        if agent.mailboxes:
            return _mailbox(agent.mailboxes[0])
        raise Refused("The interaction has no mailbox to reply from")

    def own_addresses(self, agent: Agent, parent: Interaction) -> frozenset[str]:
        """The addresses a reply never goes to: the agent's, its mailboxes, the system's."""
        key = (agent.addresses, agent.mailboxes, parent.mailbox)
        own = self._own_cache.get(key)
        if own is None:
            if len(self._own_cache) >= 4096:  # agents come and go: keep it bounded
                self._own_cache.clear()
            own = self._own_cache[key] = frozenset(
                {a.casefold() for a in (*agent.addresses, *agent.mailboxes)}
                | ({parent.mailbox.casefold()} if parent.mailbox else set())
                | self._system_addresses
            )
        return own

    def sender_mailbox(
        self, agent: Agent, given: str | None, default: Interaction | None
    ) -> Address:
        """An agent sends only from the interaction's mailbox or the agent's own mailboxes."""
        allowed = {m.casefold() for m in agent.mailboxes}
        if default is not None and default.mailbox:
            allowed.add(default.mailbox.casefold())
        if given is None:
            if default is not None and default.email.from_ is not None:
                return default.email.from_
            if agent.mailboxes:
                return Address(addr=agent.mailboxes[0])
            raise InvalidRequest("fromAddress is required: the agent has no mailbox")
        parsed = parse_address_list(given, field="fromAddress")
        if len(parsed) != 1:
            raise InvalidRequest("fromAddress must be exactly one address")
        sender = parsed[0]
        if sender.key not in allowed:
            raise Refused(f"{sender.addr} is not a mailbox this agent may send from")
        return sender

    def new_draft(
        self,
        agent: Agent,
        email: EmailContent,
        *,
        mailbox: str,
        subtype: str,
        queue: str | None,
        parent: Interaction | None,
        interaction_type: str = "Email",
    ) -> Interaction:
        queue = self.queue(queue or self.config.draft_queue)
        return build(
            Interaction,
            id=self.ids.interaction_id(),
            state=self.lifecycle.fire("Compose", State.NEW),
            interaction_type=interaction_type,
            interaction_subtype=subtype,
            mailbox=mailbox,
            email=email,
            contact_id=parent.contact_id if parent else "",
            current_queue=queue,
            in_queues=(queue,),
            received_at=self.clock.now(),
            owner=agent.id,
            last_agent=agent.id,
            parent_id=parent.id if parent else None,
        )

    # ------------------------------------------------------------------ reading

    def get_interaction(self, agent_id: str, interaction_id: str) -> InteractionMessage:
        """The interaction as the agent's notifications show it (wire form)."""
        return reads.interaction(self, agent_id, interaction_id)

    def list_interactions(self, agent_id: str) -> list[InteractionMessage]:
        """The agent's current interactions: owned, or offered to the agent."""
        return reads.interactions(self, agent_id)

    def workbins(self, agent_id: str) -> list[WorkbinInfo]:
        """``GET /me/workbins``: the workbins this agent may use."""
        return reads.workbins(self, agent_id)

    def workbin_content(self, agent_id: str, workbin_name: str) -> list[InteractionMessage]:
        """The interactions in one of the agent's workbins, oldest first (wire form)."""
        return reads.workbin_content(self, agent_id, workbin_name)

    # ------------------------------------------------------------------ attachments

    def add_attachment(
        self,
        agent_id: str,
        interaction_id: str,
        name: str,
        mimetype: str,
        data: bytes,
        content_id: str | None = None,
    ) -> Attachment:
        """Upload an attachment to a draft the agent owns (see ``drafts.add``)."""
        return drafts.add(self, agent_id, interaction_id, name, mimetype, data, content_id)

    def get_attachment(
        self, agent_id: str, interaction_id: str, attachment_id: str
    ) -> tuple[Attachment, bytes]:
        """An attachment of an interaction the agent may see, with its bytes."""
        return drafts.get(self, agent_id, interaction_id, attachment_id)

    def remove_attachment(self, agent_id: str, interaction_id: str, attachment_id: str) -> None:
        """Remove an attachment from a draft the agent owns."""
        drafts.remove(self, agent_id, interaction_id, attachment_id)

    # ------------------------------------------------------------------ system entry points

    def receive(
        self,
        email: EmailContent,
        *,
        mailbox: str,
        queue: str | None = None,
        user_data: Mapping[str, Any] | None = None,
        contact_id: str = "",
        subtype: str = SubType.INBOUND_NEW,
        parent_id: str | None = None,
    ) -> Interaction:
        """Create a new inbound interaction from a parsed mail, waiting in ``queue`` (default:
        the mailbox's queue)."""
        return self.intake.receive(
            email,
            mailbox=mailbox,
            queue=queue,
            user_data=user_data,
            contact=contact_id,
            subtype=subtype,
            parent_id=parent_id,
        )

    def ingest(
        self, raw: bytes, *, envelope: Envelope | None = None, mailbox: str | None = None
    ) -> IngestResult:
        """An inbound RFC 5322 message becomes a waiting ``InboundNew`` interaction.

        The raw bytes are stored first (nothing is lost, even when parsing finds problems).
        Re-ingesting a message into the same mailbox (same Message-ID and the same content: a
        relay's or a poller's retry) returns the existing interaction; a different message that
        reuses a Message-ID is kept as a new one, noted. A customer's answer to a mail we sent
        is linked to it (parent, contact) and prefers the agent who handled it. Automatic mail
        is flagged and parked in ``automatic_queue``. Raises ``MessageRefused`` for a message
        over the size limit (kind ``too_large``) and for input that is not a mail at all
        (empty, or no header field: kind ``invalid``); the raw bytes of the latter are kept in
        the attachment store all the same.
        """
        return self.intake.ingest(raw, envelope=envelope, mailbox=mailbox)

    def offer(self, interaction_id: str, agent_id: str, returns_to: str | None = None) -> None:
        """Offer a waiting interaction to one agent: an ``Invited`` notification (router)."""
        agent = self.agent(agent_id)

        def run(uow: UnitOfWork) -> None:
            found = uow.interactions.get(interaction_id)
            if found is None:
                raise InteractionNotFound(interaction_id)
            handlers.offer_to(self, uow, found, agent, returns_to)

        self.in_transaction(run)

    def revoke(self, interaction_id: str) -> None:
        """Withdraw an unanswered offer: ``Revoked`` to the invitee (offer timeout)."""

        def run(uow: UnitOfWork) -> None:
            found = uow.interactions.get(interaction_id)
            if found is None or found.offer is None:
                raise InteractionNotFound(interaction_id)
            state = self.lifecycle.fire(
                "Revoke", found.state, returning=found.offer.returns_to is not None
            )
            handlers.withdraw_offer(self, uow, found, state, "Revoke")

        self.in_transaction(run)

    def mail_failed(self, interaction_id: str, reason: str) -> None:
        """A permanent delivery failure: the draft goes back to its agent as ``Failed``.

        Idempotent, so the mail dispatcher may call it again after a crash.
        """

        def run(uow: UnitOfWork) -> None:
            i = uow.interactions.get(interaction_id)
            if i is None or not self.lifecycle.is_allowed("DeliveryFailed", i.state):
                return
            agent_id = i.last_agent
            changed = uow.interactions.update(
                evolve(
                    i,
                    state=self.lifecycle.fire("DeliveryFailed", i.state),
                    owner=agent_id,
                    user_data={**i.user_data, "DeliveryError": reason[:1000]},
                )
            )
            if agent_id is not None:
                self.notify(uow, agent_id, changed)

        self.in_transaction(run)
