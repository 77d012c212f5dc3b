"""``adapters.cometd.http11``: Bayeux long-polling read off the socket, under a real uvicorn.

Black-box over TCP, with raw sockets so that every byte is the test's own. Most tests run on
two servers with the same app and settings: ``fast`` (``long_polling_protocol`` in front of
uvicorn's protocol) and ``uvicorn`` (ASGI only); what the protocol answers itself, and what it
hands over to uvicorn, must look the same on both. The app is a ``CometdApp`` in front of a
small Starlette app of the test's own (``/other``, ``/echo``), so that a hand-over shows in
the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from uvicorn.logging import AccessFormatter

from adapters.cometd import (
    Authenticator,
    AuthRequest,
    BasicAuthenticator,
    BayeuxServer,
    CometdApp,
    CometdSettings,
    SecurityPolicy,
    basic_header,
)
from adapters.cometd.http11 import long_polling_protocol

from .conftest import PATH, USERS, ServerHarness
from .raw import (
    Reply,
    WebSocketClient,
    Wire,
    connect_message,
    get,
    handshake_message,
    post,
    wire_to,
)

KINDS = ("fast", "uvicorn")
LIMIT = 8192
"""``max_body_bytes`` of the servers here: small, so that a 413 is cheap to ask for."""
SETTINGS = CometdSettings(max_body_bytes=LIMIT, timeout_ms=60_000, duplicate_connect_status=410)
"""(Not the default 409: the status must come from the settings.)"""
REASON = "the body is not a JSON array of Bayeux messages: "
"""How every 400 for a bad batch begins (``transports.bad_batch_reason``)."""
HANDSHAKE = [handshake_message()]
Message = dict[str, Any]


# ------------------------------------------------------------------ the servers


async def _other(request: Request) -> Response:
    return PlainTextResponse("other")


async def _echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"method": request.method, "path": request.url.path, "body": body.hex()})


ROUTES = [Route("/other", _other), Route("/echo", _echo, methods=["POST"])]


class AppHarness(ServerHarness):
    """``ServerHarness`` serving ``CometdApp(engine, Starlette(routes=ROUTES), PATH)``, with the
    protocol (``fast``) or without (``uvicorn``), uvicorn's keep-alive and grace period of the
    test's choosing and a default header of its own (``--header``)."""

    def __init__(
        self,
        http: str,
        settings: CometdSettings = SETTINGS,
        policy: SecurityPolicy | None = None,
        *,
        keep_alive: int = 60,
        grace: int = 2,
        log_level: str = "warning",
        authenticator: Authenticator | None = None,
    ) -> None:
        super().__init__(settings, policy, http)
        self.keep_alive = keep_alive
        self.grace = grace
        self.log_level = log_level
        self.authenticator = authenticator or BasicAuthenticator(USERS)

    def config(self) -> uvicorn.Config:
        engine = BayeuxServer(self.authenticator, self.settings, policy=self.policy)
        self.engine = engine

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            await engine.start()
            try:
                yield
            finally:
                await engine.stop()

        app = CometdApp(engine, Starlette(routes=ROUTES, lifespan=lifespan), PATH)
        http: Any = long_polling_protocol(engine, PATH) if self.http == "fast" else "auto"
        return uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level=self.log_level,
            lifespan="on",
            timeout_keep_alive=self.keep_alive,
            timeout_graceful_shutdown=self.grace,
            headers=[("X-Served-By", "test")],
            http=http,
        )

    def exit(self) -> threading.Thread | None:
        """uvicorn's own graceful shutdown (as on SIGTERM), without stopping the engine first;
        the server thread, to join."""
        thread, server = self._thread, self._server
        if server is not None:
            server.should_exit = True
        self._server = self._thread = None  # (nothing left for ``stop`` to do)
        return thread


@pytest.fixture(scope="module")
def pair() -> Iterator[dict[str, AppHarness]]:
    servers = {kind: AppHarness(kind) for kind in KINDS}
    try:
        for harness in servers.values():
            harness.start()
        yield servers
    finally:
        for harness in servers.values():
            harness.stop()


@pytest.fixture(params=KINDS)
def each(request: pytest.FixtureRequest, pair: dict[str, AppHarness]) -> AppHarness:
    """Each of the two servers in turn: what holds for both."""
    harness: AppHarness = pair[request.param]
    return harness


@pytest.fixture
def own() -> Iterator[Callable[..., AppHarness]]:
    """A server of the test's own (started by the test, stopped whatever happens)."""
    started: list[AppHarness] = []

    def make(http: str = "fast", **kwargs: Any) -> AppHarness:
        harness = AppHarness(http, **kwargs)
        started.append(harness)
        harness.start()
        return harness

    yield make
    for harness in started:
        harness.stop()


