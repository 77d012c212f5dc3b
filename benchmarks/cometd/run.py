"""Side-by-side benchmark: our Bayeux server vs the official cometd-nodejs-server.

Run: ``.venv/bin/python benchmarks/cometd/run.py [--rates 2000,5000,10000] [--duration 10000]``

For each server (started here, loopback only) and each offered rate: 1,000 long-polling clients
(``load.mjs``, raw Bayeux, one channel per agent) subscribe; the server's own publisher emits
the rate round-robin over the agents; the load tool reports delivered messages/s and the
publish-to-receipt latency p50/p99. Then 10,000 sessions each holding a ``/meta/connect``:
server RSS growth / 10,000 = memory per idle session (connection included), over long-polling
for both servers and over websocket too for ours (the Node server has no websocket transport).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_server(kind: str, port: int, timeout_ms: int) -> subprocess.Popen[str]:
    if kind.startswith("ours"):
        env = {**os.environ, "PYTHONPATH": os.environ.get("BENCH_PYTHONPATH", str(ROOT / "src"))}
        command = [sys.executable, str(HERE / "ours_server.py"), str(port), str(timeout_ms)]
        if kind == "ours-routes":
            command.append("--routes")  # Bayeux as Starlette routes inside the app
    else:
        env = dict(os.environ)
        command = ["node", str(HERE / "node_server.cjs"), str(port), str(timeout_ms)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=HERE)
    assert process.stdout is not None
    if "ready" not in process.stdout.readline():
        raise RuntimeError(f"{kind} server did not start")
    time.sleep(0.3)
    return process


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def flavour(kind: str) -> str:
    """What the load tool needs to know: our server (any mounting) or the Node one."""
    return "ours" if kind.startswith("ours") else "node"


def url(kind: str, port: int) -> str:
    return f"http://127.0.0.1:{port}/cometd"


def load(kind: str, rate: int, duration_ms: int, clients: int) -> dict[str, Any]:
    port = free_port()
    server = start_server(kind, port, 25_000)
    try:
        config = {
            "url": url(kind, port),
            "server": flavour(kind),
            "clients": clients,
            "rate": rate,
            "duration": duration_ms,
            "mode": "load",
        }
        out = subprocess.run(
            ["node", str(HERE / "load.mjs"), json.dumps(config)],
            capture_output=True,
            text=True,
            timeout=duration_ms / 1000 + 120,
            cwd=HERE,
        )
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result
    finally:
        stop(server)


def idle_memory(kind: str, sessions: int, transport: str = "long-polling") -> dict[str, Any]:
    port = free_port()
    server = start_server(kind, port, 120_000)
    try:
        common = {
            "url": url(kind, port),
            "server": flavour(kind),
            "mode": "idle",
            "transport": transport,
        }
        warm = {**common, "clients": 50}
        loader = subprocess.Popen(
            ["node", str(HERE / "load.mjs"), json.dumps(warm)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=HERE,
        )
        assert loader.stdout is not None and loader.stdin is not None
        loader.stdout.readline()  # code paths warmed: now the baseline
        loader.stdin.write("done\n")
        loader.stdin.flush()
        loader.wait(10)
        time.sleep(1)
        before = rss_kib(server.pid)
        config = {**common, "clients": sessions}
        loader = subprocess.Popen(
            ["node", str(HERE / "load.mjs"), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=HERE,
        )
        assert loader.stdout is not None and loader.stdin is not None
        line = loader.stdout.readline()
        if not line:
            raise RuntimeError("idle load tool failed")
        time.sleep(1)
        after = rss_kib(server.pid)
        loader.stdin.write("done\n")
        loader.stdin.flush()
        loader.wait(20)
        return {
            "transport": transport,
            "sessions": sessions,
            "rss_before_mib": before / 1024,
            "rss_after_mib": after / 1024,
            "kib_per_session": (after - before) / sessions,
        }
    finally:
        stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="2000,5000,10000,20000")
    parser.add_argument("--duration", type=int, default=10_000, help="measured ms per rate")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument(
        "--servers", default="ours,node", help="ours, ours-routes (Bayeux as routes), node"
    )
    parser.add_argument(
        "--idle-transports",
        default="long-polling,websocket",
        help="transports measured idle on our server (Node's has long-polling only)",
    )
    args = parser.parse_args()
    if shutil.which("node") is None:
        raise SystemExit("node is required")
    if not (HERE / "node_modules" / "cometd-nodejs-server").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True)
    servers = args.servers.split(",")
    results: dict[str, dict[str, Any]] = {kind: {"load": [], "idle": []} for kind in servers}
    for rate in [int(r) for r in args.rates.split(",") if r]:  # --rates "": memory only
        for kind in servers:
            result = load(kind, rate, args.duration, args.clients)
            results[kind]["load"].append(result)
            print(
                f"{kind:5} offered {rate:6}/s delivered {result['delivered_per_s']:9.0f}/s "
                f"p50 {result['p50_ms'] or 0:8.2f} ms p99 {result['p99_ms'] or 0:8.2f} ms",
                flush=True,
            )
    for kind in servers:
        transports = ["long-polling"]
        if flavour(kind) == "ours":
            transports = [t for t in args.idle_transports.split(",") if t]
        for transport in transports:
            idle = idle_memory(kind, args.sessions, transport)
            results[kind]["idle"].append(idle)
            print(
                f"{kind:5} {idle['sessions']} idle {transport} sessions: RSS "
                f"{idle['rss_before_mib']:.1f} -> {idle['rss_after_mib']:.1f} MiB = "
                f"{idle['kib_per_session']:.2f} KiB/session",
                flush=True,
            )
    if "ours" in servers and "node" in servers and results["ours"]["idle"]:
        print("\nratios ours/node:")
        for ours, node in zip(results["ours"]["load"], results["node"]["load"], strict=True):
            print(
                f"  offered {ours['offered']:6}/s: delivered x"
                f"{ours['delivered_per_s'] / node['delivered_per_s']:.2f}, p50 x"
                f"{(ours['p50_ms'] or 0) / (node['p50_ms'] or 1):.2f}, p99 x"
                f"{(ours['p99_ms'] or 0) / (node['p99_ms'] or 1):.2f}"
            )
        memory = (
            results["ours"]["idle"][0]["kib_per_session"]
            / results["node"]["idle"][0]["kib_per_session"]
        )
        print(f"  memory per idle long-polling session x{memory:.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
