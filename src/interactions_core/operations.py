"""Operations: one pydantic discriminated union on ``operationName``, with the seed's spellings.

Every request body of ``POST /me/interactions/{id}`` (and CreateEmail's ``POST /me/interactions``)
parses into exactly one member. Spellings the seed uses inconsistently are all accepted:
``CancelReply`` / ``CancelReplyEmail`` / ``Cancel`` and ``StopProcessing`` / ``Complete``. Each
member knows its canonical name (the lifecycle trigger and capability).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, cast, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import InvalidRequest
from .model import HEADER_BREAKS, UserDataValue, has_line_break
from .rfc5322 import writes_line_break

# One line of header-safe text: no line break of any kind (see ``HEADER_BREAKS``).
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=f"^[^{HEADER_BREAKS}]+$")
]


def _no_encoded_break(value: str) -> str:
    if writes_line_break(value):
        raise ValueError("decodes (RFC 2047 encoded word) to a line break (header injection)")
    return value


Prefix = Annotated[
    str,
    StringConstraints(max_length=64, pattern=f"^[^{HEADER_BREAKS}]*$"),
    AfterValidator(_no_encoded_break),
]
Line = Annotated[str, StringConstraints(max_length=1000, pattern=f"^[^{HEADER_BREAKS}]*$")]
AddressInput = str | list[str]
MAX_TEXT = 10 * 1024 * 1024


class OperationModel(BaseModel):
    """The base of every operation's request model, built-in or custom.

    A subclass declares ``operation_name: Literal["Name", ...] = Field("Name",
    alias="operationName")``; the first spelling is its ``canonical`` name (the lifecycle
    trigger and the capability) unless the class sets ``canonical`` itself. Unknown fields are
    refused (``extra="forbid"``) and the model is frozen.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)
    canonical: ClassVar[str]
    creates_interaction: ClassVar[bool] = False

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "canonical" not in cls.__dict__ and "operation_name" in cls.model_fields:
            # Not resolvable yet (postponed annotations): registering it says what is wrong.
            with contextlib.suppress(TypeError):
                cls.canonical = spellings(cls)[0]


def spellings(model: type[BaseModel]) -> tuple[str, ...]:
    """The ``operationName`` values a model accepts (its ``Literal``), canonical first."""
    field = model.model_fields.get("operation_name")
    if field is None or field.alias != "operationName":
        raise TypeError(
            f"{model.__name__} needs an operation_name field with alias 'operationName'"
        )
    names = get_args(field.annotation)
    if not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"{model.__name__}.operation_name must be a Literal of strings")
    return tuple(names)


_Operation = OperationModel


class Accept(_Operation):
    canonical: ClassVar[str] = "Accept"
    operation_name: Literal["Accept"] = Field("Accept", alias="operationName")


class Reject(_Operation):
    canonical: ClassVar[str] = "Reject"
    operation_name: Literal["Reject"] = Field("Reject", alias="operationName")


class _ReplyBase(_Operation):
    creates_interaction: ClassVar[bool] = True
    subject_prefix: Prefix | None = Field(None, alias="subjectPrefix")
    reply_to_start_line: Line | None = Field(None, alias="replyToStartLine")
    indent_character: Prefix | None = Field(None, alias="indentCharacter")
    queue_name: Name | None = Field(None, alias="queueName")


class Reply(_ReplyBase):
    """Seed: the body is empty unless ``quoteOriginal`` is true — so Reply defaults to false."""

    canonical: ClassVar[str] = "Reply"
    operation_name: Literal["Reply"] = Field("Reply", alias="operationName")
    quote_original: StrictBool = Field(False, alias="quoteOriginal")


class ReplyAll(_ReplyBase):
    """Seed: ``quoteOriginal`` defaults to true for ReplyAll."""

    canonical: ClassVar[str] = "ReplyAll"
    operation_name: Literal["ReplyAll"] = Field("ReplyAll", alias="operationName")
    quote_original: StrictBool = Field(True, alias="quoteOriginal")


class Forward(_Operation):
    canonical: ClassVar[str] = "Forward"
    creates_interaction: ClassVar[bool] = True
    operation_name: Literal["Forward"] = Field("Forward", alias="operationName")
    to_address: AddressInput | None = Field(None, alias="toAddress")
    cc_address: AddressInput | None = Field(None, alias="ccAddress")
    subject_prefix: Prefix | None = Field(None, alias="subjectPrefix")
    text: str | None = Field(None, max_length=MAX_TEXT)
    queue_name: Name | None = Field(None, alias="queueName")


class Cancel(_Operation):
    canonical: ClassVar[str] = "Cancel"
    operation_name: Literal["CancelReply", "CancelReplyEmail", "Cancel"] = Field(
        "CancelReply", alias="operationName"
    )


