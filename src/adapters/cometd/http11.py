"""Bayeux long-polling straight off the socket, under uvicorn: ``long_polling_protocol``.

Every long-poll cycle is one HTTP request, and an idle session is one suspended request. Under
uvicorn each of them is an ASGI request: a scope, a task, the receive/send callables and the
response events (41.5 µs of CPU for the bare request of a long poll, before any Bayeux work),
and a held request keeps uvicorn's per-request state (about 11 KiB) for as long as it waits
(docs/performance.md, "CometD").

The protocol built here reads the plain Bayeux POSTs itself: ``POST <path>[/...] HTTP/1.1``,
a ``Host``, a ``Content-Length`` body within ``max_body_bytes`` and header lines of the strict
RFC 9112 §5 form. Anything else on a connection (another path, a websocket upgrade, a chunked
body, ``Expect``, HTTP/1.0, an encoded or absolute target, anything malformed or large) is
handed, from that request's first byte and with every byte read since, to the protocol uvicorn
would have used. From then on the connection is uvicorn's, and every rule about it (parsing,
errors, limits, websockets, the app's middleware) is the same as without this module. A request
served here gets the answer ``LongPollingEndpoint`` gives under uvicorn: both call the same
``BayeuxServer`` through the same helpers.

A request runs at once, in the event loop's turn that read it (``eager.start``): most cycles
never wait, so they need no task and are answered in that same turn. A held connect keeps no
task either: the held connect's future answers the connection when it resolves.
"""

from __future__ import annotations

import asyncio
import functools
import http
import logging
import re
from collections.abc import Callable
from typing import Any, ClassVar, cast

from . import eager
from .protocol import LONG_POLLING, BadPayload, Outgoing, encode, parse_batch
from .server import BayeuxServer, Outcome, RequestContext
from .sessions import HeldConnect
from .transports import (
    JSON_CONTENT_TYPE,
    PLAIN_CONTENT_TYPE,
    add_header,
    bad_batch_reason,
    browser_cookie,
    form_message,
    parse_cookies,
)

log = logging.getLogger(__name__)

# RFC 9110 §5.6.2 token; RFC 9112 §5: field-line = field-name ":" OWS field-value OWS, no
# whitespace before the colon and no obs-fold. Values: visible octets, SP, HTAB, obs-text.
_HEADER_LINES = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*")
# The origin-form target without percent-encoding (an encoded path is uvicorn's to decode).
_REQUEST_LINE = re.compile(rb"POST (/[!$&'()*+,;=:@\-._~0-9A-Za-z/]*)(?:\?[!-~]*)? HTTP/1\.1\r\n")
_MAX_HEAD = 16 * 1024
"""Larger heads (a browser's cookies rarely pass 8 KiB) go to uvicorn, which has no limit of
its own here: the fast path is only ever stricter."""
# Anything that changes how the body or the connection is read is uvicorn's.
_NOT_HERE = frozenset({"transfer-encoding", "expect", "upgrade", "content-encoding", "te"})


@functools.lru_cache(maxsize=64)
def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""  # RFC 9112 §4: the reason phrase may be empty, its space may not
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("ascii")


