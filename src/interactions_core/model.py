"""Domain records and the wire models of the seed's notifications.

Two layers, on purpose:

* ``Interaction`` and ``EmailContent`` are the domain records: frozen pydantic models with
  pythonic names and structured addresses. They are immutable, so a change is a cheap
  ``evolve(record, field=value)`` and an in-memory store can share them without defensive
  copies.
* ``InteractionStateMessage`` / ``EmailObject`` / ``AttachmentInfo`` are the wire: the exact
  member names of the seed page (``messageTypeName``, ``email_object``, ``ToAddress``...).

Addresses are validated at the input edge (``addresses.py``), never here: data loaded from
storage is trusted and not re-validated.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import Annotated, Any, Literal, TypeVar, cast
from urllib.parse import unquote

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_serializer,
    model_serializer,
)

from .wire import AttachmentWire, InteractionMessage

# Floats are finite: JSON has no NaN or Infinity (RFC 8259 §6), and such a value could be
# neither stored nor sent back to a client.
UserDataValue = str | int | Annotated[float, Field(allow_inf_nan=False)] | bool
UserData = dict[str, UserDataValue]

# What ``str.splitlines()`` breaks a line on, so what the ``email`` package refuses in a header
# value, and NUL: none may reach a header (header injection). A regex character-class body,
# valid for Python's ``re`` and for pydantic's Rust engine alike.
HEADER_BREAKS = r"\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029\x00"
_HEADER_BREAK = re.compile(f"[{HEADER_BREAKS}]")


def has_line_break(value: str) -> bool:
    return _HEADER_BREAK.search(value) is not None


CHANNEL = "email"
MESSAGE_TYPE: Literal["InteractionStateMessage"] = "InteractionStateMessage"


class Direction(StrEnum):
    INBOUND = "Inbound"
    OUTBOUND = "Outbound"


class SubType(StrEnum):
    """Interaction Server sub-types used by GWS (seed: InboundNew, OutboundReply, OutboundNew)."""

    INBOUND_NEW = "InboundNew"
    INBOUND_CUSTOMER_REPLY = "InboundCustomerReply"
    OUTBOUND_REPLY = "OutboundReply"
    OUTBOUND_NEW = "OutboundNew"


def direction_of(subtype: str) -> Direction:
    return Direction.INBOUND if subtype.startswith("Inbound") else Direction.OUTBOUND


_FROZEN = ConfigDict(frozen=True, extra="forbid")
_Record = TypeVar("_Record", bound=BaseModel)
_set = object.__setattr__


# Per record class: its static defaults, its default factories, and how many fields it has.
_Defaults = tuple[dict[str, Any], tuple[tuple[str, Callable[[], Any]], ...], int]
_DEFAULTS: dict[type[BaseModel], _Defaults] = {}


def _defaults(cls: type[BaseModel]) -> _Defaults:
    found = _DEFAULTS.get(cls)
    if found is None:
        static: dict[str, Any] = {}
        factories: list[tuple[str, Callable[[], Any]]] = []
        for name, info in cls.model_fields.items():
            if info.default_factory is not None:
                if info.default_factory_takes_validated_data:
                    raise TypeError(
                        f"build() cannot fill {cls.__name__}.{name}: its default "
                        "factory reads other fields"
                    )
                factories.append((name, cast(Callable[[], Any], info.default_factory)))
            elif not info.is_required():
                try:
                    hash(info.default)
                except TypeError:  # a mutable default: each record gets its own copy
                    factories.append((name, partial(copy.deepcopy, info.default)))
                else:
                    static[name] = info.default
        found = _DEFAULTS[cls] = (static, tuple(factories), len(cls.model_fields))
    return found


def build(cls: type[_Record], **values: Any) -> _Record:
    """A record from values that are already valid: ``model_construct`` at a fraction of its
    cost (it deep-copies every default). For the service's own hot paths, where every value
    comes from a validated record or a typed function; input from outside is validated.

    Missing fields take their defaults; a missing required field or an unknown one is an error.
    Static defaults are shared, which is safe because the domain records are frozen and their
    defaults immutable (tuples, strings, frozen records).
    """
    static, factories, count = _defaults(cls)
    data = {**static, **values}
    for name, factory in factories:
        if name not in values:
            data[name] = factory()
    if len(data) != count:
        fields = cls.model_fields.keys()
        unknown = sorted(values.keys() - fields)
        missing = sorted(fields - data.keys())
        raise TypeError(f"{cls.__name__}: unknown fields {unknown}, missing fields {missing}")
    record = object.__new__(cls)
    _set(record, "__dict__", data)
    _set(record, "__pydantic_fields_set__", set(values))
    _set(record, "__pydantic_extra__", None)
    _set(record, "__pydantic_private__", None)
    return record


def evolve(record: _Record, **changes: Any) -> _Record:
    """A copy of a frozen domain record with ``changes`` applied, values taken as given.

    What ``model_copy(update=...)`` does, at half its cost: it runs for every write of every
    operation. Like ``model_copy`` it does not validate the values; unlike it, an unknown field
    is an error. The copy shares the original's fields-set record (nothing here reads it).
    """
    values = {**record.__dict__, **changes}
    if len(values) != len(record.__dict__):  # the record's __dict__ holds exactly its fields
        unknown = sorted(changes.keys() - record.__dict__.keys())
        raise TypeError(f"{type(record).__name__} has no field {', '.join(unknown)}")
    copy = object.__new__(type(record))
    _set(copy, "__dict__", values)
    _set(copy, "__pydantic_fields_set__", record.__pydantic_fields_set__)
    _set(copy, "__pydantic_extra__", None)
    _set(copy, "__pydantic_private__", None)
    return copy


class Address(BaseModel):
    """One mailbox: an optional display name and an addr-spec (``local@domain``)."""

    model_config = _FROZEN

    addr: str
    name: str = ""

    @property
    def key(self) -> str:
        """Comparison key: case-insensitive on the whole addr-spec, as Mutt and Thunderbird do."""
        return self.addr.casefold()

    def __str__(self) -> str:
        return format_address(self)


_SPECIALS = set('()<>[]:;@\\,."')
# A cid: URL as an attribute value or in a CSS url(), up to a quote, space, ">" or ")".
_CID_URL = re.compile(r"[\"'(=]\s*cid:([^\"'\s<>()]+)", re.IGNORECASE)


def format_address(address: Address) -> str:
    """RFC 5322 §3.4 ``name-addr``; the display name is quoted when it holds specials.

    Non-ASCII names stay Unicode here: encoding (RFC 2047 for the phrase only) is the MIME
    builder's job, and an encoded-word is never put inside the addr-spec.
    """
    name = address.name
    if not name:
        return address.addr
    if any(c in _SPECIALS for c in name) or name != name.strip():
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address.addr}>"


def format_addresses(addresses: Iterable[Address]) -> str:
    return ", ".join(format_address(a) for a in addresses)


def _blob_of(data: dict[str, Any]) -> str:
    # Records written before attachments had their own identity held only ``id``, the content
    # address: read back, their blob is that id.
    return str(data.get("id", ""))


class Attachment(BaseModel):
    """One attachment of one interaction: its own identity, name and type, and the address of
    its bytes in the attachment store.

    ``id`` names the attachment (unique within its interaction, stable once created; the wire's
    ``id``, what downloads, DELETE and ``LinkAttachment`` use). ``blob`` is the content address
    the bytes are stored under (``AttachmentStore.put``): two attachments with the same bytes —
    two names for one file, a forward's copy, a linked one — share one blob. Absent in records
    written before the two were separated, it defaults to ``id`` (then the content address).

    ``content_id`` is the part's MIME Content-ID without its angle brackets, when it has one:
    the HTML body shows an inline image as ``<img src="cid:...">`` (RFC 2392).
    """

    model_config = _FROZEN

    id: str
    blob: str = Field(default_factory=_blob_of)
    name: str
    size: int
    mimetype: str
    content_id: str | None = None

    def to_wire(self) -> AttachmentWire:
        """The seed's attachment object; ``contentId`` only when the part has one."""
        info: AttachmentWire = {
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "mimetype": self.mimetype,
        }
        if self.content_id:
            info["contentId"] = self.content_id
        return info


