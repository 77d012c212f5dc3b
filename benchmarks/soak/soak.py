"""Soak: full lifecycles against the real server for minutes, watching the server's RSS.

Run: ``.venv/bin/python benchmarks/soak/soak.py [--minutes 10] [--agents 8]``

What runs (all on loopback):

* ``interactions serve`` in its own process (through ``benchmarks/soak/server.py``, which is
  ``cli.main`` plus a probe thread that logs the sizes of the server's indexes), with a config
  file, a data directory and an agents file in a temporary directory, free ports, and an
  ``aiosmtpd`` sink (in this process) as the outbound relay;
* ``--agents`` agents, each with its own HTTP client (one Basic login, then the session
  cookie) and its own CometD long-poll client (raw Bayeux over httpx: handshake, subscribe to
  ``/me/interactions``, ``/meta/connect`` in a loop), Ready on the e-mail channel;
* a producer keeping ``--in-flight`` mails per agent under way, each delivered over SMTP (one
  ``smtplib`` connection per mail, as an MTA does);
* when an agent's CometD client sees an ``Invited`` notification, the agent runs the
  lifecycle: Accept, ReplyAll (quoted), Send, StopProcessing. A fraction
  (``--fresh-logins``) of those requests carry Basic credentials and no cookie, so each opens a
  new HTTP session, as a client that does not keep cookies does.

Every 5 s the server's RSS (``VmRSS`` in ``/proc/<pid>/status``) is sampled; every 30 s a line
shows it with the lifecycles done. At the end: RSS after start-up and after the warm-up (the
same-run baseline), and the growth over the last 5 minutes (medians of the samples of the 30 s
before each end of the interval) as a percentage and per lifecycle. The target is <= 5 %.

``--src DIR`` runs the server from another source tree (e.g. ``git archive HEAD src | tar -x -C
/tmp/soak-base``, then ``--src /tmp/soak-base/src``), with this script and its probe unchanged.
``--tracemalloc`` (diagnosis only: it inflates RSS) makes the server write snapshot diffs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller

from adapters.server.agents import add_agent

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MAILBOX = "support@example.com"
SAMPLE_SECONDS = 5.0
LAST_WINDOW = 300.0  # the growth figure: over the last 5 minutes
SMOOTH = 30.0  # each end of that interval: the median of the samples of the 30 s before it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------- relay sink


class Sink:
    """Counts what the server relays; keeps nothing else."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.count += 1
        return "250 OK"


# --------------------------------------------------------------------------- the server


class ServerProcess:
    def __init__(self, workdir: Path, args: argparse.Namespace, relay_port: int) -> None:
        self.workdir = workdir
        self.http_port = free_port()
        self.smtp_port = free_port()
        self.log_path = workdir / "server.log"
        self.probe_path = workdir / "probe.jsonl"
        self.process: subprocess.Popen[bytes] | None = None
        self.src = args.src
        self.tracemalloc = args.tracemalloc
        self.probe_seconds = args.probe_seconds
        self.config = workdir / "config.json"
        self.config.write_text(
            json.dumps(
                {
                    "data_dir": str(workdir / "data"),
                    "http_port": self.http_port,
                    "smtp_listen_port": self.smtp_port,
                    "agents_file": str(workdir / "agents.json"),
                    "mailboxes": {MAILBOX: "Support"},
                    "message_id_domain": "soak.example.com",
                    "relay": {"host": "127.0.0.1", "port": relay_port, "security": "none"},
                }
            )
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v2"

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "SOAK_PROBE_FILE": str(self.probe_path)}
        if self.src:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(Path(self.src).resolve()), env.get("PYTHONPATH")) if p
            )
        if self.tracemalloc:
            env["SOAK_TRACEMALLOC"] = "1"
            env.setdefault("SOAK_TRACEMALLOC_FRAMES", "1")
        env["SOAK_PROBE_SECONDS"] = str(self.probe_seconds)
        return env

    def code_location(self) -> str:
        """Where the server process imports ``adapters`` and ``interactions_core`` from."""
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import adapters, interactions_core;"
                "print(adapters.__file__); print(interactions_core.__file__)",
            ],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return ", ".join(str(Path(p).parent) for p in done.stdout.split())

    def start(self, user: str, password: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "server.py"),
                "serve",
                "--config",
                str(self.config),
                "--log-level",
                "warning",
            ],
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            env=self.env(),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the server exited:\n" + self.log_path.read_text())
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(self.base + "/me", auth=(user, password), timeout=5)
                if r.status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("the server did not start:\n" + self.log_path.read_text())

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("not started")
        return self.process.pid

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            return None

    def probes(self) -> list[dict[str, Any]]:
        if not self.probe_path.exists():
            return []
        return [json.loads(line) for line in self.probe_path.read_text().splitlines() if line]


