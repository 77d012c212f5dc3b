"""The hot routes as plain ASGI endpoints in front of FastAPI's router.

An operation POST costs a few hundred microseconds of Python inside the framework before the
engine is even called: the router tries every route's regex in turn, builds a ``Request``,
solves the endpoint's dependencies, runs it under an exit stack and two exception layers, and
wraps ``send`` once per layer (docs/performance.md, "HTTP API"). The routes an agent's desktop
and a GWS client call all day (the operation POSTs, the reads of one interaction and of the
agent's list) skip all of that here: ``HotRoutes`` matches the method and path itself and calls
the route's handler, the very function FastAPI's endpoint for that route calls
(``adapters.http.app``). Each route is defined once, and FastAPI still documents it in OpenAPI
and answers everything else (a trailing slash, HEAD, a wrong method, the docs).

It sits *inside* the authentication middleware and the server-error layer, not in front of the
whole application: a fast request is authenticated by the one ``AuthMiddleware`` (cookie, CSRF,
the desktop's no-challenge rule), and an exception still becomes the seed's 500, exactly as on
the framework's path. ``tests/http/test_hot_routes.py`` holds both paths' answers equal, and
equal to the documented schema, for every operation and error.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

BodyReader = Callable[[], Awaitable[Any]]
"""Reads the request's body as JSON (``read_json``'s rules), raising the core's
``InvalidRequest``/``TooLarge``: called by a handler that takes a body, never by a read."""

Handler = Callable[[str, Mapping[str, str], BodyReader], Awaitable[Response]]
"""A route's handler: the authenticated agent, the path's parameters, the body reader."""

_PARAM = re.compile(r"{([a-z_]+)}")


def compile_path(path: str) -> re.Pattern[str]:
    """``/a/{name}/b`` as a regex with one group per parameter, each one path segment: the
    matching Starlette applies to a ``str`` path parameter (``[^/]+``)."""
    pattern, last = "^", 0
    for found in _PARAM.finditer(path):
        pattern += re.escape(path[last : found.start()]) + f"(?P<{found.group(1)}>[^/]+)"
        last = found.end()
    return re.compile(pattern + re.escape(path[last:]) + "$")


@dataclass
class HotTable:
    """The hot routes: (method, path template) -> handler, in registration order."""

    routes: list[tuple[str, str, re.Pattern[str], Handler]] = field(default_factory=list)

    def add(self, method: str, path: str, handler: Handler) -> None:
        if any(m == method and p == path for m, p, _, _ in self.routes):
            raise ValueError(f"{method} {path} is already a hot route")
        self.routes.append((method, path, compile_path(path), handler))

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]] | None:
        for want, _, pattern, handler in self.routes:
            if want == method:
                found = pattern.match(path)
                if found is not None:
                    return handler, found.groupdict()
        return None


async def body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The request body's chunks as the server hands them over (``Request.stream``'s rule: a
    client that disconnects meanwhile is ``ClientDisconnect``)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), or None."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


BodyFromScope = Callable[[Scope, Receive], BodyReader]


class HotRoutes:
    """ASGI middleware: answers the hot routes' requests, passes everything else on.

    ``table`` may be filled after the middleware is built (the app registers its routes once
    its handlers exist); ``body`` makes the body reader of a request."""

    def __init__(self, app: ASGIApp, table: HotTable, body: BodyFromScope) -> None:
        self.app = app
        self.table = table
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):  # the route's path, as Starlette matches it
                path = path[len(root) :]
            found = self.table.match(scope["method"], path)
            if found is not None:
                handler, params = found
                state: Mapping[str, Any] = scope.get("state", {})
                auth = state.get("auth")
                if auth is not None:  # AuthMiddleware admitted it (it answers refusals)
                    response = await handler(auth.agent_id, params, self.body(scope, receive))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
