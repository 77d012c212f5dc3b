"""The application service: executes an operation for an agent, in one unit of work.

Flow (DESIGN.md "One operation, end to end"): load the interaction with its version; refuse if
the agent may not see it (same answer as unknown); ask the lifecycle whether the operation is
allowed for this agent now; apply the domain effect; record the changed interactions, the
notifications and the mail in the same transaction; commit. A version conflict re-runs the whole
operation against fresh state (safe: nothing was committed), so two agents racing to Accept the
same offer get exactly one winner and one clear refusal.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

from . import compose, lifecycle
from .addresses import parse_address_list, refuse_line_breaks
from .errors import (
    ConcurrencyConflict,
    InteractionNotFound,
    InteractionsError,
    InvalidRequest,
    NotFound,
    OperationNotAllowed,
    Refused,
)
from .ingest import Envelope, IngestLimits, MessageRefused, parse_message
from .lifecycle import State
from .model import (
    Address,
    Attachment,
    Direction,
    EmailContent,
    Interaction,
    InteractionView,
    Offer,
    SubType,
    UserData,
    build,
    evolve,
    parse_content_id,
)
from .operations import (
    Accept,
    Cancel,
    CreateEmail,
    Forward,
    LinkAttachment,
    Operation,
    PlaceInQueue,
    PlaceInWorkbin,
    Pull,
    Reject,
    Reply,
    ReplyAll,
    Send,
    StopProcessing,
    Transfer,
    UpdateProperties,
    parse_operation,
)
from .ports import (
    TOPIC_WORKBINS,
    Agent,
    AgentDirectory,
    AttachmentStore,
    Clock,
    IdGenerator,
    Notification,
    OutgoingMail,
    RawMessage,
    Store,
    UnitOfWork,
)
from .staging import TrackedUnitOfWork

PERSONAL_WORKBIN_PREFIX = "agent:"
_T = TypeVar("_T")
# RFC 2045 §5.1 type/subtype tokens.
_MIME_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}")


def safe_filename(name: str) -> str:
    """A file name with no path, no control characters, at most 255 characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(c for c in base if c.isprintable()).strip().strip(".")
    return cleaned[:255] or "attachment"


_log = logging.getLogger(__name__)


def _same_message(a: EmailContent, b: EmailContent) -> bool:
    """The same message delivered twice: trace headers may differ, what it says may not."""
    return (
        a.from_ == b.from_
        and a.subject == b.subject
        and a.text == b.text
        and a.html == b.html
        and [x.id for x in a.attachments] == [x.id for x in b.attachments]
    )


def _without(user_data: UserData, key: str) -> UserData:
    if key not in user_data:
        return user_data  # records are immutable: the same dict may be shared
    return {k: v for k, v in user_data.items() if k != key}


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
    max_references: int = compose.MAX_REFERENCES
    max_conflict_retries: int = 3
    # Mailbox address (any case) -> the queue its mail waits in; others go to default_queue.
    mailbox_queues: Mapping[str, str] = field(default_factory=dict)
    # Automatic mail (RFC 3834: auto-replies, bulk, lists, bounces) waits here, never answered.
    automatic_queue: str = "Automatic"
    ingest_limits: IngestLimits = field(default_factory=IngestLimits)
    # Extra addresses that are never recipients of a reply-all (system, no-reply...).
    system_addresses: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What became of an inbound message."""

    interaction_id: str
    duplicate: bool = False  # this message was already ingested into this mailbox
    automatic: str | None = None
    problems: tuple[str, ...] = ()
    parent_id: str | None = None


@dataclass(frozen=True, slots=True)
class OperationResult:
    """The seed's success response; ``reply_interaction_id`` when a new interaction was made."""

    reply_interaction_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": "ok"}
        if self.reply_interaction_id is not None:
            out["replyInteractionId"] = self.reply_interaction_id
        return out


def error_response(error: InteractionsError) -> dict[str, Any]:
    """The seed's failure response."""
    return {"status": "error", "errorDescription": error.description}