# ------------------------------------------------------------------ the wire


def echo(body: bytes) -> bytes:
    return (
        f"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )


def subscribe_message(client_id: str) -> Message:
    return {
        "channel": "/meta/subscribe",
        "clientId": client_id,
        "subscription": "/me/interactions",
        "id": "s",
    }


async def handshake(wire: Wire, agent: str) -> str:
    await wire.send(post(HANDSHAKE, agent=agent))
    reply = await wire.reply()
    assert reply.status == 200, (reply.status, reply.body)
    client_id: str = reply.json()[0]["clientId"]
    return client_id


async def start_session(wire: Wire, agent: str) -> str:
    """Handshake, subscribe to the agent's notifications, the first (immediate) connect."""
    client_id = await handshake(wire, agent)
    await wire.send(post([subscribe_message(client_id)], agent=agent))
    assert (await wire.reply()).json()[0]["successful"] is True
    await wire.send(post([connect_message(client_id, "first")], agent=agent))
    first = await wire.reply()
    assert first.status == 200 and first.json()[0]["successful"] is True
    return client_id


def _last_seen(engine: BayeuxServer, client_id: str) -> float:
    session = engine.sessions.get(client_id)
    assert session is not None, f"no session {client_id}"
    return session.last_seen


def _held(engine: BayeuxServer, client_id: str) -> bool:
    session = engine.sessions.get(client_id)
    return session is not None and session.held is not None


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds: liveness only, with a generous bound."""
    try:
        async with asyncio.timeout(15):
            while not await check():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"never: {what}") from None


async def until_held(harness: ServerHarness, client_id: str) -> None:
    async def held() -> bool:
        return await harness.inspect(lambda e: _held(e, client_id))

    await until(held, f"{client_id} held")


def normalized(value: Any) -> Any:
    """A reply body with what differs between two servers (clientIds) blanked out."""
    if isinstance(value, dict):
        return {k: "*" if k == "clientId" else normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    return value


def shape(reply: Reply) -> tuple[Any, ...]:
    """What must be the same with and without the protocol."""
    content_type = reply.headers.get("content-type", "")
    body: Any = reply.body.decode("latin-1")
    if content_type.startswith("application/json"):
        body = normalized(reply.json())
    cookie = reply.headers.get("set-cookie", "")
    cookie_shape = cookie.split("=", 1)[0] + "=*;" + cookie.split(";", 1)[1] if cookie else ""
    names = tuple(sorted(reply.names))
    return reply.status, content_type, cookie_shape, body, reply.status_line, names


# ------------------------------------------------------------------ 1. a cycle, its headers


async def test_a_long_poll_cycle_on_one_keep_alive_connection(each: AppHarness) -> None:
    agent = "agent1"
    async with wire_to(each) as wire:
        await wire.send(post(HANDSHAKE, agent=agent))
        shook = await wire.reply()
        client_id = shook.json()[0]["clientId"]
        await wire.send(post([subscribe_message(client_id)], agent=agent))
        subscribed = await wire.reply()
        await wire.send(post([connect_message(client_id, "first")], agent=agent))
        first = await wire.reply()
        # A batch with a connect that is held: the other replies wait and come with it.
        also = {**subscribe_message(client_id), "subscription": "/me/channels", "id": "also"}
        await wire.send(post([also, connect_message(client_id, "held")], agent=agent))
        await until_held(each, client_id)
        each.publish(agent, {"n": 1})
        held = await wire.reply()

        replies = [shook, subscribed, first, held]
        for reply in replies:
            assert reply.status_line == "HTTP/1.1 200 OK"
            assert reply.headers["content-type"] == "application/json;charset=UTF-8"
            assert int(reply.headers["content-length"]) == len(reply.body)
            assert reply.headers["cache-control"] == "no-cache, no-store"
            assert email.utils.parsedate_to_datetime(reply.headers["date"]) is not None
            assert reply.headers["server"] == "uvicorn"
            assert reply.headers["x-served-by"] == "test"  # uvicorn's --header
            assert "connection" not in reply.headers  # kept alive
            assert len(reply.names) == len(set(reply.names)), reply.names
        cookie = shook.headers["set-cookie"]
        assert cookie.startswith("BAYEUX_BROWSER=") and cookie.endswith("; Path=/; HttpOnly")
        assert all("set-cookie" not in r.headers for r in replies[1:])

        assert shook.json()[0]["successful"] is True
        assert subscribed.json()[0]["successful"] is True
        assert first.json()[0]["id"] == "first"
        also_reply, connect_reply, *delivered = held.json()
        assert also_reply["id"] == "also" and also_reply["successful"] is True
        assert connect_reply["id"] == "held" and connect_reply["successful"] is True
        assert [(m["channel"], m["data"]) for m in delivered] == [("/me/interactions", {"n": 1})]
        # Still the same connection, still served.
        disconnect = {"channel": "/meta/disconnect", "clientId": client_id}
        await wire.send(post([disconnect], agent=agent))
        assert (await wire.reply()).json()[0]["successful"] is True


async def test_the_same_headers_with_and_without_the_protocol(
    pair: dict[str, AppHarness],
) -> None:
    names: dict[str, list[str]] = {}
    for kind, harness in pair.items():
        async with wire_to(harness) as wire:
            await wire.send(post(HANDSHAKE, agent="agent2"))
            names[kind] = sorted((await wire.reply()).names)
    assert names["fast"] == names["uvicorn"]


# ------------------------------------------------------------------ 2. the same answers


async def _scenario(harness: AppHarness, agent: str) -> list[tuple[Any, ...]]:
    """Bad input, the form encoding, a cycle and a duplicate connect: every reply's shape."""
    shapes: list[tuple[Any, ...]] = []
    async with wire_to(harness) as a, wire_to(harness) as b:

        async def ask(wire: Wire, request: bytes) -> Reply:
            await wire.send(request)
            reply = await wire.reply()
            shapes.append(shape(reply))
            return reply

        await ask(a, post(b'[{"channel": "/meta/handshake", "version": ', agent=agent))
        await ask(a, post(b'"a string"', agent=agent))
        await ask(a, post(b"42", agent=agent))
        await ask(a, post(b"", agent=agent))
        form = b"message=" + json.dumps(HANDSHAKE).encode().replace(b" ", b"+")
        form_type = "application/x-www-form-urlencoded"
        await ask(a, post(form, agent=agent, content_type=form_type))
        await ask(a, post(HANDSHAKE, agent=None))  # no credentials
        shook = await ask(a, post(HANDSHAKE, agent=agent))
        client_id = shook.json()[0]["clientId"]
        await ask(a, post([subscribe_message(client_id)], agent=agent))
        await ask(a, post([connect_message(client_id, "first")], agent=agent))
        # Held on a, then the same session connects again on b: a's connect is cancelled.
        await a.send(post([connect_message(client_id, "older")], agent=agent))
        await until_held(harness, client_id)
        await b.send(post([connect_message(client_id, "newer")], agent=agent))
        shapes.append(shape(await a.reply()))
        await until_held(harness, client_id)
        harness.publish(agent, {"n": 3})
        shapes.append(shape(await b.reply()))
        now = connect_message(client_id, "mixed", advice={"timeout": 0})  # answered at once
        await ask(a, post([now, "not a message"], agent=agent))
    return shapes


async def test_the_same_answers_with_and_without_the_protocol(
    pair: dict[str, AppHarness],
) -> None:
    answers = {kind: await _scenario(harness, "agent3") for kind, harness in pair.items()}
    assert answers["fast"] == answers["uvicorn"]
    fast = answers["fast"]
    plain = "text/plain;charset=UTF-8"
    for bad in fast[:4]:
        assert bad[:3] == (400, plain, "") and bad[3].startswith(REASON), bad
    assert "Malformed JSON" in fast[0][3]
    assert fast[4][0] == 200 and fast[4][3][0]["successful"] is True  # the form field
    assert fast[5][0] == 200 and fast[5][3][0]["successful"] is False  # no credentials
    assert fast[6][2] == "BAYEUX_BROWSER=*; Path=/; HttpOnly"
    older = (SETTINGS.duplicate_connect_status, plain, "", "", "HTTP/1.1 410 Gone")
    assert fast[-3][:5] == older  # the older connect: the setting's status, no body
    assert fast[-2][3][0]["id"] == "newer" and fast[-2][3][1]["data"] == {"n": 3}
    assert [m["successful"] for m in fast[-1][3]] == [True, False]  # one message refused


# ------------------------------------------------------------------ 3. hand-over, pipelining


async def test_a_hand_over_in_the_middle_of_a_connection(each: AppHarness) -> None:
    async with wire_to(each) as wire:
        await handshake(wire, "agent4")
        await wire.send(get("/other"))
        other = await wire.reply()
        assert (other.status, other.body) == (200, b"other")
        await handshake(wire, "agent4")  # now uvicorn's connection: still served
        body = bytes(range(256)) * 4
        await wire.send(echo(body))
        echoed = (await wire.reply()).json()
        assert echoed == {"method": "POST", "path": "/echo", "body": body.hex()}
        await handshake(wire, "agent4")


async def test_a_pipelined_burst_is_answered_in_order(each: AppHarness) -> None:
    async with wire_to(each) as wire:
        first = [handshake_message(id="one")]
        second = [handshake_message(id="two")]
        body = b"[1, 2, 3]"
        await wire.send(
            post(first) + post(b"{nope") + post(second) + get("/other") + echo(body) + post(first)
        )
        replies = [await wire.reply() for _ in range(6)]
        assert [r.status for r in replies] == [200, 400, 200, 200, 200, 200]
        assert replies[0].json()[0]["id"] == "one"
        assert replies[1].body.startswith(REASON.encode())
        assert replies[2].json()[0]["id"] == "two"
        assert replies[3].body == b"other"
        assert replies[4].json()["body"] == body.hex()
        assert replies[5].json()[0]["id"] == "one"


async def test_a_long_pipelined_burst_answered_at_once_is_served_in_a_loop(
    each: AppHarness,
) -> None:
    # Each of these is answered without waiting (an unknown session's connect): the fast path
    # serves them one after another in one read, never by recursion (2,000 deep would not fit
    # Python's stack), and the last is answered as the first.
    count = 2000
    burst = b"".join(
        post([{**connect_message("nobody", str(n))}], agent="agent5") for n in range(count)
    )
    async with wire_to(each) as wire:
        await wire.send(burst)
        replies = [await wire.reply() for _ in range(count)]
    assert all(r.status == 200 for r in replies)
    assert [r.json()[0]["id"] for r in replies] == [str(n) for n in range(count)]
    assert replies[-1].json()[0]["error"].startswith("402::")


async def test_requests_pipelined_behind_a_held_connect_wait_for_it(each: AppHarness) -> None:
    agent = "agent5"
    async with wire_to(each) as wire:
        client_id = await start_session(wire, agent)
        # In one write with the held connect, and in writes of their own once it is held.
        await wire.send(
            post([connect_message(client_id, "held")], agent=agent)
            + post([handshake_message(id="behind")], agent=agent)
        )
        await until_held(each, client_id)
        await wire.send(post([handshake_message(id="later")], agent=agent))
        await wire.send(get("/other"))
        await asyncio.sleep(0.2)  # (gives a server that would not wait the time to answer)
        each.publish(agent, {"n": 5})
        held, behind, later, other = [await wire.reply() for _ in range(4)]
        assert held.json()[0]["id"] == "held" and held.json()[1]["data"] == {"n": 5}
        assert behind.json()[0]["id"] == "behind"
        assert later.json()[0]["id"] == "later"
        assert other.body == b"other"


async def test_a_large_backlog_behind_a_held_connect_pauses_reading(
    pair: dict[str, AppHarness],
) -> None:
    harness = pair["fast"]
    agent = "agent6"
    count = 60  # 60 x ~1.1 KiB: well over 16 KiB + max_body_bytes
    async with wire_to(harness) as wire:
        client_id = await start_session(wire, agent)
        await wire.send(post([connect_message(client_id, "held")], agent=agent))
        await until_held(harness, client_id)
        local = wire.writer.get_extra_info("sockname")
        filler = b"[" + b" " * 1024 + b"nope"
        wire.writer.write(b"".join(post(filler, agent=agent) for _ in range(count)))
        wire.writer.write(post([handshake_message(id="last")], agent=agent))

        def reading() -> bool | None:
            """Whether the server still reads this connection (None: not found)."""
            assert harness._server is not None
            for protocol in harness._server.server_state.connections:
                transport = getattr(protocol, "transport", None)
                if transport is not None and transport.get_extra_info("peername") == local:
                    return bool(transport.is_reading())
            return None

        async def paused() -> bool:
            return await asyncio.wrap_future(harness.call(reading)) is False

        await until(paused, "reading paused behind the held connect")
        harness.publish(agent, {"n": 6})
        held = await wire.reply()
        assert held.json()[0]["id"] == "held" and held.json()[1]["data"] == {"n": 6}
        for _ in range(count):
            bad = await wire.reply()
            assert bad.status == 400 and bad.body.startswith(REASON.encode())
        last = await wire.reply()
        assert last.json()[0]["id"] == "last"
        assert await asyncio.wrap_future(harness.call(reading)) is True


# ------------------------------------------------------------------ 4. what uvicorn serves


HS = json.dumps(HANDSHAKE).encode()
AUTH = basic_header("alice", USERS["alice"])
CHUNKED = (
    (
        f"POST {PATH} HTTP/1.1\r\nHost: test\r\nAuthorization: {AUTH}\r\n"
        f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        f"{len(HS) - 10:x}\r\n"
    ).encode()
    + HS[:-10]
    + b"\r\n%x\r\n" % 10
    + HS[-10:]
    + b"\r\n0\r\n\r\n"
)

HANDED_OVER: dict[str, tuple[bytes, int]] = {
    "chunked body": (CHUNKED, 200),
    "HTTP/1.0": (post(HANDSHAKE, version="1.0"), 200),
    "percent-encoded path": (
        post(HANDSHAKE, PATH.replace("notifications", "notific%61tions")),
        200,
    ),
    "absolute-form target": (post(HANDSHAKE, "http://test" + PATH), 200),
    "Expect: 100-continue": (post(HANDSHAKE, headers="Expect: 100-continue\r\n"), 200),
    "a body over max_body_bytes": (post(b"[" + b" " * LIMIT + b"]"), 413),
    "two Content-Length lines": (post(HANDSHAKE, headers="Content-Length: 3\r\n"), 400),
    "a Content-Length with a sign": (
        post(HANDSHAKE).replace(b"Content-Length: ", b"Content-Length: +"),
        400,
    ),
    "no Host": (post(HANDSHAKE).replace(b"Host: test\r\n", b""), 200),
    "two Host lines": (post(HANDSHAKE, headers="Host: other\r\n"), 200),
    "obs-fold": (post(HANDSHAKE, headers="X-Folded: a\r\n b\r\n"), 400),
    "space before the colon": (post(HANDSHAKE, headers="X-Odd : b\r\n"), 400),
    "a header block over 16 KiB": (post(HANDSHAKE, headers=f"X-Big: {'b' * 17_000}\r\n"), 200),
    "a NUL in a header value": (post(HANDSHAKE, headers="X-Nul: a\x00b\r\n"), 400),
    "GET on the path": (get(PATH), 405),
    "lower-case method": (post(HANDSHAKE).replace(b"POST", b"post", 1), 400),
}


@pytest.mark.parametrize("name", list(HANDED_OVER))
async def test_what_is_handed_over_gets_uvicorns_answer(
    pair: dict[str, AppHarness], name: str
) -> None:
    request, status = HANDED_OVER[name]
    answers: dict[str, tuple[Any, ...]] = {}
    for kind, harness in pair.items():
        async with wire_to(harness) as wire:
            await wire.send(request)
            answers[kind] = shape(await wire.reply())
    assert answers["fast"] == answers["uvicorn"]
    assert answers["fast"][0] == status, answers["fast"]
    if status == 200:
        assert answers["fast"][3][0]["successful"] is True


async def test_expect_100_continue_is_answered_before_the_body_is_sent(
    each: AppHarness,
) -> None:
    request = post(HANDSHAKE, headers="Expect: 100-continue\r\n")
    head, _, body = request.partition(b"\r\n\r\n")
    async with wire_to(each) as wire:
        await wire.send(head + b"\r\n\r\n")
        async with asyncio.timeout(15):
            interim = await wire.reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 ")
        await wire.send(body)
        reply = await wire.reply()
        assert reply.status == 200 and reply.json()[0]["successful"] is True


async def test_a_request_line_of_http_1_0_closes_after_its_answer(each: AppHarness) -> None:
    async with wire_to(each) as wire:
        await wire.send(post(HANDSHAKE, version="1.0"))
        reply = await wire.reply()
        assert reply.status == 200 and reply.json()[0]["successful"] is True
        assert await wire.closed()


TRICKLED = {
    "a Bayeux POST": (post(HANDSHAKE), 200),
    "another request": (get("/other"), 200),  # differs from "POST /api..." at its first byte
    "a longer path": (post(HANDSHAKE, PATH + "X"), 404),  # differs after the path's last byte
    "a chunked Bayeux POST": (CHUNKED, 200),  # differs in a header
    "a form-encoded POST": (
        post(
            b"message=" + HS.replace(b" ", b"+"),
            content_type="application/x-www-form-urlencoded",
        ),
        200,
    ),
}


@pytest.mark.parametrize("name", list(TRICKLED))
async def test_a_request_trickled_byte_by_byte_is_answered(each: AppHarness, name: str) -> None:
    request, status = TRICKLED[name]
    async with wire_to(each) as wire:
        for byte in request:
            await wire.send(bytes([byte]))
        reply = await wire.reply()
        assert reply.status == status, reply
        if status == 200 and reply.headers["content-type"].startswith("application/json"):
            assert reply.json()[0]["successful"] is True
        await handshake(wire, "alice")  # and the connection goes on


async def test_a_websocket_on_the_bayeux_path(each: AppHarness) -> None:
    client = await WebSocketClient.open(each)
    try:
        client_id = await client.handshake("agent7")
        (reply,) = await client.call([connect_message(client_id, connectionType="websocket")])
        assert reply["successful"] is True
    finally:
        await client.close()


async def test_an_upgrade_after_a_long_poll_on_the_same_connection(each: AppHarness) -> None:
    upgrade = get(
        PATH,
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    )
    async with wire_to(each) as wire:
        await handshake(wire, "agent7")
        await wire.send(upgrade)
        reply = await wire.reply()
        assert reply.status == 101
        assert reply.headers["upgrade"].lower() == "websocket"
        assert reply.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


# ------------------------------------------------------------------ 5. the path


PATHS = {
    PATH: True,
    PATH + "/": True,
    PATH + "/connect": True,
    PATH + "/meta/handshake": True,
    PATH + "?jsonp=x": True,
    PATH + "/handshake?x=1&y=2": True,
    PATH + "X": False,
    PATH + ".json": False,
    PATH[:-1]: False,
    "/api/v2/notification/s": False,
    "/other" + PATH: False,
}


@pytest.mark.parametrize("path", list(PATHS))
async def test_which_paths_are_bayeux(each: AppHarness, path: str) -> None:
    async with wire_to(each) as wire:
        await wire.send(post(HANDSHAKE, path))
        reply = await wire.reply()
    if PATHS[path]:
        assert reply.status == 200 and reply.json()[0]["successful"] is True
    else:
        assert reply.status == 404 and reply.body == b"Not Found"  # the app's router


# ------------------------------------------------------------------ 6. Connection: close


@pytest.mark.parametrize("value", ["close", "Close", "keep-alive, close"])
async def test_connection_close_is_honoured(each: AppHarness, value: str) -> None:
    async with wire_to(each) as wire:
        # Another request pipelined behind it is never answered.
        await wire.send(post(HANDSHAKE, headers=f"Connection: {value}\r\n") + post(HANDSHAKE))
        reply = await wire.reply()
        assert reply.status == 200 and reply.json()[0]["successful"] is True
        assert reply.headers["connection"] == "close"
        assert await wire.closed()


async def test_connection_close_on_a_held_connect(each: AppHarness) -> None:
    agent = "agent8"
    async with wire_to(each) as wire:
        client_id = await start_session(wire, agent)
        close = "Connection: close\r\n"
        await wire.send(post([connect_message(client_id, "held")], agent=agent, headers=close))
        await until_held(each, client_id)
        each.publish(agent, {"n": 8})
        reply = await wire.reply()
        assert reply.json()[1]["data"] == {"n": 8}
        assert reply.headers["connection"] == "close"
        assert await wire.closed()


# ------------------------------------------------------------------ 7. a client that leaves


async def test_a_client_leaving_while_held_loses_nothing(each: AppHarness) -> None:
    # Noticed at once on both: the protocol sees the connection lost; under ASGI alone the
    # endpoint waits for the held connect and for uvicorn's http.disconnect together.
    agent = "agent9"
    wire = await Wire.open(each)
    try:
        client_id = await start_session(wire, agent)
        await wire.send(post([connect_message(client_id, "held")], agent=agent))
        await until_held(each, client_id)
        before = await each.inspect(lambda e: _last_seen(e, client_id))
        await asyncio.sleep(0.05)
    finally:
        wire.close()  # the tab goes away with its connect held

    async def abandoned() -> bool:
        return not await each.inspect(lambda e: _held(e, client_id))

    await until(abandoned, "the held connect abandoned")
    after = await each.inspect(lambda e: _last_seen(e, client_id))
    assert after > before  # maxInterval counts from the client's leaving
    each.publish(agent, {"n": 9})
    async with wire_to(each) as again:
        await again.send(post([connect_message(client_id, "next")], agent=agent))
        reply, *delivered = (await again.reply()).json()
        assert reply["successful"] is True and reply["id"] == "next"
        assert [m["data"] for m in delivered] == [{"n": 9}]


# ------------------------------------------------------------------ 8. shutdown


async def test_stopping_answers_held_connects_and_the_server_exits(
    own: Callable[..., AppHarness],
) -> None:
    harness = own("fast")
    wires = [await Wire.open(harness) for _ in range(3)]
    try:
        clients = []
        for n, wire in enumerate(wires):
            client_id = await start_session(wire, f"agent{10 + n}")
            await wire.send(post([connect_message(client_id, f"held{n}")], agent=f"agent{10 + n}"))
            clients.append(client_id)
        for client_id in clients:
            await until_held(harness, client_id)
        thread = harness._thread
        assert thread is not None
        stopping = asyncio.get_running_loop().run_in_executor(None, harness.stop)
        for n, wire in enumerate(wires):
            reply = await wire.reply()
            assert reply.status == 200 and reply.json()[0]["id"] == f"held{n}"
            assert await wire.closed()
        async with asyncio.timeout(20):
            await stopping
        assert not thread.is_alive()
    finally:
        for wire in wires:
            wire.close()


async def test_uvicorns_shutdown_answers_held_connects_with_connection_close(
    own: Callable[..., AppHarness],
) -> None:
    harness = own("fast", grace=1)
    async with wire_to(harness) as idle, wire_to(harness) as wire:
        await handshake(idle, "agent13")  # an idle keep-alive connection
        client_id = await start_session(wire, "agent13")
        await wire.send(post([connect_message(client_id, "held")], agent="agent13"))
        await until_held(harness, client_id)
        thread = harness.exit()
        assert thread is not None
        assert await idle.closed()
        # Held past the grace period, then answered by the lifespan's shutdown.
        reply = await wire.reply()
        assert reply.status == 200 and reply.json()[0]["id"] == "held"
        assert reply.headers["connection"] == "close"
        assert await wire.closed()
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 20)
        assert not thread.is_alive()


