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
import collections
import contextlib
import gc
import os
import statistics
import sys
import threading
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
    if "nockpt" in patches:  # no WAL checkpoint at commit: does one stall the loop?
        connection = SqliteStore.connection
        seen: set[int] = set()

        def no_checkpoint(store: SqliteStore) -> Any:
            conn = connection(store)
            if id(conn) not in seen:
                seen.add(id(conn))
                conn.execute("PRAGMA wal_autocheckpoint = 0")
            return conn

        SqliteStore.connection = no_checkpoint  # type: ignore[method-assign]
    if "switch" in patches:  # the GIL handed back within 0.5 ms instead of 5 ms
        sys.setswitchinterval(0.0005)
    if "gcoff" in patches:  # no cyclic collection at all: do its pauses stall the loop?
        gc.disable()
    if "gc" in patches:
        gc.collect()
        gc.freeze()
    if patches:
        print(f"bench: experimental run-time patches: {sorted(patches)}", flush=True)
    return server


_TICK_S = 0.005


def _quantile(ordered: list[float], p: float) -> float:
    """The ``p`` quantile of ``ordered`` (sorted seconds), in ms; 0 for none."""
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else 0.0


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

    # The loop's stall per core call: how long each call the core runner ran on the event loop
    # itself (CoreRunner inline) held it. Under a saturating load the lag above is queueing
    # behind ready callbacks; this is blocking.
    stalls: list[tuple[float, float]] = []  # (ended at, held the loop for) in seconds
    slow: collections.Counter[str] = collections.Counter()  # calls over 2 ms, by function
    slow_cpu: list[float] = []
    core = server.core
    run_quiet = core.run_quiet
    loop_thread: list[int] = []

    async def timed_run_quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
        def timed(*a: Any, **k: Any) -> Any:
            start, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                if loop_thread and threading.get_ident() == loop_thread[0]:
                    held = time.perf_counter() - start
                    stalls.append((time.monotonic(), held))
                    if held > 0.002:
                        slow[getattr(fn, "__qualname__", repr(fn))] += 1
                        # Of which on the CPU (the rest: preempted, or waiting on I/O or a lock)
                        slow_cpu.append(time.thread_time() - cpu)

        return await run_quiet(timed, *args, **kwargs)

    core.run_quiet = timed_run_quiet  # type: ignore[method-assign]

    # Each POST's time in the server, from the ASGI call to its last byte handed to uvicorn:
    # beside wrk's latency (which adds the kernel, the sockets and wrk's own scheduling).
    served: list[tuple[float, float]] = []
    inner = server.asgi

    async def timed_asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await inner(scope, receive, send)
            return
        start = time.perf_counter()
        await inner(scope, receive, send)
        served.append((time.monotonic(), time.perf_counter() - start))

    server.asgi = timed_asgi

    router = server.app.router
    lifespan = router.lifespan_context

    @contextlib.asynccontextmanager
    async def with_sampler(app: Any) -> AsyncIterator[Any]:
        loop_thread.append(threading.get_ident())
        task = asyncio.create_task(sample(), name="bench-loop-lag")
        try:
            async with lifespan(app) as state:
                yield state
        finally:
            task.cancel()

    router.lifespan_context = with_sampler

    @server.app.get("/bench/lag", include_in_schema=False)
    async def lag(since: float, until: float) -> dict[str, Any]:
        def within(recorded: list[tuple[float, float]]) -> list[float]:
            return sorted(v for at, v in recorded if since <= at <= until)

        late, held, took = within(samples), within(stalls), within(served)
        if not late:
            return {"samples": 0}
        return {
            "samples": len(late),
            "p50_ms": _quantile(late, 0.5),
            "p99_ms": _quantile(late, 0.99),
            "max_ms": _quantile(late, 1.0),
            "over_2ms": sum(1 for v in late if v > 0.002) / len(late),
            "inline_calls": len(held),
            "stall_p50_ms": _quantile(held, 0.5),
            "stall_p99_ms": _quantile(held, 0.99),
            "stall_max_ms": _quantile(held, 1.0),
            "stalls_over_2ms": sum(1 for v in held if v > 0.002),
            "slow_calls": dict(slow.most_common(8)),
            "served_p50_ms": _quantile(took, 0.5),
            "served_p99_ms": _quantile(took, 0.99),
            "slow_calls_cpu_ms_median": statistics.median(slow_cpu) * 1000 if slow_cpu else 0.0,
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