class InteractionService:
    def __init__(
        self,
        store: Store,
        agents: AgentDirectory,
        attachments: AttachmentStore,
        clock: Clock,
        ids: IdGenerator,
        config: ServiceConfig | None = None,
    ) -> None:
        self.store = store
        self.agents = agents
        self.attachments = attachments
        self.clock = clock
        self.ids = ids
        self.config = config or ServiceConfig()
        c = self.config
        self._builtin_queues = frozenset(
            {c.draft_queue, c.sent_queue, c.done_queue, c.default_queue}
        )
        self._mailbox_queues = {k.casefold(): v for k, v in self.config.mailbox_queues.items()}
        self._listeners: list[Callable[[Sequence[Interaction]], None]] = []
        self._system_addresses = frozenset(a.casefold() for a in c.system_addresses)
        # (agent addresses, agent mailboxes, mailbox) -> the casefolded addresses that are ours.
        self._own_cache: dict[tuple[tuple[str, ...], tuple[str, ...], str], frozenset[str]] = {}
        self._handlers: dict[str, Callable[[UnitOfWork, Agent, Interaction, Any], str | None]] = {
            "Accept": self._accept,
            "Reject": self._reject,
            "Reply": self._reply,
            "ReplyAll": self._reply,
            "Forward": self._forward,
            "Cancel": self._cancel,
            "Send": self._send,
            "Transfer": self._transfer,
            "StopProcessing": self._stop_processing,
            "PlaceInQueue": self._place_in_queue,
            "PlaceInWorkbin": self._place_in_workbin,
            "Pull": self._pull,
            "UpdateProperties": self._update_properties,
            "LinkAttachment": self._link_attachment,
        }

    # ------------------------------------------------------------------ entry points

    def execute_wire(self, agent_id: str, interaction_id: str | None, body: Any) -> dict[str, Any]:
        """Execute a body exactly as on the wire; return the seed's response dict.

        ``interaction_id`` None is ``POST /me/interactions`` (CreateEmail). Never raises for a
        domain error: it becomes ``{"status":"error","errorDescription":...}``.
        """
        try:
            operation = parse_operation(body)
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

    def execute(self, agent_id: str, interaction_id: str, operation: Operation) -> OperationResult:
        """Execute ``operation`` on ``interaction_id`` for ``agent_id`` (raises typed errors)."""
        if isinstance(operation, CreateEmail):
            raise InvalidRequest("CreateEmail is not an operation on an existing interaction")
        agent = self._agent(agent_id)
        handler = self._handlers[operation.canonical]

        def run(uow: UnitOfWork) -> OperationResult:
            interaction = self._load_visible(uow, agent, interaction_id)
            self._check_allowed(agent, interaction, operation.canonical)
            return OperationResult(handler(uow, agent, interaction, operation))

        return self._in_transaction(run)

    def create_email(self, agent_id: str, operation: CreateEmail) -> OperationResult:
        agent = self._agent(agent_id)

        def run(uow: UnitOfWork) -> OperationResult:
            mailbox = self._sender_mailbox(agent, operation.from_address, default=None)
            parent: Interaction | None = None
            if operation.parent_id:
                parent = self._load_visible(uow, agent, operation.parent_id)
            email = EmailContent(from_=mailbox)
            draft = self._new_draft(
                agent,
                email,
                mailbox=mailbox.addr,
                subtype=SubType.OUTBOUND_NEW,
                queue=operation.queue_name,
                parent=parent,
                interaction_type=operation.interaction_type,
            )
            draft = uow.interactions.add(draft)
            self._notify(uow, agent.id, draft)
            return OperationResult(draft.id)

        return self._in_transaction(run)

    # ------------------------------------------------------------------ reading

    def get_interaction(self, agent_id: str, interaction_id: str) -> dict[str, Any]:
        """The interaction as the agent's notifications show it (wire form)."""
        agent = self._agent(agent_id)
        with self.store.unit_of_work() as uow:
            interaction = self._load_visible(uow, agent, interaction_id)
        return self.view_for(agent.id, interaction).to_wire()

    def list_interactions(self, agent_id: str) -> list[dict[str, Any]]:
        """The agent's current interactions: owned, or offered to the agent."""
        agent = self._agent(agent_id)
        with self.store.unit_of_work() as uow:
            found = uow.interactions.for_agent(agent.id)
        found.sort(key=lambda i: (i.received_at, i.id))
        return [self.view_for(agent.id, i).to_wire() for i in found]

    def workbins(self, agent_id: str) -> list[dict[str, Any]]:
        """``GET /me/workbins``: the workbins this agent may use (GWS ``GetWorkbinTypesInfo``)."""
        agent = self._agent(agent_id)
        personal = [
            {"workbinId": self.resolve_workbin(agent.id, n), "workbinName": n, "shared": False}
            for n in self.config.personal_workbins
        ]
        shared = [
            {"workbinId": n, "workbinName": n, "shared": True}
            for n in self.config.shared_workbins
            if self._workbin_access(agent.id, n)
        ]
        return personal + shared

    def workbin_content(self, agent_id: str, workbin_name: str) -> list[dict[str, Any]]:
        """The interactions in one of the agent's workbins, oldest first (wire form)."""
        agent = self._agent(agent_id)
        workbin = self.resolve_workbin(agent.id, workbin_name)
        with self.store.unit_of_work() as uow:
            found = uow.interactions.in_workbin(workbin)
        return [self.view_for(agent.id, i).to_wire() for i in found]

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
        """Upload an attachment to a draft the agent owns (``LinkAttachment`` allowed now).

        With ``content_id``, the draft's HTML can show it inline as ``<img src="cid:...">``
        (it is sent in a multipart/related beside the HTML when the HTML refers to it).
        """
        agent = self._agent(agent_id)
        cid = None
        if content_id:
            cid = parse_content_id(content_id)
            if cid is None:
                raise InvalidRequest(
                    "contentId must be one token of visible ASCII (no spaces, < or >), "
                    "at most 250 characters"
                )
        clean_name = safe_filename(name)
        clean_type = mimetype.strip().lower() if _MIME_TYPE.fullmatch(mimetype.strip()) else ""
        stored = self.attachments.put(data)  # content-addressed: idempotent, outside the UoW
        attachment = Attachment(
            id=stored,
            name=clean_name,
            size=len(data),
            mimetype=clean_type or "application/octet-stream",
            content_id=cid,
        )

        def run(uow: UnitOfWork) -> Attachment:
            i = self._load_visible(uow, agent, interaction_id)
            self._check_allowed(agent, i, "LinkAttachment")
            if any(a.id == stored and a.content_id == cid for a in i.email.attachments):
                return attachment
            if cid is not None and any(a.content_id == cid for a in i.email.attachments):
                raise Refused(f"The draft already has an attachment with contentId {cid!r}")
            email = evolve(i.email, attachments=(*i.email.attachments, attachment))
            changed = uow.interactions.update(evolve(i, email=email))
            self._notify(uow, agent.id, changed)
            return attachment

        return self._in_transaction(run)

    def get_attachment(
        self, agent_id: str, interaction_id: str, attachment_id: str
    ) -> tuple[Attachment, bytes]:
        """An attachment of an interaction the agent may see, with its bytes."""
        agent = self._agent(agent_id)
        with self.store.unit_of_work() as uow:
            i = self._load_visible(uow, agent, interaction_id)
        found = next((a for a in i.email.attachments if a.id == attachment_id), None)
        if found is None:
            raise NotFound("Attachment", attachment_id)
        try:
            return found, self.attachments.get(found.id)
        except KeyError:
            raise NotFound("Attachment", attachment_id) from None

    def remove_attachment(self, agent_id: str, interaction_id: str, attachment_id: str) -> None:
        """Remove an attachment from a draft the agent owns (the bytes stay: others may share
        them, and the content store is append-only)."""
        agent = self._agent(agent_id)

        def run(uow: UnitOfWork) -> None:
            i = self._load_visible(uow, agent, interaction_id)
            self._check_allowed(agent, i, "LinkAttachment")
            kept = tuple(a for a in i.email.attachments if a.id != attachment_id)
            if len(kept) == len(i.email.attachments):
                raise NotFound("Attachment", attachment_id)
            email = evolve(i.email, attachments=kept)
            changed = uow.interactions.update(evolve(i, email=email))
            self._notify(uow, agent.id, changed)

        self._in_transaction(run)

    def allowed_operations(self, agent_id: str, interaction: Interaction) -> tuple[str, ...]:
        """Capabilities for this agent: the machine's, when the agent is the one entitled."""
        if not self._entitled(agent_id, interaction):
            return ()
        return lifecycle.capabilities(interaction.state)

    def view_for(
        self, agent_id: str, interaction: Interaction, state: str | None = None
    ) -> InteractionView:
        """What ``agent_id`` is shown; with ``state``, the event the agent is told about
        (Rejected, Revoked) with no capabilities."""
        if state is not None:
            return InteractionView(interaction, (), state)
        return InteractionView(interaction, self.allowed_operations(agent_id, interaction))

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
        """Create a new inbound interaction, waiting in ``queue`` (ingestion calls this)."""
        now = self.clock.now()
        queue = queue or self.config.default_queue

        def run(uow: UnitOfWork) -> Interaction:
            interaction = Interaction(
                id=self.ids.interaction_id(),
                state=lifecycle.fire("Ingest", State.NEW),
                interaction_subtype=subtype,
                mailbox=mailbox,
                email=email,
                user_data=dict(user_data or {}),
                contact_id=contact_id or (email.from_.addr if email.from_ else ""),
                current_queue=queue,
                in_queues=(queue,),
                received_at=now,
                parent_id=parent_id,
            )
            return uow.interactions.add(interaction)

        return self._in_transaction(run)

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
        limits = self.config.ingest_limits
        if len(raw) > limits.max_message_bytes:
            raise MessageRefused(
                f"message of {len(raw)} bytes exceeds the limit of {limits.max_message_bytes}",
                kind="too_large",
            )
        raw_id = self.attachments.put(raw)
        parsed = parse_message(raw, envelope=envelope, attachments=self.attachments, limits=limits)
        email = parsed.email
        box = (mailbox or self._mailbox_of(email, envelope)).casefold()
        queue = self._mailbox_queues.get(box, self.config.default_queue)
        user_data: dict[str, Any] = dict(parsed.user_data)
        if parsed.automatic:
            queue = self.config.automatic_queue
        now = self.clock.now()

        def run(uow: UnitOfWork) -> IngestResult:
            problems = parsed.problems
            data = user_data
            if email.message_id:
                existing = uow.interactions.by_message_id(email.message_id, box)
                if existing is not None and existing.direction is Direction.INBOUND:
                    if _same_message(existing.email, email):
                        return IngestResult(
                            existing.id, duplicate=True, parent_id=existing.parent_id
                        )
                    # Nothing accepted is dropped: a sender reusing an id gets a new interaction.
                    note = f"Message-ID {email.message_id} already used by {existing.id}"
                    problems = (*problems, note)
                    data = {**user_data, "MessageIdReusedFrom": existing.id}
            parent = self._answered(uow, email)
            interaction = Interaction(
                id=self.ids.interaction_id(),
                state=lifecycle.fire("Ingest", State.NEW),
                interaction_subtype=(
                    SubType.INBOUND_CUSTOMER_REPLY if parent else SubType.INBOUND_NEW
                ),
                mailbox=box,
                email=email,
                user_data=data,
                contact_id=(
                    parent.contact_id
                    if parent and parent.contact_id
                    else (email.from_.addr.casefold() if email.from_ else "")
                ),
                current_queue=queue,
                in_queues=(queue,),
                received_at=now,
                parent_id=parent.id if parent else None,
                preferred_agent=parent.last_agent if parent and not parsed.automatic else None,
                raw_id=raw_id,
            )
            stored = uow.interactions.add(interaction)
            return IngestResult(
                stored.id,
                automatic=parsed.automatic,
                problems=problems,
                parent_id=stored.parent_id,
            )

        return self._in_transaction(run)

    def _mailbox_of(self, email: EmailContent, envelope: Envelope | None) -> str:
        """The mailbox a message was delivered to: a known envelope recipient, else To/Cc."""
        candidates = [*(envelope.rcpt_tos if envelope else ()), *(a.addr for a in email.to)]
        candidates += [a.addr for a in email.cc]
        for address in candidates:
            if address.casefold() in self._mailbox_queues:
                return address
        return candidates[0] if candidates else ""

    def _answered(self, uow: UnitOfWork, email: EmailContent) -> Interaction | None:
        """The outbound interaction this mail answers (In-Reply-To, then References newest
        first), when it is one of ours."""
        ids = [email.in_reply_to] if email.in_reply_to else []
        ids += reversed(email.references)
        for message_id in ids:
            found = uow.interactions.by_message_id(message_id)
            if found is not None and found.direction is Direction.OUTBOUND:
                return found
        return None

    def offer(self, interaction_id: str, agent_id: str, returns_to: str | None = None) -> None:
        """Offer a waiting interaction to one agent: an ``Invited`` notification (router)."""
        agent = self._agent(agent_id)

        def run(uow: UnitOfWork) -> None:
            interaction = uow.interactions.get(interaction_id)
            if interaction is None:
                raise InteractionNotFound(interaction_id)
            self._offer(uow, interaction, agent, returns_to)

        self._in_transaction(run)

    def revoke(self, interaction_id: str) -> None:
        """Withdraw an unanswered offer: ``Revoked`` to the invitee (offer timeout)."""

        def run(uow: UnitOfWork) -> None:
            interaction = uow.interactions.get(interaction_id)
            if interaction is None or interaction.offer is None:
                raise InteractionNotFound(interaction_id)
            self._withdraw_offer(uow, interaction, "Revoke")

        self._in_transaction(run)

    def mail_failed(self, interaction_id: str, reason: str) -> None:
        """A permanent delivery failure: the draft goes back to its agent as ``Failed``.

        Idempotent, so the mail dispatcher may call it again after a crash.
        """

        def run(uow: UnitOfWork) -> None:
            i = uow.interactions.get(interaction_id)
            if i is None or not lifecycle.is_allowed("DeliveryFailed", i.state):
                return
            agent_id = i.last_agent
            changed = uow.interactions.update(
                evolve(
                    i,
                    state=lifecycle.fire("DeliveryFailed", i.state),
                    owner=agent_id,
                    user_data={**i.user_data, "DeliveryError": reason[:1000]},
                )
            )
            if agent_id is not None:
                self._notify(uow, agent_id, changed)

        self._in_transaction(run)

    # ------------------------------------------------------------------ handlers

    def _accept(self, uow: UnitOfWork, agent: Agent, i: Interaction, op: Accept) -> None:
        state = lifecycle.fire("Accept", i.state)
        changed = uow.interactions.update(
            evolve(
                i,
                state=state,
                owner=agent.id,
                last_agent=agent.id,
                offer=None,
                rejected_by=(),
                target_agent=None,
                required_skill=None,
                preferred_agent=None,
            )
        )
        self._notify(uow, agent.id, changed)

    def _reject(self, uow: UnitOfWork, agent: Agent, i: Interaction, op: Reject) -> None:
        self._withdraw_offer(uow, i, "Reject")

    def _withdraw_offer(self, uow: UnitOfWork, i: Interaction, trigger: str) -> None:
        """Reject or Revoke: the invitee loses the offer; a refused transfer goes back home."""
        assert i.offer is not None
        invitee = i.offer.agent_id
        returns_to = i.offer.returns_to
        state = lifecycle.fire(trigger, i.state, returning=returns_to is not None)
        update: dict[str, Any] = {"state": state, "offer": None}
        if trigger == "Reject":
            update["rejected_by"] = (*i.rejected_by, invitee)
        if i.preferred_agent == invitee:
            # Last-agent routing is a first offer, not a claim: refused or left unanswered by
            # that agent, the interaction is routed as usual (else it could bounce forever).
            update["preferred_agent"] = None
        if returns_to is not None:
            verb = "rejected" if trigger == "Reject" else "did not answer"
            note = f"Transfer to {invitee} failed: {invitee} {verb}"
            update |= {
                "owner": returns_to,
                "target_agent": None,
                "user_data": {**i.user_data, "TransferResult": note},
            }
        changed = uow.interactions.update(evolve(i, **update))
        # The invitee learns the offer is gone (seed: Revoked, capabilities []).
        gone = State.REJECTED if trigger == "Reject" else State.REVOKED
        self._notify(uow, invitee, changed, state=gone)
        if returns_to is not None:
            self._notify(uow, returns_to, changed)

    def _reply(
        self, uow: UnitOfWork, agent: Agent, parent: Interaction, op: Reply | ReplyAll
    ) -> str:
        lifecycle.fire(op.canonical, parent.state)
        mailbox = self._mailbox_address(parent, agent)
        original = parent.email
        if original.date is None:  # RFC 5322 makes Date mandatory; quote with when it arrived
            original = evolve(original, date=parent.received_at)
        email = compose.compose_reply(
            original,
            mailbox=mailbox,
            own=self._own_addresses(agent, parent),
            reply_all=isinstance(op, ReplyAll),
            subject_prefix=op.subject_prefix,
            quote=op.quote_original,
            start_line=op.reply_to_start_line,
            indent=op.indent_character,
        )
        return self._add_draft(uow, agent, parent, email, SubType.OUTBOUND_REPLY, op.queue_name)

    def _forward(self, uow: UnitOfWork, agent: Agent, parent: Interaction, op: Forward) -> str:
        lifecycle.fire("Forward", parent.state)
        email = compose.compose_forward(
            parent.email,
            mailbox=self._mailbox_address(parent, agent),
            to=parse_address_list(op.to_address, field="toAddress"),
            cc=parse_address_list(op.cc_address, field="ccAddress"),
            subject_prefix=op.subject_prefix,
            note=op.text,
        )
        return self._add_draft(uow, agent, parent, email, SubType.OUTBOUND_NEW, op.queue_name)

    def _add_draft(
        self,
        uow: UnitOfWork,
        agent: Agent,
        parent: Interaction,
        email: EmailContent,
        subtype: str,
        queue: str | None,
    ) -> str:
        # The reply depends on the parent's state: a concurrent Transfer or StopProcessing of it
        # makes this commit conflict (and the retry sees the new state), without a write.
        uow.interactions.expect(parent)
        draft = self._new_draft(
            agent, email, mailbox=parent.mailbox, subtype=subtype, queue=queue, parent=parent
        )
        draft = uow.interactions.add(draft)
        self._notify(uow, agent.id, draft)
        return draft.id

    def _new_draft(
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
        queue = self._queue(queue or self.config.draft_queue)
        return build(
            Interaction,
            id=self.ids.interaction_id(),
            state=lifecycle.fire("Compose", State.NEW),
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

    def _cancel(self, uow: UnitOfWork, agent: Agent, i: Interaction, op: Cancel) -> None:
        state = lifecycle.fire("Cancel", i.state)
        changed = uow.interactions.update(evolve(i, state=state, owner=None, last_agent=agent.id))
        self._notify(uow, agent.id, changed)

    def _send(self, uow: UnitOfWork, agent: Agent, i: Interaction, op: Send) -> None:
        update: dict[str, Any] = {}
        given = op.email_object
        if given is not None:
            if given.to_address is not None:
                update["to"] = parse_address_list(given.to_address, field="toAddress")
            if given.cc_address is not None:
                update["cc"] = parse_address_list(given.cc_address, field="ccAddress")
            if given.bcc_address is not None:
                update["bcc"] = parse_address_list(given.bcc_address, field="bccAddress")
            if given.from_address is not None:
                update["from_"] = self._sender_mailbox(agent, given.from_address, default=i)
            if given.subject is not None:
                update["subject"] = given.subject
            if given.text is not None:
                update["text"] = given.text
                # The parts of multipart/alternative must say the same thing (RFC 2046
                # §5.1.4): new text without new HTML drops the composed HTML.
                update["html"] = ""
            if given.structured_text is not None:
                update["html"] = given.structured_text
        now = self.clock.now()
        # Message-ID fixed now, before the first delivery attempt: a retry is the same message.
        update["message_id"] = i.email.message_id or self.ids.message_id(
            self.config.message_id_domain
        )
        update["date"] = now
        email = evolve(i.email, **update)
        if not (email.to or email.cc or email.bcc):
            raise InvalidRequest(
                "Send needs at least one recipient (toAddress, ccAddress or bccAddress)"
            )
        if email.from_ is None:
            raise InvalidRequest("Send needs a fromAddress")
        refuse_line_breaks("subject", email.subject)
        message_id: str = update["message_id"]
        state = lifecycle.fire("Send", i.state)
        queue = self._queue(op.queue_name or self.config.sent_queue)
        changed = uow.interactions.update(
            evolve(
                i,
                state=state,
                email=email,
                owner=None,
                last_agent=agent.id,
                # A failed earlier attempt is history once the agent sends again.
                user_data=_without(i.user_data, "DeliveryError"),
                **self._moved(i, queue),
            )
        )
        uow.outbox.add_mail(
            build(
                OutgoingMail,
                interaction_id=i.id,
                mailbox=i.mailbox,
                from_=email.from_,
                to=email.to,
                cc=email.cc,
                bcc=email.bcc,
                subject=email.subject,
                text=email.text,
                html=email.html,
                message_id=message_id,
                in_reply_to=email.in_reply_to,
                references=email.references,
                date=now,
                attachments=email.attachments,
            )
        )
        self._notify(uow, agent.id, changed)

    def _transfer(self, uow: UnitOfWork, agent: Agent, i: Interaction, op: Transfer) -> None:
        state = lifecycle.fire("Transfer", i.state)
        target_id = op.target_agent
        update: dict[str, Any] = {"state": state, "owner": None, "last_agent": agent.id}
        target: Agent | None = None
        if target_id is not None:
            target = self.agents.get(target_id)
            if target is None:
                raise NotFound("Agent", target_id)
            if target.id == agent.id:
                raise Refused("An interaction cannot be transferred to its own owner")
            update["target_agent"] = target.id
        elif op.skill:
            update["required_skill"] = op.skill
        else:
            assert op.queue_name is not None
            update |= self._moved(i, self._queue(op.queue_name))
        changed = uow.interactions.update(evolve(i, **update))
        self._notify(uow, agent.id, changed)
        if target is not None:
            self._offer(uow, changed, target, returns_to=agent.id)

    def _stop_processing(
        self, uow: UnitOfWork, agent: Agent, i: Interaction, op: StopProcessing
    ) -> None:
        state = lifecycle.fire("StopProcessing", i.state)
        queue = self._queue(op.queue_name or self.config.done_queue)
        changed = uow.interactions.update(
            evolve(
                i,
                state=state,
                owner=None,
                last_agent=agent.id,
                **self._moved(i, queue),
            )
        )
        self._notify(uow, agent.id, changed)

    def _place_in_queue(
        self, uow: UnitOfWork, agent: Agent, i: Interaction, op: PlaceInQueue
    ) -> None:
        state = lifecycle.fire("PlaceInQueue", i.state)
        queue = self._queue(op.queue_name)
        changed = uow.interactions.update(
            evolve(
                i,
                state=state,
                owner=None,
                workbin=None,
                last_agent=agent.id,
                rejected_by=(),
                **self._moved(i, queue),
            )
        )
        self._notify(uow, agent.id, changed)
        if i.workbin is not None:  # out of a workbin, as Pull: its members see it leave
            self._notify_workbin(uow, i.workbin, changed, "PlaceInQueue")

    def _place_in_workbin(
        self, uow: UnitOfWork, agent: Agent, i: Interaction, op: PlaceInWorkbin
    ) -> None:
        workbin = self.resolve_workbin(agent.id, op.workbin_name)
        state = lifecycle.fire("PlaceInWorkbin", i.state)
        changed = uow.interactions.update(
            evolve(i, state=state, owner=None, workbin=workbin, last_agent=agent.id)
        )
        self._notify(uow, agent.id, changed)
        self._notify_workbin(uow, workbin, changed, "PlaceInWorkbin")

    def _pull(self, uow: UnitOfWork, agent: Agent, i: Interaction, op: Pull) -> None:
        state = lifecycle.fire("Pull", i.state, outbound=i.direction is Direction.OUTBOUND)
        changed = uow.interactions.update(
            evolve(i, state=state, owner=agent.id, workbin=None, last_agent=agent.id)
        )
        self._notify(uow, agent.id, changed)
        assert i.workbin is not None
        self._notify_workbin(uow, i.workbin, changed, "Pull")

    def _update_properties(
        self, uow: UnitOfWork, agent: Agent, i: Interaction, op: UpdateProperties
    ) -> None:
        lifecycle.fire("UpdateProperties", i.state)
        user_data = dict(i.user_data)
        for key in op.delete_keys or ():
            user_data.pop(key, None)
        user_data.update(op.user_data or {})
        update: dict[str, Any] = {"user_data": user_data}
        if op.comment is not None:
            update["comment"] = op.comment
        changed = uow.interactions.update(evolve(i, **update))
        self._notify(uow, agent.id, changed)

    def _link_attachment(
        self, uow: UnitOfWork, agent: Agent, i: Interaction, op: LinkAttachment
    ) -> None:
        lifecycle.fire("LinkAttachment", i.state)
        parent = uow.interactions.get(i.parent_id) if i.parent_id else None
        found = next(
            (a for a in (parent.email.attachments if parent else ()) if a.id == op.attachment_id),
            None,
        )
        if found is None:
            raise NotFound("Attachment", op.attachment_id)
        if any(a.id == found.id for a in i.email.attachments):
            raise Refused(f"Attachment {found.id!r} is already linked to this interaction")
        email = evolve(i.email, attachments=(*i.email.attachments, found))
        changed = uow.interactions.update(evolve(i, email=email))
        self._notify(uow, agent.id, changed)

    # ------------------------------------------------------------------ helpers

    def _offer(self, uow: UnitOfWork, i: Interaction, agent: Agent, returns_to: str | None) -> None:
        state = lifecycle.fire("Offer", i.state)
        changed = uow.interactions.update(
            evolve(
                i,
                state=state,
                offer=Offer(agent_id=agent.id, offered_at=self.clock.now(), returns_to=returns_to),
            )
        )
        self._notify(uow, agent.id, changed)

    def _in_transaction(self, run: Callable[[UnitOfWork], _T]) -> _T:
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
        raise AssertionError("unreachable")

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

    def _agent(self, agent_id: str) -> Agent:
        agent = self.agents.get(agent_id)
        if agent is None:
            raise NotFound("Agent", agent_id)
        return agent

    def _load_visible(self, uow: UnitOfWork, agent: Agent, interaction_id: str) -> Interaction:
        interaction = uow.interactions.get(interaction_id)
        if interaction is None or not self._visible(agent.id, interaction):
            raise InteractionNotFound(interaction_id)
        return interaction

    def _visible(self, agent_id: str, i: Interaction) -> bool:
        return (
            i.owner == agent_id
            or i.last_agent == agent_id
            or (i.offer is not None and i.offer.agent_id == agent_id)
            or (i.workbin is not None and self._workbin_access(agent_id, i.workbin))
        )

    def _entitled(self, agent_id: str, i: Interaction) -> bool:
        if i.state == State.INVITED:
            return i.offer is not None and i.offer.agent_id == agent_id
        if i.state == State.IN_WORKBIN:
            return i.workbin is not None and self._workbin_access(agent_id, i.workbin)
        return i.owner == agent_id

    def _check_allowed(self, agent: Agent, i: Interaction, operation: str) -> None:
        allowed = self.allowed_operations(agent.id, i)
        if operation not in allowed:
            raise OperationNotAllowed(operation, i.state, allowed)

    def resolve_workbin(self, agent_id: str, name: str | None) -> str:
        """Workbin key: ``agent:<id>/<name>`` for a personal workbin, else the shared name."""
        name = name or self.config.personal_workbins[0]
        if name in self.config.personal_workbins:
            return f"{PERSONAL_WORKBIN_PREFIX}{agent_id}/{name}"
        if name in self.config.shared_workbins:
            if not self._workbin_access(agent_id, name):
                raise NotFound("Workbin", name)
            return name
        raise NotFound("Workbin", name)

    def _workbin_access(self, agent_id: str, workbin: str) -> bool:
        if workbin.startswith(PERSONAL_WORKBIN_PREFIX):
            return workbin.startswith(f"{PERSONAL_WORKBIN_PREFIX}{agent_id}/")
        members = self.config.shared_workbins.get(workbin)
        return members is not None and (not members or agent_id in members)

    def _queue(self, name: str) -> str:
        known = self.config.queues
        if known is not None and name not in known and name not in self._builtin_queues:
            raise NotFound("Queue", name)
        return name

    @staticmethod
    def _moved(i: Interaction, queue: str) -> dict[str, Any]:
        """currentQueue plus the inQueues/outQueues history of a move into ``queue``."""
        out = (*i.out_queues, i.current_queue) if i.current_queue else i.out_queues
        return {"current_queue": queue, "in_queues": (*i.in_queues, queue), "out_queues": out}

    def _mailbox_address(self, parent: Interaction, agent: Agent) -> Address:
        """FromAddress of a reply: the mailbox the original was sent to."""
        if parent.mailbox:
            return _mailbox(parent.mailbox)
        if agent.mailboxes:
            return _mailbox(agent.mailboxes[0])
        raise Refused("The interaction has no mailbox to reply from")

    def _own_addresses(self, agent: Agent, parent: Interaction) -> frozenset[str]:
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

    def _sender_mailbox(
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

    def _notify_workbin(self, uow: UnitOfWork, workbin: str, i: Interaction, change: str) -> None:
        """``/me/workbins``: every agent who can see the workbin learns its content changed."""
        if workbin.startswith(PERSONAL_WORKBIN_PREFIX):
            audience = [workbin[len(PERSONAL_WORKBIN_PREFIX) :].split("/", 1)[0]]
        else:
            members = self.config.shared_workbins.get(workbin, frozenset())
            audience = sorted(members) if members else [a.id for a in self.agents.agents()]
        for agent_id in audience:
            uow.outbox.add_notification(
                Notification(
                    agent_id=agent_id,
                    topic=TOPIC_WORKBINS,
                    payload=RawMessage(
                        data={
                            "messageTypeName": "WorkbinContentChanged",
                            "workbinId": workbin,
                            "change": change,
                            "interactionId": i.id,
                            "state": i.state,
                        }
                    ),
                )
            )

    def _notify(
        self, uow: UnitOfWork, agent_id: str, interaction: Interaction, state: str | None = None
    ) -> None:
        uow.outbox.add_notification(
            build(
                Notification, agent_id=agent_id, payload=self.view_for(agent_id, interaction, state)
            )
        )
