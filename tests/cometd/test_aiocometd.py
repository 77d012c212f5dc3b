"""aiocometd-ng (an independent Python Bayeux client) against us, over both transports."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiocometd_ng import Client, ConnectionType
from aiocometd_ng.exceptions import ServerError
from aiocometd_ng.extensions import AuthExtension

from adapters.cometd import CometdSettings, basic_header

from .conftest import USERS, ServerHarness


@pytest.fixture(scope="module")
def server() -> Iterator[ServerHarness]:
    """aiocometd sleeps advice.interval *seconds* (it is milliseconds in Bayeux): a randomised
    402 interval would stall it for minutes, so these tests run with the spread off."""
    harness = ServerHarness(
        CometdSettings(unknown_session_interval_ms=0, max_interval_ms=1000, sweep_period_ms=100)
    )
    harness.start()
    yield harness
    harness.stop()


class BasicAuth(AuthExtension):
    """Credentials as a header (long-polling) and in the handshake ext (websocket)."""

    def __init__(self, user: str, password: str) -> None:
        self.value = basic_header(user, password)

    async def outgoing(self, payload: list[dict[str, Any]], headers: dict[str, str]) -> None:
        headers["Authorization"] = self.value
        for message in payload:
            if message.get("channel") == "/meta/handshake":
                message.setdefault("ext", {})["authorization"] = self.value

    async def incoming(
        self, payload: list[dict[str, Any]], headers: dict[str, str] | None = None
    ) -> None:
        return None


CONNECTION_TYPES = [
    pytest.param(ConnectionType.LONG_POLLING, "agent10", id="long-polling"),
    pytest.param(ConnectionType.WEBSOCKET, "agent11", id="websocket"),
]


async def _next(client: Client) -> dict[str, Any]:
    async with asyncio.timeout(20):
        message: dict[str, Any] = await client.receive()
        return message


@pytest.mark.parametrize(("connection_type", "agent"), CONNECTION_TYPES)
async def test_aiocometd_full_cycle(
    server: ServerHarness, connection_type: ConnectionType, agent: str
) -> None:
    async with Client(
        server.url, connection_types=connection_type, auth=BasicAuth(agent, USERS[agent])
    ) as client:
        await client.subscribe("/me/interactions")
        server.publish("bob", {"for": "bob"})
        server.publish(agent, {"n": 1}, seq=1)
        message = await _next(client)
        assert message["channel"] == "/me/interactions"
        assert message["data"] == {"n": 1}

        await client.publish("/service/echo", {"ping": True})
        echo = await _next(client)
        assert echo == {"channel": "/service/echo", "data": {"ping": True}} | (
            {"id": echo["id"]} if "id" in echo else {}
        )

        with pytest.raises(ServerError) as refused:
            await client.publish("/me/interactions", {"forged": True})
        assert "403" in str(refused.value)

        # Restart: 402 with handshake advice; aiocometd re-handshakes and resubscribes itself.
        server.restart()
        deadline = asyncio.get_running_loop().time() + 20
        received: dict[str, Any] | None = None
        n = 2
        while received is None:
            assert asyncio.get_running_loop().time() < deadline, "no delivery after restart"
            server.publish(agent, {"n": n}, seq=n)
            try:
                async with asyncio.timeout(0.5):
                    received = await client.receive()
            except TimeoutError:
                n += 1
        assert received["channel"] == "/me/interactions"
        assert received["data"]["n"] >= 2
    # Gone: by its /meta/disconnect, or (aiocometd over websocket sometimes skips sending it
    # when closed mid-connect) by the sweeper after maxInterval.
    async with asyncio.timeout(10):
        while await server.inspect(lambda engine: any(engine.sessions.of_agent(agent))):
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(("connection_type", "agent"), CONNECTION_TYPES)
async def test_aiocometd_wrong_password(
    server: ServerHarness, connection_type: ConnectionType, agent: str
) -> None:
    client = Client(server.url, connection_types=connection_type, auth=BasicAuth(agent, "nope"))
    with pytest.raises(ServerError) as refused:
        await client.open()
    assert "403::Handshake denied" in str(refused.value)
    await client.close()
