"""HTTP API benchmark: a full operation round trip against a bare FastAPI endpoint, side by side.

Run: ``.venv/bin/python benchmarks/http/run.py [--duration 15] [--rounds 3] [--profile DIR]``
(needs ``wrk``: ``apt-get install -y wrk``).

One server process (``server.py``: ``interactions serve`` plus ``GET /bench/constant``) is
started on loopback with a temporary data directory and an agents file holding one agent. The
set-up then goes through the product: the agent makes itself Ready, N mails are delivered over
SMTP, the agent Accepts the N Invited interactions over HTTP and keeps the session cookie.

Then ``wrk`` (one load tool, same connections, threads and duration for each) measures, in
rounds, with a warm-up before each measurement:

* ``constant``: ``GET /bench/constant``, a FastAPI endpoint returning a constant dict. It passes
  the app's auth middleware, which lets it through without authenticating (not under /me).
* ``me``: ``GET /api/v2/me`` with the session cookie: auth + one read on the core thread.
* ``update``: ``POST /api/v2/me/interactions/{id}`` ``UpdateProperties`` with the cookie: auth,
  body parse and validation, then on the core thread a transaction that loads the interaction
  with its version, checks the lifecycle, writes it back and adds a notification row to the
  outbox, and commits (WAL); then the notification dispatcher drains the outbox and publishes.

Afterwards the database is read (read-only) to check that every 2xx update was committed
(sum of version increments) and that no notification is left pending.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import smtplib
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from adapters.server.agents import add_agent

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
AGENT, PASSWORD = "bench", "bench-password"
MAILBOX = "support@example.com"
MODES = ("constant", "me", "update")
LABELS = {
    "constant": "(b) GET /bench/constant: bare FastAPI endpoint, constant, no auth",
    "me": "(c) GET /api/v2/me: session auth + one core read",
    "update": "(a) POST UpdateProperties: auth + SQLite commit + notification",
}
TARGET_RATIO, TARGET_P99_MS = 0.5, 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    def __init__(self, work: Path, interactions: int, log_level: str, patches: str = "") -> None:
        self.work = work
        self.http_port, self.smtp_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.database = work / "data" / "interactions.sqlite3"
        agents = work / "agents.json"
        add_agent(agents, AGENT, PASSWORD, mailboxes=[MAILBOX], capacity=max(interactions, 5))
        self.config = work / "config.json"
        self.config.write_text(
            json.dumps(
                {
                    "data_dir": str(work / "data"),
                    "http_host": "127.0.0.1",
                    "http_port": self.http_port,
                    "smtp_listen_host": "127.0.0.1",
                    "smtp_listen_port": self.smtp_port,
                    "agents_file": str(agents),
                    "mailboxes": {MAILBOX: "Support"},
                }
            )
        )
        self.log_path = work / "server.log"
        self.log_level = log_level
        self.patches = patches
        self.loop_lag = False
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "BENCH_PATCHES": self.patches}
        if self.loop_lag:
            env["BENCH_LOOP_LAG"] = "1"
        command = [sys.executable, str(HERE / "server.py"), "serve", "--config", str(self.config)]
        command += ["--log-level", self.log_level]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.work
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(self.base + "/bench/constant", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not start:\n" + self.log_path.read_text())

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def deliver(smtp_port: int, n: int) -> None:
    message = EmailMessage()
    message["From"] = "Cee Customer <customer@example.org>"
    message["To"] = MAILBOX
    message["Subject"] = f"Benchmark order {n}"
    message["Message-ID"] = f"<bench-{n}-{time.time_ns()}@example.org>"
    message["Date"] = "Mon, 05 Jan 2026 09:00:00 +0000"
    message.set_content(f"Where is order {n}?\n")
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
        smtp.send_message(message)


def prepare(server: Server, count: int) -> tuple[str, list[str]]:
    """Ready, deliver ``count`` mails, Accept them all; the session cookie and the ids."""
    http = httpx.Client(base_url=server.base + "/api/v2", auth=(AGENT, PASSWORD), timeout=10)
    r = http.post("/me/channels/email", json={"operationName": "Ready"})
    r.raise_for_status()
    for n in range(count):
        deliver(server.smtp_port, n)
    accepted: list[str] = []
    deadline = time.monotonic() + 60
    while len(accepted) < count and time.monotonic() < deadline:
        found = http.get("/me/interactions").json()["interactions"]
        for i in found:
            if i["state"] == "Invited":
                r = http.post(f"/me/interactions/{i['id']}", json={"operationName": "Accept"})
                if r.status_code == 200:
                    accepted.append(i["id"])
        time.sleep(0.05)
    if len(accepted) < count:
        raise RuntimeError(f"only {len(accepted)} of {count} interactions were accepted")
    cookie = http.cookies.get("JSESSIONID")
    if not cookie:
        raise RuntimeError("no session cookie")
    # The cookie alone must do (what wrk sends): one update, checked.
    r = httpx.post(
        f"{server.base}/api/v2/me/interactions/{accepted[0]}",
        json={"operationName": "UpdateProperties", "userData": {"n": 0}},
        cookies={"JSESSIONID": cookie},
    )
    if r.status_code != 200 or r.json().get("status") != "ok":
        raise RuntimeError(f"UpdateProperties with the cookie failed: {r.status_code} {r.text}")
    http.close()
    return cookie, accepted


def versions(database: Path, ids: list[str]) -> int:
    uri = f"file:{database}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        marks = ",".join("?" * len(ids))
        row = conn.execute(f"SELECT sum(version) FROM interactions WHERE id IN ({marks})", ids)
        return int(row.fetchone()[0])


def pending_notifications(database: Path) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        # Published ones are retained (for replay) until the purge: only the unpublished count.
        row = conn.execute(
            "SELECT count(*) FROM outbox WHERE kind = 'notification' AND published_us IS NULL"
        )
        return int(row.fetchone()[0])


def thread_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of the server's main thread (the event loop) and of all its other threads."""
    tick = os.sysconf("SC_CLK_TCK")
    main = other = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if int(task.name) == pid:
            main += seconds
        else:
            other += seconds
    return main, other


