"""The security policy hook, broadcast fan-out and server-side publish (issue 16, item 4).

The product's ``AgentPolicy`` is the default and is held by ``test_security.py``; here, a
server with ``BroadcastPolicy`` (every channel but the reserved ones open) and one with a
policy of the test's own show what a custom server gets: subscriptions by name and by ``*`` /
``**``, each subscriber reached once, client publishes broadcast, and the rules no policy can
lift (agent channels stay per agent, ``/meta/**`` stays the protocol's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from adapters.cometd import BayeuxServer, BroadcastPolicy
from adapters.cometd.protocol import ERR_META_DENIED, ERR_PUBLISH_DENIED
from adapters.cometd.server import _patterns_covering

from .conftest import ServerHarness
from .raw import LongPolling, handshake_message

Message = dict[str, Any]


def test_the_patterns_covering_a_channel_are_bayeux_wildcards() -> None:
    assert sorted(_patterns_covering("/a")) == ["/*", "/**", "/a"]
    assert sorted(_patterns_covering("/a/b/c")) == ["/**", "/a/**", "/a/b/*", "/a/b/**", "/a/b/c"]


async def received(client: LongPolling) -> list[tuple[str, Any]]:
    """The messages the next connect brings (it returns at once once something is queued)."""
    _reply, *messages = await client.connect()
    return [(m["channel"], m["data"]) for m in messages]


async def test_broadcast_reaches_every_subscriber_once_by_name_and_wildcard(
    make_server: Callable[..., ServerHarness],
) -> None:
    server = make_server(policy=BroadcastPolicy())
    clients = {name: LongPolling(server, name) for name in ("alice", "bob", "agent1", "agent2")}
    try:
        await clients["alice"].start("/team/board")
        await clients["bob"].start("/team/*", "/team/**")  # covered twice: delivered once
        await clients["agent1"].start("/**")
        await clients["agent2"].start("/other")
        await asyncio.wrap_future(
            server.call(lambda: server.engine.publish("/team/board", {"n": 1}))
        )
        for name in ("alice", "bob", "agent1"):
            assert await received(clients[name]) == [("/team/board", {"n": 1})], name
        reached: int = await server.inspect(lambda e: e._broadcast("/other", {"n": 2}))
        assert reached == 2  # agent2 by name, agent1 by /**
        assert await received(clients["agent2"]) == [("/other", {"n": 2})]
        assert await received(clients["agent1"]) == [("/other", {"n": 2})]

        # A client's publish is a broadcast too: bob's reaches alice, and its reply is ok.
        (reply,) = await clients["bob"].post(
            [{"channel": "/team/board", "clientId": clients["bob"].client_id,
              "data": {"from": "bob"}, "id": "p1"}]
        )  # fmt: skip
        assert reply == {"channel": "/team/board", "successful": True, "id": "p1"}
        assert await received(clients["alice"]) == [("/team/board", {"from": "bob"})]

        # Unsubscribed and disconnected sessions are out of the fan-out.
        await clients["alice"].post(
            [{"channel": "/meta/unsubscribe", "clientId": clients["alice"].client_id,
              "subscription": "/team/board"}]
        )  # fmt: skip
        await clients["agent1"].post(
            [{"channel": "/meta/disconnect", "clientId": clients["agent1"].client_id}]
        )
        reached = await server.inspect(lambda e: e._broadcast("/team/board", {"n": 3}))
        assert reached == 1  # bob only
        index = await server.inspect(lambda e: {p: len(s) for p, s in e._subscribers.items()})
        assert "/**" not in index and "/team/board" not in index
    finally:
        for client in clients.values():
            await client.aclose()


async def test_no_policy_opens_the_agent_channels_or_meta(
    make_server: Callable[..., ServerHarness],
) -> None:
    server = make_server(policy=BroadcastPolicy())
    alice, bob = LongPolling(server, "alice"), LongPolling(server, "bob")
    try:
        await alice.start("/me/interactions")
        await bob.start("/**")
        # A client cannot broadcast on an agent channel, whatever the policy.
        (reply,) = await bob.post(
            [{"channel": "/me/interactions", "clientId": bob.client_id, "data": {"x": 1}}]
        )
        assert reply["successful"] is False and reply["error"] == ERR_PUBLISH_DENIED
        # Nor can server code: an agent's notifications go through deliver, to that agent.
        engine: BayeuxServer = server.engine
        for channel in ("/me/interactions", "/v2/me/channels", "/meta/connect", "/service/x",
                        "/team/*"):  # fmt: skip
            with pytest.raises(ValueError, match="not a broadcast channel"):
                engine.publish(channel, {})
        reply = await bob.subscribe("/meta/*")
        assert reply["successful"] is False and reply["error"] == ERR_META_DENIED
        # bob's /** does not bring him alice's notifications.
        server.publish("alice", {"for": "alice"})
        assert await received(alice) == [("/me/interactions", {"for": "alice"})]
        reached = await server.inspect(lambda e: e._broadcast("/ping", {}))
        assert reached == 1 and await received(bob) == [("/ping", {})]
    finally:
        await alice.aclose()
        await bob.aclose()


class SupervisorsPolicy(BroadcastPolicy):
    """A custom server's: only alice may open a session on the supervisors' board, nobody
    but alice publishes on it, and agent9 may not connect at all."""

    def can_handshake(self, agent_id: str) -> str | None:
        return "403::agent9 is suspended" if agent_id == "agent9" else None

    def can_subscribe(self, agent_id: str, pattern: str) -> str | None:
        if pattern.startswith("/supervisors") and agent_id != "alice":
            return "403::supervisors only"
        return super().can_subscribe(agent_id, pattern)

    def can_publish(self, agent_id: str, channel: str, data: Any) -> str | None:
        if channel.startswith("/supervisors") and agent_id != "alice":
            return "403::supervisors only"
        return super().can_publish(agent_id, channel, data)


async def test_a_policy_of_ones_own_decides_per_agent_and_channel(
    make_server: Callable[..., ServerHarness],
) -> None:
    server = make_server(policy=SupervisorsPolicy())
    alice, bob, suspended = (LongPolling(server, a) for a in ("alice", "bob", "agent9"))
    try:
        (reply,) = await suspended.post([handshake_message()], "/handshake")
        assert reply["successful"] is False and reply["error"] == "403::agent9 is suspended"
        await alice.start("/supervisors/queue")
        await bob.handshake()
        reply = await bob.subscribe("/supervisors/**")
        assert reply["successful"] is False and reply["error"] == "403::supervisors only"
        (reply,) = await bob.post(
            [{"channel": "/supervisors/queue", "clientId": bob.client_id, "data": {}}]
        )
        assert reply["successful"] is False and reply["error"] == "403::supervisors only"
        (reply,) = await alice.post(
            [{"channel": "/supervisors/queue", "clientId": alice.client_id, "data": {"q": 4}}]
        )
        assert reply["successful"] is True
        assert await received(alice) == [("/supervisors/queue", {"q": 4})]
    finally:
        for client in (alice, bob, suspended):
            await client.aclose()
