"""One small function per operation, found in ``HANDLERS`` by the operation's type.

The executor (``InteractionService.execute``) has already loaded the interaction, checked that
the agent may see it and is entitled to this operation now, and fired the operation's trigger
once: ``ctx.state`` is where the trigger leads. A handler applies the domain effect and writes
through ``ctx`` (the unit of work): changed interactions, notifications, mail. It returns the
id of an interaction it created (a reply draft), or None. Everything commits together.

Custom operations (``registry.OperationSpec``) are functions of exactly this shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from . import compose
from .addresses import parse_address_list, refuse_line_breaks
from .errors import InvalidRequest, NotFound, Refused
from .lifecycle import State
from .model import (
    Direction,
    EmailContent,
    Interaction,
    Offer,
    SubType,
    UserData,
    build,
    evolve,
)
from .operations import (
    Accept,
    Cancel,
    Forward,
    LinkAttachment,
    OperationModel,
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
)
from .ports import Agent, OutgoingMail, UnitOfWork

if TYPE_CHECKING:
    from .service import InteractionService


@dataclass(slots=True)
class Context:
    """What a handler works with: the unit of work, the acting agent, the state the trigger led
    to, and the service's rules (queues, mailboxes, notifications)."""

    service: InteractionService
    uow: UnitOfWork
    agent: Agent
    state: str

    def save(self, i: Interaction, **changes: Any) -> Interaction:
        """Write ``i`` with ``changes`` (version + 1) and tell the acting agent."""
        changed = self.uow.interactions.update(evolve(i, **changes))
        self.service.notify(self.uow, self.agent.id, changed)
        return changed

    def notify(self, agent_id: str, i: Interaction, state: str | None = None) -> None:
        self.service.notify(self.uow, agent_id, i, state)

    def queue(self, name: str) -> str:
        """A queue name the deployment knows (``NotFound`` otherwise)."""
        return self.service.queue(name)

    def moved(self, i: Interaction, queue: str) -> dict[str, Any]:
        return moved(i, self.queue(queue))


Handler: TypeAlias = Callable[[Context, Interaction, Any], str | None]


def moved(i: Interaction, queue: str) -> dict[str, Any]:
    """currentQueue plus the inQueues/outQueues history of a move into ``queue``."""
    out = (*i.out_queues, i.current_queue) if i.current_queue else i.out_queues
    return {"current_queue": queue, "in_queues": (*i.in_queues, queue), "out_queues": out}


def without(user_data: UserData, key: str) -> UserData:
    if key not in user_data:
        return user_data  # records are immutable: the same dict may be shared
    return {k: v for k, v in user_data.items() if k != key}


# ---------------------------------------------------------------------- offers


def accept(ctx: Context, i: Interaction, op: Accept) -> None:
    ctx.save(
        i,
        state=ctx.state,
        owner=ctx.agent.id,
        last_agent=ctx.agent.id,
        offer=None,
        rejected_by=(),
        target_agent=None,
        required_skill=None,
        preferred_agent=None,
    )


def reject(ctx: Context, i: Interaction, op: Reject) -> None:
    withdraw_offer(ctx.service, ctx.uow, i, ctx.state, "Reject")


def withdraw_offer(
    service: InteractionService, uow: UnitOfWork, i: Interaction, state: str, trigger: str
) -> None:
    """Reject or Revoke (``state``: where the trigger led): the invitee loses the offer; a
    refused transfer goes back to the agent who made it."""
    offer = i.offer
    if offer is None:
        raise Refused(f"Interaction {i.id} has no outstanding offer")
    invitee, returns_to = offer.agent_id, offer.returns_to
    update: dict[str, Any] = {"state": state, "offer": None}
    if trigger == "Reject":
        update["rejected_by"] = (*i.rejected_by, invitee)
    if i.preferred_agent == invitee:
        # Last-agent routing is a first offer, not a claim: refused or left unanswered by that
        # agent, the interaction is routed as usual (else it could bounce forever).
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
    service.notify(uow, invitee, changed, gone)
    if returns_to is not None:
        service.notify(uow, returns_to, changed)


def offer_to(
    service: InteractionService,
    uow: UnitOfWork,
    i: Interaction,
    agent: Agent,
    returns_to: str | None,
) -> Interaction:
    """Invite ``agent`` (the router's offers and a transfer to one agent)."""
    state = service.lifecycle.fire("Offer", i.state)
    offer = Offer(agent_id=agent.id, offered_at=service.clock.now(), returns_to=returns_to)
    changed = uow.interactions.update(evolve(i, state=state, offer=offer))
    service.notify(uow, agent.id, changed)
    return changed


