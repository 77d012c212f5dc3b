"""Our Bayeux server for the benchmark, with a publisher equivalent to node_server.cjs.

The publisher goes through the real path: ``Notification`` -> ``CometdNotifier.publish`` ->
the agent's sessions subscribed to ``/me/interactions``.

Served the way ``interactions serve`` serves the product: ``uvicorn.Server.run()`` (uvloop and
httptools when installed), no access log, ``gc.freeze()`` after start-up, long-polling read
below ASGI (``adapters.cometd.http11``, when the library has it). Bayeux is mounted in front of
the app (``CometdApp``); ``--asgi`` serves long-polling through uvicorn's protocol and ASGI
only, ``--routes`` mounts Bayeux as Starlette routes, for comparison. ``--broadcast``: the
library's ``BroadcastPolicy`` instead of the product's, so that clients may subscribe to and
publish on any channel (the broadcast scenario), nothing patched.

``BENCH_LOOP_LAG=1``: sample the event loop's lag (a 5 ms sleep's overshoot) for the whole run
and print its median, p99, max and the number of samples over 100 ms to stderr at shutdown. A
publish is answered in the loop turn that reads it (nothing in its path awaits), so the lag
bounds the time a publish spends in the server: a publish reply much later than the lag was
waiting outside the server (in the load tool).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Route

from adapters.cometd import (
    AuthRequest,
    BayeuxServer,
    BroadcastPolicy,
    CometdApp,
    CometdSettings,
    cometd_routes,
)
from interactions_core.ports import Notification, RawMessage


async def bench_auth(request: AuthRequest) -> str | None:
    """Trivial authenticator: the agent id in the handshake ext (the load tool sends it)."""
    agent = request.ext.get("agent")
    return agent if isinstance(agent, str) else None


def main() -> None:
    args = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    as_routes = "--routes" in sys.argv
    fast = not as_routes and "--asgi" not in sys.argv
    port = int(args[0])
    timeout = int(args[1]) if len(args) > 1 else 25_000
    settings = CometdSettings(
        timeout_ms=timeout, max_client_timeout_ms=timeout, max_sessions_per_browser=-1
    )
    policy = BroadcastPolicy() if "--broadcast" in sys.argv else None
    engine = BayeuxServer(bench_auth, settings, policy=policy)
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

    lags: list[float] = []

    async def sample_lag() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append((time.perf_counter() - before - 0.005) * 1000)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await engine.start()
        gc.collect()
        gc.freeze()
        sampler = asyncio.create_task(sample_lag()) if os.environ.get("BENCH_LOOP_LAG") else None
        print("ready", flush=True)
        yield
        if sampler is not None:
            sampler.cancel()
            ordered = sorted(lags) or [0.0]
            p50, p99 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]
            over = sum(1 for lag in ordered if lag > 100)
            print(
                f"loop lag ms: p50 {p50:.2f} p99 {p99:.2f} max {ordered[-1]:.1f}, "
                f"{over} of {len(ordered)} samples over 100 ms",
                file=sys.stderr,
                flush=True,
            )
        await engine.stop()

    routes: list[BaseRoute] = [Route("/bench/publish", start_publisher, methods=["POST", "GET"])]
    if as_routes:
        routes += cometd_routes(engine, "/cometd")
    app: Starlette | CometdApp = Starlette(routes=routes, lifespan=lifespan)
    if not as_routes:
        app = CometdApp(engine, app, "/cometd")
    http: Any = "auto"
    if fast:
        try:
            from adapters.cometd.http11 import long_polling_protocol
        except ImportError:  # a library from before it (ours-parent)
            pass
        else:
            http = long_polling_protocol(engine, "/cometd")
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        backlog=8192,  # the idle measurement opens 10,000 connections at once
        timeout_keep_alive=60,
        timeout_graceful_shutdown=1,
        proxy_headers=False,  # as `interactions serve` runs with no trusted proxy configured
        http=http,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
