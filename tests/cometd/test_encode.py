"""Each delivered message is encoded once, shared by every session that sends it (issue 16, item 3).

The reply batches are byte for byte what encoding each whole batch produced before
(``to_json(batch)``, the old ``protocol.encode``), over long-polling bodies and websocket text
frames; a broadcast to 50 sessions (long-polling and websocket, ``ack`` on and off) and an
agent's notification to several of its sessions are each encoded once. Counts, not timings:
``protocol.encode_message`` (the only place a message is serialised) is wrapped and its calls
are counted per channel.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from pydantic_core import to_json

from adapters.cometd import (
    BasicAuthenticator,
    BayeuxServer,
    BroadcastPolicy,
    basic_header,
    http11,
    protocol,
    transports,
)
from adapters.cometd.protocol import Outgoing, SharedMessage, encode, encode_text, error_reply
from adapters.cometd.server import READ_STATE, RequestContext, notification_message

from .conftest import USERS, ServerHarness
from .raw import LongPolling, WebSocketClient, connect_message

Message = dict[str, Any]

BOARD = "/team/board"
TEXT = 'Grüße, 世界 🎉 Ωμέγα עברית \u2028\u2029 "q" \\ </script> \t\n\x00\x1f'
DATA: Message = {
    "messageTypeName": "InteractionStateMessage",
    "text": TEXT,
    "numbers": [0, -1, 2**53, 2**63 - 1, -(2**63), 0.1, -0.0, 1e300, 1e-7, 3.0],
    "flags": [True, False, None],
    "empty": {"list": [], "dict": {}, "text": ""},
    "nested": {"a": [{"b": [{"c": "ünïcödé"}]}]},
}


def old_encode(batch: Iterable[Outgoing]) -> bytes:
    """What ``protocol.encode`` was: the whole batch in one ``to_json`` call."""
    return to_json([dict(m) if isinstance(m, SharedMessage) else m for m in batch])


class EncodeCount:
    """Wraps ``protocol.encode_message``: how many times each channel's messages were encoded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.channels: Counter[str] = Counter()
        real = protocol.encode_message

        def counting(message: Message) -> bytes:
            self.channels[message.get("channel", "")] += 1
            return real(message)

        monkeypatch.setattr(protocol, "encode_message", counting)

    def delivered(self) -> dict[str, int]:
        """The counts of delivered messages (every session's own ``/meta/*`` replies left out:
        they are encoded per session, as they should be)."""
        return {c: n for c, n in self.channels.items() if not c.startswith("/meta/")}


@pytest.fixture
def encodings(monkeypatch: pytest.MonkeyPatch) -> EncodeCount:
    return EncodeCount(monkeypatch)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """Every long-polling body and websocket frame the transports encode, with what the old
    whole-batch encoding makes of the same batch: ``(new, old)``."""
    pairs: list[tuple[bytes, bytes]] = []

    def recording(messages: list[Outgoing]) -> bytes:
        body = encode(messages)
        pairs.append((body, old_encode(messages)))
        return body

    def recording_text(messages: list[Outgoing]) -> str:
        frame = encode_text(messages)
        pairs.append((frame.encode(), old_encode(messages)))
        return frame

    monkeypatch.setattr(transports, "encode", recording)
    monkeypatch.setattr(http11, "encode", recording)  # long-polling read below ASGI
    monkeypatch.setattr(transports, "encode_text", recording_text)
    return pairs


# ------------------------------------------------------------------ the bytes


def _shared_batches() -> Iterator[tuple[str, list[Outgoing]]]:
    notification = SharedMessage(notification_message("/me/interactions", DATA, 41))
    broadcast = SharedMessage({"channel": BOARD, "data": {"text": TEXT}})
    connect: Message = {"channel": "/meta/connect", "successful": True, "id": "7"}
    advised: Message = {
        **connect,
        "advice": {"reconnect": "retry", "interval": 0, "timeout": 25_000, "maxInterval": 10_000},
        "ext": {"ack": 12},
    }
    yield "empty", []
    yield "one reply", [connect]
    yield "replies only", [advised, error_reply({"id": 3, "clientId": "c"}, BOARD, "403::é")]
    yield "connect and a notification", [advised, notification]
    yield "connect and several", [connect, notification, broadcast, notification]
    yield "shared only", [broadcast]
    yield "shared first", [broadcast, connect]
    yield "seq-less notification", [connect, SharedMessage(notification_message(BOARD, [], 0))]
    yield (
        "read state",
        [
            connect,
            SharedMessage(
                {
                    "channel": "/v2/me/workbins",
                    "data": {"messageTypeName": READ_STATE, "reason": "expired"},
                    "ext": {"seq": 9},
                }
            ),
        ],
    )
    yield "scalar data", [SharedMessage({"channel": BOARD, "data": v}) for v in (TEXT, 1.5, None)]
    yield (
        "every character class",
        [SharedMessage({"channel": BOARD, "data": chr(c) * 3}) for c in (0x7F, 0xE9, 0x4E16)],
    )


