"""Benchmark: the floor under one long-poll cycle, the HTTP request alone, per server.

Run: ``.venv/bin/python benchmarks/cometd/poll_floor.py [ROUNDS]`` (about 15 s a round).

What a Bayeux ``/meta/connect`` costs before any Bayeux work: a keep-alive HTTP/1.1 POST of a
small JSON batch, parsed, answered with a small JSON reply. Three servers answer it, each pinned
to CPU 0, driven by the same Node client on CPU 1 (``poll_floor_client.mjs``: 64 keep-alive
loops, 4 s measured):

* ``uvicorn``: a bare ASGI app under uvicorn (uvloop + httptools), served as ``interactions
  serve`` serves (no access log, no proxy headers): the floor of our server's long-poll path;
* ``protocol``: an ``asyncio.Protocol`` on uvloop with the same httptools parser, one write per
  reply, no ASGI: what a long-poll path of our own below uvicorn could reach;
* ``node``: Node's ``http`` module, the floor of cometd-nodejs-server.

The figure is the server's CPU per request (utime + stime from ``/proc`` over the measured
interval, divided by the requests), the median of the rounds; the client is the limit on
requests/s, so those are reported but not compared.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

from run import cpu_seconds, free_port, pinned  # this directory's runner (on sys.path[0])

HERE = Path(__file__).parent
REPLY = json.dumps([{"channel": "/meta/connect", "successful": True, "id": "1"}]).encode()
KINDS = ("uvicorn", "protocol", "node")


def serve_uvicorn(port: int) -> None:
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
        body = b""
        more = True
        while more:
            event = await receive()
            body += event.get("body", b"")
            more = event.get("more_body", False)
        json.loads(body)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(REPLY))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": REPLY})

    print("ready", flush=True)
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, proxy_headers=False
    )


def serve_protocol(port: int) -> None:
    import httptools
    import uvloop

    class Poll(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # (uvloop's transports are no subclass of asyncio.Transport, only alike)
            self.transport = cast(asyncio.Transport, transport)
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            json.loads(b"".join(self.body))
            self.body = []
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(REPLY), REPLY)
            )

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Poll, "127.0.0.1", port)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def measure(kind: str, port: int) -> tuple[float, float]:
    """(requests/s, server µs of CPU per request) for one round of ``kind``."""
    if kind == "node":
        command = ["node", str(HERE / "poll_floor_node.cjs"), str(port)]
    else:
        command = [sys.executable, __file__, "serve", kind, str(port)]
    server = subprocess.Popen(pinned(command, 0), stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        server.stdout.readline()
        time.sleep(0.7)
        tool = [str(HERE / "poll_floor_client.mjs"), str(port), "64", "4000"]
        client = subprocess.Popen(
            pinned(["node", *tool], 1),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdout is not None
        client.stdout.readline()  # "measuring"
        cpu_start, wall_start = cpu_seconds(server.pid), time.monotonic()
        rps = json.loads(client.stdout.readline())["rps"]
        cpu_end, wall_end = cpu_seconds(server.pid), time.monotonic()
        client.wait()
        return rps, (cpu_end - cpu_start) / (rps * (wall_end - wall_start)) * 1e6
    finally:
        server.kill()
        server.wait()


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        {"uvicorn": serve_uvicorn, "protocol": serve_protocol}[sys.argv[2]](int(sys.argv[3]))
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    for round_no in range(rounds):
        for kind in KINDS:  # interleaved
            rps, us = measure(kind, free_port())
            results[kind].append((rps, us))
            print(f"round {round_no + 1} {kind:8} {rps:8.0f} req/s {us:6.1f} µs CPU/request")
    node = statistics.median(us for _, us in results["node"])
    for kind in KINDS:
        us = statistics.median(us for _, us in results[kind])
        rps = statistics.median(rps for rps, _ in results[kind])
        print(f"{kind:8} median {us:6.1f} µs CPU/request ({us / node:.2f}x Node), {rps:.0f} req/s")


if __name__ == "__main__":
    main()