# ---------------------------------------------------------------------- drafts


def reply(ctx: Context, parent: Interaction, op: Reply | ReplyAll) -> str:
    original = parent.email
    if original.date is None:  # RFC 5322 makes Date mandatory; quote with when it arrived
        original = evolve(original, date=parent.received_at)
    email = compose.compose_reply(
        original,
        mailbox=ctx.service.reply_mailbox(parent, ctx.agent),
        own=ctx.service.own_addresses(ctx.agent, parent),
        reply_all=isinstance(op, ReplyAll),
        subject_prefix=op.subject_prefix,
        quote=op.quote_original,
        start_line=op.reply_to_start_line,
        indent=op.indent_character,
        max_references=ctx.service.config.max_references,
    )
    return add_draft(ctx, parent, email, SubType.OUTBOUND_REPLY, op.queue_name)


def forward(ctx: Context, parent: Interaction, op: Forward) -> str:
    email = compose.compose_forward(
        parent.email,
        mailbox=ctx.service.reply_mailbox(parent, ctx.agent),
        to=parse_address_list(op.to_address, field="toAddress"),
        cc=parse_address_list(op.cc_address, field="ccAddress"),
        subject_prefix=op.subject_prefix,
        note=op.text,
    )
    return add_draft(ctx, parent, email, SubType.OUTBOUND_NEW, op.queue_name)


def add_draft(
    ctx: Context, parent: Interaction, email: EmailContent, subtype: str, queue: str | None
) -> str:
    # The reply depends on the parent's state: a concurrent Transfer or StopProcessing of it
    # makes this commit conflict (and the retry sees the new state), without a write.
    ctx.uow.interactions.expect(parent)
    draft = ctx.service.new_draft(
        ctx.agent, email, mailbox=parent.mailbox, subtype=subtype, queue=queue, parent=parent
    )
    draft = ctx.uow.interactions.add(draft)
    ctx.notify(ctx.agent.id, draft)
    return draft.id


def cancel(ctx: Context, i: Interaction, op: Cancel) -> None:
    ctx.save(i, state=ctx.state, owner=None, last_agent=ctx.agent.id)


