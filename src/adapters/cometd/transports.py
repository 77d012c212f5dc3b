"""HTTP long-polling and websocket transports: in front of an ASGI app, or as Starlette routes.

Long-polling is a bare ASGI endpoint (no Request/Response objects): every held connect is one
suspended request, so its per-request cost is the server's per-session cost. For the same
reason ``CometdApp`` serves the Bayeux paths *in front of* an application rather than through
its router and middleware, whose frames a held request would otherwise keep suspended. The JS
client appends ``/handshake``, ``/connect``, ``/disconnect`` to the URL
(``appendMessageTypeToURL``), so every sub-path is served by the same endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage
from starlette.websockets import WebSocket, WebSocketDisconnect

from .config import CometdSettings
from .protocol import (
    ERR_BAD_JSON,
    LONG_POLLING,
    META_UNSUCCESSFUL,
    WEBSOCKET,
    BadPayload,
    Outgoing,
    encode,
    encode_text,
    error_reply,
    parse_batch,
)
from .server import BayeuxServer, RequestContext

JSON_CONTENT_TYPE = b"application/json;charset=UTF-8"
PLAIN_CONTENT_TYPE = b"text/plain;charset=UTF-8"


def parse_cookies(header: str | None) -> dict[str, str]:
    """``name=value; name2=value2`` (RFC 6265 §4.2.1); malformed pairs are skipped."""
    cookies: dict[str, str] = {}
    if not header:
        return cookies
    for pair in header.split(";"):
        name, sep, value = pair.strip().partition("=")
        if sep and name:
            cookies[name] = value.strip().strip('"')
    return cookies


def add_header(headers: dict[str, str], name: str, value: str) -> None:
    """One header line into ``headers`` (``name`` lower-case): a repeated line replaces the
    earlier one, except the lists that several lines may carry."""
    if name == "cookie" and name in headers:
        headers[name] += "; " + value  # HTTP/2 may split cookies
    elif name == "x-forwarded-for" and name in headers:
        # Several lines are one list (RFC 9110 §5.3), as uvicorn and the HTTP API read it:
        # keeping only the last would let a client's own line hide the proxy's.
        headers[name] += ", " + value
    else:
        headers[name] = value


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        add_header(headers, raw_name.decode("latin-1").lower(), raw_value.decode("latin-1"))
    return headers


def form_message(body: bytes, content_type: str) -> bytes:
    """The batch in a long-poll body: the body, or its form field ``message`` (the spec lets
    long-polling send the batch as ``application/x-www-form-urlencoded``)."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        form = parse_qs(body.decode("utf-8", "replace"))
        return form.get("message", [""])[0].encode()
    return body


def bad_batch_reason(exc: BadPayload) -> str:
    """The 400's text: says why (e.g. "data.text: the key 'text' is given more than once")."""
    return f"the body is not a JSON array of Bayeux messages: {exc}"


def browser_cookie(settings: CometdSettings, value: str) -> bytes:
    """The ``Set-Cookie`` value giving a browser its ``BAYEUX_BROWSER`` id."""
    cookie = f"{settings.browser_cookie}={value}; Path=/; HttpOnly"
    if settings.browser_cookie_secure:
        cookie += "; Secure; SameSite=None"
    return cookie.encode()


