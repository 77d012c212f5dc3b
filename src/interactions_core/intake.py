"""Inbound mail becomes interactions: the service side of ingestion.

``parse_message`` (``ingest``) turns bytes into an ``EmailContent``; this module decides what
the new interaction is: its mailbox and queue, whether it is a duplicate delivery, which of our
outbound interactions it answers (threading), its ContactID, and its routing preference.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .errors import AlreadyIngested
from .ingest import Envelope, MessageRefused, parse_message
from .lifecycle import State
from .model import Direction, EmailContent, Interaction, SubType
from .ports import UnitOfWork

if TYPE_CHECKING:
    from .service import InteractionService

# Mailbox keys are case-folded; the same few mailboxes come again and again, so one folded
# string is shared by all their interactions instead of a new copy in each.
_fold = lru_cache(maxsize=1024)(str.casefold)


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What became of an inbound message."""

    interaction_id: str
    duplicate: bool = False  # this message was already ingested into this mailbox
    automatic: str | None = None
    problems: tuple[str, ...] = ()
    parent_id: str | None = None
    message_id: str | None = None  # the message's Message-ID, as parsed (for the log line)


def contact_id(email: EmailContent) -> str:
    """The customer an inbound mail comes from: its From address, case-folded (the one rule,
    for mail received as bytes or as an ``EmailContent`` alike)."""
    return email.from_.addr.casefold() if email.from_ is not None else ""


def same_message(a: EmailContent, b: EmailContent) -> bool:
    """The same message delivered twice: trace headers may differ, what it says may not."""
    return (
        a.from_ == b.from_
        and a.subject == b.subject
        and a.text == b.text
        and a.html == b.html
        and [x.id for x in a.attachments] == [x.id for x in b.attachments]
    )


