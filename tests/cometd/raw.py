"""Raw Bayeux over httpx and websockets: for the cases real clients never send."""

from __future__ import annotations

import json
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from adapters.cometd import basic_header

from .conftest import USERS, ServerHarness

Message = dict[str, Any]


def handshake_message(ack: bool = False, **extra: Any) -> Message:
    message: Message = {
        "channel": "/meta/handshake",
        "version": "1.0",
        "minimumVersion": "1.0",
        "supportedConnectionTypes": ["long-polling", "websocket"],
        "id": "h1",
    }
    if ack:
        message["ext"] = {"ack": True}
    message.update(extra)
    return message


def connect_message(client_id: str, msg_id: str = "c", **extra: Any) -> Message:
    return {
        "channel": "/meta/connect",
        "clientId": client_id,
        "connectionType": "long-polling",
        "id": msg_id,
        **extra,
    }


class LongPolling:
    """One HTTP client (its own cookie jar = one browser) speaking to the harness."""

    def __init__(self, server: ServerHarness, agent: str | None = None) -> None:
        headers = {"Authorization": basic_header(agent, USERS[agent])} if agent else {}
        self.http = httpx.AsyncClient(base_url=server.url, headers=headers, timeout=15)
        self.client_id = ""

    async def post(
        self, messages: list[Message] | Message, suffix: str = "", **kwargs: Any
    ) -> list[Message]:
        response = await self.http.post(suffix, json=messages, **kwargs)
        assert response.status_code == 200, (response.status_code, response.text)
        body: list[Message] = response.json()
        return body

    async def handshake(self, ack: bool = False, **kwargs: Any) -> Message:
        (reply,) = await self.post([handshake_message(ack)], "/handshake", **kwargs)
        assert reply["successful"] is True, reply
        self.client_id = reply["clientId"]
        return reply

    async def connect(self, **extra: Any) -> list[Message]:
        return await self.post([connect_message(self.client_id, **extra)], "/connect")

    async def subscribe(self, *channels: str) -> Message:
        subscription: str | list[str] = channels[0] if len(channels) == 1 else list(channels)
        (reply,) = await self.post(
            [
                {
                    "channel": "/meta/subscribe",
                    "clientId": self.client_id,
                    "subscription": subscription,
                    "id": "s",
                }
            ]
        )
        return reply

    async def start(self, *channels: str, ack: bool = False) -> list[Message]:
        """Handshake, subscribe, and the first (immediate) connect."""
        await self.handshake(ack)
        if channels:
            assert (await self.subscribe(*channels))["successful"] is True
        extra = {"ext": {"ack": 0}} if ack else {}
        return await self.connect(**extra)

    async def aclose(self) -> None:
        await self.http.aclose()


class WebSocketClient:
    def __init__(self, connection: ClientConnection) -> None:
        self.ws = connection

    @classmethod
    async def open(cls, server: ServerHarness, **kwargs: Any) -> WebSocketClient:
        return cls(await connect(server.ws_url, **kwargs))

    async def send(self, messages: list[Message] | Message | str) -> None:
        await self.ws.send(messages if isinstance(messages, str) else json.dumps(messages))

    async def receive(self) -> list[Message]:
        frame = await self.ws.recv()
        decoded: list[Message] = json.loads(frame)
        return decoded

    async def call(self, messages: list[Message] | Message | str) -> list[Message]:
        await self.send(messages)
        return await self.receive()

    async def handshake(self, agent: str, ack: bool = False) -> str:
        message = handshake_message(ack)
        message.setdefault("ext", {})["authorization"] = basic_header(agent, USERS[agent])
        (reply,) = await self.call([message])
        assert reply["successful"] is True, reply
        client_id: str = reply["clientId"]
        return client_id

    async def close(self) -> None:
        await self.ws.close()
