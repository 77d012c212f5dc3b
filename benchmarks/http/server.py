"""The real server for the HTTP benchmark, plus one bare endpoint: ``GET /bench/constant``.

Run: ``.venv/bin/python benchmarks/http/server.py serve --config <file.json> [serve options]``

This is ``interactions serve`` itself (``adapters.server.cli.main``: same settings, same
``build``, same uvicorn config, same logging, one process), with one change: ``build`` is
wrapped so that the app it returns gets one extra route before uvicorn starts. The route lies
outside ``/api/v2/me``: the auth middleware (an ``@app.middleware("http")`` function) still
runs for it, sees the path and calls the endpoint straight away, so it skips authentication.
Nothing under ``src/`` is changed.

``BENCH_LOOP_LAG=1`` (``run.py --loop-lag``) also samples the event loop's lag: a task sleeps
5 ms at a time and records how late it woke (a callback that holds the loop for B ms makes the
next wake-up up to B ms late); ``GET /bench/lag?since=S&until=U`` (CLOCK_MONOTONIC seconds,
which every process on the machine shares) answers the lag's p50/p99/max over that interval.
Its own cost is 200 wake-ups a second, so it is a run of its own, not the headline figures'.

Experiments (never for the headline figures): ``BENCH_PATCHES=mail[,gc,uvloop]`` patches
the server at run time (see docs/performance.md, "HTTP API"; the dispatcher's self-wake that an
earlier ``notify`` patch tested is fixed in the product):

* ``mail``: the mail dispatcher is woken only after a commit that queued mail, not after every
  core call (each wake is a ``pending_mail`` query on a worker thread).
* ``uvloop``: run on uvloop. ``cli.serve`` calls ``asyncio.run(uvicorn.Server(config).serve())``,
  which skips uvicorn's loop set-up, so the product runs on the stdlib asyncio loop.
* ``gc``: ``gc.freeze()`` once the app is built, so the cyclic collector stops re-scanning the
  start-up objects (FastAPI, pydantic, the OpenAPI schema) in its full collections.
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

from adapters.server import bootstrap, cli
from adapters.sqlite import SqliteStore

CONSTANT_PATH = "/bench/constant"
_build = bootstrap.build


def build_with_constant(*args: Any, **kwargs: Any) -> bootstrap.Server:
    server = _build(*args, **kwargs)

    @server.app.get(CONSTANT_PATH, include_in_schema=False)
    async def constant() -> dict[str, str]:
        """The bare FastAPI endpoint: a constant dict, serialised by FastAPI."""
        return {"status": "ok"}

    if os.environ.get("BENCH_LOOP_LAG"):
        _sample_loop_lag(server)
    patches = {p for p in os.environ.get("BENCH_PATCHES", "").split(",") if p}
    if "mail" in patches:
        _wake_mail_only_after_queued_mail(server)
    if "gc" in patches:
        gc.collect()
        gc.freeze()
    if patches:
        print(f"bench: experimental run-time patches: {sorted(patches)}", flush=True)
    return server


_TICK_S = 0.005


def _sample_loop_lag(server: bootstrap.Server) -> None:
    """Start the lag sampler with the app's lifespan; serve ``GET /bench/lag``."""
    samples: list[tuple[float, float]] = []  # (woke at, late by) in seconds

    async def sample() -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + _TICK_S
            await asyncio.sleep(_TICK_S)
            now = loop.time()
            samples.append((time.monotonic(), max(0.0, now - due)))
            if len(samples) > 2_000_000:
                del samples[:1_000_000]

    router = server.app.router
    lifespan = router.lifespan_context

    @contextlib.asynccontextmanager
    async def with_sampler(app: Any) -> AsyncIterator[Any]:
        task = asyncio.create_task(sample(), name="bench-loop-lag")
        try:
            async with lifespan(app) as state:
                yield state
        finally:
            task.cancel()

    router.lifespan_context = with_sampler

    @server.app.get("/bench/lag", include_in_schema=False)
    async def lag(since: float, until: float) -> dict[str, float]:
        late = sorted(v for at, v in samples if since <= at <= until)
        if not late:
            return {"samples": 0}

        def q(p: float) -> float:
            return late[min(len(late) - 1, int(p * len(late)))] * 1000

        return {
            "samples": len(late),
            "p50_ms": q(0.5),
            "p99_ms": q(0.99),
            "max_ms": late[-1] * 1000,
            "over_2ms": sum(1 for v in late if v > 0.002) / len(late),
        }


def _wake_mail_only_after_queued_mail(server: bootstrap.Server) -> None:
    queued = [True]  # look once at start
    commit = SqliteStore._commit

    def commit_and_note(store: SqliteStore, *args: Any) -> Any:
        result = commit(store, *args)
        if args[3]:  # the staged mail
            queued[0] = True
        return result

    SqliteStore._commit = commit_and_note  # type: ignore[method-assign]
    wake = server.mail.wake

    def wake_if_mail() -> None:
        if queued[0]:
            queued[0] = False
            wake()

    server.mail.wake = wake_if_mail  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    # cli.serve imports ``build`` from the module when it runs, so this takes effect.
    bootstrap.build = build_with_constant  # type: ignore[assignment]
    if "uvloop" in os.environ.get("BENCH_PATCHES", "").split(","):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