class SendEmail(BaseModel):
    """Send's ``email_object``: what the agent finally wrote. Omitted members keep the draft's."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    to_address: AddressInput | None = Field(None, alias="toAddress")
    from_address: str | None = Field(None, alias="fromAddress")
    cc_address: AddressInput | None = Field(None, alias="ccAddress")
    bcc_address: AddressInput | None = Field(None, alias="bccAddress")
    subject: str | None = Field(None, max_length=998)
    text: str | None = Field(None, max_length=MAX_TEXT)
    structured_text: str | None = Field(None, alias="structuredText", max_length=MAX_TEXT)

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and has_line_break(value):
            raise ValueError("line breaks are not allowed in a subject (header injection)")
        if value is not None and writes_line_break(value):
            raise ValueError(
                "the subject decodes (RFC 2047 encoded word) to a line break, which is not "
                "allowed in a header value (header injection)"
            )
        return value


class Send(_Operation):
    canonical: ClassVar[str] = "Send"
    operation_name: Literal["Send"] = Field("Send", alias="operationName")
    queue_name: Name | None = Field(None, alias="queueName")
    email_object: SendEmail | None = None


class Transfer(_Operation):
    """To one agent (``agentId``, or GWS's ``userUri``), to the agents with a ``skill``, or to a
    queue (``queueName``) — exactly one of them."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["agentId"]},
                {"required": ["userUri"]},
                {"required": ["skill"]},
                {"required": ["queueName"]},
            ]
        }
    )

    canonical: ClassVar[str] = "Transfer"
    operation_name: Literal["Transfer"] = Field("Transfer", alias="operationName")
    agent_id: Name | None = Field(None, alias="agentId")
    user_uri: Annotated[str, StringConstraints(max_length=2000)] | None = Field(
        None, alias="userUri"
    )
    skill: Name | None = None
    queue_name: Name | None = Field(None, alias="queueName")

    @model_validator(mode="after")
    def _one_target(self) -> Transfer:
        given = [
            n
            for n, v in (
                ("agentId", self.agent_id),
                ("userUri", self.user_uri),
                ("skill", self.skill),
                ("queueName", self.queue_name),
            )
            if v
        ]
        if len(given) != 1:
            raise ValueError(
                "Transfer needs exactly one target: agentId (or userUri), skill or queueName"
                + (f"; got {', '.join(given)}" if given else "")
            )
        return self

    @property
    def target_agent(self) -> str | None:
        if self.agent_id:
            return self.agent_id
        if self.user_uri:
            return self.user_uri.rstrip("/").rsplit("/", 1)[-1]
        return None


class StopProcessing(_Operation):
    canonical: ClassVar[str] = "StopProcessing"
    operation_name: Literal["StopProcessing", "Complete"] = Field(
        "StopProcessing", alias="operationName"
    )
    queue_name: Name | None = Field(None, alias="queueName")


class PlaceInQueue(_Operation):
    canonical: ClassVar[str] = "PlaceInQueue"
    operation_name: Literal["PlaceInQueue"] = Field("PlaceInQueue", alias="operationName")
    queue_name: Name = Field(alias="queueName")


class PlaceInWorkbin(_Operation):
    """Into the agent's own workbin (default ``Personal``) or a shared one by name."""

    canonical: ClassVar[str] = "PlaceInWorkbin"
    operation_name: Literal["PlaceInWorkbin"] = Field("PlaceInWorkbin", alias="operationName")
    workbin_name: Name | None = Field(None, alias="workbinName")


class Pull(_Operation):
    """Take an interaction out of a workbin; it goes to the agent who pulls."""

    canonical: ClassVar[str] = "Pull"
    operation_name: Literal["Pull"] = Field("Pull", alias="operationName")


class UpdateProperties(_Operation):
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["userData"]},
                {"required": ["deleteKeys"]},
                {"required": ["comment"]},
            ]
        }
    )
    canonical: ClassVar[str] = "UpdateProperties"
    operation_name: Literal["UpdateProperties"] = Field("UpdateProperties", alias="operationName")
    user_data: dict[Name, UserDataValue] | None = Field(None, alias="userData", max_length=1000)
    delete_keys: list[Name] | None = Field(None, alias="deleteKeys", max_length=1000)
    comment: str | None = Field(None, max_length=64 * 1024)

    @model_validator(mode="after")
    def _something(self) -> UpdateProperties:
        if self.user_data is None and self.delete_keys is None and self.comment is None:
            raise ValueError("UpdateProperties needs userData, deleteKeys or comment")
        return self


class LinkAttachment(_Operation):
    """Attach one of the parent interaction's attachments to a draft."""

    canonical: ClassVar[str] = "LinkAttachment"
    operation_name: Literal["LinkAttachment"] = Field("LinkAttachment", alias="operationName")
    attachment_id: Name = Field(alias="attachmentId")