BATCHES = list(_shared_batches())


@pytest.mark.parametrize("batch", [batch for _, batch in BATCHES], ids=[n for n, _ in BATCHES])
def test_a_batch_is_the_bytes_of_the_old_whole_batch_encoding(batch: list[Outgoing]) -> None:
    first = encode(batch)
    assert first == old_encode(batch)
    assert encode(batch) == first  # again, from the cached bytes
    assert encode_text(batch) == old_encode(batch).decode()  # the websocket text frame
    assert json.loads(first) == [dict(m) for m in batch]


def test_a_shared_message_is_read_only_and_encoded_lazily_once(encodings: EncodeCount) -> None:
    message = SharedMessage({"channel": BOARD, "data": {"text": TEXT}})
    assert message == {"channel": BOARD, "data": {"text": TEXT}}
    assert message["channel"] == BOARD and message.get("ext") is None and len(message) == 2
    writable: Any = message  # what a caller ignoring the Mapping type would try
    with pytest.raises(TypeError):
        writable["id"] = "1"
    assert encodings.channels[BOARD] == 0  # nothing until a reply needs it
    for _ in range(3):
        encode([{"channel": "/meta/connect", "successful": True}, message])
    assert encodings.channels == Counter({BOARD: 1, "/meta/connect": 3})


# ------------------------------------------------------------------ in process


class Client:
    """One long-polling session driving ``BayeuxServer.process`` directly."""

    def __init__(self, server: BayeuxServer, agent: str) -> None:
        self.server = server
        auth = {"authorization": basic_header(agent, USERS[agent])}
        self.ctx = RequestContext(auth, {}, "127.0.0.1", "long-polling")
        self.client_id = ""

    async def send(self, message: Message) -> list[Outgoing]:
        outcome = await self.server.process([message], self.ctx)
        assert outcome.held is None, "this test only makes connects answered at once"
        return outcome.replies

    async def start(self, *channels: str, ack: bool = False) -> None:
        handshake = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling"],
            "ext": {"ack": ack},
        }
        (reply,) = await self.send(handshake)
        self.client_id = reply["clientId"]
        subscribe = {
            "channel": "/meta/subscribe",
            "clientId": self.client_id,
            "subscription": list(channels),
        }
        assert (await self.send(subscribe))[0]["successful"] is True
        await self.connect(ack=0 if ack else None)  # the first connect: answered at once

    async def connect(self, ack: int | None = None) -> list[Outgoing]:
        extra: Message = {} if ack is None else {"ext": {"ack": ack}}
        return await self.send(connect_message(self.client_id, **extra))


async def test_nothing_per_session_is_in_the_shared_bytes(encodings: EncodeCount) -> None:
    server = BayeuxServer(BasicAuthenticator(USERS), policy=BroadcastPolicy())
    acked, plain = Client(server, "alice"), Client(server, "bob")
    await acked.start(BOARD, ack=True)
    await plain.start(BOARD)
    server.publish(BOARD, DATA)
    (reply_a, message_a), (reply_b, message_b) = await acked.connect(1), await plain.connect()
    assert message_a is message_b and isinstance(message_a, SharedMessage)
    # Exactly the message published: no clientId, no ack batch id, no id.
    assert json.loads(message_a.encoded) == {"channel": BOARD, "data": DATA}
    assert reply_a["ext"] == {"ack": 2}  # the ack batch id: in the session's own reply
    assert "ext" not in reply_b
    assert encode([reply_a, message_a]) == old_encode([reply_a, message_a])
    assert encode([reply_b, message_b]) == old_encode([reply_b, message_b])
    assert encodings.channels[BOARD] == 1


async def test_a_batch_sent_again_under_ack_reuses_the_bytes(encodings: EncodeCount) -> None:
    server = BayeuxServer(BasicAuthenticator(USERS), policy=BroadcastPolicy())
    client = Client(server, "alice")
    await client.start(BOARD, ack=True)
    server.publish(BOARD, DATA)
    reply, message = await client.connect(1)
    assert reply["ext"] == {"ack": 2}
    first = encode([reply, message])
    # The client says it only got batch 1: batch 2 comes again, in batch 3.
    again_reply, again = await client.connect(1)
    assert again_reply["ext"] == {"ack": 3} and again is message
    assert encode([again_reply, again]) == old_encode([again_reply, again]) != first
    assert encodings.channels[BOARD] == 1


# ------------------------------------------------------------------ over the transports


