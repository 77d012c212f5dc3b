"""Print an agent's CometD notifications: ``python examples/watch_notifications.py alice PASSWORD``.

Uses aiocometd-ng, an independent Bayeux client, against the server's ``/api/v2/notifications``
over long-polling, with the same HTTP Basic credentials as the API.

The server's URL comes from the settings ``interactions serve`` reads (``--config FILE`` or
``INTERACTIONS_CONFIG``, then ``INTERACTIONS_HTTP_HOST`` and ``INTERACTIONS_HTTP_PORT``);
a URL given as the third argument wins. A server that cannot be reached, or that refuses the
credentials, is one line on stderr and exit status 1 or 2; Ctrl-C stops it (status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from aiocometd_ng import Client, ConnectionType
from aiocometd_ng.exceptions import AiocometdException, ServerError
from aiocometd_ng.extensions import AuthExtension

from adapters.server.settings import ConfigurationError, load_settings, local_http_url

NOTIFICATIONS = "/api/v2/notifications"


class BasicAuth(AuthExtension):
    def __init__(self, user: str, password: str) -> None:
        self.value = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    async def outgoing(self, payload: list[dict[str, Any]], headers: dict[str, str]) -> None:
        headers["Authorization"] = self.value

    async def incoming(
        self, payload: list[dict[str, Any]], headers: dict[str, str] | None = None
    ) -> None:
        return None


class Stop(Exception):
    """Why watching stopped, as the one line to print, and the exit status."""

    def __init__(self, line: str, status: int = 1) -> None:
        super().__init__(line)
        self.line = line
        self.status = status


def _quiet_cancellation(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The client's pending poll is cancelled on Ctrl-C: that is no error worth a traceback."""
    if not isinstance(context.get("exception"), asyncio.CancelledError):
        loop.default_exception_handler(context)


async def watch(user: str, password: str, url: str) -> None:
    asyncio.get_running_loop().set_exception_handler(_quiet_cancellation)
    connected = False
    try:
        async with Client(
            url, connection_types=ConnectionType.LONG_POLLING, auth=BasicAuth(user, password)
        ) as client:
            for channel in ("/me/interactions", "/me/channels", "/me/workbins"):
                await client.subscribe(channel)
            connected = True
            print(f"subscribed as {user}; waiting for notifications (Ctrl-C to stop)", flush=True)
            async for message in client:
                data = message.get("data", {})
                print(
                    message["channel"],
                    data.get("state", data.get("messageTypeName")),
                    data.get("id", ""),
                    json.dumps(data.get("capabilities", [])),
                    flush=True,
                )
    except ServerError as exc:
        if exc.error_code in (401, 403) and not connected:
            raise Stop(
                f"{url}: the server refused {user}'s credentials ({exc.error}):"
                " wrong user name or password?",
                2,
            ) from None
        raise Stop(f"{url}: the server answered {exc.error or exc.message}") from None
    except AiocometdException as exc:  # the transport's errors: refused, reset, timed out
        what = "lost the connection to" if connected else "cannot connect to"
        raise Stop(f"{what} {url}: {exc} (is `interactions serve` running?)") from None
    except Exception as exc:
        if connected:
            raise
        # Not a Bayeux answer at all (another server on that port, a wrong path).
        raise Stop(
            f"{url}: not the server's CometD endpoint? ({type(exc).__name__}: {exc})"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("user")
    parser.add_argument("password")
    parser.add_argument(
        "url", nargs="?", help=f"default: the configured HTTP host and port, {NOTIFICATIONS}"
    )
    parser.add_argument("--config", type=Path, help="a JSON or TOML settings file (as serve's)")
    args = parser.parse_args(argv)
    url = args.url
    try:
        if url is None:
            url = local_http_url(load_settings(args.config), NOTIFICATIONS)
        asyncio.run(watch(args.user, args.password, url))
    except ConfigurationError as exc:
        print(f"watch_notifications: {exc}", file=sys.stderr)
        return 2
    except Stop as stop:
        print(f"watch_notifications: {stop.line}", file=sys.stderr)
        return stop.status
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