class CreateEmail(_Operation):
    """``POST /me/interactions``: a new outbound e-mail (not an operation on an existing one)."""

    canonical: ClassVar[str] = "CreateEmail"
    creates_interaction: ClassVar[bool] = True
    operation_name: Literal["CreateEmail"] = Field("CreateEmail", alias="operationName")
    queue_name: Name | None = Field(None, alias="queueName")
    interaction_type: Name = Field("Email", alias="interactionType")
    interaction_sub_type: Literal["OutboundNew"] = Field("OutboundNew", alias="interactionSubType")
    from_address: str | None = Field(None, alias="fromAddress")
    parent_id: Name | None = Field(None, alias="parentId")


_ON_AN_INTERACTION = (
    Accept
    | Reject
    | Reply
    | ReplyAll
    | Forward
    | Cancel
    | Send
    | Transfer
    | StopProcessing
    | PlaceInQueue
    | PlaceInWorkbin
    | Pull
    | UpdateProperties
    | LinkAttachment
)

InteractionOperation = Annotated[_ON_AN_INTERACTION, Field(discriminator="operation_name")]
"""The operations on an existing interaction (``POST /me/interactions/{id}``)."""

Operation = Annotated[_ON_AN_INTERACTION | CreateEmail, Field(discriminator="operation_name")]
"""Every body the API accepts, CreateEmail (``POST /me/interactions``) included."""

OPERATION_ADAPTER: TypeAdapter[Operation] = TypeAdapter(Operation)


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "body"


MAX_JSON_DEPTH = 64


