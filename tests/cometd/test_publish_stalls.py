"""Issue 16, item 5: under a broadcast load, a publish must not wait behind the whole fan-out.

The load: 1,000 long-polling subscribers of one channel, each re-connecting as soon as its
connect is answered, and a publisher sending 50 messages, each while the fan-out of the one
before is still being answered (1,000 x 50). Everything goes through the real long-polling
endpoint and ``BayeuxServer``; the ASGI server under them is replaced by direct calls, each
request in a task of its own as uvicorn runs it, so that loop turns can be counted.

The measure is a count, not a time: how many held connects the server answers in one event-loop
turn, and how many it answers between a publish's arrival and its reply. A request that arrives
during a fan-out waits for the turns in progress; if one turn could answer every subscriber
(the server before this test: 1,000 in one turn), the wait grows with the number of subscribers
and, offered enough of them, passes any connect timeout. Bounded by ``flush_batch`` per turn,
it does not grow with them.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from adapters.cometd import BayeuxServer, BroadcastPolicy, CometdSettings
from adapters.cometd.protocol import Outgoing
from adapters.cometd.server import AuthRequest
from adapters.cometd.sessions import HeldConnect
from adapters.cometd.transports import LongPollingEndpoint

SUBSCRIBERS = 1_000
PUBLISHES = 50
CHANNEL = "/bench/broadcast"


async def _agent_from_ext(request: AuthRequest) -> str | None:
    agent = request.ext.get("agent")
    return agent if isinstance(agent, str) else None


class CountingServer(BayeuxServer):
    """Counts the held connects it answers, in all and per event-loop turn (``turn`` is
    advanced by a task that yields once per turn)."""

    def __init__(self, settings: CometdSettings) -> None:
        super().__init__(_agent_from_ext, settings, policy=BroadcastPolicy())
        self.turn = 0
        self.answered = 0
        self.per_turn: Counter[int] = Counter()

    def release(self, held: HeldConnect, result: list[Outgoing] | None) -> None:
        if result is not None:  # (None: cancelled by a newer connect, not an answer)
            self.answered += 1
            self.per_turn[self.turn] += 1
        super().release(held, result)

    async def count_turns(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.turn += 1


async def test_a_publish_waits_behind_a_bounded_number_of_replies() -> None:
    settings = CometdSettings(max_sessions_per_browser=-1)
    server = CountingServer(settings)
    await server.start()
    endpoint = LongPollingEndpoint(server)

    async def call(path: str, message: dict[str, Any]) -> list[dict[str, Any]]:
        body = json.dumps([message]).encode()
        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 40000),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(event: dict[str, Any]) -> None:
            sent.append(event)

        await endpoint(scope, receive, send)
        assert sent[0]["status"] == 200, sent
        replies: list[dict[str, Any]] = json.loads(sent[1]["body"])
        return replies

    async def start(name: str, subscribe: bool) -> str:
        handshake = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling"],
            "ext": {"agent": name},
        }
        client_id: str = (await call("/cometd/handshake", handshake))[0]["clientId"]
        if subscribe:
            subscription = {
                "channel": "/meta/subscribe",
                "clientId": client_id,
                "subscription": CHANNEL,
            }
            assert (await call("/cometd", subscription))[0]["successful"]
        first = {
            "channel": "/meta/connect",
            "clientId": client_id,
            "connectionType": "long-polling",
            "advice": {"timeout": 0},
        }
        await call("/cometd/connect", first)
        return client_id

    received: Counter[str] = Counter()

    async def poll(client_id: str) -> None:
        connect = {"channel": "/meta/connect", "clientId": client_id}
        while True:
            replies = await call("/cometd/connect", connect | {"connectionType": "long-polling"})
            assert replies[0]["successful"], replies[0]
            received[client_id] += sum(1 for m in replies[1:] if m.get("channel") == CHANNEL)

    subscribers = [await start(f"a{n}", True) for n in range(SUBSCRIBERS)]
    publisher = await start("publisher", False)
    turns = asyncio.create_task(server.count_turns())
    pollers = [asyncio.create_task(poll(c)) for c in subscribers]
    try:
        while sum(1 for s in server.sessions if s.held) < len(subscribers):
            await asyncio.sleep(0)  # every subscriber holds a connect
        waited: list[int] = []  # connects answered between a publish's arrival and its reply
        for seq in range(PUBLISHES):
            arrived = server.answered
            publish = {"channel": CHANNEL, "clientId": publisher, "data": {"seq": seq}}
            # Sent while the previous fan-out is still being answered: a task, as uvicorn runs
            # each request, queued behind whatever the loop has already scheduled.
            reply = await asyncio.create_task(call("/cometd", publish))
            assert reply[0]["successful"], reply
            waited.append(server.answered - arrived)
            for _ in range(3):
                await asyncio.sleep(0)  # the next publish arrives mid-fan-out
        while sum(received.values()) < SUBSCRIBERS * PUBLISHES:
            await asyncio.sleep(0)
    finally:
        for task in [turns, *pollers]:
            task.cancel()
        await asyncio.gather(turns, *pollers, return_exceptions=True)
        await server.stop()

    # Nothing lost, nothing twice: every subscriber got every message once.
    assert set(received.values()) == {PUBLISHES}, Counter(received.values())
    # The fan-out was spread: no turn answered more than flush_batch held connects ...
    assert max(server.per_turn.values()) <= settings.flush_batch, server.per_turn.most_common(3)
    # ... and a publish waited behind at most the turn in progress and the one it was read in,
    # not behind the 1,000 replies of a whole fan-out.
    assert max(waited) <= 2 * settings.flush_batch, waited
    assert max(waited) < SUBSCRIBERS // 4, waited  # whatever the setting: never a whole fan-out
    # The load was a real one: the fan-out of a publish took many turns.
    assert len(server.per_turn) >= PUBLISHES * SUBSCRIBERS // settings.flush_batch // 10