def ingest_key(mailbox: str, email: EmailContent) -> str | None:
    """What two deliveries of one message share (and two different messages never do): the
    mailbox, the Message-ID and what ``same_message`` compares, hashed. ``None`` for a
    message without a Message-ID (nothing says two of them are one). The store keeps it
    unique, so a relay's retry to another process while the first is still ingesting becomes
    one interaction: a unique constraint decides, not a check-then-insert."""
    if not email.message_id:
        return None
    content = [
        mailbox,
        email.message_id,
        email.from_.model_dump(mode="json") if email.from_ is not None else None,
        email.subject,
        email.text,
        email.html,
        [a.id for a in email.attachments],
    ]
    encoded = json.dumps(content, ensure_ascii=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(encoded.encode()).hexdigest()


def answered(uow: UnitOfWork, email: EmailContent) -> Interaction | None:
    """The outbound interaction this mail answers (In-Reply-To, then References newest
    first), when it is one of ours."""
    ids = [email.in_reply_to] if email.in_reply_to else []
    ids += reversed(email.references)
    for message_id in ids:
        found = uow.interactions.by_message_id(message_id)
        if found is not None and found.direction is Direction.OUTBOUND:
            return found
    return None


class Intake:
    """``receive`` (an ``EmailContent``) and ``ingest`` (RFC 5322 bytes) for one service."""

    def __init__(self, service: InteractionService) -> None:
        self.service = service
        config = service.config
        self.mailbox_queues = {k.casefold(): v for k, v in config.mailbox_queues.items()}

    def queue_of(self, mailbox: str) -> str:
        return self.mailbox_queues.get(_fold(mailbox), self.service.config.default_queue)

    def receive(
        self,
        email: EmailContent,
        *,
        mailbox: str,
        queue: str | None = None,
        user_data: Mapping[str, Any] | None = None,
        contact: str = "",
        subtype: str = SubType.INBOUND_NEW,
        parent_id: str | None = None,
    ) -> Interaction:
        s = self.service
        now = s.clock.now()
        box = _fold(mailbox)
        queue = queue or self.queue_of(box)

        def run(uow: UnitOfWork) -> Interaction:
            interaction = Interaction(
                id=s.ids.interaction_id(),
                state=s.lifecycle.fire("Ingest", State.NEW),
                interaction_subtype=subtype,
                mailbox=box,
                email=email,
                user_data=dict(user_data or {}),
                contact_id=contact or contact_id(email),
                current_queue=queue,
                in_queues=(queue,),
                received_at=now,
                parent_id=parent_id,
            )
            return uow.interactions.add(interaction)

        return s.in_transaction(run)

    def ingest(
        self, raw: bytes, *, envelope: Envelope | None = None, mailbox: str | None = None
    ) -> IngestResult:
        s = self.service
        limits = s.config.ingest_limits
        if len(raw) > limits.max_message_bytes:
            raise MessageRefused(
                f"message of {len(raw)} bytes exceeds the limit of {limits.max_message_bytes}",
                kind="too_large",
            )
        raw_id = s.attachments.put(raw)
        parsed = parse_message(raw, envelope=envelope, attachments=s.attachments, limits=limits)
        email = parsed.email
        box = _fold(mailbox or self.mailbox_of(email, envelope))
        queue = s.config.automatic_queue if parsed.automatic else self.queue_of(box)
        user_data: dict[str, Any] = dict(parsed.user_data)
        now = s.clock.now()

        def run(uow: UnitOfWork) -> IngestResult:
            problems = parsed.problems
            data = user_data
            if email.message_id:
                existing = uow.interactions.by_message_id(email.message_id, box)
                if existing is not None and existing.direction is Direction.INBOUND:
                    if same_message(existing.email, email):
                        return IngestResult(
                            existing.id,
                            duplicate=True,
                            parent_id=existing.parent_id,
                            message_id=email.message_id,
                        )
                    # Nothing accepted is dropped: a sender reusing an id gets a new interaction.
                    note = f"Message-ID {email.message_id} already used by {existing.id}"
                    problems = (*problems, note)
                    data = {**user_data, "MessageIdReusedFrom": existing.id}
            parent = answered(uow, email)
            interaction = Interaction(
                id=s.ids.interaction_id(),
                state=s.lifecycle.fire("Ingest", State.NEW),
                interaction_subtype=(
                    SubType.INBOUND_CUSTOMER_REPLY if parent else SubType.INBOUND_NEW
                ),
                mailbox=box,
                email=email,
                user_data=data,
                contact_id=parent.contact_id if parent and parent.contact_id else contact_id(email),
                current_queue=queue,
                in_queues=(queue,),
                received_at=now,
                parent_id=parent.id if parent else None,
                preferred_agent=parent.last_agent if parent and not parsed.automatic else None,
                raw_id=raw_id,
                ingest_key=key,
            )
            stored = uow.interactions.add(interaction)
            return IngestResult(
                stored.id,
                automatic=parsed.automatic,
                problems=problems,
                parent_id=stored.parent_id,
                message_id=email.message_id,
            )

        key = ingest_key(box, email)
        try:
            return s.in_transaction(run)
        except AlreadyIngested as exc:
            # Delivered to another process at the same moment (or found by its key after a
            # Message-ID reuse): that delivery's interaction is this one.
            with s.store.unit_of_work() as uow:
                existing = uow.interactions.get(exc.existing_id)
            return IngestResult(
                exc.existing_id,
                duplicate=True,
                parent_id=existing.parent_id if existing is not None else None,
                message_id=email.message_id,
            )

    def mailbox_of(self, email: EmailContent, envelope: Envelope | None) -> str:
        """The mailbox a message was delivered to: a known envelope recipient, else To/Cc."""
        candidates = [*(envelope.rcpt_tos if envelope else ()), *(a.addr for a in email.to)]
        candidates += [a.addr for a in email.cc]
        for address in candidates:
            if address.casefold() in self.mailbox_queues:
                return address
        return candidates[0] if candidates else ""