def parse_json(body: bytes | str) -> Any:
    """A request body as JSON the rest of the system can store and send back, or
    ``InvalidRequest``: malformed, nested too deeply, repeating a key within one object (at any
    depth; the answer names it and its path), or holding what JSON parsing lets through but
    cannot write (see ``refuse_unrepresentable``)."""
    try:
        try:
            value = _decode(_DECODER, body)
            repeated = False
        except _RepeatedKey:
            # Rare (hostile or broken input): read it again keeping the objects that repeat
            # a key, so that the walk below names the first place of what it refuses.
            value, repeated = _decode(_NAMING_DECODER, body), True
    except RecursionError:
        raise InvalidRequest("Malformed JSON: nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise InvalidRequest(f"Malformed JSON: {str(exc)[:200]}") from None
    if repeated or not _plainly_representable(body):
        refuse_unrepresentable(value)  # walks the value, and names the place of what it refuses
    return value


def _decode(decoder: json.JSONDecoder, body: bytes | str) -> Any:
    """``json.loads(body)`` with ``decoder``, built once: bytes in the encoding RFC 8259 §8.1
    allows, detected as ``json.loads`` does, and a str's BOM refused as it refuses it."""
    if isinstance(body, (bytes, bytearray)):  # as json.loads takes them
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    elif body.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", body, 0)
    else:
        text = body
    return decoder.decode(text)


_INF_PRONE = re.compile(rb"[0-9](?:[eE]|[0-9]{299})")
"""A number that may parse to infinity: one with an exponent, or of 300 digits and more (a
double's range ends near 1.8e308). Spelt with one leading digit, so that the search tries
the rest only where a digit is (2.5x faster than the plain alternation on a Bayeux batch)."""


def _plainly_representable(body: bytes | str) -> bool:
    """Whether the text alone shows that ``refuse_unrepresentable`` has nothing to refuse, so
    the walk over every value (most of the cost of parsing a small body) can be skipped. Only
    ever ``True`` when that is certain: no ``\\u`` escape (a lone surrogate needs one: in UTF-8
    bytes one cannot be written raw), nothing that could overflow a float, and fewer brackets
    than the depth limit (some may be inside strings: then the walk runs for nothing). Repeated
    keys are seen by ``parse_json`` while it parses."""
    if isinstance(body, str):
        if not body.isascii():
            return False  # a str may hold a raw surrogate
        body = body.encode("ascii")
    return (
        # A NUL byte: maybe UTF-16 or UTF-32 (which json.loads also reads), where the escapes
        # and digits searched for below are spelt otherwise; any such JSON text has one.
        b"\x00" not in body
        and b"\\u" not in body
        and body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH
        and _INF_PRONE.search(body) is None
    )


class _RepeatedKeys(dict[str, Any]):
    """An object that named a key more than once, as ``_object`` reads it: only ever seen by
    ``refuse_unrepresentable``, which refuses it naming the place (``parse_json`` never
    returns one)."""

    __slots__ = ("repeated",)

    def __init__(self, pairs: list[tuple[str, Any]], repeated: tuple[str, ...]) -> None:
        super().__init__(pairs)
        self.repeated = repeated


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 8259 §4: names SHOULD be unique, and which of two a reader keeps is undefined; Python
    # keeps the last, another reader the first. {"operationName":"UpdateProperties",
    # "operationName":"Cancel"} must not mean one thing to a proxy and another here.
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for key, _ in pairs:
        if key in seen:
            repeated[key] = None
        seen.add(key)
    return _RepeatedKeys(pairs, tuple(repeated))


def _not_json(constant: str) -> Any:
    # Python's json reads NaN and Infinity; RFC 8259 §6 has no such numbers.
    raise ValueError(f"{constant} is not a JSON number (RFC 8259 §6)")


class _RepeatedKey(Exception):
    """Raised by ``_DECODER`` at the first object that repeats a key (``parse_json`` then
    reads the body again with ``_NAMING_DECODER`` to say where)."""


def _object_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _RepeatedKey
    return value


# Built once: ``json.loads`` with a hook builds a decoder (and its scanner) per call.
_DECODER = json.JSONDecoder(parse_constant=_not_json, object_pairs_hook=_object_once)
_NAMING_DECODER = json.JSONDecoder(parse_constant=_not_json, object_pairs_hook=_object)


def refuse_unrepresentable(body: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse, at the edge and naming the place, what JSON parsing lets through but nothing
    downstream can store or send back: half a UTF-16 pair escaped as "\\ud800" (a string UTF-8
    cannot encode; RFC 8259 §8.2 leaves it undefined), a number too large for a float (1e999
    parses to infinity, which JSON cannot write; RFC 8259 §6), nesting deeper than
    ``max_depth`` (which serialisers refuse, RFC 8259 §9 lets a parser limit), and an object
    ``parse_json`` read with a key given twice."""
    pending: list[tuple[str, Any, int]] = [("", body, 0)]
    while pending:
        where, value, depth = pending.pop()
        if depth > max_depth:
            raise InvalidRequest(
                "The request is nested too deeply", [f"{_shown(where)}: over {max_depth} levels"]
            )
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise InvalidRequest(
                        "The request holds text that is not valid Unicode",
                        [f"{_shown(where)}: a lone UTF-16 surrogate (\\ud800-\\udfff escape)"],
                    ) from None
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidRequest(
                    "The request holds a number JSON cannot represent",
                    [f"{_shown(where)}: {value} (out of range, NaN or Infinity)"],
                )
        elif isinstance(value, dict):
            if type(value) is _RepeatedKeys:
                raise InvalidRequest(
                    "The request repeats a key within one object",
                    [
                        f"{_shown(f'{where}.{key}' if where else key)}: the key {repr(key)[:80]} "
                        "is given more than once (RFC 8259 §4)"
                        for key in value.repeated
                    ],
                )
            for key, item in value.items():
                path = f"{where}.{key}" if where else str(key)
                pending.append((path, key, depth + 1))
                pending.append((path, item, depth + 1))
        elif isinstance(value, list):
            pending.extend((f"{where}[{n}]", item, depth + 1) for n, item in enumerate(value))


def _shown(where: str) -> str:
    # The path may hold a bad key itself: shown escaped, so the answer still encodes.
    return (where or "body").encode("utf-8", "backslashreplace").decode()


BUILTIN_MODELS: Mapping[str, type[OperationModel]] = {
    name: model
    for model in (*_ON_AN_INTERACTION.__args__, CreateEmail)
    for name in spellings(model)
}
"""Every built-in spelling of ``operationName`` -> its request model."""

OPERATION_NAMES: tuple[str, ...] = tuple(BUILTIN_MODELS)


def parse_with(models: Mapping[str, type[OperationModel]], body: Any) -> OperationModel:
    """Parse a wire body (a dict as on the wire) into the model its ``operationName`` names
    in ``models``, or raise ``InvalidRequest`` listing every problem. The one parser of
    operation bodies: built-in (``parse_operation``) and registered ones alike."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object with an operationName")
    refuse_unrepresentable(body)
    name = body.get("operationName")
    if name is None:
        raise InvalidRequest("Missing operationName", [f"one of: {', '.join(models)}"])
    model = models.get(name) if isinstance(name, str) else None
    if model is None:
        shown = repr(name)[:80]
        raise InvalidRequest(f"Unknown operationName {shown}", [f"one of: {', '.join(models)}"])
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = [f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)]
        raise InvalidRequest(f"Invalid {name} request", problems) from None


def parse_operation(body: Any) -> Operation:
    """Parse a wire body into one built-in operation, or raise ``InvalidRequest`` listing every
    problem. (An engine with custom operations parses with its own registry.)"""
    return cast("Operation", parse_with(BUILTIN_MODELS, body))
