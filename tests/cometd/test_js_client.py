"""The official CometD JavaScript client (npm ``cometd`` + ``cometd-nodejs-client``) against us."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .conftest import USERS, NodeClient, ServerHarness

TRANSPORTS = [
    pytest.param("long-polling", "header", id="long-polling"),
    pytest.param("websocket", "ext", id="websocket"),
]


def _is(kind: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    def match(event: dict[str, Any]) -> bool:
        return event["event"] == kind and all(event.get(k) == v for k, v in fields.items())

    return match


@pytest.mark.parametrize("ack", [False, True], ids=["plain", "ack"])
@pytest.mark.parametrize(("transport", "auth"), TRANSPORTS)
async def test_official_client_full_cycle(
    server: ServerHarness, node_client: Callable[..., Any], transport: str, auth: str, ack: bool
) -> None:
    agent = f"agent{ {'long-polling': 1, 'websocket': 3}[transport] + int(ack) }"
    client: NodeClient = await node_client(
        url=server.url,
        transport=transport,
        auth=auth,
        ack=ack,
        user=agent,
        password=USERS[agent],
        subscribe=["/me/interactions", "/v2/me/interactions"],
    )
    handshake = await client.expect(_is("handshake"))
    assert handshake["successful"] is True
    assert handshake["advice"]["reconnect"] == "retry"
    if ack:
        assert handshake["ext"] == {"ack": True}
    await client.expect(_is("subscribed", channel="/me/interactions", successful=True))
    await client.expect(_is("subscribed", channel="/v2/me/interactions", successful=True))

    # A notification for this agent arrives on both channels; another agent's never does.
    server.publish("bob", {"for": "bob"})
    server.publish(agent, {"n": 1}, seq=1)
    first = await client.expect(_is("message"))
    second = await client.expect(_is("message"))
    assert {first["channel"], second["channel"]} == {"/me/interactions", "/v2/me/interactions"}
    assert first["data"] == second["data"] == {"n": 1}

    # Publish with acknowledgement: the echo service answers on the same channel.
    await client.send(cmd="publish", channel="/service/echo", data={"ping": 1})
    published = await client.expect(_is("published", channel="/service/echo"))
    assert published["successful"] is True
    echo = await client.expect(_is("message", channel="/service/echo"))
    assert echo["data"] == {"ping": 1}

    # Publishing on the agent's own notification channel is refused.
    await client.send(cmd="publish", channel="/me/interactions", data={"forged": True})
    refused = await client.expect(_is("published", channel="/me/interactions"))
    assert refused["successful"] is False
    assert refused["error"].startswith("403:")

    # Restart: the client's next connect meets an unknown session, gets 402 + handshake advice,
    # re-handshakes by itself, resubscribes from its handshake listener, and hears the next one.
    server.restart()
    failed = await client.expect(_is("unsuccessful", channel="/meta/connect"), timeout=30)
    while failed.get("error") != "402::session_unknown":
        failed = await client.expect(_is("unsuccessful", channel="/meta/connect"), timeout=30)
    assert failed["advice"]["reconnect"] == "handshake"
    again = await client.expect(_is("handshake", successful=True), timeout=30)
    assert again["clientId"] != handshake["clientId"]
    await client.expect(_is("subscribed", channel="/me/interactions", successful=True))
    await client.expect(_is("subscribed", channel="/v2/me/interactions", successful=True))
    server.publish(agent, {"n": 2}, seq=2)
    after = [await client.expect(_is("message")), await client.expect(_is("message"))]
    assert [m["data"] for m in after] == [{"n": 2}, {"n": 2}]

    await client.send(cmd="disconnect")
    assert (await client.expect(_is("disconnected")))["successful"] is True
    sessions = await server.inspect(lambda engine: len(list(engine.sessions.of_agent(agent))))
    assert sessions == 0
    seen = [m["data"] for m in client.messages() if m["channel"] != "/service/echo"]
    assert {"for": "bob"} not in seen


@pytest.mark.parametrize(("transport", "auth"), TRANSPORTS)
async def test_official_client_refused_without_credentials(
    server: ServerHarness, node_client: Callable[..., Any], transport: str, auth: str
) -> None:
    client: NodeClient = await node_client(
        url=server.url,
        transport=transport,
        auth=auth,
        user="alice",
        password="wrong",
        subscribe=["/me/interactions"],
    )
    handshake = await client.expect(_is("handshake"))
    assert handshake["successful"] is False
    assert handshake["error"] == "403::Handshake denied"
    assert handshake["advice"]["reconnect"] == "none"


async def test_official_client_cannot_subscribe_to_meta_or_others(
    server: ServerHarness, node_client: Callable[..., Any]
) -> None:
    client: NodeClient = await node_client(
        url=server.url,
        transport="long-polling",
        auth="header",
        user="agent30",
        password=USERS["agent30"],
        subscribe=["/me/*"],
    )
    await client.expect(_is("subscribed", channel="/me/*", successful=True))
    # (the JS client handles /meta/** subscriptions locally: see test_security for the wire)
    for channel in ["/**", "/agents/bob/interactions", "/v2/*"]:
        await client.send(cmd="subscribe", channel=channel)
        reply = await client.expect(_is("subscribed", channel=channel))
        assert reply["successful"] is False, channel
        assert reply["error"].split(":")[0] in {"403", "404"}, reply
    server.publish("agent30", {"w": 1}, topic="/me/workbins")
    message = await client.expect(_is("message"))
    assert message["channel"] == "/me/workbins"
    assert message["data"] == {"w": 1}
