"""Bayeux 1.0 vocabulary: channel names, wildcard matching, message validation, error strings.

Source: the Bayeux 1.0 specification as CometD ships it (cometd/cometd,
``cometd-documentation/src/main/asciidoc/bayeux.adoc``). Nothing here does I/O, so the rules
can be tested and reused on their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, TypeAlias

from pydantic_core import to_json

from interactions_core.errors import InvalidRequest
from interactions_core.operations import parse_json

Message = dict[str, Any]
"""One Bayeux message: a JSON object with exactly one ``channel``."""

BAYEUX_VERSION: Final = "1.0"
LONG_POLLING: Final = "long-polling"
WEBSOCKET: Final = "websocket"

META_HANDSHAKE: Final = "/meta/handshake"
META_CONNECT: Final = "/meta/connect"
META_SUBSCRIBE: Final = "/meta/subscribe"
META_UNSUBSCRIBE: Final = "/meta/unsubscribe"
META_DISCONNECT: Final = "/meta/disconnect"
META_UNSUCCESSFUL: Final = "/meta/unsuccessful"  # used to answer messages with no usable channel

# Error strings follow the spec's ``code:args:text`` form. CometD 5-8 spell the unknown-session
# error ``402::session_unknown`` (BayeuxServerImpl); clients act on the advice, not the text.
ERR_SESSION_UNKNOWN: Final = "402::session_unknown"
ERR_HANDSHAKE_DENIED: Final = "403::Handshake denied"
ERR_AGENT_MISMATCH: Final = "403::session belongs to another agent"
ERR_SUBSCRIBE_DENIED: Final = "403::subscription denied"
ERR_META_DENIED: Final = "403::meta channels are reserved"
ERR_PUBLISH_DENIED: Final = "403::publish denied"
ERR_UNKNOWN_CHANNEL: Final = "404::unknown channel"
ERR_BAD_MESSAGE: Final = "400::bad message"
ERR_BAD_CHANNEL: Final = "400::invalid channel"
ERR_BAD_ID: Final = "400::invalid id"
ERR_BAD_SUBSCRIPTION: Final = "400::invalid subscription"
ERR_NO_DATA: Final = "400::publish without data"
ERR_BAD_VERSION: Final = "400::unsupported version"
ERR_BAD_CONNECTION_TYPE: Final = "400::unsupported connection type"
ERR_BAD_JSON: Final = "400::malformed JSON"
ERR_BATCH_TOO_LARGE: Final = "413::too many messages in one batch"

MAX_CHANNEL_LENGTH: Final = 256
MAX_ID_LENGTH: Final = 128
MAX_SUBSCRIPTIONS_PER_MESSAGE: Final = 16

# A segment is what the spec's channel grammar allows (alphanum and the "mark" characters),
# minus the ones a path could misuse; "*" and "**" are only allowed as the last segment.
_SEGMENT = re.compile(r"[A-Za-z0-9_\-!~().$@:=+,;'\[\]]+")


class BadPayload(ValueError):
    """The request body is not a JSON object or array: the transport answers HTTP 400."""


def parse_batch(body: bytes | str) -> list[Any]:
    """Decode a request body into a list of (not yet validated) messages.

    The spec says messages SHOULD travel in an array and a server MUST accept one, MAY accept a
    bare object; we accept both.
    """
    try:
        # Also refuses what parses but could not be echoed back or delivered (a lone
        # surrogate, 1e999, deep nesting): here, not when a reply fails to encode.
        decoded = parse_json(body)
    except InvalidRequest as exc:
        raise BadPayload(str(exc)) from None
    if isinstance(decoded, dict):
        return [decoded]
    if isinstance(decoded, list):
        return decoded
    raise BadPayload("a Bayeux payload is a JSON array of objects")


def encode_message(message: Message) -> bytes:
    """One message as compact UTF-8 JSON, by pydantic-core's serialiser (replies are hot; it is
    several times faster than ``json.dumps`` here). The only place a message is serialised, so
    a count of its calls is a count of encodings."""
    return to_json(message)


class SharedMessage(Mapping[str, Any]):
    """A delivered message (a notification, a broadcast, a service answer, a replayed
    notification or ``ReadState``), encoded once.

    One published message is queued for every session that receives it: all the subscribers of
    a broadcast, every session of an agent. Serialising each session's reply batch as a whole
    would JSON-encode that same message once per session (1,000 times for a broadcast to 1,000
    subscribers); this object carries the encoded bytes instead, computed the first time a
    reply needs them and reused by every later reply or frame that carries the message.

    Sharing is safe because nothing in a delivered message is per session: it is
    ``{channel, data}``, plus ``id`` and ``ext.seq`` (the notification's outbox seq, the same
    for every receiver) for notifications. What differs per session travels in that session's
    own ``/meta/connect`` reply: the advice, the ``ack`` extension's batch id; the ``replay``
    extension only decides *whether* a session gets a message, never what it carries.

    Read-only (a ``Mapping``: ``message["channel"]``, ``.get("ext")``, ``==`` with a dict), so
    the cached bytes cannot go stale behind the server's back. It takes ownership of the dict
    it is given, and ``data`` is encoded as it is at the first encoding: whoever hands data
    over to be delivered (``deliver``, ``publish``, a service) must not change it afterwards.
    Before, a change would have reached only the sessions flushed after it; now every session
    sends the same bytes.
    """

    __slots__ = ("_encoded", "_message")

    def __init__(self, message: Message) -> None:
        self._message = message
        self._encoded: bytes | None = None

    @property
    def encoded(self) -> bytes:
        """The message's JSON (exactly ``encode_message`` of it), computed on first use:
        a message dropped before it is sent (queue overflow, closed session) costs nothing."""
        encoded = self._encoded
        if encoded is None:
            encoded = self._encoded = encode_message(self._message)
        return encoded

    def __getitem__(self, key: str) -> Any:
        return self._message[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._message)

    def __len__(self) -> int:
        return len(self._message)

    def __repr__(self) -> str:
        return f"SharedMessage({self._message!r})"


Outgoing: TypeAlias = Message | SharedMessage
"""An element of a reply batch or websocket frame: a reply built for one session (a plain
dict, encoded with its batch) or a delivered message shared between sessions."""


def encode(messages: Iterable[Outgoing]) -> bytes:
    """Serialise a reply batch (or websocket frame) as a JSON array.

    The array is assembled from its elements' JSON: a per-session reply is encoded here, a
    ``SharedMessage`` contributes the bytes it already holds. The result is byte for byte what
    encoding the whole list at once produces (pydantic-core writes a list as ``[`` elements
    joined by ``,`` ``]``, with no whitespace), which tests/cometd/test_encode.py checks.
    (``isinstance(m, dict)``, not ``SharedMessage``: an ABC's instance check costs a third of
    encoding a small reply, on every element of every batch.)
    """
    return (
        b"["
        + b",".join([encode_message(m) if isinstance(m, dict) else m.encoded for m in messages])
        + b"]"
    )


def encode_text(messages: Iterable[Outgoing]) -> str:
    """``encode`` as text, for a websocket text frame."""
    return encode(messages).decode()


def is_valid_channel(name: object, *, allow_wildcard: bool) -> bool:
    """True when ``name`` is an absolute channel path, wildcards only as the last segment."""
    if not isinstance(name, str) or not name.startswith("/") or len(name) > MAX_CHANNEL_LENGTH:
        return False
    segments = name[1:].split("/")
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment in ("*", "**"):
            if not allow_wildcard or index != last:
                return False
        elif not _SEGMENT.fullmatch(segment):
            return False
    return True


def is_wildcard(name: str) -> bool:
    return name.endswith("/*") or name.endswith("/**")


def is_meta(name: str) -> bool:
    return name == "/meta" or name.startswith("/meta/")


def is_service(name: str) -> bool:
    return name == "/service" or name.startswith("/service/")


def matches(pattern: str, channel: str) -> bool:
    """Bayeux wildcard match: ``/a/*`` matches one more segment, ``/a/**`` one or more."""
    if pattern == channel:
        return True
    if pattern.endswith("/**"):
        prefix = pattern[:-2]
        return channel.startswith(prefix) and len(channel) > len(prefix)
    if pattern.endswith("/*"):
        prefix = pattern[:-1]
        return (
            channel.startswith(prefix)
            and len(channel) > len(prefix)
            and "/" not in channel[len(prefix) :]
        )
    return False


def valid_id(value: object) -> bool:
    """Message ids are echoed verbatim, so only short strings and integers are accepted."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and len(value) <= MAX_ID_LENGTH


def error_reply(message: Message | None, channel: str, error: str) -> Message:
    """An unsuccessful reply on ``channel`` echoing the request id (when it is usable)."""
    reply: Message = {"channel": channel, "successful": False, "error": error}
    if message is not None:
        msg_id = message.get("id")
        if msg_id is not None and valid_id(msg_id):
            reply["id"] = msg_id
        client_id = message.get("clientId")
        if isinstance(client_id, str) and len(client_id) <= MAX_ID_LENGTH:
            reply["clientId"] = client_id
    return reply
