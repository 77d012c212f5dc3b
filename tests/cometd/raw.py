"""Raw Bayeux over httpx, websockets and bare TCP: for the cases real clients never send."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from adapters.cometd import basic_header

from .conftest import PATH, USERS, ServerHarness

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


# ------------------------------------------------------------------ bare TCP


@dataclass
class Reply:
    status_line: str
    status: int
    version: str
    headers: dict[str, str]
    names: list[str]
    """The header names in order, repeats included."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Wire:
    """One TCP connection: bytes out, HTTP/1.x responses in (read by their framing)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, harness: ServerHarness) -> Wire:
        reader, writer = await asyncio.open_connection("127.0.0.1", harness.port, limit=1 << 20)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, timeout: float = 15) -> Reply:
        async with asyncio.timeout(timeout):
            status = 100
            while status == 100:  # an interim 100 Continue (RFC 9110 §15.2.1) has no body
                head = await self.reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status_line = lines[0]
                version, status_text = status_line.split(" ")[:2]
                status = int(status_text)
            headers: dict[str, str] = {}
            names: list[str] = []
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    names.append(name.strip().lower())
                    headers[names[-1]] = value.strip()
            if "content-length" in headers:
                body = await self.reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding") == "chunked":
                body = b""
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                    chunk = await self.reader.readexactly(size + 2)
                    if size == 0:
                        break
                    body += chunk[:-2]
            elif status in (101, 204, 304):
                body = b""
            else:
                body = await self.reader.read()
        return Reply(status_line, status, version, headers, names, body)

    async def closed(self) -> bool:
        """Whether the server closes the connection (with nothing more to read)."""
        async with asyncio.timeout(15):
            return await self.reader.read(1) == b""

    def close(self) -> None:
        self.writer.close()


@contextlib.asynccontextmanager
async def wire_to(harness: ServerHarness) -> AsyncIterator[Wire]:
    wire = await Wire.open(harness)
    try:
        yield wire
    finally:
        wire.close()


def post(
    body: bytes | list[Any],
    path: str = PATH,
    *,
    agent: str | None = "alice",
    headers: str = "",
    version: str = "1.1",
    content_type: str = "application/json",
) -> bytes:
    """A Bayeux POST (``Content-Length`` framed) as a browser sends it."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = f"POST {path} HTTP/{version}\r\nHost: test\r\n"
    if agent is not None:
        head += f"Authorization: {basic_header(agent, USERS[agent])}\r\n"
    head += f"Content-Type: {content_type}\r\n{headers}Content-Length: {len(raw)}\r\n\r\n"
    return head.encode() + raw


def get(path: str, headers: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode()
