"""The ``ack`` extension: connections dropped mid-delivery lose nothing and duplicate nothing.

A publisher emits 1..N while the client keeps connecting; a random share of the connects is
dropped, either before the server answers (the held reply goes into a dead socket) or after
the reply has started arriving (the client throws it away). Only replies read completely count
as received, and their ack batch id is what the next connect acknowledges.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from .conftest import ServerHarness
from .raw import LongPolling, WebSocketClient, connect_message

N = 300
MODES = ["ok", "ok", "drop-before-reply", "drop-after-reply"]


async def publish_all(server: ServerHarness, agent: str, rng: random.Random) -> None:
    for n in range(1, N + 1):
        server.publish(agent, {"n": n}, seq=n)
        if rng.random() < 0.3:
            await asyncio.sleep(rng.uniform(0, 0.003))


async def raw_connect(
    server: ServerHarness, message: dict[str, Any], mode: str
) -> list[dict[str, Any]] | None:
    """One connect on its own TCP connection; ``None`` when this client dropped it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    body = json.dumps([message]).encode()
    writer.write(
        b"POST /api/v2/notifications/connect HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{server.port}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    if mode == "drop-before-reply":
        writer.transport.abort()
        return None
    if mode == "drop-after-reply":
        await reader.read(1)
        writer.transport.abort()
        return None
    data = await reader.read()
    writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.split()[1] == b"200", head
    decoded: list[dict[str, Any]] = json.loads(payload)
    return decoded


@pytest.mark.parametrize("seed", [1, 2])
async def test_ack_long_polling_drops(server: ServerHarness, seed: int) -> None:
    rng = random.Random(seed)
    agent = f"agent{25 + seed}"
    client = LongPolling(server, agent)
    (first,) = await client.start("/me/interactions", ack=True)
    batch = first["ext"]["ack"]
    publisher = asyncio.create_task(publish_all(server, agent, rng))
    received: list[int] = []
    drops = 0
    try:
        async with asyncio.timeout(30):
            while len(received) < N:
                mode = rng.choice(MODES)
                message = connect_message(client.client_id, ext={"ack": batch})
                replies = await raw_connect(server, message, mode)
                if replies is None:
                    drops += 1
                    continue
                reply, *messages = replies
                assert reply["successful"] is True, reply
                received += [m["data"]["n"] for m in messages]
                batch = reply["ext"]["ack"]
        await publisher
    finally:
        await client.aclose()
    assert received == list(range(1, N + 1))
    assert drops > 0


@pytest.mark.parametrize("seed", [3])
async def test_ack_websocket_drops(server: ServerHarness, seed: int) -> None:
    rng = random.Random(seed)
    agent = f"agent{25 + seed}"
    ws = await WebSocketClient.open(server)
    client_id = await ws.handshake(agent, ack=True)
    (reply,) = await ws.call(
        {"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/me/interactions"}
    )
    assert reply["successful"] is True
    batch = 0
    publisher = asyncio.create_task(publish_all(server, agent, rng))
    received: list[int] = []
    drops = 0
    try:
        async with asyncio.timeout(30):
            while len(received) < N:
                mode = rng.choice(MODES)
                message = {
                    **connect_message(client_id, ext={"ack": batch}),
                    "connectionType": "websocket",
                }
                await ws.send([message])
                if mode == "ok":
                    frame = await ws.receive()
                    reply, *messages = frame
                    assert reply["channel"] == "/meta/connect"
                    assert reply["successful"] is True, reply
                    received += [m["data"]["n"] for m in messages]
                    batch = reply["ext"]["ack"]
                    continue
                if mode == "drop-after-reply":
                    await ws.receive()  # the reply arrived; this client loses it
                ws.ws.transport.abort()
                drops += 1
                ws = await WebSocketClient.open(server)
        await publisher
    finally:
        await ws.close()
    assert received == list(range(1, N + 1))
    assert drops > 0