def send(ctx: Context, i: Interaction, op: Send) -> None:
    service = ctx.service
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
            update["from_"] = service.sender_mailbox(ctx.agent, given.from_address, default=i)
        if given.subject is not None:
            update["subject"] = given.subject
        if given.text is not None:
            update["text"] = given.text
            # The parts of multipart/alternative must say the same thing (RFC 2046 §5.1.4):
            # new text without new HTML drops the composed HTML.
            update["html"] = ""
        if given.structured_text is not None:
            update["html"] = given.structured_text
            if given.text is None and given.structured_text:
                # New HTML without new text: the text part is read from the new HTML, never
                # the composed draft's text, which says what the HTML said before the edit.
                update["text"] = compose.html_to_text(given.structured_text)
    now = service.clock.now()
    # Message-ID fixed now, before the first delivery attempt: a retry is the same message.
    message_id = i.email.message_id or service.ids.message_id(service.config.message_id_domain)
    email = evolve(i.email, **update, message_id=message_id, date=now)
    if not (email.to or email.cc or email.bcc):
        raise InvalidRequest(
            "Send needs at least one recipient (toAddress, ccAddress or bccAddress)"
        )
    sender = email.from_
    if sender is None:
        raise InvalidRequest("Send needs a fromAddress")
    refuse_line_breaks("subject", email.subject)
    queue = ctx.queue(op.queue_name or service.config.sent_queue)
    ctx.save(
        i,
        state=ctx.state,
        email=email,
        owner=None,
        last_agent=ctx.agent.id,
        # A failed earlier attempt is history once the agent sends again.
        user_data=without(i.user_data, "DeliveryError"),
        **moved(i, queue),
    )
    ctx.uow.outbox.add_mail(
        build(
            OutgoingMail,
            interaction_id=i.id,
            mailbox=i.mailbox,
            from_=sender,
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


def link_attachment(ctx: Context, i: Interaction, op: LinkAttachment) -> None:
    parent = ctx.uow.interactions.get(i.parent_id) if i.parent_id else None
    found = next(
        (a for a in (parent.email.attachments if parent else ()) if a.id == op.attachment_id),
        None,
    )
    if found is None:
        raise NotFound("Attachment", op.attachment_id)
    if any(a.id == found.id for a in i.email.attachments):
        raise Refused(f"Attachment {found.id!r} is already linked to this interaction")
    ctx.save(i, email=evolve(i.email, attachments=(*i.email.attachments, found)))


# ---------------------------------------------------------------------- moves


def transfer(ctx: Context, i: Interaction, op: Transfer) -> None:
    update: dict[str, Any] = {"state": ctx.state, "owner": None, "last_agent": ctx.agent.id}
    target: Agent | None = None
    target_id = op.target_agent
    if target_id is not None:
        target = ctx.service.agents.get(target_id)
        if target is None:
            raise NotFound("Agent", target_id)
        if target.id == ctx.agent.id:
            raise Refused("An interaction cannot be transferred to its own owner")
        update["target_agent"] = target.id
    elif op.skill:
        update["required_skill"] = op.skill
    elif op.queue_name is not None:
        update |= ctx.moved(i, op.queue_name)
    else:  # the model refuses a Transfer without exactly one target; say so if one slips by
        raise InvalidRequest("Transfer needs exactly one target: agentId, skill or queueName")
    changed = ctx.save(i, **update)
    if target is not None:
        offer_to(ctx.service, ctx.uow, changed, target, returns_to=ctx.agent.id)


def stop_processing(ctx: Context, i: Interaction, op: StopProcessing) -> None:
    queue = op.queue_name or ctx.service.config.done_queue
    ctx.save(i, state=ctx.state, owner=None, last_agent=ctx.agent.id, **ctx.moved(i, queue))


def place_in_queue(ctx: Context, i: Interaction, op: PlaceInQueue) -> None:
    changed = ctx.save(
        i,
        state=ctx.state,
        owner=None,
        workbin=None,
        last_agent=ctx.agent.id,
        rejected_by=(),
        **ctx.moved(i, op.queue_name),
    )
    if i.workbin is not None:  # out of a workbin, as Pull: its members see it leave
        ctx.service.notify_workbin(ctx.uow, i.workbin, changed, "PlaceInQueue")


def place_in_workbin(ctx: Context, i: Interaction, op: PlaceInWorkbin) -> None:
    workbin = ctx.service.resolve_workbin(ctx.agent.id, op.workbin_name)
    changed = ctx.save(i, state=ctx.state, owner=None, workbin=workbin, last_agent=ctx.agent.id)
    ctx.service.notify_workbin(ctx.uow, workbin, changed, "PlaceInWorkbin")


def pull(ctx: Context, i: Interaction, op: Pull) -> None:
    workbin = i.workbin
    if workbin is None:
        raise Refused(f"Interaction {i.id} is not in a workbin")
    changed = ctx.save(
        i, state=ctx.state, owner=ctx.agent.id, workbin=None, last_agent=ctx.agent.id
    )
    ctx.service.notify_workbin(ctx.uow, workbin, changed, "Pull")


def update_properties(ctx: Context, i: Interaction, op: UpdateProperties) -> None:
    user_data = dict(i.user_data)
    for key in op.delete_keys or ():
        user_data.pop(key, None)
    user_data.update(op.user_data or {})
    update: dict[str, Any] = {"user_data": user_data}
    if op.comment is not None:
        update["comment"] = op.comment
    ctx.save(i, **update)


HANDLERS: dict[type[OperationModel], Handler] = {
    Accept: accept,
    Reject: reject,
    Reply: reply,
    ReplyAll: reply,
    Forward: forward,
    Cancel: cancel,
    Send: send,
    Transfer: transfer,
    StopProcessing: stop_processing,
    PlaceInQueue: place_in_queue,
    PlaceInWorkbin: place_in_workbin,
    Pull: pull,
    UpdateProperties: update_properties,
    LinkAttachment: link_attachment,
}
"""The built-in operations on an interaction -> their handler (a test proves every member of
the operation union has one)."""


def facts(i: Interaction) -> dict[str, bool]:
    """What the lifecycle's conditional transitions look at, read off the interaction."""
    return {
        "outbound": i.direction is Direction.OUTBOUND,
        "returning": i.offer is not None and i.offer.returns_to is not None,
    }
