"""``long_polling_protocol`` on the wire: raw bytes over TCP to a real uvicorn.

Every request is sent to two servers, one with the protocol (``fast``, as ``interactions
serve`` runs) and one through uvicorn and ASGI alone, and must get the same answer: what the
protocol serves itself as much as what it hands over to uvicorn (malformed, chunked, HTTP/1.0,
encoded, oversized...). The rest checks what only a connection shows: keep-alive, pipelining,
a hand-over in the middle of a connection, a trickled request, a client leaving while its
connect is held, ``Connection: close`` and shutdown.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.cometd import CometdSettings, basic_header

from .conftest import PATH, USERS, ServerHarness
from .raw import connect_message, handshake_message

AUTH = basic_header("alice", USERS["alice"])
LIMIT = 4096  # max_body_bytes of both servers here


@pytest.fixture(scope="module")
def pair() -> Iterator[dict[str, ServerHarness]]:
    servers = {
        kind: ServerHarness(CometdSettings(max_body_bytes=LIMIT, timeout_ms=60_000), http=kind)
        for kind in ("fast", "uvicorn")
    }
    try:
        for harness in servers.values():
            harness.start()
        yield servers
    finally:
        for harness in servers.values():
            harness.stop()


class Wire:
    """One TCP connection: bytes out, parsed HTTP/1.1 responses in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, harness: ServerHarness) -> Wire:
        reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(15):
            status = 100
            while status == 100:  # an interim 100 Continue (RFC 9110 §15.2.1) has no body
                head = await self.reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ")[1])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
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
            else:
                body = await self.reader.read()
        return status, headers, body

    async def closed(self) -> bool:
        async with asyncio.timeout(15):
            return await self.reader.read(1) == b""

    def close(self) -> None:
        self.writer.close()


def post(
    body: bytes | list[dict[str, Any]],
    path: str = PATH,
    *,
    headers: str = "",
    version: str = "1.1",
    auth: bool = True,
) -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    lines = f"POST {path} HTTP/{version}\r\nHost: test\r\n"
    if auth:
        lines += f"Authorization: {AUTH}\r\n"
    lines += f"Content-Type: application/json\r\n{headers}Content-Length: {len(raw)}\r\n\r\n"
    return lines.encode() + raw


HANDSHAKE = [handshake_message()]
HS = json.dumps(HANDSHAKE).encode()
CHUNKED = (
    (
        f"POST {PATH} HTTP/1.1\r\nHost: test\r\nAuthorization: {AUTH}\r\n"
        f"Transfer-Encoding: chunked\r\n\r\n{len(HS):x}\r\n"
    ).encode()
    + HS
    + b"\r\n0\r\n\r\n"
)
DEEP = b"[" * 100_000 + b"]" * 100_000

REQUESTS: dict[str, bytes] = {
    "handshake": post(HANDSHAKE),
    "handshake to /handshake": post(HANDSHAKE, PATH + "/handshake"),
    "handshake with a query": post(HANDSHAKE, PATH + "?jsonp=x"),
    "form-encoded message=": (
        f"POST {PATH} HTTP/1.1\r\nHost: test\r\nAuthorization: {AUTH}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
    ).encode()
    + b"Content-Length: %d\r\n\r\n" % len(b"message=" + HS.replace(b" ", b"+"))
    + b"message="
    + HS.replace(b" ", b"+"),
    "no credentials": post(HANDSHAKE, auth=False),
    "not JSON": post(b"{nope"),
    "not an array of messages": post(b'"hello"'),
    "a repeated key": post(b'[{"channel": "/meta/handshake", "channel": "/x"}]'),
    "an infinite number": post(b'[{"channel": "/meta/connect", "id": 1e999}]'),
    "nested too deeply (over the body limit)": post(b"[" * 3000 + b"]" * 3000),
    "empty body": post(b""),
    "chunked": CHUNKED,
    "HTTP/1.0": post(HANDSHAKE, version="1.0"),
    "percent-encoded path": post(HANDSHAKE, PATH.replace("notifications", "notific%61tions")),
    "another path below the same prefix": post(HANDSHAKE, PATH + "X"),
    "GET on the path": f"GET {PATH} HTTP/1.1\r\nHost: test\r\n\r\n".encode(),
    "a body over max_body_bytes": post(b"[" + b" " * LIMIT + b"]"),
    "two Content-Length lines": post(HANDSHAKE, headers="Content-Length: 3\r\n"),
    "no Host": post(HANDSHAKE).replace(b"Host: test\r\n", b""),
    "obs-fold": post(HANDSHAKE, headers="X-Folded: a\r\n b\r\n"),
    "space before the colon": post(HANDSHAKE, headers="X-Odd : b\r\n"),
    "a 20 KiB header": post(HANDSHAKE, headers=f"X-Big: {'b' * 20_000}\r\n"),
    "Expect: 100-continue": post(HANDSHAKE, headers="Expect: 100-continue\r\n"),
    "a NUL in a header value": post(HANDSHAKE, headers="X-Nul: a\x00b\r\n"),
}


def shape(status: int, headers: dict[str, str], body: bytes) -> tuple[Any, ...]:
    """What must be equal on both servers: the clientId and cookie values may differ."""
    content_type = headers.get("content-type", "")
    if content_type.startswith("application/json"):
        text = re.sub(r'"clientId":"[^"]+"', '"clientId":"*"', body.decode())
        parsed: Any = json.loads(text)
    else:
        parsed = body.decode("latin-1")
    cookie = re.sub(r"=[^;]+;", "=*;", headers.get("set-cookie", ""))
    return status, content_type, cookie, parsed