def _client_host(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


class LongPollingEndpoint:
    """``POST`` a JSON batch (or the form field ``message=``), get the reply batch."""

    def __init__(self, server: BayeuxServer) -> None:
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _plain(send, 405, b"POST a Bayeux message batch", [(b"allow", b"POST")])
            return
        server = self.server
        limit = server.settings.max_body_bytes
        headers = _headers(scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _plain(send, 413, b"request body too large")
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _plain(send, 413, b"request body too large")
                return
            chunks.append(chunk)
            more = event.get("more_body", False)
        body = form_message(b"".join(chunks), headers.get("content-type", ""))
        try:
            batch = parse_batch(body)
        except BadPayload as exc:
            await _plain(send, 400, bad_batch_reason(exc).encode())
            return
        ctx = RequestContext(
            headers,
            parse_cookies(headers.get("cookie")),
            _client_host(scope),
            LONG_POLLING,
        )
        outcome = await server.process(batch, ctx)
        replies = outcome.replies
        held = outcome.held
        set_cookie = ctx.set_browser_cookie
        if held is not None:
            # A held connect is the idle cost of a session: drop what is not needed any more.
            del outcome, ctx, headers, chunks, body, batch
            try:
                answered = await _answer_or_leave(held.future, receive)
            except asyncio.CancelledError:
                # The HTTP server gave up on the request (shutdown after its grace period):
                # forget the held connect; there is nobody left to answer.
                server.abandon(held)
                return
            if not answered:
                # The client went away while held (a closed tab): its messages stay queued
                # for its next connect, and its maxInterval counts from now.
                server.abandon(held)
                return
            result = None if held.future.cancelled() else held.future.result()
            if result is None:
                # Cancelled by a newer connect of the same session: an HTTP error, never 408
                # (Chrome retries 408 by itself, cometd#883).
                await _plain(send, server.settings.duplicate_connect_status, b"")
                return
            replies = [*replies, *result]
        extra: list[tuple[bytes, bytes]] = []
        if set_cookie is not None:
            extra.append((b"set-cookie", browser_cookie(server.settings, set_cookie)))
        await _respond(send, 200, encode(replies), JSON_CONTENT_TYPE, extra)


async def _answer_or_leave(future: asyncio.Future[list[Outgoing] | None], receive: Receive) -> bool:
    """Wait for a held connect's ``future``, or for its client to leave: True when the future
    is done (answered or superseded), False when the server reported ``http.disconnect``
    first. ASGI servers answer a ``receive`` after the whole body only when the connection
    closes (ASGI HTTP spec, "Disconnect"), so this is how a held request notices a client gone
    before its ``timeout``."""
    while not future.done():
        leaving = asyncio.ensure_future(receive())
        try:
            await asyncio.wait((future, leaving), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not leaving.done():
                leaving.cancel()
        if future.done():
            return True
        if leaving.exception() is not None:
            return False  # the server cannot read the connection any more: nobody to answer
        if leaving.result().get("type") == "http.disconnect":
            return False
    return True


async def _plain(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    await _respond(send, status, body, PLAIN_CONTENT_TYPE, extra or [])


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-cache, no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class WebSocketLink:
    """One websocket: replies and pushed messages leave through one writer, in order."""

    __slots__ = ("_close_code", "_outbox", "_wakeup", "agent_id", "websocket")

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.agent_id: str | None = None
        self._outbox: list[Outgoing] = []
        self._wakeup = asyncio.Event()
        self._close_code: int | None = None

    def push(self, messages: Sequence[Outgoing]) -> None:
        if self._close_code is not None or not messages:
            return
        self._outbox.extend(messages)
        self._wakeup.set()

    def close(self, code: int = 1001) -> None:
        """Ask the writer to flush and close the socket (default: 1001, going away)."""
        if self._close_code is None:
            self._close_code = code
            self._wakeup.set()

    def on_held_done(self, future: asyncio.Future[list[Outgoing] | None]) -> None:
        if not future.cancelled() and (result := future.result()) is not None:
            self.push(result)

    async def write_forever(self) -> None:
        websocket = self.websocket
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._outbox:
                # Everything queued so far leaves as one frame (one JSON array); delivered
                # messages in it bring the bytes they were encoded to for the first session.
                frame, self._outbox = self._outbox, []
                await websocket.send_text(encode_text(frame))
            if self._close_code is not None:
                await websocket.close(code=self._close_code)
                return


class WebSocketEndpoint:
    """The same batches over a websocket; the server may push at any time."""

    def __init__(self, server: BayeuxServer) -> None:
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = WebSocket(scope, receive, send)
        await websocket.accept()
        server = self.server
        link = WebSocketLink(websocket)
        headers = _headers(scope)
        ctx = RequestContext(
            headers,
            parse_cookies(headers.get("cookie")),
            _client_host(scope),
            WEBSOCKET,
            link,
        )
        server.link_opened(link)
        writer = asyncio.create_task(link.write_forever(), name="cometd-ws-writer")
        client_gone = False
        try:
            while not writer.done():
                # The frame is handled in its own coroutine (and not bound to a local here), so
                # nothing of it stays referenced while the socket waits for the next one.
                outcome = await self._on_event(await websocket.receive(), ctx, link)
                if outcome is not None:
                    client_gone = outcome
                    break
        except (WebSocketDisconnect, RuntimeError):
            client_gone = True
        finally:
            server.link_closed(link)
            link.close()
            if client_gone:
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    async def _on_event(
        self, event: ASGIMessage, ctx: RequestContext, link: WebSocketLink
    ) -> bool | None:
        """Handle one websocket event; ``True``: the client left, ``False``: we close."""
        if event["type"] == "websocket.disconnect":
            return True
        payload: str | bytes | None = event.get("text")
        if payload is None:
            payload = event.get("bytes") or b""
        if len(payload) > self.server.settings.max_body_bytes:
            link.close(1009)  # message too big
            return False
        try:
            batch = parse_batch(payload)
        except BadPayload as exc:
            # Bayeux error "code:args:message": the reason is the message's tail.
            link.push([error_reply(None, META_UNSUCCESSFUL, f"{ERR_BAD_JSON}: {exc}")])
            return None
        outcome = await self.server.process(batch, ctx)
        link.push(outcome.replies)
        if outcome.held is not None:
            outcome.held.future.add_done_callback(link.on_held_done)
        return None


class CometdApp:
    """Serves Bayeux at ``path`` in front of ``app``; every other request goes to ``app``.

    A held long-poll keeps its whole call chain suspended for up to ``timeout``. Mounted as
    routes inside a Starlette or FastAPI app (``cometd_routes``), that chain includes the app's
    middleware, exception handlers and router: several KiB more per idle session than this one
    frame (measured with 10,000 held connects, docs/performance.md).

    The Bayeux paths therefore bypass ``app``'s middleware. The endpoints need none: they
    authenticate with the ``BayeuxServer``'s authenticator and never raise for client input.
    The lifespan and every other path are ``app``'s.
    """

    __slots__ = ("_app", "_long_polling", "_path", "_websocket")

    def __init__(
        self, server: BayeuxServer, app: ASGIApp, path: str = "/api/v2/notifications"
    ) -> None:
        self._app = app
        self._path = path.rstrip("/")
        settings = server.settings
        self._long_polling = LongPollingEndpoint(server) if settings.long_polling else None
        self._websocket = WebSocketEndpoint(server) if settings.websocket else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and self._long_polling is not None:
            path = _route_path(scope)
            base = self._path
            if path == base or (path.startswith(base) and path[len(base)] == "/"):
                await self._long_polling(scope, receive, send)
                return
        elif kind == "websocket" and self._websocket is not None:
            path = _route_path(scope)
            if path in (self._path, self._path + "/"):
                await self._websocket(scope, receive, send)
                return
        await self._app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The request path below the ASGI ``root_path`` (what Starlette's router matches)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def cometd_routes(server: BayeuxServer, path: str = "/api/v2/notifications") -> list[BaseRoute]:
    """Routes serving Bayeux at ``path`` (and every sub-path the clients append)."""
    path = path.rstrip("/")
    long_polling = LongPollingEndpoint(server)
    websocket = WebSocketEndpoint(server)
    routes: list[BaseRoute] = []
    if server.settings.websocket:
        routes += [
            WebSocketRoute(path, websocket, name="cometd-websocket"),
            WebSocketRoute(path + "/", websocket),
        ]
    if server.settings.long_polling:
        routes += [
            Route(path, long_polling, name="cometd"),
            Route(path + "/{message_type:path}", long_polling),
        ]
    return routes


def create_app(server: BayeuxServer, path: str = "/api/v2/notifications") -> CometdApp:
    """A standalone app serving ``path`` whose lifespan starts and stops ``server``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    return CometdApp(server, Starlette(lifespan=lifespan), path)
