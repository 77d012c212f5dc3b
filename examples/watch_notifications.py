"""Print an agent's CometD notifications: ``python examples/watch_notifications.py alice PASSWORD``.

Uses aiocometd-ng, an independent Bayeux client, against the server's ``/api/v2/notifications``
over long-polling, with the same HTTP Basic credentials as the API.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
from typing import Any

from aiocometd_ng import Client, ConnectionType
from aiocometd_ng.extensions import AuthExtension


class BasicAuth(AuthExtension):
    def __init__(self, user: str, password: str) -> None:
        self.value = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    async def outgoing(self, payload: list[dict[str, Any]], headers: dict[str, str]) -> None:
        headers["Authorization"] = self.value

    async def incoming(
        self, payload: list[dict[str, Any]], headers: dict[str, str] | None = None
    ) -> None:
        return None


async def main(user: str, password: str, url: str) -> None:
    async with Client(
        url, connection_types=ConnectionType.LONG_POLLING, auth=BasicAuth(user, password)
    ) as client:
        for channel in ("/me/interactions", "/me/channels", "/me/workbins"):
            await client.subscribe(channel)
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


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    target = sys.argv[3] if len(sys.argv) > 3 else "http://127.0.0.1:8080/api/v2/notifications"
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1], sys.argv[2], target))
