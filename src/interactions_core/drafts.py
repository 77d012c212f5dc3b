"""Attachments of drafts: upload, download, remove (``LinkAttachment`` links the original's).

An attachment has its own identity (``Attachment.id``: a random token, unique within the draft)
and the content address of its bytes (``Attachment.blob``). The bytes go to the attachment
store (content-addressed, outside the unit of work: storing them twice is harmless); the
draft's attachment is written in one unit of work, so an upload is attached if and only if that
commit succeeds. The same bytes uploaded under two names are two attachments sharing one blob;
removing one leaves the other. Blobs are kept when an attachment is removed (see
docs/storage.md, "Attachments: identity and blobs").
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING

from .errors import InvalidRequest, NotFound, Refused
from .model import Attachment, evolve, parse_content_id
from .ports import UnitOfWork
from .rfc5322 import safe_filename

if TYPE_CHECKING:
    from .service import InteractionService


# RFC 2045 §5.1 type/subtype tokens.
_MIME_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}")


def clean_mimetype(mimetype: str) -> str:
    """A valid ``type/subtype`` in lower case, else ``application/octet-stream``."""
    value = mimetype.strip()
    return value.lower() if _MIME_TYPE.fullmatch(value) else "application/octet-stream"


def add(
    s: InteractionService,
    agent_id: str,
    interaction_id: str,
    name: str,
    mimetype: str,
    data: bytes,
    content_id: str | None = None,
) -> Attachment:
    """Upload an attachment to a draft the agent owns (``LinkAttachment`` allowed now).

    With ``content_id``, the draft's HTML can show it inline as ``<img src="cid:...">`` (it is
    sent in a multipart/related beside the HTML when the HTML refers to it).
    """
    agent = s.agent(agent_id)
    cid = None
    if content_id:
        cid = parse_content_id(content_id)
        if cid is None:
            raise InvalidRequest(
                "contentId must be one token of visible ASCII (no spaces, < or >), "
                "at most 250 characters"
            )
    blob = s.attachments.put(data)  # content-addressed: idempotent, outside the UoW
    clean_name = safe_filename(name)
    clean_type = clean_mimetype(mimetype)

    def run(uow: UnitOfWork) -> Attachment:
        i = s.load_visible(uow, agent, interaction_id)
        s.check_allowed(agent, i, "LinkAttachment")
        existing = i.email.attachments
        for a in existing:
            # The same upload again (a client retrying after a lost answer): the one it made.
            if (a.blob, a.name, a.mimetype, a.content_id) == (blob, clean_name, clean_type, cid):
                return a
        if cid is not None and any(a.content_id == cid for a in existing):
            raise Refused(f"The draft already has an attachment with contentId {cid!r}")
        attachment = Attachment(
            id=new_attachment_id({a.id for a in existing}),
            blob=blob,
            name=clean_name,
            size=len(data),
            mimetype=clean_type,
            content_id=cid,
        )
        email = evolve(i.email, attachments=(*existing, attachment))
        changed = uow.interactions.update(evolve(i, email=email))
        s.notify(uow, agent.id, changed)
        return attachment

    return s.in_transaction(run)


def new_attachment_id(taken: set[str]) -> str:
    """A fresh attachment id: 24 random hex digits (URL- and file-name-safe; never 64 hex digits
    like a content address), not one of ``taken``."""
    while True:
        candidate = secrets.token_hex(12)
        if candidate not in taken:
            return candidate


def get(
    s: InteractionService, agent_id: str, interaction_id: str, attachment_id: str
) -> tuple[Attachment, bytes]:
    """An attachment of an interaction the agent may see, with its bytes."""
    agent = s.agent(agent_id)
    with s.store.unit_of_work() as uow:
        i = s.load_visible(uow, agent, interaction_id)
    found = next((a for a in i.email.attachments if a.id == attachment_id), None)
    if found is None:
        raise NotFound("Attachment", attachment_id)
    try:
        return found, s.attachments.get(found.blob)
    except KeyError:
        raise NotFound("Attachment", attachment_id) from None


def remove(s: InteractionService, agent_id: str, interaction_id: str, attachment_id: str) -> None:
    """Remove one attachment (by its own id) from a draft the agent owns. Others sharing its
    blob are untouched, and the bytes stay in the attachment store: other interactions may
    refer to them (docs/storage.md)."""
    agent = s.agent(agent_id)

    def run(uow: UnitOfWork) -> None:
        i = s.load_visible(uow, agent, interaction_id)
        s.check_allowed(agent, i, "LinkAttachment")
        kept = tuple(a for a in i.email.attachments if a.id != attachment_id)
        if len(kept) == len(i.email.attachments):
            raise NotFound("Attachment", attachment_id)
        changed = uow.interactions.update(evolve(i, email=evolve(i.email, attachments=kept)))
        s.notify(uow, agent.id, changed)

    s.in_transaction(run)
