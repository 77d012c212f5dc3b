"""No Basic challenge for the page's own requests.

A browser that gets ``401`` with ``WWW-Authenticate: Basic`` for a script's request opens its
own password dialog (and headless, holds the request), instead of letting the page show the
API's errorDescription. So, as many APIs do for script clients, a request that says it comes
from a script (``X-Requested-With: XMLHttpRequest``, which the desktop sends with every call)
gets its ``401`` without the challenge; the status and the seed's error body are unchanged.
Every other client (curl, the GWS clients, a link the agent opens) still gets the challenge.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-requested-with"
SCRIPT = b"xmlhttprequest"


class NoChallengeForScripts:
    """ASGI middleware: drops ``WWW-Authenticate`` from a 401 answered to a script's request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not any(
            k.lower() == HEADER and v.lower() == SCRIPT for k, v in scope["headers"]
        ):
            await self.app(scope, receive, send)
            return

        async def send_without_challenge(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                del MutableHeaders(scope=message)["www-authenticate"]
            await send(message)

        await self.app(scope, receive, send_without_challenge)