class _Served:
    """What every connection of one server shares: the Bayeux server, the path, uvicorn's
    protocol for everything else, and the response head's constant part."""

    __slots__ = (
        "access_log",
        "bayeux",
        "default_head",
        "default_list",
        "fallback",
        "prefix",
        "proxy",
        "resolved",
        "route",
    )

    def __init__(self, bayeux: BayeuxServer, path: str, fallback: str | type[asyncio.Protocol]):
        self.bayeux = bayeux
        self.route = path.rstrip("/").encode("ascii")
        self.prefix = b"POST " + self.route
        self.fallback: Any = fallback
        self.resolved = False
        self.access_log = False
        self.default_list: object = None
        self.default_head = b""
        self.proxy: Any = None

    def resolve(self, config: Any) -> None:
        """On the first connection: uvicorn's own protocol class, its proxy rule and its
        access-log switch."""
        if self.resolved:
            return
        fallback = self.fallback
        if isinstance(fallback, str):
            from uvicorn.config import HTTP_PROTOCOLS
            from uvicorn.importer import import_from_string

            fallback = import_from_string(HTTP_PROTOCOLS.get(fallback, fallback))
        self.fallback = fallback
        if config.proxy_headers:
            # The client a request is from is what uvicorn's own middleware makes of it
            # (``forwarded_client``), whatever its version's rules.
            from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

            self.proxy = ProxyHeadersMiddleware(_noop_app, trusted_hosts=config.forwarded_allow_ips)
        access = logging.getLogger("uvicorn.access")
        self.access_log = bool(config.access_log) and access.hasHandlers()
        self.resolved = True

    def forwarded_client(
        self, peer: tuple[str, int] | None, forwarded: str
    ) -> tuple[str, int] | None:
        """The client under ``proxy_headers``: the scope uvicorn's ``ProxyHeadersMiddleware``
        leaves for a request from ``peer`` carrying ``X-Forwarded-For: forwarded`` (several
        lines already joined, as it joins them), so that an authenticator sees the client it
        sees through ASGI. The middleware rewrites the scope before calling the app, which
        does nothing: the call completes without suspending."""
        scope: dict[str, Any] = {
            "type": "http",
            "scheme": "http",
            "client": peer,
            "headers": [(b"x-forwarded-for", forwarded.encode("latin-1"))],
        }
        call = self.proxy(scope, _noop_receive, _noop_send)
        try:
            call.send(None)
        except StopIteration:
            pass
        else:  # pragma: no cover - a middleware that awaits: keep the peer
            call.close()
            return peer
        client = scope.get("client")
        return (str(client[0]), int(client[1])) if client else None

    def head_tail(self, default_headers: list[tuple[bytes, bytes]]) -> bytes:
        """uvicorn's default headers (``date``, ``server``, ``--header``) as header lines;
        uvicorn replaces the list once a second (the date), so it is joined once a second."""
        if default_headers is not self.default_list:
            self.default_head = b"".join(n + b": " + v + b"\r\n" for n, v in default_headers)
            self.default_list = default_headers
        return self.default_head


async def _noop_app(scope: Any, receive: Any, send: Any) -> None:
    return None


async def _noop_receive() -> Any:  # pragma: no cover - never called
    raise RuntimeError("not an ASGI request")


async def _noop_send(message: Any) -> None:  # pragma: no cover - never called
    raise RuntimeError("not an ASGI request")


_Access = tuple[bytes, tuple[str, int] | None]
"""What the access log needs of a request: its request line and its client."""


def _log_access(access: _Access, status: int) -> None:
    """uvicorn's access line, in uvicorn's format and arguments, which its ``AccessFormatter``
    reads (``client - "POST /path HTTP/1.1" 200``; the client as uvicorn's scope holds it)."""
    line, client = access
    method, target, version = line.rstrip(b"\r\n").decode("latin-1").split(" ")
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d',
        f"{client[0]}:{client[1]}" if client else "",
        method,
        target,
        version.removeprefix("HTTP/"),
        status,
    )


class LongPollingProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: Bayeux POSTs answered here, anything else handed to uvicorn.

    Built by ``long_polling_protocol`` (which binds the server and path); uvicorn creates one per
    connection with ``config``, ``server_state`` and ``app_state``, as it does its own.
    """

    _served: ClassVar[_Served]

    __slots__ = (
        "_again",
        "_app_state",
        "_buffer",
        "_busy",
        "_close_after",
        "_config",
        "_held",
        "_idle",
        "_idle_since",
        "_loop",
        "_peer_address",
        "_read_paused",
        "_scanned",
        "_server_state",
        "_serving",
        "_write_paused",
        "transport",
    )

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self._served.resolve(config)
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._loop = _loop or asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._scanned = 0
        """How far the buffer was searched for the end of the head (a trickled head is not
        searched again from its start for every byte)."""
        self._busy = False
        self._serving = False
        """A request is running its first step (``eager.start``), inside ``_next``."""
        self._again = False
        """It was answered meanwhile and more is buffered: ``_next`` goes on with that, in its
        loop (a pipelined burst served by recursion would grow the stack by each request)."""
        self._close_after = False
        self._held: tuple[HeldConnect, list[Outgoing], bytes, _Access | None] | None = None
        """A held connect, the replies sent with it, its Set-Cookie line and (with the access
        log on) its request line and client."""
        self._idle: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._peer_address: tuple[str, int] | None = None
        self._read_paused = False
        self._write_paused = False

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses, only alike)
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self._server_state.connections.add(self)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple | list) and len(peer) >= 2:
            self._peer_address = (str(peer[0]), int(peer[1]))
        self._wait_idle()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._busy:
            # Pipelined (or early) bytes wait for the answer in progress, within a bound.
            if len(self._buffer) > _MAX_HEAD + self._served.bayeux.settings.max_body_bytes:
                self._pause_reading()
            return
        self._next()

    def eof_received(self) -> bool | None:
        return None  # the transport closes, as uvicorn's protocols let it

    def connection_lost(self, exc: Exception | None) -> None:
        self._server_state.connections.discard(self)
        self._cancel_idle()
        held = self._held
        if held is not None:
            self._held = None
            self._served.bayeux.abandon(held[0])
        self._buffer = bytearray()

    def pause_writing(self) -> None:
        # A slow reader: stop reading its requests until it reads our answers (uvicorn's
        # FlowControl does the same).
        self._write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._resume_reading()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close when idle, else after the answer in progress."""
        transport = self.transport
        if transport is None:
            return
        if self._busy:
            self._close_after = True
        else:
            transport.close()

    # ---------------------------------------------------------------- requests

    def _next(self) -> None:
        """Serve the requests at the start of the buffer, one after the other for as long as
        each is answered at once."""
        while self._next_one():
            pass

    def _next_one(self) -> bool:
        """Serve the request at the start of the buffer, if it is whole; hand over otherwise.
        True when it was answered at once and more is buffered."""
        buffer = self._buffer
        if not buffer:
            return False
        served = self._served
        prefix = served.prefix
        if len(buffer) < len(prefix) + 1:
            if not prefix.startswith(buffer[: len(prefix)]):
                self._hand_over()
            return False  # too short to tell yet
        if not buffer.startswith(prefix) or buffer[len(prefix)] not in b" /?":
            self._hand_over()
            return False
        start = max(0, self._scanned - 3)
        end = buffer.find(b"\r\n\r\n", start)
        if end < 0:
            self._scanned = len(buffer)
            if len(buffer) > _MAX_HEAD:
                self._hand_over()
            return False
        if end + 4 > _MAX_HEAD:
            self._hand_over()
            return False
        line = _REQUEST_LINE.match(buffer, 0, end + 2)
        if line is None:
            self._hand_over()
            return False
        line_end = line.end()
        if _HEADER_LINES.fullmatch(buffer, line_end, end + 2) is None:
            self._hand_over()
            return False
        headers = self._headers(bytes(buffer[line_end:end]))
        if headers is None:
            self._hand_over()
            return False
        declared = headers.get("content-length", "0")
        limit = served.bayeux.settings.max_body_bytes
        if not (declared.isdigit() and declared.isascii()) or int(declared) > limit:
            self._hand_over()  # uvicorn refuses a bad length; the endpoint answers 413
            return False
        total = end + 4 + int(declared)
        if len(buffer) < total:
            return False  # the body is on its way
        body = bytes(buffer[end + 4 : total])
        request_line = bytes(line.group(0))  # before the buffer it was matched in moves on
        del buffer[:total]
        self._scanned = 0
        keep_alive = "close" not in headers.get("connection", "").lower()
        self._busy = True
        # Run at once: a cycle that never waits (a connect answered or held) needs no task.
        self._serving = True
        try:
            task = eager.start(self._loop, self._serve(headers, body, keep_alive, request_line))
        finally:
            self._serving = False
        if task is not None:
            tasks = self._server_state.tasks  # what uvicorn's shutdown waits for, as for its own
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            return False
        again, self._again = self._again, False
        return again

    def _headers(self, block: bytes) -> dict[str, str] | None:
        """The header lines as ``LongPollingEndpoint`` sees them (lower-case names, several
        lines of a list joined), or ``None`` when the request is not one to serve here."""
        headers: dict[str, str] = {}
        host = False
        for raw in block.split(b"\r\n") if block else ():
            name_b, _, value_b = raw.partition(b":")
            name = name_b.decode("ascii").lower()
            if name in _NOT_HERE:
                return None
            value = value_b.strip(b" \t").decode("latin-1")
            if name == "content-length" and name in headers:
                return None  # several lengths: uvicorn's to refuse
            if name == "host":
                if host:
                    return None  # RFC 9112 §3.2: exactly one
                host = True
            add_header(headers, name, value)
        return headers if host else None

    async def _serve(
        self, headers: dict[str, str], body: bytes, keep_alive: bool, line: bytes
    ) -> None:
        served = self._served
        bayeux = served.bayeux
        if not keep_alive:
            self._close_after = True
        client = self._peer_address
        forwarded = headers.get("x-forwarded-for")
        if forwarded is not None and served.proxy is not None:
            client = served.forwarded_client(client, forwarded)
        access = (line, client) if served.access_log else None
        try:
            body = form_message(body, headers.get("content-type", ""))
            try:
                batch = parse_batch(body)
            except BadPayload as exc:
                reason = bad_batch_reason(exc).encode()
                self._answer(400, reason, PLAIN_CONTENT_TYPE, b"", access)
                return
            ctx = RequestContext(
                headers,
                parse_cookies(headers.get("cookie")),
                client[0] if client else None,
                LONG_POLLING,
            )
            outcome: Outcome = await bayeux.process(batch, ctx)
        except Exception:
            self._failed(access)
            return
        cookie = ctx.set_browser_cookie
        extra = b""
        if cookie is not None:
            extra = b"set-cookie: " + browser_cookie(bayeux.settings, cookie) + b"\r\n"
        held = outcome.held
        if held is None:
            self._answer_batch(outcome.replies, extra, access)
            return
        if self.transport is None or self.transport.is_closing():
            bayeux.abandon(held)  # the client left while its request was read
            self._busy = False
            return
        # Held: no task waits; the future answers (what the reply still needs is kept).
        self._held = (held, outcome.replies, extra, access)
        held.future.add_done_callback(self._held_done)

    def _held_done(self, future: asyncio.Future[list[Outgoing] | None]) -> None:
        held = self._held
        if held is None:
            return  # the connection was lost and the connect abandoned
        self._held = None
        _, replies, extra, access = held
        result = None if future.cancelled() else future.result()
        if result is None:
            # Cancelled by a newer connect of the same session: an HTTP error, never 408
            # (Chrome retries 408 by itself, cometd#883).
            status = self._served.bayeux.settings.duplicate_connect_status
            self._answer(status, b"", PLAIN_CONTENT_TYPE, b"", access)
            return
        self._answer_batch([*replies, *result], extra, access)

    def _answer_batch(self, replies: list[Outgoing], extra: bytes, access: _Access | None) -> None:
        """A 200 with the reply batch; a 500 (and close) if the batch cannot be encoded (a
        service's or publisher's data JSON cannot carry), as uvicorn answers an app that
        raises: every request gets an answer."""
        try:
            body = encode(replies)
        except Exception:
            self._failed(access)
            return
        self._answer(200, body, JSON_CONTENT_TYPE, extra, access)

    def _failed(self, access: _Access | None) -> None:
        log.exception("cometd: a long-polling request failed")
        self._close_after = True
        self._answer(500, b"Internal Server Error", PLAIN_CONTENT_TYPE, b"", access)

    def _answer(
        self,
        status: int,
        body: bytes,
        content_type: bytes,
        extra: bytes,
        access: _Access | None,
    ) -> None:
        """Write one response; then the next pipelined request, or wait for one."""
        transport = self.transport
        self._busy = False
        if transport is None or transport.is_closing():
            return
        served = self._served
        state = self._server_state
        close = self._close_after
        transport.write(
            b"".join(
                (
                    _status_line(status),
                    b"content-type: ",
                    content_type,
                    b"\r\ncontent-length: %d\r\ncache-control: no-cache, no-store\r\n" % len(body),
                    extra,
                    served.head_tail(state.default_headers),
                    b"connection: close\r\n\r\n" if close else b"\r\n",
                    body,
                )
            )
        )
        state.total_requests += 1
        if access is not None:
            _log_access(access, status)
        if close:
            transport.close()
            return
        self._resume_reading()
        if not self._buffer:
            self._wait_idle()
        elif self._serving:
            self._again = True  # answered within _next's loop: it goes on
        else:
            self._next()

    # ---------------------------------------------------------------- the connection

    def _hand_over(self) -> None:
        """From this request on, the connection is uvicorn's: its protocol gets the transport
        and every byte of the request read so far, as if it had been there from the start."""
        transport = self.transport
        assert transport is not None
        self._cancel_idle()
        self._server_state.connections.discard(self)
        fallback: Callable[..., asyncio.Protocol] = self._served.fallback
        protocol = fallback(
            config=self._config,
            server_state=self._server_state,
            app_state=self._app_state,
            _loop=self._loop,
        )
        data = bytes(self._buffer)
        self._buffer = bytearray()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._write_paused:
            protocol.pause_writing()
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        self.transport = None
        if data:
            protocol.data_received(data)

    def _wait_idle(self) -> None:
        """Close after ``timeout_keep_alive`` without a request (RFC 9112 §9.8), as uvicorn.

        One timer per connection at a time, not one per request: it is armed when the
        connection falls idle with none pending, and when it fires early (the connection
        answered since) it is set again for the rest of the time."""
        self._idle_since = self._loop.time()
        if self._idle is None:
            self._idle = self._loop.call_later(self._config.timeout_keep_alive, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self._idle = None
        transport = self.transport
        if self._busy or self._buffer or transport is None:
            return  # a request is in progress: armed again once it is answered
        rest = self._idle_since + self._config.timeout_keep_alive - self._loop.time()
        if rest > 0:
            self._idle = self._loop.call_later(rest, self._idle_timeout)
        else:
            transport.close()

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and not self._write_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()


def long_polling_protocol(
    bayeux: BayeuxServer,
    path: str = "/api/v2/notifications",
    *,
    fallback: str | type[asyncio.Protocol] = "auto",
) -> type[LongPollingProtocol]:
    """The protocol class to give uvicorn (``uvicorn.Config(app, http=...)``): Bayeux
    long-polling at ``path`` served off the socket, everything else by ``fallback`` (uvicorn's
    ``auto``, ``httptools`` or ``h11``, or a protocol class), which serves ``app``.

    ``app`` should still be a ``CometdApp`` for the same server and path: it serves the
    websocket transport and whatever this protocol hands over (an HTTP/1.0 poll, a chunked
    body), with the same answers.
    """
    served = _Served(bayeux, path, fallback)
    namespace = {"__slots__": (), "_served": served}
    bound = type("BoundLongPollingProtocol", (LongPollingProtocol,), namespace)
    return cast("type[LongPollingProtocol]", bound)