# RFC 2045 §7 / RFC 5322 §3.6.4: a Content-ID is a msg-id, "<" id-left "@" id-right ">";
# senders also write it bare or without "@". Usable when it is one token of visible ASCII.
_CONTENT_ID = re.compile(r"<?\s*([!-;=?-~]{1,250})\s*>?")


def parse_content_id(value: str) -> str | None:
    """The Content-ID in a header value, without its brackets; None when it is not usable."""
    found = _CONTENT_ID.fullmatch(value.strip())
    return found.group(1) if found else None


def cid_references(html: str) -> frozenset[str]:
    """The Content-IDs an HTML body refers to with ``cid:`` URLs (RFC 2392; URL-decoded)."""
    if "cid:" not in html.lower():
        return frozenset()
    return frozenset(unquote(found) for found in _CID_URL.findall(html))


def inline_attachments(html: str, attachments: Iterable[Attachment]) -> tuple[Attachment, ...]:
    """The attachments that ``html`` shows inline (its ``cid:`` references), in their order."""
    referenced = cid_references(html)
    if not referenced:
        return ()
    return tuple(a for a in attachments if a.content_id and a.content_id in referenced)


class EmailContent(BaseModel):
    """What an e-mail says, structured. Empty tuples and strings mean "not present"."""

    model_config = _FROZEN

    from_: Address | None = None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    mail_reply_to: tuple[Address, ...] = ()
    mail_followup_to: tuple[Address, ...] = ()
    subject: str = ""
    text: str = ""
    html: str = ""
    text_mime_type: str = "text/plain"
    html_mime_type: str = "text/html"
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    date: datetime | None = None
    attachments: tuple[Attachment, ...] = ()


