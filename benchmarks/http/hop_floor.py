"""The floor of each way to reach the core from the event loop, per call (issue 16, item 2).

Run: ``.venv/bin/python benchmarks/http/hop_floor.py [--calls 20000] [--rounds 5]``

The same trivial core call (it returns a ~300-byte result dict, as an operation's ``Result``)
is made from an asyncio loop (uvloop when installed, as the server runs), one call in flight
at a time, three ways:

* ``inline``: called on the loop thread (``CoreRunner(inline=True)``, the server's choice on
  SQLite);
* ``thread``: ``run_in_executor`` on one worker thread (``CoreRunner()``, the server's choice on
  PostgreSQL and its design before issue 16);
* ``process``: a child process that owns the core, reached over a pipe: the request pickled and
  written, the loop woken when the answer is readable (``add_reader``), the answer read and
  unpickled. The design "the core runs in its own process" needs at least this per call.

Reported per call: wall time and the loop thread's CPU time (what an operation's hop costs
the process that also parses HTTP), medians over the rounds, each way against ``inline`` in the
same run. The core's own work is left out on purpose: this is the hop alone.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import pickle
import statistics
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

RESULT = {
    "status": "ok",
    "replyInteractionId": "PF4BRBSZ6KRHJDV1",
    "interaction": {"id": "TGV6QMJ9YQXSC8GN", "state": "Accepted", "queue": "Support"},
    "padding": "x" * 200,
}


def core_call(agent: str, interaction_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return RESULT


def child(conn: Connection) -> None:
    while True:
        try:
            request = conn.recv_bytes()
        except EOFError:
            return
        agent, interaction_id, body = pickle.loads(request)
        conn.send_bytes(pickle.dumps(core_call(agent, interaction_id, body), protocol=5))


BODY = {"operationName": "UpdateProperties", "userData": {"n": 1}}


async def measure(call: Callable[[], Awaitable[Any]], calls: int) -> tuple[float, float]:
    """(wall µs, loop-thread CPU µs) per call."""
    for _ in range(min(calls, 1000)):  # warm-up
        await call()
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(calls):
        await call()
    return (
        (time.perf_counter() - wall) / calls * 1e6,
        (time.thread_time() - cpu) / calls * 1e6,
    )


async def run_round(calls: int, pipe: Connection) -> dict[str, tuple[float, float]]:
    loop = asyncio.get_running_loop()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    async def inline() -> Any:
        return core_call("bench", "TGV6QMJ9YQXSC8GN", BODY)

    async def thread() -> Any:
        return await loop.run_in_executor(executor, core_call, "bench", "TGV6QMJ9YQXSC8GN", BODY)

    async def process() -> Any:
        ready: asyncio.Future[None] = loop.create_future()
        pipe.send_bytes(pickle.dumps(("bench", "TGV6QMJ9YQXSC8GN", BODY), protocol=5))
        loop.add_reader(pipe.fileno(), ready.set_result, None)
        try:
            await ready
        finally:
            loop.remove_reader(pipe.fileno())
        return pickle.loads(pipe.recv_bytes())

    try:
        return {
            "inline": await measure(inline, calls),
            "thread": await measure(thread, calls),
            "process": await measure(process, calls),
        }
    finally:
        executor.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
        loop_name = "uvloop"
    except ImportError:  # pragma: no cover - the project installs it
        runner, loop_name = asyncio.run, "asyncio"
    parent, child_end = multiprocessing.Pipe()
    worker = multiprocessing.get_context("spawn").Process(target=child, args=(child_end,))
    worker.start()
    rounds: list[dict[str, tuple[float, float]]] = []
    try:
        for _ in range(args.rounds):
            rounds.append(runner(run_round(args.calls, parent)))
    finally:
        parent.close()
        worker.join(5)
        if worker.is_alive():
            worker.kill()
    print(
        f"hop_floor: {args.calls:,} calls x {args.rounds} rounds on {loop_name}, one in flight;"
        " medians per call"
    )
    base_wall = statistics.median(r["inline"][0] for r in rounds)
    base_cpu = statistics.median(r["inline"][1] for r in rounds)
    for way in ("inline", "thread", "process"):
        wall = statistics.median(r[way][0] for r in rounds)
        cpu = statistics.median(r[way][1] for r in rounds)
        print(
            f"  {way:8} wall {wall:7.1f} µs ({wall / base_wall:5.1f}x inline)   loop-thread CPU"
            f" {cpu:7.1f} µs (+{cpu - base_cpu:6.1f} µs over inline)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