def wrk(
    server: Server, mode: str, seconds: float, args: argparse.Namespace, cookie: str, ids: list[str]
) -> dict[str, Any]:
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "bench.lua"),
        server.base,
        "--",
        mode,
        str(args.threads),
        cookie if mode != "constant" else "-",
        *(ids if mode == "update" else ()),
    ]
    cpu_before = thread_cpu(server.pid)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    since = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    until = time.monotonic()
    wall = time.perf_counter() - started
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_after = thread_cpu(server.pid)
    found = re.search(r"^BENCH (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(found.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["ok"] = result["requests"] - result["errors"]["status"]
    result["server_main_cpu"] = (cpu_after[0] - cpu_before[0]) / wall
    result["server_other_cpu"] = (cpu_after[1] - cpu_before[1]) / wall
    wrk_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    result["wrk_cpu"] = wrk_cpu / wall
    if args.loop_lag:
        lag = httpx.get(f"{server.base}/bench/lag", params={"since": since, "until": until})
        result["loop_lag"] = lag.json()
    return result


def py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy not found (pip install py-spy); no profile", file=sys.stderr)
        return None
    command = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds))]
    command += ["--threads", "--format", "raw", "--rate", "200", "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fmt_ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the endpoints")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--interactions", type=int, default=32, help="1 = one shared")
    parser.add_argument("--log-level", default="info", help="the server's (serve's default)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--profile", type=Path, help="py-spy raw profiles of each mode here")
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument(
        "--loop-lag",
        action="store_true",
        help="sample the server's event-loop lag (server.py BENCH_LOOP_LAG; a run of its own)",
    )
    parser.add_argument(
        "--patch",
        default="",
        help="experiment only: run-time patches in server.py (mail, gc, uvloop; comma-separated)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]

    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    server = Server(work, args.interactions, args.log_level, args.patch)
    server.loop_lag = args.loop_lag
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    try:
        server.start()
        cookie, ids = prepare(server, args.interactions)
        print(
            f"server pid {server.pid} on {server.base}; {len(ids)} accepted interactions; "
            f"wrk -t{args.threads} -c{args.connections}, {args.duration:g} s x {args.rounds} "
            f"rounds, {args.warmup:g} s warm-up each",
            flush=True,
        )
        version_start = versions(server.database, ids)
        updates_ok = update_runs = 0
        for round_no in range(args.rounds):
            # Rotate the order so no endpoint always runs first or last.
            order = modes[round_no % len(modes) :] + modes[: round_no % len(modes)]
            for mode in order:
                if args.warmup > 0:
                    warm = wrk(server, mode, args.warmup, args, cookie, ids)
                    if mode == "update":
                        updates_ok += warm["ok"]
                        update_runs += 1
                spy = None
                if args.profile is not None and round_no == 0:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    spy = py_spy(server.pid, args.duration, args.profile / f"{mode}.txt")
                r = wrk(server, mode, args.duration, args, cookie, ids)
                if spy is not None:
                    spy.wait(60)
                if mode == "update":
                    updates_ok += r["ok"]
                    update_runs += 1
                results[mode].append(r)
                lat = r["latency_us"]
                print(
                    f"  round {round_no + 1} {mode:8} {r['rps']:8.0f} req/s  p50 "
                    f"{fmt_ms(lat['p50'])} ms  p99 {fmt_ms(lat['p99'])} ms  "
                    f"non-2xx {r['errors']['status']}  socket errors "
                    f"{sum(v for k, v in r['errors'].items() if k != 'status')}  "
                    f"CPU: server loop {r['server_main_cpu']:.0%} + other threads "
                    f"{r['server_other_cpu']:.0%}, wrk {r['wrk_cpu']:.0%}"
                    + (
                        "  loop lag p50 {p50_ms:.2f} p99 {p99_ms:.2f} max {max_ms:.1f} ms,"
                        " {over_2ms:.1%} of 5 ms ticks over 2 ms ({samples:.0f} ticks)".format(
                            **r["loop_lag"]
                        )
                        if r.get("loop_lag", {}).get("samples")
                        else ""
                    ),
                    flush=True,
                )
        committed = versions(server.database, ids) - version_start
        time.sleep(1.5)  # the dispatcher polls at least once a second
        left = pending_notifications(server.database)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    # wrk counts no request still in flight when it stops (at most one per connection per
    # run); those were sent, so they may have been committed too.
    in_flight = args.connections * update_runs
    checks_ok = updates_ok <= committed <= updates_ok + in_flight and left == 0
    if "update" in modes:
        print(
            f"check: {updates_ok} updates answered 2xx and counted by wrk, {committed} version "
            f"increments committed (<= {in_flight} more may have been in flight when wrk "
            f"stopped), {left} notifications left in the outbox: "
            f"{'OK' if checks_ok else 'MISMATCH'}"
        )

    summary = summarise(results)
    print()
    print_table(summary, args)
    verdict = judge(summary)
    for line in verdict["lines"]:
        print(line)
    if args.patch:
        print(f"EXPERIMENT: run-time patches {args.patch!r}; not the product's figures")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "date": date.today().isoformat(),
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                    "results": results,
                    "summary": summary,
                    "verdict": verdict,
                    "check": {"updates_ok": updates_ok, "committed": committed, "pending": left},
                },
                indent=1,
            )
        )
    return 0 if checks_ok else 1


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per mode: the median over rounds of req/s and of each latency figure."""
    out: dict[str, dict[str, float]] = {}
    for mode, runs in results.items():
        if not runs:
            continue
        out[mode] = {
            "rps": statistics.median(r["rps"] for r in runs),
            "rps_min": min(r["rps"] for r in runs),
            "rps_max": max(r["rps"] for r in runs),
            "p50_ms": statistics.median(r["latency_us"]["p50"] for r in runs) / 1000,
            "p90_ms": statistics.median(r["latency_us"]["p90"] for r in runs) / 1000,
            "p99_ms": statistics.median(r["latency_us"]["p99"] for r in runs) / 1000,
            "p99_max_ms": max(r["latency_us"]["p99"] for r in runs) / 1000,
            "p999_ms": statistics.median(r["latency_us"]["p999"] for r in runs) / 1000,
            "non2xx": sum(r["errors"]["status"] for r in runs),
            "socket_errors": sum(v for r in runs for k, v in r["errors"].items() if k != "status"),
            "loop_cpu": statistics.median(r["server_main_cpu"] for r in runs),
            "other_cpu": statistics.median(r["server_other_cpu"] for r in runs),
            "wrk_cpu": statistics.median(r["wrk_cpu"] for r in runs),
        }
        s = out[mode]
        s["server_cpu_us_per_req"] = (s["loop_cpu"] + s["other_cpu"]) / s["rps"] * 1e6
    return out


def print_table(summary: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(
        f"medians over {args.rounds} rounds of {args.duration:g} s, "
        f"{args.connections} connections, {args.threads} wrk threads"
    )
    header = (
        f"{'endpoint':68} {'req/s':>7} {'range':>13} {'p50':>6} {'p90':>6} {'p99':>6} "
        f"{'p99.9':>6} {'non2xx':>6} {'loop':>5} {'other':>5} {'wrk':>5} {'CPU/req':>8}"
    )
    print(header)
    for mode in MODES:
        if mode not in summary:
            continue
        s = summary[mode]
        print(
            f"{LABELS[mode]:68} {s['rps']:7.0f} {s['rps_min']:6.0f}-{s['rps_max']:<6.0f} "
            f"{s['p50_ms']:6.2f} {s['p90_ms']:6.2f} {s['p99_ms']:6.2f} {s['p999_ms']:6.2f} "
            f"{s['non2xx']:6.0f} {s['loop_cpu']:5.0%} {s['other_cpu']:5.0%} "
            f"{s['wrk_cpu']:5.0%} {s['server_cpu_us_per_req']:6.0f}µs"
        )
    print("(latencies in ms; CPU: server event-loop thread, server other threads, wrk;")
    print(" CPU/req: server CPU time per request)")


def judge(summary: dict[str, dict[str, float]]) -> dict[str, Any]:
    lines: list[str] = []
    passed = True
    if "update" in summary and "constant" in summary:
        ratio = summary["update"]["rps"] / summary["constant"]["rps"]
        ok = ratio >= TARGET_RATIO
        passed &= ok
        lines.append(
            f"ratio (a)/(b) req/s: {ratio:.2f}x (target >= {TARGET_RATIO}x): "
            f"{'PASS' if ok else 'FAIL'}"
        )
        if "me" in summary:
            lines.append(
                f"ratio (c)/(b) req/s: {summary['me']['rps'] / summary['constant']['rps']:.2f}x; "
                f"(a)/(c): {summary['update']['rps'] / summary['me']['rps']:.2f}x"
            )
    if "update" in summary:
        p99 = summary["update"]["p99_ms"]
        ok = p99 < TARGET_P99_MS
        passed &= ok
        lines.append(
            f"p99 of (a): {p99:.2f} ms (worst round {summary['update']['p99_max_ms']:.2f} ms; "
            f"target < {TARGET_P99_MS:g} ms): {'PASS' if ok else 'FAIL'}"
        )
    return {"passed": passed, "lines": lines}


if __name__ == "__main__":
    raise SystemExit(main())