class Offer(BaseModel):
    """An invitation outstanding to one agent (at most one per interaction)."""

    model_config = _FROZEN

    agent_id: str
    offered_at: datetime
    # For a transfer to a named agent: who gets it back when the target refuses or times out.
    returns_to: str | None = None


class Interaction(BaseModel):
    """One e-mail interaction, inbound or outbound (a reply, forward or new draft)."""

    model_config = _FROZEN

    id: str
    version: int = 0
    state: str
    interaction_type: str = "Email"
    interaction_subtype: str = SubType.INBOUND_NEW
    mailbox: str = ""
    email: EmailContent = EmailContent()
    user_data: UserData = Field(default_factory=dict)
    comment: str = ""
    contact_id: str = ""
    current_queue: str | None = None
    in_queues: tuple[str, ...] = ()
    out_queues: tuple[str, ...] = ()
    received_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    owner: str | None = None
    parent_id: str | None = None
    workbin: str | None = None
    offer: Offer | None = None
    # Routing constraints: a required skill, a target agent, agents who already refused.
    required_skill: str | None = None
    target_agent: str | None = None
    rejected_by: tuple[str, ...] = ()
    last_agent: str | None = None
    # Last-agent routing: offer to this agent first when they are Ready (a customer's answer).
    preferred_agent: str | None = None
    # Content id of the raw RFC 5322 bytes in the attachment store (inbound mail: never lost).
    raw_id: str | None = None
    # Ingested mail: what makes a delivery "the same message" (intake.ingest_key). Stores keep
    # it unique, so a message delivered to two processes at once becomes one interaction.
    ingest_key: str | None = None

    @property
    def direction(self) -> Direction:
        return direction_of(self.interaction_subtype)

    def to_message(self, capabilities: Iterable[str]) -> InteractionStateMessage:
        return InteractionStateMessage.from_interaction(self, capabilities)

    def to_wire(self, capabilities: Iterable[str], state: str | None = None) -> InteractionMessage:
        return render_message(self, tuple(capabilities), state)


# --------------------------------------------------------------------------- wire


class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", serialize_by_alias=True)


