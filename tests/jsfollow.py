"""The official CometD JavaScript client following an agent (``tests/cometd/js/follow.mjs``, with
the replay extension) and a writer committing changes for it to follow: shared by the restart
tests (``tests/e2e/test_replay.py``) and the cluster tests (``tests/cluster``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

JS_DIR = Path(__file__).resolve().parent / "cometd" / "js"


def ensure_node_modules() -> None:
    if not (JS_DIR / "node_modules" / "cometd-nodejs-client").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS_DIR,
            check=True,
            timeout=300,
        )


class Writer(threading.Thread):
    """UpdateProperties ``userData.n = 1, 2, 3...`` at ``rate``/s; ``acked``: the values whose
    request was answered ok (so committed). A failed request (server down) is retried with the
    same value until it is answered."""

    def __init__(
        self, base: str, interaction_id: str, auth: tuple[str, str], rate: float = 25
    ) -> None:
        super().__init__(daemon=True)
        self.url = f"{base}/me/interactions/{interaction_id}"
        self.auth = auth
        self.rate = rate
        self.acked: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        n = 1
        with httpx.Client(auth=self.auth, timeout=5) as http:
            while not self.halt.is_set():
                body = {"operationName": "UpdateProperties", "userData": {"n": n}}
                try:
                    ok = http.post(self.url, json=body).json() == {"status": "ok"}
                except (httpx.HTTPError, ValueError):
                    ok = False
                if ok:
                    self.acked.append(n)
                    n += 1
                self.halt.wait(1 / self.rate if ok else 0.05)

    def count(self) -> int:
        return len(self.acked)


class Follower:
    """``tests/cometd/js/follow.mjs``: its events (JSON lines) collected as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.events.append(json.loads(line))

    async def wait_for(self, predicate: Callable[[], bool], what: str, limit: float = 30) -> None:
        """Until ``predicate()`` holds (``limit`` only guards against a hang)."""
        deadline = time.monotonic() + limit
        while not predicate():
            assert self.process.returncode is None, f"the Node client exited: {self.events}"
            assert time.monotonic() < deadline, f"{what}; events: {self.events[-20:]}"
            await asyncio.sleep(0.05)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@contextlib.asynccontextmanager
async def follower(
    url: str,
    api: str,
    auth: tuple[str, str],
    transport: str,
    subscribe: Sequence[str] = ("/me/interactions",),
) -> AsyncIterator[Follower]:
    """``follow.mjs`` against the Bayeux endpoint ``url`` (its re-reads against ``api``, the
    ``/api/v2`` base), as ``auth``, on ``transport`` (``long-polling`` or ``websocket``)."""
    ensure_node_modules()
    config = {
        "url": url,
        "api": api,
        "user": auth[0],
        "password": auth[1],
        "transport": transport,
        "subscribe": list(subscribe),
    }
    process = await asyncio.create_subprocess_exec(
        "node",
        str(JS_DIR / "follow.mjs"),
        json.dumps(config),
        stdout=asyncio.subprocess.PIPE,
        cwd=JS_DIR,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    client = Follower(process)
    try:
        yield client
    finally:
        await client.close()
