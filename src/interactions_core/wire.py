"""Typed shapes of what the core answers and publishes, exactly as on the wire.

These are ``TypedDict``s: at run time plain dicts (what JSON encoders and the HTTP and CometD
adapters take), for mypy the seed's member names with their types. Users' code and tests read
notifications and views through them: ``h.last_notification("alice")["email_object"]["Subject"]``
is a ``str`` to the type checker, and a misspelt member is an error.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict


class AttachmentWire(TypedDict):
    id: str
    name: str
    size: int
    mimetype: str
    # Beyond the seed, and only present when the part has one (what ``cid:`` URLs name).
    contentId: NotRequired[str]


class EmailObjectWire(TypedDict):
    """The seed's ``email_object``; the members after ``attachments`` go beyond the seed."""

    ToAddress: str
    FromAddress: str
    CCAddresses: str
    Subject: str
    Text: str
    StructuredText: str
    MimeType: str
    StructuredTextMimeType: str
    TheComment: str
    ContactID: str
    attachments: list[AttachmentWire]
    ReplyToAddress: str
    BCCAddresses: str
    MessageId: str
    InReplyTo: str
    References: str
    Mailbox: str


class InteractionMessage(TypedDict):
    """The seed's ``InteractionStateMessage`` (``/me/interactions``), and every read of an
    interaction (``GET /me/interactions[/{id}]``)."""

    messageTypeName: Literal["InteractionStateMessage"]
    id: str
    channel: str
    email_object: EmailObjectWire
    interactionType: str
    interactionSubType: str
    userData: dict[str, Any]
    currentQueue: str | None
    inQueues: list[str]
    outQueues: list[str]
    receivedAt: str
    state: str
    capabilities: list[str]
    parentInteractionId: str | None
    agentId: str | None


class UserState(TypedDict):
    state: str
    displayName: str
    reason: NotRequired[str]


class ChannelState(TypedDict):
    channel: str
    userState: UserState


class ChannelStateMessage(TypedDict):
    """``/me/channels``: the agent's readiness changed."""

    messageTypeName: Literal["ChannelStateMessage"]
    agentId: str
    channels: list[ChannelState]


class WorkbinContentChanged(TypedDict):
    """``/me/workbins``: an interaction entered or left a workbin the agent can see."""

    messageTypeName: Literal["WorkbinContentChanged"]
    workbinId: str
    change: str
    interactionId: str
    state: str


class WorkbinInfo(TypedDict):
    """One entry of ``GET /me/workbins``."""

    workbinId: str
    workbinName: str
    shared: bool


class AgentState(TypedDict):
    """``GET /me``: the agent and its channel states."""

    id: str
    name: str
    skills: list[str]
    capacity: int
    load: int
    channels: list[ChannelState]


class OkResponse(TypedDict):
    status: Literal["ok"]
    replyInteractionId: NotRequired[str]


class ErrorResponse(TypedDict):
    status: Literal["error"]
    errorDescription: str
