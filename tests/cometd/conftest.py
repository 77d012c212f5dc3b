"""A real uvicorn server (in a thread) serving the Bayeux adapter, and real clients to drive it.

The server thread has its own event loop; tests publish through the engine's notifier, which
hands calls from other threads over to that loop (``BayeuxServer.call_on_loop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn

from adapters.cometd import (
    BasicAuthenticator,
    BayeuxServer,
    CometdSettings,
    SecurityPolicy,
    create_app,
)
from adapters.cometd.http11 import long_polling_protocol
from interactions_core.ports import Notification, RawMessage
from ports import free_port

JS_DIR = Path(__file__).parent / "js"
PATH = "/api/v2/notifications"
USERS = {"alice": "alice-pw", "bob": "bob-pw"} | {f"agent{i}": f"pw{i}" for i in range(40)}

T = TypeVar("T")


class ServerHarness:
    """uvicorn + ``BayeuxServer`` on a fixed loopback port; ``restart`` loses every session."""

    def __init__(
        self,
        settings: CometdSettings | None = None,
        policy: SecurityPolicy | None = None,
        http: str = "fast",
    ) -> None:
        """``http``: ``fast`` serves long-polling with ``long_polling_protocol`` in front of
        uvicorn's protocol, as ``interactions serve`` does; ``uvicorn``: through ASGI only."""
        self.settings = settings or CometdSettings()
        self.policy = policy
        self.http = http
        self.port = free_port()
        self.engine: BayeuxServer
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{PATH}"

    def start(self) -> None:
        server = uvicorn.Server(self.config())
        self._server = server
        self._thread = threading.Thread(target=self._run, args=(server,), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def config(self) -> uvicorn.Config:
        """A new engine (``self.engine``) and how uvicorn serves it."""
        self.engine = BayeuxServer(BasicAuthenticator(USERS), self.settings, policy=self.policy)
        http: Any = "auto"
        if self.http == "fast":
            http = long_polling_protocol(self.engine, PATH)
        return uvicorn.Config(
            create_app(self.engine, PATH),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
            http=http,
        )

    def _run(self, server: uvicorn.Server) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            await server.serve()

        asyncio.run(serve())

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        with contextlib.suppress(Exception):
            self.call(self.engine.stop).result(5)  # answer held connects, close websockets
        self._server.should_exit = True
        self._thread.join(10)
        self._server = None
        self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` (a function or a coroutine function) on the server loop."""
        assert self._loop is not None

        async def run() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop)

    def publish(
        self, agent: str, data: dict[str, Any], topic: str = "/me/interactions", seq: int = 0
    ) -> None:
        self.engine.notifier.publish(
            Notification(agent_id=agent, topic=topic, payload=RawMessage(data=data), seq=seq)
        )

    async def inspect(self, fn: Callable[[BayeuxServer], T]) -> T:
        """Read engine state on its own loop."""
        engine = self.engine
        result: T = await asyncio.wrap_future(self.call(lambda: fn(engine)))
        return result


@pytest.fixture(scope="module", params=["fast", "uvicorn"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerHarness]:
    """Long-polling read below ASGI (the product's way) and through uvicorn alone: every
    test on this fixture holds for both."""
    harness = ServerHarness(http=request.param)
    harness.start()
    yield harness
    harness.stop()


@pytest.fixture
def make_server() -> Iterator[Callable[..., ServerHarness]]:
    """A dedicated server with its own settings (stopped at the end of the test)."""
    started: list[ServerHarness] = []

    def make(
        settings: CometdSettings | None = None, policy: SecurityPolicy | None = None
    ) -> ServerHarness:
        harness = ServerHarness(settings, policy)
        harness.start()
        started.append(harness)
        return harness

    yield make
    for harness in started:
        harness.stop()


# ------------------------------------------------------------------ the official JS client


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``npm ci`` the pinned official client once, if needed (never committed)."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError(
            "Node.js and npm are required: the official CometD client runs on Node "
            "(`make test` installs them with apt-get when missing)"
        )
    if not (JS_DIR / "node_modules" / "cometd-nodejs-client").is_dir():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS_DIR,
            check=True,
            timeout=300,
        )
    return JS_DIR / "node_modules"


class NodeClient:
    """The scripted client ``js/client.mjs``: events are JSON lines, commands go to stdin."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._seen = 0

    async def expect(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20
    ) -> dict[str, Any]:
        """The next event (after the last one matched) satisfying ``predicate``."""
        async with asyncio.timeout(timeout):
            while True:
                while self._seen < len(self.events):
                    event = self.events[self._seen]
                    self._seen += 1
                    if predicate(event):
                        return event
                await self._read_line()

    async def _read_line(self) -> None:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise AssertionError(f"node client exited; events so far: {self.events}")
        self.events.append(json.loads(line))

    async def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()

    def messages(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "message"]

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


@pytest.fixture
async def node_client(node_modules: Path) -> AsyncIterator[Callable[..., Any]]:
    clients: list[NodeClient] = []

    async def start(**config: Any) -> NodeClient:
        process = await asyncio.create_subprocess_exec(
            "node",
            str(JS_DIR / "client.mjs"),
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=JS_DIR,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        client = NodeClient(process)
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
