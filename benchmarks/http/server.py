"""The real server for the HTTP benchmark, plus one bare endpoint: ``GET /bench/constant``.

Run: ``.venv/bin/python benchmarks/http/server.py serve --config <file.json> [serve options]``

This is ``interactions serve`` itself (``adapters.server.cli.main``: same settings, same
``build``, same uvicorn config, same logging, one process), with one change: ``build`` is
wrapped so that the app it returns gets one extra route before uvicorn starts. The route lies
outside ``/api/v2/me``: the auth middleware (an ``@app.middleware("http")`` function) still
runs for it, sees the path and calls the endpoint straight away, so it skips authentication.
Nothing under ``src/`` is changed.

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
import gc
import os
import sys
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

    patches = {p for p in os.environ.get("BENCH_PATCHES", "").split(",") if p}
    if "mail" in patches:
        _wake_mail_only_after_queued_mail(server)
    if "gc" in patches:
        gc.collect()
        gc.freeze()
    if patches:
        print(f"bench: experimental run-time patches: {sorted(patches)}", flush=True)
    return server


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
