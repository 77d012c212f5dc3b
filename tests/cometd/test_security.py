"""Item 5 of issue 6: authenticated handshakes, agent-bound sessions, restricted channels."""

from __future__ import annotations

import pytest

from adapters.cometd import AuthRequest, BayeuxServer, basic_header
from adapters.cometd.server import RequestContext

from .conftest import USERS, ServerHarness
from .raw import LongPolling, WebSocketClient, connect_message, handshake_message


async def test_handshake_requires_credentials(server: ServerHarness) -> None:
    anonymous = LongPolling(server)
    wrong = LongPolling(server)
    try:
        for client, headers in [
            (anonymous, {}),
            (wrong, {"Authorization": basic_header("alice", "bob-pw")}),
            (wrong, {"Authorization": "Bearer alice"}),
            (wrong, {"Authorization": "Basic !!!"}),
        ]:
            (reply,) = await client.post([handshake_message()], headers=headers)
            assert reply["successful"] is False
            assert reply["error"] == "403::Handshake denied"
            assert reply["advice"]["reconnect"] == "none"
            assert "clientId" not in reply
    finally:
        await anonymous.aclose()
        await wrong.aclose()


async def test_client_id_of_another_agent_is_refused(server: ServerHarness) -> None:
    alice = LongPolling(server, "alice")
    bob = LongPolling(server, "bob")
    try:
        await alice.start("/me/interactions")
        # Bob's credentials with Alice's clientId: every message is refused.
        forged = [
            connect_message(alice.client_id),
            {"channel": "/meta/subscribe", "clientId": alice.client_id, "subscription": "/me/*"},
            {"channel": "/meta/disconnect", "clientId": alice.client_id},
        ]
        replies = await bob.post(forged)
        assert [r["successful"] for r in replies] == [False, False, False]
        assert {r["error"] for r in replies} == {"403::session belongs to another agent"}
        # Alice's session is untouched and still gets her notifications.
        server.publish("alice", {"still": "alice"})
        reply, message = await alice.connect()
        assert reply["successful"] is True
        assert message["data"] == {"still": "alice"}
    finally:
        await alice.aclose()
        await bob.aclose()


async def test_notifications_reach_only_their_agent(server: ServerHarness) -> None:
    alice = LongPolling(server, "agent20")
    bob = LongPolling(server, "agent21")
    try:
        await alice.start("/me/*")
        await bob.start("/me/**", "/v2/me/**")
        server.publish("agent20", {"n": 1}, topic="/me/channels")
        server.publish("agent21", {"n": 2})
        _reply, *messages = await alice.connect()
        assert [(m["channel"], m["data"]) for m in messages] == [("/me/channels", {"n": 1})]
        _reply, *messages = await bob.connect()
        assert sorted((m["channel"], m["data"]["n"]) for m in messages) == [
            ("/me/interactions", 2),
            ("/v2/me/interactions", 2),
        ]
    finally:
        await alice.aclose()
        await bob.aclose()


@pytest.mark.parametrize(
    ("subscription", "error"),
    [
        ("/meta/connect", "403::meta channels are reserved"),
        ("/meta/*", "403::meta channels are reserved"),
        ("/meta/**", "403::meta channels are reserved"),
        ("/**", "403::subscription denied"),
        ("/*", "403::subscription denied"),
        ("/v2/**", "403::subscription denied"),
        ("/me/interactions/**", "403::subscription denied"),
        ("/agents/bob/interactions", "404::unknown channel"),
        (["/me/interactions", "/meta/handshake"], "403::meta channels are reserved"),
        ("/me/**/x", "400::invalid subscription"),
        ("me/interactions", "400::invalid subscription"),
        (42, "400::invalid subscription"),
        ([], "400::invalid subscription"),
    ],
)
async def test_subscriptions_are_restricted(
    server: ServerHarness, subscription: object, error: str
) -> None:
    client = LongPolling(server, "agent22")
    try:
        await client.start()
        (reply,) = await client.post(
            {
                "channel": "/meta/subscribe",
                "clientId": client.client_id,
                "subscription": subscription,
            }
        )
        assert reply["successful"] is False
        assert reply["error"] == error
        # Nothing was recorded, even for the allowed half of a refused list.
        server.publish("agent22", {"x": 1})
        reply, *messages = await client.connect(advice={"timeout": 0})
        assert messages == []
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("channel", "error"),
    [
        ("/me/interactions", "403::publish denied"),
        ("/v2/me/interactions", "403::publish denied"),
        ("/agents/bob", "403::publish denied"),
        ("/meta/anything", "404::unknown channel"),
        ("/service/nothing-here", "404::unknown channel"),
        ("/me/*", "400::invalid channel"),
    ],
)
async def test_publishing_is_restricted(server: ServerHarness, channel: str, error: str) -> None:
    client = LongPolling(server, "agent23")
    try:
        await client.start()
        (reply,) = await client.post(
            {"channel": channel, "clientId": client.client_id, "data": {}, "id": "p"}
        )
        assert reply["successful"] is False
        assert reply["error"] == error
        assert reply.get("id", "p") == "p"
    finally:
        await client.aclose()


async def test_websocket_is_bound_to_its_agent(server: ServerHarness) -> None:
    alice = await WebSocketClient.open(server)
    bob = await WebSocketClient.open(server)
    try:
        alice_id = await alice.handshake("agent24")
        bob_id = await bob.handshake("agent25")
        # Bob's clientId sent over Alice's socket, and a second handshake as Bob: refused.
        (reply,) = await alice.call(
            {"channel": "/meta/subscribe", "clientId": bob_id, "subscription": "/me/*"}
        )
        assert reply["error"] == "403::session belongs to another agent"
        message = handshake_message()
        message["ext"] = {"authorization": basic_header("agent25", USERS["agent25"])}
        (reply,) = await alice.call([message])
        assert reply["successful"] is False
        assert reply["error"] == "403::session belongs to another agent"
        # Alice's own session works on her socket.
        (reply,) = await alice.call(
            {"channel": "/meta/subscribe", "clientId": alice_id, "subscription": "/me/*"}
        )
        assert reply["successful"] is True
    finally:
        await alice.close()
        await bob.close()


async def test_authenticator_errors_refuse() -> None:
    async def broken(request: AuthRequest) -> str | None:
        raise RuntimeError("directory down")

    engine = BayeuxServer(broken)
    context = RequestContext({}, {}, None, "long-polling")
    outcome = await engine.process([handshake_message()], context)
    (reply,) = outcome.replies
    assert reply["error"] == "403::Handshake denied"
    assert len(engine.sessions) == 0
