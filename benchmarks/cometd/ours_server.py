"""Our Bayeux server for the benchmark, with a publisher equivalent to node_server.cjs.

The publisher goes through the real path: ``Notification`` -> ``CometdNotifier.publish`` ->
the agent's sessions subscribed to ``/me/interactions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from adapters.cometd import AuthRequest, BayeuxServer, CometdSettings, cometd_routes
from interactions_core.ports import Notification, RawMessage


async def bench_auth(request: AuthRequest) -> str | None:
    """Trivial authenticator: the agent id in the handshake ext (the load tool sends it)."""
    agent = request.ext.get("agent")
    return agent if isinstance(agent, str) else None


def main() -> None:
    port = int(sys.argv[1])
    timeout = int(sys.argv[2]) if len(sys.argv) > 2 else 25_000
    settings = CometdSettings(
        timeout_ms=timeout, max_client_timeout_ms=timeout, max_sessions_per_browser=-1
    )
    engine = BayeuxServer(bench_auth, settings)
    tasks: set[asyncio.Task[None]] = set()

    async def publisher(rate: float, duration_ms: float, agents: int) -> None:
        notifier = engine.notifier
        total = int(rate * duration_ms / 1000)
        start = time.perf_counter()
        sent = 0
        while sent < total:
            await asyncio.sleep(0.005)
            elapsed = (time.perf_counter() - start) * 1000
            due = min(int(rate * min(elapsed, duration_ms) / 1000), total)
            while sent < due:
                data = {"seq": sent, "t": time.time() * 1000}
                notifier.publish(
                    Notification(agent_id=f"a{sent % agents}", payload=RawMessage(data=data))
                )
                sent += 1

    async def start_publisher(request: Request) -> PlainTextResponse:
        q = request.query_params
        task = asyncio.create_task(
            publisher(float(q["rate"]), float(q["duration"]), int(q["agents"]))
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await engine.start()
        print("ready", flush=True)
        yield
        await engine.stop()

    app = Starlette(
        routes=[
            Route("/bench/publish", start_publisher, methods=["POST", "GET"]),
            *cometd_routes(engine, "/cometd"),
        ],
        lifespan=lifespan,
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        backlog=8192,
        timeout_keep_alive=60,
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