# ------------------------------------------------------------------ 9. hostile bodies


HOSTILE: dict[str, tuple[bytes, str]] = {
    "deep nesting": (b"[" * 3000 + b"]" * 3000, "nested too deeply"),
    "nesting under the parser's limit": (
        b'[{"channel": "/meta/handshake", "x": ' + b"[" * 100 + b"]" * 100 + b"}]",
        "nested too deeply",
    ),
    "a number out of range": (b'[{"channel": "/meta/connect", "id": 1e999}]', "out of range"),
    "a 5000-digit integer": (b'[{"channel": "/meta/connect", "id": ' + b"9" * 5000 + b"}]", ""),
    "NaN": (b'[{"channel": "/meta/connect", "id": NaN}]', "NaN"),
    "a lone surrogate": (b'[{"channel": "/meta/handshake", "x": "\\ud800"}]', "surrogate"),
    "a repeated key": (b'[{"channel": "/meta/handshake", "channel": "/x"}]', "more than once"),
    "invalid UTF-8": (b'[{"channel": "\xff\xfe"}]', "Malformed JSON"),
    "truncated": (b'[{"channel": "/meta/handshake"', "Malformed JSON"),
    "a bare number": (b"1", "JSON array of objects"),
    "trailing garbage": (b"[] []", "Malformed JSON"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_a_hostile_body_gets_400_and_the_connection_goes_on(
    each: AppHarness, name: str
) -> None:
    body, reason = HOSTILE[name]
    assert len(body) <= LIMIT
    async with wire_to(each) as wire:
        await wire.send(post(body))
        reply = await wire.reply()
        assert reply.status == 400
        assert reply.headers["content-type"] == "text/plain;charset=UTF-8"
        text = reply.body.decode()
        assert text.startswith(REASON) and reason in text, text
        await handshake(wire, "alice")


async def test_a_hostile_body_gets_the_same_answer_with_and_without_the_protocol(
    pair: dict[str, AppHarness],
) -> None:
    for name, (body, _) in HOSTILE.items():
        answers: dict[str, tuple[Any, ...]] = {}
        for kind, harness in pair.items():
            async with wire_to(harness) as wire:
                await wire.send(post(body))
                answers[kind] = shape(await wire.reply())
        assert answers["fast"] == answers["uvicorn"], name


# ------------------------------------------------------------------ the rest


async def test_an_idle_connection_is_closed_but_not_a_held_one(
    own: Callable[..., AppHarness],
) -> None:
    harness = own("fast", keep_alive=1)
    agent = "agent14"
    async with wire_to(harness) as wire:
        await wire.send(post(HANDSHAKE, agent=agent))
        first = await wire.reply()
        client_id = await start_session(wire, agent)
        await wire.send(post([connect_message(client_id, "held")], agent=agent))
        await until_held(harness, client_id)
        await asyncio.sleep(2.5)  # past timeout_keep_alive, and past a second of uvicorn's date
        harness.publish(agent, {"n": 14})
        reply = await wire.reply()
        assert reply.json()[1]["data"] == {"n": 14}  # held longer than the keep-alive: answered
        date = email.utils.parsedate_to_datetime
        assert date(reply.headers["date"]) > date(first.headers["date"])  # uvicorn's new date
        assert await wire.closed()  # then idle: closed after timeout_keep_alive


class _Failing:
    """A policy that fails (a bug in the server's code, not the client's input)."""

    def can_handshake(self, agent_id: str) -> str | None:
        raise RuntimeError("the policy failed")

    def can_subscribe(self, agent_id: str, pattern: str) -> str | None:
        return None

    def can_publish(self, agent_id: str, channel: str, data: Any) -> str | None:
        return None


@pytest.mark.parametrize("kind", KINDS)
async def test_a_failure_in_the_server_is_a_500_and_the_server_goes_on(
    own: Callable[..., AppHarness], kind: str
) -> None:
    harness = own(kind, policy=_Failing())
    async with wire_to(harness) as wire:
        await wire.send(post(HANDSHAKE) + get("/other"))
        reply = await wire.reply()
        assert reply.status == 500 and reply.body == b"Internal Server Error"
        assert reply.headers["connection"] == "close"
        assert await wire.closed()
    async with wire_to(harness) as wire:
        await wire.send(get("/other"))
        assert (await wire.reply()).body == b"other"


@pytest.mark.parametrize("kind", KINDS)
async def test_a_reply_that_cannot_be_encoded_is_a_500(
    own: Callable[..., AppHarness], kind: str
) -> None:
    harness = own(kind, grace=1)
    agent = "agent15"
    async with wire_to(harness) as wire:
        client_id = await start_session(wire, agent)
        await wire.send(post([connect_message(client_id, "held")], agent=agent))
        await until_held(harness, client_id)
        # Server code handing over what JSON cannot carry (a bug of its own, not the client's).
        unencodable = {"x": object()}
        harness.call(lambda: harness.engine.deliver(agent, "/me/interactions", unencodable))
        reply = await wire.reply(timeout=5)
        assert reply.status == 500 and reply.headers["connection"] == "close"
        assert await wire.closed()


class _Lines(logging.Handler):
    """The access log's records: as messages, and as uvicorn's own formatter prints them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.printed: list[str] = []
        self.printer = AccessFormatter(
            '%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False
        )

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.printed.append(self.printer.format(record))


async def access_logs(
    own: Callable[..., AppHarness], request: bytes, replies: int
) -> dict[str, tuple[list[str], list[str]]]:
    """Each server's access log of ``request`` sent on one connection (``replies`` answers):
    the records' messages and the lines uvicorn prints, the connection's own address (the
    client) written ``client``."""
    access = logging.getLogger("uvicorn.access")
    level = access.level
    logged: dict[str, tuple[list[str], list[str]]] = {}
    try:
        for kind in KINDS:
            lines = _Lines()
            harness = own(kind, log_level="info")
            access.addHandler(lines)
            try:
                async with wire_to(harness) as wire:
                    host, port = wire.writer.get_extra_info("sockname")[:2]
                    await wire.send(request)
                    for _ in range(replies):
                        await wire.reply()
                harness.stop()
            finally:
                access.removeHandler(lines)
            me = f"{host}:{port}"
            logged[kind] = (
                [line.replace(me, "client") for line in lines.lines],
                [line.replace(me, "client") for line in lines.printed],
            )
    finally:
        access.setLevel(level)
    return logged


async def test_the_access_log_line_is_uvicorns(own: Callable[..., AppHarness]) -> None:
    request = post(HANDSHAKE, PATH + "/handshake?x=1") + post(b"{nope")
    logged = {kind: lines for kind, (lines, _) in (await access_logs(own, request, 2)).items()}
    assert logged["fast"] == logged["uvicorn"]
    assert logged["fast"] == [
        f'client - "POST {PATH}/handshake?x=1 HTTP/1.1" 200',
        f'client - "POST {PATH} HTTP/1.1" 400',
    ]


@pytest.mark.parametrize(
    "forwarded", ["", "X-Forwarded-For: 203.0.113.7\r\n"], ids=["direct", "forwarded"]
)
async def test_the_access_log_prints_as_uvicorns(
    own: Callable[..., AppHarness], forwarded: str
) -> None:
    logs = await access_logs(own, post(HANDSHAKE, headers=forwarded), 1)
    printed = {kind: lines for kind, (_, lines) in logs.items()}
    assert printed["fast"] == printed["uvicorn"]


async def test_the_authenticator_sees_the_same_client_with_and_without_the_protocol(
    own: Callable[..., AppHarness],
) -> None:
    seen: dict[str, list[str | None]] = {}
    basic = BasicAuthenticator(USERS)
    for kind in KINDS:
        hosts: list[str | None] = []
        seen[kind] = hosts

        async def authenticate(request: AuthRequest, hosts: list[str | None] = hosts) -> str | None:
            hosts.append(request.client_host)
            return await basic(request)

        harness = own(kind, authenticator=authenticate)
        async with wire_to(harness) as wire:
            await wire.send(post(HANDSHAKE, headers="X-Forwarded-For: 203.0.113.7\r\n"))
            assert (await wire.reply()).json()[0]["successful"] is True
    assert seen["fast"] == seen["uvicorn"]