# --------------------------------------------------------------------------- load


@dataclass
class Stats:
    lifecycles: int = 0
    mails: int = 0
    fresh_logins: int = 0
    handshakes: int = 0
    notifications: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.first_errors) < 10:
            self.first_errors.append(f"{kind}: {detail[:300]}")


class Agent:
    def __init__(
        self,
        agent_id: str,
        password: str,
        server: ServerProcess,
        stats: Stats,
        done: asyncio.Semaphore,
        rng: random.Random,
        fresh_fraction: float,
        stop: asyncio.Event,
    ) -> None:
        self.id = agent_id
        self.password = password
        self.server = server
        self.stats = stats
        self.done = done
        self.rng = rng
        self.fresh_fraction = fresh_fraction
        self.stop = stop
        timeout = httpx.Timeout(30.0)
        # Under uvicorn's 5 s keep-alive: a connection the server is closing is never reused.
        limits = httpx.Limits(keepalive_expiry=2.0)
        # The session client: Basic once (the login), then only the JSESSIONID cookie.
        self.http = httpx.AsyncClient(base_url=server.base, timeout=timeout, limits=limits)
        # Fresh logins: Basic credentials and no cookie, so each request opens a new session.
        self.fresh = httpx.AsyncClient(
            base_url=server.base, timeout=timeout, limits=limits, auth=(agent_id, password)
        )
        self.bayeux = httpx.AsyncClient(
            timeout=httpx.Timeout(60.0), auth=(agent_id, password)
        )  # a held connect lasts up to the server's 25 s timeout
        self.invited: asyncio.Queue[str] = asyncio.Queue()
        self.client_id: str | None = None

    async def login(self) -> None:
        r = await self.http.get("/me", auth=(self.id, self.password))
        r.raise_for_status()
        if "JSESSIONID" not in self.http.cookies:
            raise RuntimeError("no session cookie after login")
        r = await self.http.post("/me/channels/email", json={"operationName": "Ready"})
        if r.json() != {"status": "ok"}:
            raise RuntimeError(f"Ready failed: {r.text}")

    async def close(self) -> None:
        for client in (self.http, self.fresh, self.bayeux):
            await client.aclose()

    # -- CometD

    @property
    def bayeux_url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}/api/v2/notifications"

    async def _bayeux(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        r = await self.bayeux.post(self.bayeux_url, json=messages)
        r.raise_for_status()
        replies: list[dict[str, Any]] = r.json()
        return replies

    async def handshake(self) -> None:
        (hello,) = await self._bayeux(
            [
                {
                    "channel": "/meta/handshake",
                    "version": "1.0",
                    "supportedConnectionTypes": ["long-polling"],
                }
            ]
        )
        if not hello.get("successful"):
            raise RuntimeError(f"handshake refused: {hello}")
        self.client_id = hello["clientId"]
        self.stats.handshakes += 1
        (sub,) = await self._bayeux(
            [
                {
                    "channel": "/meta/subscribe",
                    "clientId": self.client_id,
                    "subscription": "/me/interactions",
                }
            ]
        )
        if not sub.get("successful"):
            raise RuntimeError(f"subscribe refused: {sub}")

    async def follow(self) -> None:
        """The long-poll loop: until ``stop``; re-handshakes when the server says so."""
        while not self.stop.is_set():
            try:
                if self.client_id is None:
                    await self.handshake()
                replies = await self._bayeux(
                    [
                        {
                            "channel": "/meta/connect",
                            "clientId": self.client_id,
                            "connectionType": "long-polling",
                        }
                    ]
                )
            except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                if self.stop.is_set():
                    return
                self.stats.error("cometd", repr(exc))
                self.client_id = None
                await asyncio.sleep(1.0)
                continue
            for message in replies:
                channel = message.get("channel")
                if channel == "/meta/connect":
                    if not message.get("successful"):
                        advice = message.get("advice") or {}
                        if advice.get("reconnect") == "handshake":
                            self.client_id = None
                        elif advice.get("reconnect") == "none":
                            return
                elif channel == "/me/interactions":
                    data = message.get("data") or {}
                    state = str(data.get("state"))
                    self.stats.notifications[state] += 1
                    if state == "Invited":
                        self.invited.put_nowait(str(data["id"]))

    async def disconnect(self) -> None:
        if self.client_id is None:
            return
        with contextlib.suppress(httpx.HTTPError, ValueError):
            await self._bayeux([{"channel": "/meta/disconnect", "clientId": self.client_id}])

    # -- the lifecycle

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.rng.random() < self.fresh_fraction:
            self.fresh.cookies.clear()
            r = await self.fresh.post(path, json=body)
            self.fresh.cookies.clear()
            self.stats.fresh_logins += 1
        else:
            r = await self.http.post(path, json=body)
        answer: dict[str, Any] = r.json()
        return answer

    async def lifecycle(self, iid: str) -> bool:
        url = f"/me/interactions/{iid}"
        r = await self._post(url, {"operationName": "Accept"})
        if r != {"status": "ok"}:
            self.stats.error("accept", json.dumps(r))
            return False
        r = await self._post(url, {"operationName": "ReplyAll", "quoteOriginal": True})
        draft = r.get("replyInteractionId")
        if r.get("status") != "ok" or not isinstance(draft, str):
            self.stats.error("replyall", json.dumps(r))
            return False
        r = await self._post(
            f"/me/interactions/{draft}",
            {"operationName": "Send", "email_object": {"text": "Thank you, it ships today.\n"}},
        )
        if r != {"status": "ok"}:
            self.stats.error("send", json.dumps(r))
            return False
        r = await self._post(url, {"operationName": "StopProcessing"})
        if r != {"status": "ok"}:
            self.stats.error("stop", json.dumps(r))
            return False
        return True

    async def work(self) -> None:
        while not self.stop.is_set() or not self.invited.empty():
            try:
                iid = await asyncio.wait_for(self.invited.get(), 1.0)
            except TimeoutError:
                continue
            try:
                if await self.lifecycle(iid):
                    self.stats.lifecycles += 1
            except (httpx.HTTPError, ValueError) as exc:
                self.stats.error("http", repr(exc))
            finally:
                self.done.release()


def mail(n: int, customers: int) -> EmailMessage:
    c = n % customers
    message = EmailMessage()
    message["From"] = f"Customer {c} <customer{c}@example.org>"
    message["To"] = MAILBOX
    message["Cc"] = f"colleague{c % 50}@example.org, {MAILBOX}"
    message["Subject"] = f"Order {n}"
    message["Message-ID"] = f"<soak-{n}-{os.getpid()}@example.org>"
    message["Date"] = "Mon, 05 Jan 2026 09:00:00 +0000"
    message.set_content(
        f"Hello,\n\nwhere is my order {n}? It was due last week.\n\nRegards,\nCustomer {c}\n"
    )
    return message


def deliver(port: int, message: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.send_message(message)


async def produce(
    server: ServerProcess,
    slots: asyncio.Semaphore,
    stop: asyncio.Event,
    stats: Stats,
    customers: int,
) -> None:
    n = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(slots.acquire(), 1.0)
        except TimeoutError:
            continue
        if stop.is_set():
            slots.release()
            return
        try:
            await asyncio.to_thread(deliver, server.smtp_port, mail(n, customers))
            stats.mails += 1
        except (OSError, smtplib.SMTPException) as exc:
            stats.error("smtp", repr(exc))
            slots.release()
            await asyncio.sleep(1.0)
        n += 1


# --------------------------------------------------------------------------- the run


async def wait_for_trace(server: ServerProcess, limit: float) -> None:
    """Tracing: let the server write one more snapshot diff (they are slow) before it stops."""
    path = Path(str(server.probe_path) + ".tracemalloc")
    before = path.read_text().count("=== t=") if path.exists() else 0
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("=== t=") > before:
            return
        await asyncio.sleep(1.0)


def median_at(samples: list[tuple[float, int]], t: float) -> float | None:
    window = [kib for when, kib in samples if t - SMOOTH <= when <= t]
    return statistics.median(window) if window else None


def lifecycles_at(marks: list[tuple[float, int]], t: float) -> int:
    done = 0
    for when, count in marks:
        if when <= t:
            done = count
    return done


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    agents_file = workdir / "agents.json"
    ids = [f"agent{i}" for i in range(args.agents)]
    for agent_id in ids:
        add_agent(
            agents_file,
            agent_id,
            f"{agent_id}-pw",
            mailboxes=[MAILBOX],
            addresses=[f"{agent_id}@agents.example"],
            skills=[s for s in args.skills.split(",") if s],
            capacity=max(args.in_flight, 1) * 2,
        )
    sink = Sink()
    relay_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=relay_port)
    controller.start()
    server = ServerProcess(workdir, args, relay_port)
    location = server.code_location()
    print(f"server code: {location}", flush=True)
    stats = Stats()
    stop = asyncio.Event()
    agents: list[Agent] = []
    tasks: list[asyncio.Task[None]] = []
    samples: list[tuple[float, int]] = []
    marks: list[tuple[float, int]] = []
    lines: list[dict[str, Any]] = []
    try:
        server.start(ids[0], f"{ids[0]}-pw")
        await asyncio.sleep(1.0)
        startup = rss_kib(server.pid) or 0
        print(f"RSS after start-up: {startup / 1024:.1f} MiB (pid {server.pid})", flush=True)
        slots = asyncio.Semaphore(args.agents * args.in_flight)
        rng = random.Random(args.seed)
        for agent_id in ids:
            agent = Agent(
                agent_id,
                f"{agent_id}-pw",
                server,
                stats,
                slots,
                random.Random(rng.random()),
                args.fresh_logins,
                stop,
            )
            await agent.login()
            await agent.handshake()
            agents.append(agent)
        for agent in agents:
            tasks.append(asyncio.create_task(agent.follow(), name=f"follow-{agent.id}"))
            tasks.append(asyncio.create_task(agent.work(), name=f"work-{agent.id}"))
        producer = asyncio.create_task(
            produce(server, slots, stop, stats, args.customers), name="producer"
        )
        started = time.monotonic()
        total = args.minutes * 60.0
        warmed: int | None = None
        next_sample = started
        next_line = started + args.report_every
        last_line = (0.0, 0)
        stalled_since = started
        while True:
            now = time.monotonic()
            elapsed = now - started
            if elapsed >= total:
                break
            if server.process is not None and server.process.poll() is not None:
                raise RuntimeError("the server died:\n" + server.log_path.read_text()[-4000:])
            if now >= next_sample:
                kib = rss_kib(server.pid)
                if kib is not None:
                    samples.append((elapsed, kib))
                marks.append((elapsed, stats.lifecycles))
                next_sample += SAMPLE_SECONDS
                if warmed is None and elapsed >= args.warmup and kib is not None:
                    warmed = kib
                    print(
                        f"RSS after warm-up ({args.warmup:.0f} s, {stats.lifecycles} "
                        f"lifecycles): {kib / 1024:.1f} MiB",
                        flush=True,
                    )
            if now >= next_line:
                kib = samples[-1][1] if samples else 0
                rate = (stats.lifecycles - last_line[1]) / max(elapsed - last_line[0], 1e-9)
                line = {
                    "t": round(elapsed),
                    "rss_mib": round(kib / 1024, 1),
                    "lifecycles": stats.lifecycles,
                    "per_s": round(rate, 1),
                    "relayed": sink.count,
                    "errors": sum(stats.errors.values()),
                }
                lines.append(line)
                print(
                    f"t={line['t']:>4}s  RSS {line['rss_mib']:>6.1f} MiB  lifecycles "
                    f"{line['lifecycles']:>7}  ({line['per_s']}/s)  relayed {line['relayed']}"
                    f"  errors {line['errors']}",
                    flush=True,
                )
                if stats.lifecycles == last_line[1]:
                    if now - stalled_since > 90:
                        raise RuntimeError("no lifecycle completed for 90 s; giving up")
                else:
                    stalled_since = now
                last_line = (elapsed, stats.lifecycles)
                next_line += args.report_every
            await asyncio.sleep(0.2)
        end = time.monotonic() - started
        end_kib = rss_kib(server.pid) or 0
        samples.append((end, end_kib))
        marks.append((end, stats.lifecycles))
        stop.set()
        await asyncio.wait_for(producer, 30)
        # Let the lifecycles under way finish (bounded), then leave.
        pending = [t for t in tasks if t.get_name().startswith("work-")]
        await asyncio.wait(pending, timeout=60)
        for agent in agents:
            await agent.disconnect()
        await asyncio.wait(tasks, timeout=30)
        if args.tracemalloc:
            await wait_for_trace(server, 300)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for agent in agents:
            await agent.close()
        probes = server.probes()
        code = server.stop()
        controller.stop()

    window_start = max(end - LAST_WINDOW, args.warmup)
    first = median_at(samples, window_start + SMOOTH) or samples[0][1]
    last = median_at(samples, end) or end_kib
    done_in_window = stats.lifecycles - lifecycles_at(marks, window_start + SMOOTH / 2)
    growth = (last - first) / first * 100
    per_lifecycle = (last - first) * 1024 / max(done_in_window, 1)
    result = {
        "server_code": location,
        "agents": args.agents,
        "minutes": args.minutes,
        "skills": args.skills,
        "customers": args.customers,
        "fresh_logins": args.fresh_logins,
        "rss_startup_mib": round(startup / 1024, 1),
        "rss_warm_mib": round((warmed or 0) / 1024, 1),
        "rss_end_mib": round(end_kib / 1024, 1),
        "window_seconds": round(end - window_start),
        "window_from_mib": round(first / 1024, 1),
        "window_to_mib": round(last / 1024, 1),
        "growth_percent": round(growth, 2),
        "growth_bytes_per_lifecycle": round(per_lifecycle),
        "lifecycles": stats.lifecycles,
        "lifecycles_per_s": round(stats.lifecycles / end, 1),
        "mails_delivered": stats.mails,
        "mails_relayed": sink.count,
        "fresh_logins_done": stats.fresh_logins,
        "handshakes": stats.handshakes,
        "notifications": dict(stats.notifications),
        "errors": dict(stats.errors),
        "first_errors": stats.first_errors,
        "server_exit": code,
        "lines": lines,
        "samples": samples,
        "last_probe": probes[-1] if probes else None,
        "first_probe": probes[0] if probes else None,
    }
    print(
        f"\nRSS: start-up {result['rss_startup_mib']} MiB, after warm-up "
        f"{result['rss_warm_mib']} MiB, end {result['rss_end_mib']} MiB"
        f"\ngrowth over the last {result['window_seconds']} s: {result['window_from_mib']} -> "
        f"{result['window_to_mib']} MiB = {growth:+.2f} % "
        f"({per_lifecycle:.0f} bytes per lifecycle; target <= 5 %: "
        f"{'met' if growth <= 5 else 'NOT met'})"
        f"\nlifecycles {stats.lifecycles} ({result['lifecycles_per_s']}/s), mails in "
        f"{stats.mails}, relayed {sink.count}, fresh logins {stats.fresh_logins}, "
        f"handshakes {stats.handshakes}, errors {dict(stats.errors) or 0}",
        flush=True,
    )
    for problem in stats.first_errors:
        print("  " + problem)
    if probes:
        print("server indexes, first and last probe:")
        for name, probe in (("first", probes[0]), ("last", probes[-1])):
            shown = {k: v for k, v in probe.items() if k not in ("lru",)}
            print(f"  {name}: {json.dumps(shown)}")
            print(f"    lru: {json.dumps(probe.get('lru', {}))}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="total load time")
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--in-flight", type=int, default=2, help="mails under way per agent")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds of warm-up")
    parser.add_argument("--report-every", type=float, default=30.0)
    parser.add_argument(
        "--fresh-logins", type=float, default=0.05, help="fraction of requests without cookie"
    )
    parser.add_argument("--customers", type=int, default=1000, help="distinct sender addresses")
    parser.add_argument(
        "--skills", default="billing", help="skills of every agent (comma-separated; '' none)"
    )
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--src", help="run the server from this source tree (PYTHONPATH)")
    parser.add_argument("--tracemalloc", action="store_true", help="diagnosis: snapshot diffs")
    parser.add_argument("--probe-seconds", type=float, default=30.0, help="server probe period")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", type=Path, help="copy the work directory (logs, probes) here")
    args = parser.parse_args(argv)
    if args.agents < 1 or args.in_flight < 1 or args.minutes <= 0:
        parser.error("--agents, --in-flight and --minutes must be positive")
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    try:
        result = asyncio.run(run(args, workdir))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        if args.keep:
            shutil.copytree(workdir, args.keep, dirs_exist_ok=True, ignore=_big_files)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _big_files(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if n in ("data",)]


if __name__ == "__main__":
    raise SystemExit(main())