async def _held_connects(server: ServerHarness) -> int:
    return await server.inspect(lambda e: sum(s.held is not None for s in e.sessions))


async def _wait_for_held(server: ServerHarness, count: int) -> None:
    async with asyncio.timeout(10):  # a guard against a hang, not a timing assertion
        while await _held_connects(server) < count:
            await asyncio.sleep(0.01)


async def _ws_start(server: ServerHarness, agent: str, channels: list[str], ack: bool) -> Any:
    """A websocket session: handshake, subscribe, first connect; then a held connect."""
    ws = await WebSocketClient.open(server)
    client_id = await ws.handshake(agent, ack=ack)
    (reply,) = await ws.call(
        [{"channel": "/meta/subscribe", "clientId": client_id, "subscription": channels}]
    )
    assert reply["successful"] is True, reply
    connect = {**connect_message(client_id), "connectionType": "websocket"}
    if ack:
        connect["ext"] = {"ack": 0}
    (reply,) = await ws.call([connect])
    assert reply["successful"] is True, reply
    await ws.send([{**connect, "id": "held"}])  # held: a push (or its release) answers
    return ws


async def _close(polling: list[LongPolling], sockets: list[WebSocketClient]) -> None:
    for client in polling:
        await client.aclose()
    for ws in sockets:
        await ws.close()


async def _ws_messages(ws: WebSocketClient) -> list[Message]:
    """The next frame's delivered messages (a released connect reply dropped)."""
    async with asyncio.timeout(10):
        frame = await ws.receive()
    return [m for m in frame if not m["channel"].startswith("/meta/")]


async def test_a_broadcast_to_50_sessions_is_encoded_once(
    make_server: Callable[..., ServerHarness],
    encodings: EncodeCount,
    sent: list[tuple[bytes, bytes]],
) -> None:
    server = make_server(policy=BroadcastPolicy())
    agents = [f"agent{i}" for i in range(25)]
    polling = [LongPolling(server, agent) for agent in agents]
    sockets: list[WebSocketClient] = []
    try:
        for index, client in enumerate(polling):
            await client.start(BOARD, ack=index % 2 == 0)
        for index, agent in enumerate(agents):
            sockets.append(await _ws_start(server, agent, [BOARD], ack=index % 2 == 0))
        held = [
            asyncio.create_task(client.connect(**({"ext": {"ack": 1}} if i % 2 == 0 else {})))
            for i, client in enumerate(polling)
        ]
        await _wait_for_held(server, 50)
        sent.clear()
        encodings.channels.clear()

        await asyncio.wrap_future(server.call(lambda: server.engine.publish(BOARD, DATA)))

        expected = [{"channel": BOARD, "data": DATA}]
        async with asyncio.timeout(10):
            replies = await asyncio.gather(*held)
        for reply in replies:
            assert reply[0]["channel"] == "/meta/connect" and reply[1:] == expected
        for ws in sockets:
            assert await _ws_messages(ws) == expected
        assert encodings.delivered() == {BOARD: 1}
        assert len(sent) == 50  # 25 long-polling bodies, 25 websocket frames
        for new, old in sent:
            assert new == old
    finally:
        await _close(polling, sockets)


async def test_an_agents_notification_is_encoded_once_per_channel(
    make_server: Callable[..., ServerHarness],
    encodings: EncodeCount,
    sent: list[tuple[bytes, bytes]],
) -> None:
    server = make_server()
    polling = [LongPolling(server, "alice") for _ in range(3)]
    sockets: list[WebSocketClient] = []
    try:
        for index, client in enumerate(polling):
            await client.start("/me/interactions", ack=index == 0)
        sockets.append(await _ws_start(server, "alice", ["/me/interactions"], ack=False))
        both = ["/me/interactions", "/v2/me/interactions"]
        sockets.append(await _ws_start(server, "alice", both, ack=True))
        held = [asyncio.create_task(client.connect()) for client in polling]
        await _wait_for_held(server, 5)
        sent.clear()
        encodings.channels.clear()

        server.publish("alice", DATA, seq=41)

        def delivered(channel: str) -> Message:
            return {"channel": channel, "data": DATA, "id": "41", "ext": {"seq": 41}}

        async with asyncio.timeout(10):
            replies = await asyncio.gather(*held)
        for reply in replies:
            assert reply[1:] == [delivered("/me/interactions")]
        assert await _ws_messages(sockets[0]) == [delivered("/me/interactions")]
        assert await _ws_messages(sockets[1]) == [delivered(c) for c in both]
        # Five sessions, two channels: the /v2 alias is a message of its own (its channel).
        assert encodings.delivered() == {"/me/interactions": 1, "/v2/me/interactions": 1}
        assert len(sent) == 5
        for new, old in sent:
            assert new == old
    finally:
        await _close(polling, sockets)
