"""Side-by-side benchmark: our Bayeux server vs the official cometd-nodejs-server.

Run: ``.venv/bin/python benchmarks/cometd/run.py [--rates 2000,5000,10000] [--duration 10000]``

**Broadcast** (``--broadcast 1000x10,1000x50,100x100``, first, in ``--rounds`` interleaved
rounds): N long-polling clients subscribe to one channel (``/bench/broadcast``) and one more
client publishes M messages/s on it, open loop (``load.mjs`` mode "broadcast": raw Bayeux, no
client library of either side); each publish is delivered to every subscriber (N x M
deliveries/s). Our server runs with the library's ``BroadcastPolicy`` (nothing patched), the
Node server as it comes. The server is pinned to CPU 0 and the tool to CPU 1 (``taskset``).
Reported: deliveries/s, publish-to-receipt p50/p99, the server's CPU per delivery (``/proc``
over the measured interval), and the publishes' own replies (p50/p99, and how many took over
10 s). Our server also over websocket (the Node server has no websocket transport).

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


def pinned(command: list[str], core: int | None) -> list[str]:
    """``command`` on one CPU (``taskset``), or as it is."""
    return command if core is None else ["taskset", "-c", str(core), *command]


def start_server(
    kind: str, port: int, timeout_ms: int, *, broadcast: bool = False, core: int | None = None
) -> subprocess.Popen[str]:
    if kind.startswith("ours"):
        source = os.environ.get("BENCH_PYTHONPATH", str(ROOT / "src"))
        if kind == "ours-parent":
            # The same benchmark server on another revision's library (a worktree's src/):
            # the before-and-after of a change, in one run.
            source = os.environ["BENCH_PARENT_SRC"]
        env = {**os.environ, "PYTHONPATH": source}
        command = [sys.executable, str(HERE / "ours_server.py"), str(port), str(timeout_ms)]
        if kind == "ours-routes":
            command.append("--routes")  # Bayeux as Starlette routes inside the app
        if kind == "ours-asgi":
            command.append("--asgi")  # long-polling through uvicorn's protocol and ASGI only
        if broadcast:
            command.append("--broadcast")  # the library's BroadcastPolicy
    else:
        env = dict(os.environ)
        command = ["node", str(HERE / "node_server.cjs"), str(port), str(timeout_ms)]
    command = pinned(command, core)
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


def tool_config(
    kind: str, port: int, mode: str, clients: int, rate: int, duration_ms: int, **more: Any
) -> dict[str, Any]:
    """What ``load.mjs`` is given for one measurement against ``kind`` on ``port``."""
    return {
        "url": url(kind, port),
        "server": flavour(kind),
        "mode": mode,
        "clients": clients,
        "rate": rate,
        "duration": duration_ms,
        **more,
    }


def load(kind: str, rate: int, duration_ms: int, clients: int) -> dict[str, Any]:
    port = free_port()
    server = start_server(kind, port, 25_000)
    try:
        config = tool_config(kind, port, "load", clients, rate, duration_ms)
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


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included), from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broadcast(
    kind: str,
    clients: int,
    rate: int,
    duration_ms: int,
    transport: str = "long-polling",
    pin: bool = True,
) -> dict[str, Any]:
    """One broadcast measurement: ``clients`` subscribers on one channel, one more client
    publishing ``rate`` messages/s on it (``load.mjs`` mode "broadcast"); the server on CPU 0
    and the load tool on CPU 1 (``pin``). Adds the server's CPU per delivery over the measured
    interval (from the tool's "measuring" line to its report)."""
    port = free_port()
    server = start_server(kind, port, 25_000, broadcast=True, core=0 if pin else None)
    try:
        config = tool_config(
            kind,
            port,
            "broadcast",
            clients,
            rate,
            duration_ms,
            channel="/bench/broadcast",
            transport=transport,
        )
        tool = subprocess.Popen(
            pinned(["node", str(HERE / "load.mjs"), json.dumps(config)], 1 if pin else None),
            stdout=subprocess.PIPE,
            text=True,
            cwd=HERE,
        )
        assert tool.stdout is not None
        cpu_start = wall_start = 0.0
        result: dict[str, Any] | None = None
        for line in tool.stdout:
            message = json.loads(line)
            if message.get("phase") == "measuring":
                cpu_start, wall_start = cpu_seconds(server.pid), time.monotonic()
            else:
                cpu_end, wall_end = cpu_seconds(server.pid), time.monotonic()
                result = message
        tool.wait(duration_ms / 1000 + 120)
        if result is None or not wall_start:
            raise RuntimeError(f"the broadcast load tool failed ({tool.returncode})")
        wall = wall_end - wall_start
        deliveries = result["delivered_per_s"] * result["seconds"]
        result["transport"] = transport
        result["server_cores"] = (cpu_end - cpu_start) / wall
        result["cpu_us_per_delivery"] = (cpu_end - cpu_start) / max(deliveries, 1) * 1e6
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


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def print_broadcast_summary(
    results: dict[str, dict[str, Any]], servers: list[str], scenarios: list[tuple[int, ...]]
) -> None:
    print("\nbroadcast, medians over rounds (ours/node ratios on long-polling):")
    keys = ["delivered_per_s", "p50_ms", "p99_ms", "cpu_us_per_delivery", "server_cores"]
    medians: dict[tuple[str, str, int, int], dict[str, float]] = {}
    for kind in servers:
        for b in results[kind]["broadcast"]:
            medians.setdefault((kind, b["transport"], b["clients"], b["offered"]), {})
        for (k, transport, clients, rate), out in medians.items():
            if k != kind:
                continue
            runs = [
                b
                for b in results[kind]["broadcast"]
                if (b["transport"], b["clients"], b["offered"]) == (transport, clients, rate)
            ]
            for key in keys:
                out[key] = _median([float(b[key] or 0) for b in runs])
            out["timed_out"] = sum(b["publish_timed_out"] for b in runs)
            print(
                f"  {clients}x{rate}/s {kind:5} {transport:12} delivered "
                f"{out['delivered_per_s']:8.0f}/s p50 {out['p50_ms']:7.2f} ms p99 "
                f"{out['p99_ms']:8.2f} ms  {out['cpu_us_per_delivery']:.2f} µs CPU/delivery "
                f"({out['server_cores']:.2f} cores)  publishes timed out {out['timed_out']}"
            )
    for clients, rate in scenarios:
        ours = medians.get(("ours", "long-polling", clients, rate))
        node = medians.get(("node", "long-polling", clients, rate))
        if ours and node:
            print(
                f"  {clients}x{rate}/s ours/node: deliveries x"
                f"{ours['delivered_per_s'] / max(node['delivered_per_s'], 1e-9):.2f}, p50 x"
                f"{ours['p50_ms'] / max(node['p50_ms'], 1e-9):.2f}, p99 x"
                f"{ours['p99_ms'] / max(node['p99_ms'], 1e-9):.2f}, CPU/delivery x"
                f"{ours['cpu_us_per_delivery'] / max(node['cpu_us_per_delivery'], 1e-9):.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="2000,5000,10000,20000")
    parser.add_argument("--duration", type=int, default=10_000, help="measured ms per rate")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument(
        "--servers",
        default="ours,node",
        help="ours, ours-asgi (long-polling through uvicorn and ASGI, without the protocol "
        "of adapters.cometd.http11), ours-routes (Bayeux as routes), node, ours-parent (the "
        "library at $BENCH_PARENT_SRC, e.g. a worktree of the parent commit's src/)",
    )
    parser.add_argument(
        "--idle-transports",
        default="long-polling,websocket",
        help="transports measured idle on our server (Node's has long-polling only)",
    )
    parser.add_argument(
        "--broadcast",
        default="1000x10,1000x50,100x100",
        help="broadcast scenarios, subscribers x publishes/s ('': none)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="broadcast rounds (interleaved)")
    parser.add_argument(
        "--broadcast-transports",
        default="long-polling,websocket",
        help="broadcast transports for our server (Node's: long-polling only)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and tool")
    args = parser.parse_args()
    if shutil.which("node") is None:
        raise SystemExit("node is required")
    if not (HERE / "node_modules" / "cometd-nodejs-server").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True)
    servers = args.servers.split(",")
    results: dict[str, dict[str, Any]] = {
        kind: {"load": [], "idle": [], "broadcast": []} for kind in servers
    }
    scenarios = [tuple(int(v) for v in b.split("x")) for b in args.broadcast.split(",") if b]
    for round_no in range(args.rounds if scenarios else 0):
        # Interleaved: each round runs every scenario on every server, the order rotating.
        order = servers[round_no % len(servers) :] + servers[: round_no % len(servers)]
        for clients, rate in scenarios:
            for kind in order:
                transports = ["long-polling"]
                if kind == "ours":
                    transports = [t for t in args.broadcast_transports.split(",") if t]
                for transport in transports:
                    b = broadcast(kind, clients, rate, args.duration, transport, not args.no_pin)
                    b["round"] = round_no + 1
                    results[kind]["broadcast"].append(b)
                    print(
                        f"round {round_no + 1} broadcast {clients}x{rate}/s {kind:5} "
                        f"{transport:12} delivered {b['delivered_per_s']:8.0f}/s of "
                        f"{b['expected_per_s']} p50 {b['p50_ms'] or 0:7.2f} ms p99 "
                        f"{b['p99_ms'] or 0:8.2f} ms max {b['max_ms'] or 0:8.1f} ms | server "
                        f"{b['server_cores']:.2f} cores, {b['cpu_us_per_delivery']:.2f} µs/"
                        f"delivery | publish p50 {b['publish_p50_ms'] or 0:.2f} ms p99 "
                        f"{b['publish_p99_ms'] or 0:.2f} ms max {b['publish_max_ms'] or 0:.0f} "
                        f"ms, {b['publish_timed_out']} timed out, {b['publish_failed']} failed"
                        f" | {b['polls_per_s']:.0f} polls/s, tool {b['tool_cores']:.2f} cores",
                        flush=True,
                    )
    if scenarios and args.rounds:
        print_broadcast_summary(results, servers, scenarios)
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