class AttachmentInfo(_Wire):
    id: str
    name: str
    size: int
    mimetype: str
    # Beyond the seed, and only present when the part has one: what ``cid:`` URLs refer to.
    content_id: str | None = Field(None, alias="contentId")

    @model_serializer(mode="wrap")
    def _without_absent_content_id(self, write: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = write(self)
        if data.get("contentId") is None:
            data.pop("contentId", None)
        return data


class EmailObject(_Wire):
    """The seed's ``email_object``; extra members carry what real mail needs."""

    to_address: str = Field("", alias="ToAddress")
    from_address: str = Field("", alias="FromAddress")
    cc_addresses: str = Field("", alias="CCAddresses")
    subject: str = Field("", alias="Subject")
    text: str = Field("", alias="Text")
    structured_text: str = Field("", alias="StructuredText")
    mime_type: str = Field("text/plain", alias="MimeType")
    structured_text_mime_type: str = Field("text/html", alias="StructuredTextMimeType")
    the_comment: str = Field("", alias="TheComment")
    contact_id: str = Field("", alias="ContactID")
    attachments: list[AttachmentInfo] = Field(default_factory=list)
    # Beyond the seed (names in the Interaction Server style: §2.2 of the reference).
    reply_to_address: str = Field("", alias="ReplyToAddress")
    bcc_addresses: str = Field("", alias="BCCAddresses")
    message_id: str = Field("", alias="MessageId")
    in_reply_to: str = Field("", alias="InReplyTo")
    references: str = Field("", alias="References")
    mailbox: str = Field("", alias="Mailbox")


class InteractionStateMessage(_Wire):
    """The CometD notification on ``/me/interactions`` (seed: "Cometd Response")."""

    message_type_name: Literal["InteractionStateMessage"] = Field(
        MESSAGE_TYPE, alias="messageTypeName"
    )
    id: str
    channel: str = CHANNEL
    email_object: EmailObject = Field(default_factory=EmailObject)
    interaction_type: str = Field("Email", alias="interactionType")
    interaction_sub_type: str = Field("InboundNew", alias="interactionSubType")
    user_data: dict[str, Any] = Field(default_factory=dict, alias="userData")
    current_queue: str | None = Field(None, alias="currentQueue")
    in_queues: list[str] = Field(default_factory=list, alias="inQueues")
    out_queues: list[str] = Field(default_factory=list, alias="outQueues")
    received_at: datetime | None = Field(None, alias="receivedAt")
    state: str
    capabilities: list[str] = Field(default_factory=list)
    parent_interaction_id: str | None = Field(None, alias="parentInteractionId")
    agent_id: str | None = Field(None, alias="agentId")

    @field_serializer("received_at")
    def _iso(self, value: datetime | None) -> str | None:
        return None if value is None else _iso(value)

    @classmethod
    def from_interaction(
        cls, interaction: Interaction, capabilities: Iterable[str]
    ) -> InteractionStateMessage:
        return cls.model_validate(render_message(interaction, tuple(capabilities)))

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict, with the seed's member names."""
        return self.model_dump(mode="json", by_alias=True)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_message(
    interaction: Interaction, capabilities: tuple[str, ...], state: str | None = None
) -> InteractionMessage:
    """The wire dict of an ``InteractionStateMessage``, built directly.

    This is the hot path of every notification, so it skips pydantic; a test proves the result
    is exactly what ``InteractionStateMessage`` reads and writes.
    """
    e = interaction.email
    return {
        "messageTypeName": MESSAGE_TYPE,
        "id": interaction.id,
        "channel": CHANNEL,
        "email_object": {
            "ToAddress": format_addresses(e.to),
            "FromAddress": format_address(e.from_) if e.from_ else "",
            "CCAddresses": format_addresses(e.cc),
            "Subject": e.subject,
            "Text": e.text,
            "StructuredText": e.html,
            "MimeType": e.text_mime_type,
            "StructuredTextMimeType": e.html_mime_type,
            "TheComment": interaction.comment,
            "ContactID": interaction.contact_id,
            "attachments": [a.to_wire() for a in e.attachments],
            "ReplyToAddress": format_addresses(e.reply_to),
            "BCCAddresses": format_addresses(e.bcc),
            "MessageId": e.message_id or "",
            "InReplyTo": e.in_reply_to or "",
            "References": " ".join(e.references),
            "Mailbox": interaction.mailbox,
        },
        "interactionType": interaction.interaction_type,
        "interactionSubType": interaction.interaction_subtype,
        "userData": dict(interaction.user_data),
        "currentQueue": interaction.current_queue,
        "inQueues": list(interaction.in_queues),
        "outQueues": list(interaction.out_queues),
        "receivedAt": _iso(interaction.received_at),
        "state": state or interaction.state,
        "capabilities": list(capabilities),
        "parentInteractionId": interaction.parent_id,
        "agentId": interaction.owner,
    }


class InteractionView:
    """A notification payload: an immutable interaction as one agent sees it, rendered lazily.

    Rendering happens when the notification is dispatched or stored, not inside the operation.
    """

    __slots__ = ("capabilities", "interaction", "state")

    def __init__(
        self, interaction: Interaction, capabilities: tuple[str, ...], state: str | None = None
    ) -> None:
        self.interaction = interaction
        self.capabilities = capabilities
        self.state = state

    def to_wire(self) -> InteractionMessage:
        return render_message(self.interaction, self.capabilities, self.state)