@pytest.mark.parametrize("name", list(REQUESTS))
async def test_the_same_answer_with_and_without_the_protocol(
    pair: dict[str, ServerHarness], name: str
) -> None:
    answers = {}
    for kind, harness in pair.items():
        wire = await Wire.open(harness)
        try:
            await wire.send(REQUESTS[name])
            answers[kind] = shape(*await wire.response())
        finally:
            wire.close()
    assert answers["fast"] == answers["uvicorn"]


async def test_a_cycle_on_one_connection_and_its_headers(pair: dict[str, ServerHarness]) -> None:
    harness = pair["fast"]
    wire = await Wire.open(harness)
    try:
        await wire.send(post(HANDSHAKE))
        status, headers, body = await wire.response()
        assert status == 200 and headers["content-type"] == "application/json;charset=UTF-8"
        assert headers["cache-control"] == "no-cache, no-store" and "date" in headers
        assert headers["set-cookie"].startswith("BAYEUX_BROWSER=")
        assert "connection" not in headers  # kept alive
        client_id = json.loads(body)[0]["clientId"]
        subscribe = {"channel": "/meta/subscribe", "clientId": client_id}
        await wire.send(post([{**subscribe, "subscription": "/me/interactions"}]))
        assert json.loads((await wire.response())[2])[0]["successful"] is True
        await wire.send(post([connect_message(client_id)]))  # the first: answered at once
        assert (await wire.response())[0] == 200
        await wire.send(post([connect_message(client_id, "held")]))
        await _until_held(harness, client_id)
        harness.publish("alice", {"n": 1})
        status, _, body = await wire.response()
        reply = json.loads(body)
        assert status == 200 and reply[0]["id"] == "held"
        assert [m.get("data") for m in reply[1:]] == [{"n": 1}]
    finally:
        wire.close()


async def test_pipelined_requests_and_a_hand_over_are_answered_in_order(
    pair: dict[str, ServerHarness],
) -> None:
    wire = await Wire.open(pair["fast"])
    try:
        other = b"GET /other HTTP/1.1\r\nHost: test\r\n\r\n"
        # Two served here, one for the app (404), then one more Bayeux POST that uvicorn now
        # serves on this connection: all in one write, answered in order.
        await wire.send(post(HANDSHAKE) + post(b"{nope") + other + post(HANDSHAKE))
        answers = [await wire.response() for _ in range(4)]
        assert [a[0] for a in answers] == [200, 400, 404, 200]
        assert json.loads(answers[0][2])[0]["successful"] is True
        assert json.loads(answers[3][2])[0]["successful"] is True
    finally:
        wire.close()


async def test_a_request_trickled_byte_by_byte_is_answered(
    pair: dict[str, ServerHarness],
) -> None:
    wire = await Wire.open(pair["fast"])
    try:
        for byte in post(HANDSHAKE):
            await wire.send(bytes([byte]))
        status, _, body = await wire.response()
        assert status == 200 and json.loads(body)[0]["successful"] is True
    finally:
        wire.close()


async def test_connection_close_is_honoured(pair: dict[str, ServerHarness]) -> None:
    wire = await Wire.open(pair["fast"])
    try:
        await wire.send(post(HANDSHAKE, headers="Connection: close\r\n"))
        status, headers, _ = await wire.response()
        assert status == 200 and headers["connection"] == "close"
        assert await wire.closed()
    finally:
        wire.close()


async def test_a_client_leaving_while_held_loses_nothing(pair: dict[str, ServerHarness]) -> None:
    harness = pair["fast"]
    wire = await Wire.open(harness)
    await wire.send(post(HANDSHAKE))
    client_id = json.loads((await wire.response())[2])[0]["clientId"]
    subscribe = {"channel": "/meta/subscribe", "clientId": client_id}
    await wire.send(post([{**subscribe, "subscription": "/me/interactions"}]))
    await wire.response()
    await wire.send(post([connect_message(client_id)]))
    await wire.response()
    await wire.send(post([connect_message(client_id, "held")]))
    await _until_held(harness, client_id)
    wire.close()  # the browser tab goes away with its connect held
    async with asyncio.timeout(15):
        while await harness.inspect(lambda e: _held(e, client_id)):
            await asyncio.sleep(0.02)
    harness.publish("alice", {"n": 2})
    again = await Wire.open(harness)
    try:
        await again.send(post([connect_message(client_id, "next")]))
        reply = json.loads((await again.response())[2])
        assert reply[0]["successful"] is True
        assert [m.get("data") for m in reply[1:]] == [{"n": 2}]
    finally:
        again.close()


async def test_shutdown_answers_held_connects() -> None:
    harness = ServerHarness(http="fast")
    harness.start()
    try:
        wire = await Wire.open(harness)
        await wire.send(post(HANDSHAKE))
        client_id = json.loads((await wire.response())[2])[0]["clientId"]
        await wire.send(post([connect_message(client_id)]))
        await wire.response()
        await wire.send(post([connect_message(client_id, "held")]))
        await _until_held(harness, client_id)
        stopping = asyncio.get_running_loop().run_in_executor(None, harness.stop)
        status, _, body = await wire.response()
        assert status == 200 and json.loads(body)[0]["id"] == "held"
        assert await wire.closed()  # uvicorn's shutdown closes the connection once answered
        async with asyncio.timeout(15):
            await stopping
        assert harness._thread is None  # the server thread ended
    finally:
        harness.stop()


def _held(engine: Any, client_id: str) -> bool:
    session = engine.sessions.get(client_id)
    return session is not None and session.held is not None


async def _until_held(harness: ServerHarness, client_id: str) -> None:
    async with asyncio.timeout(15):
        while not await harness.inspect(lambda e: _held(e, client_id)):
            await asyncio.sleep(0.01)
