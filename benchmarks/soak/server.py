"""The real server for the soak, plus a probe: ``python benchmarks/soak/server.py serve ...``.

This is ``interactions serve`` itself (``adapters.server.cli.main``: same settings, ``build``,
uvicorn config and logging, one process). ``build`` is wrapped only to keep a reference to the
``Server`` it returns; nothing under ``src/`` is changed. When ``SOAK_PROBE_FILE`` names a file,
a daemon thread appends one JSON line to it every ``SOAK_PROBE_SECONDS`` (default 30): the
sizes of the server's in-memory indexes and caches (router heaps, HTTP sessions, CometD
sessions, SMTP sessions, the row cache, the ``lru_cache``s), read with ``len()`` only, and
the C heap: ``sqlite3_memory_used()`` and glibc's ``mallinfo2()``.

``SOAK_TRACEMALLOC=1`` (diagnosis only: tracing costs memory and time, so RSS figures from such a
run mean nothing) starts ``tracemalloc`` with ``SOAK_TRACEMALLOC_FRAMES`` frames (default 8)
before anything is imported, takes a baseline snapshot at the second probe, and at every later
probe writes the top ``snapshot.compare_to(baseline, "lineno")`` and ``"traceback"`` entries to
``SOAK_PROBE_FILE`` + ``.tracemalloc``.
"""

from __future__ import annotations

import os
import tracemalloc

if os.environ.get("SOAK_TRACEMALLOC") == "1":
    tracemalloc.start(int(os.environ.get("SOAK_TRACEMALLOC_FRAMES", "8")))

import ctypes
import gc
import json
import sys
import threading
import time
from collections.abc import Sized
from functools import _lru_cache_wrapper
from typing import Any

from adapters.server import bootstrap, cli

_build = bootstrap.build
_servers: list[bootstrap.Server] = []


def _keep(*args: Any, **kwargs: Any) -> bootstrap.Server:
    server = _build(*args, **kwargs)
    _servers.append(server)
    return server


def _size(obj: object, *path: str) -> int | None:
    """``len(obj.a.b...)``, or None when this version of the code has no such attribute."""
    for name in path:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return len(obj) if isinstance(obj, Sized) else None


def _lru_sizes() -> dict[str, int]:
    """Current sizes of every ``functools.lru_cache`` in our modules."""
    sizes: dict[str, int] = {}
    for name, module in list(sys.modules.items()):
        if not name.startswith(("interactions_core", "adapters")):
            continue
        for attr, value in list(vars(module).items()):
            if isinstance(value, _lru_cache_wrapper):
                sizes[f"{name}.{attr}"] = value.cache_info().currsize
    return sizes


_MALLINFO2_FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2``: ten ``size_t``."""

    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2_FIELDS.split()]


def _native() -> dict[str, int | None]:
    """C heap figures: SQLite's own allocations (page caches, statements) and glibc malloc's
    (every arena: bytes in use, free inside the arenas, mmapped blocks); None where the
    libraries are not the expected ones."""
    figures: dict[str, int | None] = {"sqlite_memory_used": None, "malloc_in_use": None}
    try:
        sqlite = ctypes.CDLL("libsqlite3.so.0")
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
        figures["sqlite_memory_used"] = int(sqlite.sqlite3_memory_used())
    except (OSError, AttributeError):
        pass
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        figures |= {
            "malloc_arenas": int(info.arena),
            "malloc_in_use": int(info.uordblks),
            "malloc_free": int(info.fordblks),
            "malloc_mmapped": int(info.hblkhd),
        }
    except (OSError, AttributeError):
        pass
    return figures


def probe(server: bootstrap.Server) -> dict[str, Any]:
    router = server.engine.router
    heaps = getattr(router, "_agent_heaps", {})
    queues = getattr(router, "_queues", {})
    return {
        "router": {
            "presence": _size(router, "_presence"),
            "waiting": _size(router, "_waiting"),
            "queues": {k: len(v) for k, v in list(queues.items())},
            "agent_heaps": {k: len(v) for k, v in list(heaps.items())},
            "holding": _size(router, "_holding"),
            "offers": _size(router, "_offers"),
            "deadlines": _size(router, "_deadlines"),
        },
        "service_own_cache": _size(server.engine.service, "_own_cache"),
        "row_cache": _size(server.engine.store, "_cache"),
        "http_sessions": _size(server.auth, "_sessions"),
        "http_verified": _size(server.auth, "_verified"),
        "http_failures": _size(server.auth, "_failures"),
        "cometd_sessions": len(server.cometd.sessions),
        "cometd_expiries": _size(server.cometd, "_expiries"),
        "cometd_browsers": _size(server.cometd.sessions, "_held_per_browser"),
        "smtp_sessions": _size(server.receiver, "_sessions"),
        "mail_inflight": _size(server.mail, "_inflight"),
        "mail_unmarked": _size(server.mail, "_unmarked"),
        "lru": _lru_sizes(),
        "threads": threading.active_count(),
        "gc_objects": len(gc.get_objects()),
        "gc_frozen": gc.get_freeze_count(),
        "pymalloc_blocks": sys.getallocatedblocks(),
        **_native(),
    }


def _trace(path: str, baseline: tracemalloc.Snapshot, elapsed: float) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    current, peak = tracemalloc.get_traced_memory()
    lines = [f"=== t={elapsed:.0f}s traced {current / 1e6:.1f} MB (peak {peak / 1e6:.1f})"]
    lines += [str(stat) for stat in snapshot.compare_to(baseline, "lineno")[:40]]
    if tracemalloc.get_traceback_limit() > 1:
        lines.append("--- top 8 by traceback")
        for stat in snapshot.compare_to(baseline, "traceback")[:8]:
            lines.append(str(stat))
            lines += [f"    {line}" for line in stat.traceback.format()[-16:]]
    with open(path, "a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n\n")


def _probe_forever(path: str, every: float) -> None:
    started = time.monotonic()
    baseline: tracemalloc.Snapshot | None = None
    rounds = 0
    while True:
        time.sleep(every)
        if not _servers:
            continue
        rounds += 1
        elapsed = time.monotonic() - started
        try:
            record = {"t": round(elapsed, 1), **probe(_servers[0])}
        except Exception as exc:  # a probe must never take the server down
            record = {"t": round(elapsed, 1), "error": repr(exc)}
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        if tracemalloc.is_tracing():
            if baseline is None and rounds >= 2:
                baseline = tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(False, tracemalloc.__file__)]
                )
            elif baseline is not None:
                _trace(path + ".tracemalloc", baseline, elapsed)


def main() -> int:
    bootstrap.build = _keep
    path = os.environ.get("SOAK_PROBE_FILE")
    if path:
        every = float(os.environ.get("SOAK_PROBE_SECONDS", "30"))
        threading.Thread(
            target=_probe_forever, args=(path, every), name="soak-probe", daemon=True
        ).start()
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
