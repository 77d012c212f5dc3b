"""Scale-out benchmark: several server processes on one PostgreSQL, behind HAProxy, side by side.

Run: ``.venv/bin/python benchmarks/cluster/run.py [--duration 10] [--rounds 3]`` (about 10
minutes with those). It needs ``wrk`` (``apt-get install -y wrk``), ``haproxy`` and the
PostgreSQL server binaries (``make test`` installs both: ``apt-get install haproxy
postgresql``). Not part of pytest.

Everything is real and local: ``interactions serve`` processes started by
``tests/cluster/harness.py`` (``Cluster``: one settings file, one agents file, a port, an SMTP
port, a node id and a data directory per process, HAProxy rendered from
``deploy/haproxy.cfg`` in front), on throwaway PostgreSQL clusters from ``tests/pgcluster.py``
(``fsync=off``, as in the store benchmark). Three configurations run at the same time, each
with its own HAProxy; the PostgreSQL ones each on a PostgreSQL cluster of their own, so that
the database's CPU of each is its own:

* ``pg1``    (a) one server process on PostgreSQL;
* ``pg2``    (b) two server processes on PostgreSQL;
* ``sqlite`` (c) one server process on SQLite: the reference (HAProxy in front all the same).

Set-up goes through the product, for each: an agent (capacity for all its interactions) makes
itself Ready, N mails are delivered over SMTP (to each process in turn), the agent Accepts the
N Invited interactions through HAProxy and keeps the session cookie (a cookie made on one
process works on all: on PostgreSQL the sessions are in the database).

Then, in rounds (the configurations' order rotates from round to round):

1. **Update round trips through HAProxy**: ``wrk`` (``bench.lua``: ``POST
   /api/v2/me/interactions/{id}`` ``UpdateProperties`` with the cookie, the ids cycled per wrk
   thread) with 32 connections and 2 threads, a warm-up first. HAProxy balances each request
   round-robin, so with two processes each one gets half of every id's updates (counted per
   server from HAProxy's log). CPU per update of each component, from ``/proc``: utime + stime
   deltas over the measured run, divided by the requests wrk counted: each server process
   (all its threads), PostgreSQL (the postmaster and every process under it, found by
   ``/proc/*/stat`` ppid, plus what it reaped meanwhile), HAProxy, wrk (its rusage) and this
   script; the machine's busy and idle time from ``/proc/stat``; "other" is the machine's busy
   time no named process accounts for (the other configurations idling, the kernel, anything
   else running on the machine). Each server's CPU is also split by thread from
   ``/proc/<pid>/task``: the event loop (the main thread) and, when ``py-spy`` is on the PATH
   (``pip install py-spy``; its ``dump`` names the threads, which the OS calls all "python"),
   the core thread, the notification tail, the LISTEN thread and the others by name. And the
   database's counters per update (``pg_stat_database``: commits, rows read and written).
2. **Cross-process notification latency** (``pg2``): a CometD client in a process of its own,
   connected *directly* to process B (node2, not through HAProxy) over the websocket transport
   (raw Bayeux: handshake with Basic credentials in the ``Authorization`` header of the upgrade
   request, subscribe to ``/me/interactions``, a ``/meta/connect`` kept outstanding), while
   this script sends ``UpdateProperties`` to process A (node1, directly) at a fixed rate
   (500/s, the targets' rate, then 100/s; open loop: each update is sent when it is due whether
   or not the earlier ones were answered, over 8 keep-alive connections of a minimal
   HTTP/1.1 client in this script, which costs a fraction of httpx's CPU; should more than 2 s
   of updates be unanswered the writer stops early and the round is marked OVERLOADED), each
   carrying ``benchSeq`` and ``benchSent`` (the send time, CLOCK_MONOTONIC µs, which every
   process on the machine shares) in its ``userData``. For each notification the client
   records its arrival; the figure is arrival
   minus send time: an upper bound of commit -> client, since it includes the HTTP request to
   A, A's transaction and commit, PostgreSQL's NOTIFY to B, B's read of the outbox and its
   websocket push. Also arrival minus the time A's HTTP response was received by the writer,
   which can be negative (B's client told before A's caller): its median and the fraction
   negative. Every update sent must arrive: sent, answered 2xx and received are counted.
   Targets (printed): p50 <= 5 ms and p99 <= 25 ms at 500 updates/s.

   One server process on PostgreSQL answers about 200 updates a second on this machine, so
   the same measurement is also made with the commits made elsewhere (``--writers``, both by
   default): ``engine`` has ``--engine-writers`` (4) embedding workers commit them, processes
   with an ``Engine`` of their own on the cluster's store (following: a server process leads),
   each calling ``Engine.execute`` for its share of the same open-loop schedule and of the
   interactions (no two share one), at niceness ``--writer-nice`` (10: the load generator,
   which would run elsewhere, behind the measured path on these shared cores). Each worker
   also notes when its commit's last round trip starts (the one that carries COMMIT), so that
   commit -> client lies between arrival minus its return from COMMIT and arrival minus that
   start: the target is judged on the latter, an upper bound.
3. **Failover** (``pg2``, after the rounds): the leader (``GET /health``: ``"role":
   "leader"``) is SIGKILLed, a mail is delivered over SMTP to the survivor right after the
   kill, and two pollers (20 ms apart, on the survivor directly) time from the kill to (i) the
   survivor's ``/health`` saying ``leader`` and (ii) that mail listed ``Invited`` to the Ready
   agent on ``GET /api/v2/me/interactions``: routing resumed. The killed process is restarted
   (it comes back as follower) and the next kill takes the new leader; 5 kills by default.

Afterwards each database is read to check that every 2xx update was committed (sum of version
increments) and that no notification was left unpublished.

Figures are medians over rounds, each round's raw numbers are kept (``--json FILE`` writes them
all; the last line printed is ``RESULT {json}`` with the summary). The machine has 2 cores
here, shared by everything above: the servers, PostgreSQL, HAProxy, wrk and this script.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import json
import math
import os
import queue
import re
import resource
import shutil
import signal
import smtplib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from email.message import EmailMessage
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
AGENT, PASSWORD = "bench", "bench-password"
NOTIFICATIONS = "/api/v2/notifications"
TOPIC = "/me/interactions"
CONFIGS = {
    "pg1": "(a) 1 process, PostgreSQL",
    "pg2": "(b) 2 processes, PostgreSQL",
    "sqlite": "(c) 1 process, SQLite (reference)",
}
NODES = {"pg1": 1, "pg2": 2, "sqlite": 1}
TARGET_NOTIFY_P50_MS, TARGET_NOTIFY_P99_MS = 5.0, 25.0
FAILOVER_SPARE = 16  # capacity above the benchmark's interactions, for the failover mails
TICK = os.sysconf("SC_CLK_TCK")


def _load(name: str, path: Path) -> ModuleType:
    """A module of the tests (``tests/`` is no package) from its path, registered first (its
    dataclasses look their module up while being built)."""
    if name in sys.modules:
        return sys.modules[name]
    if str(ROOT / "tests") not in sys.path:  # what they import from tests/ (ports.py)
        sys.path.append(str(ROOT / "tests"))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def harness() -> ModuleType:
    return _load("bench_cluster_harness", ROOT / "tests" / "cluster" / "harness.py")


def pgcluster() -> ModuleType:
    return _load("bench_cluster_pgcluster", ROOT / "tests" / "pgcluster.py")


# ------------------------------------------------------------------------------ CPU from /proc


def _stat(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 (state) on; None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def _children() -> dict[int, list[int]]:
    """ppid -> the pids of its live children, from every ``/proc/<pid>/stat``."""
    found: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                found.setdefault(int(fields[1]), []).append(int(entry.name))
    return found


def tree_seconds(pid: int, children: dict[int, list[int]]) -> float:
    """CPU seconds of ``pid`` and of every live process under it (utime + stime, all threads),
    plus what each of them has reaped (cutime + cstime): a backend that exits between two
    readings is counted in its parent's cutime once reaped, so a delta misses nothing."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    own = sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK
    return own + sum(tree_seconds(child, children) for child in children.get(pid, ()))


def find_py_spy() -> str | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return spy if Path(spy).exists() else None


def thread_names(pid: int) -> dict[int, str]:
    """Thread id -> Python thread name, from ``py-spy dump`` (when installed: the OS names
    every thread of a Python process "python"); empty without py-spy."""
    spy = find_py_spy()
    if spy is None:
        return {}
    try:
        dump = subprocess.run(
            [spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = re.finditer(r'^Thread (\d+) \([^)]*\): "(.*)"$', dump, re.MULTILINE)
    return {int(m.group(1)): re.sub(r"[_-]?\d+$", "", m.group(2)) for m in found}


def thread_seconds(pid: int, names: dict[int, str]) -> dict[str, float]:
    """CPU seconds of ``pid``'s live threads by name: the main thread (the event loop here)
    as "event loop", the others by ``names`` (a pool's numbered workers under one name) or as
    "other threads". What threads that ended used is in the process's total only."""
    found: dict[str, float] = {}
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            tid = int(task.name)
            name = "event loop" if tid == pid else names.get(tid, "other threads")
            found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return found


def machine_ticks() -> tuple[int, int]:
    """(busy, idle) ticks of all CPUs together, from ``/proc/stat``'s ``cpu`` line."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    return user + nice + system + irq + softirq + steal, idle + iowait


@dataclass
class Reading:
    at: float
    procs: dict[str, float]
    busy: int
    idle: int
    self_cpu: float
    threads: dict[str, dict[str, float]]


def read_cpu(groups: dict[str, int], names: dict[str, dict[int, str]] | None = None) -> Reading:
    children = _children()
    procs = {name: tree_seconds(pid, children) for name, pid in groups.items()}
    busy, idle = machine_ticks()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    threads = {
        name: thread_seconds(pid, (names or {}).get(name, {}))
        for name, pid in groups.items()
        if name.startswith("server ")
    }
    return Reading(time.monotonic(), procs, busy, idle, usage.ru_utime + usage.ru_stime, threads)


def threads_between(before: Reading, after: Reading) -> dict[str, dict[str, float]]:
    """Per server process, the CPU seconds of each thread name over the interval, and
    "ended threads": what the process used beyond its live threads (threads that exited)."""
    out: dict[str, dict[str, float]] = {}
    for server, now in after.threads.items():
        then = before.threads.get(server, {})
        deltas = {name: now[name] - then.get(name, 0.0) for name in now}
        total = after.procs[server] - before.procs[server]
        deltas["ended threads"] = max(0.0, total - sum(deltas.values()))
        out[server] = {k: v for k, v in deltas.items() if v > 0}
    return out


def cpu_between(
    before: Reading, after: Reading, extra: dict[str, float] | None = None
) -> dict[str, float]:
    """CPU seconds per component over the interval, the machine's busy and idle seconds, and
    "other": the busy time no component named here accounts for."""
    out = {name: after.procs[name] - before.procs[name] for name in before.procs}
    out["bench"] = after.self_cpu - before.self_cpu
    out.update(extra or {})
    out["machine_busy"] = (after.busy - before.busy) / TICK
    out["machine_idle"] = (after.idle - before.idle) / TICK
    named = sum(v for k, v in out.items() if not k.startswith("machine_"))
    out["other"] = out["machine_busy"] - named
    out["wall"] = after.at - before.at
    return out


# ------------------------------------------------------------------------------ set-up


def deliver(smtp_port: int, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "Cee Customer <customer@example.org>"
    message["To"] = harness().MAILBOX
    message["Subject"] = subject
    message["Message-ID"] = f"<bench-{uuid.uuid4().hex}@example.org>"
    message["Date"] = "Mon, 05 Jan 2026 09:00:00 +0000"
    message.set_content(f"{subject}: where is my order?\n")
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
        smtp.send_message(message)


def postmaster_pid(pg: Any) -> int:
    """The postmaster's pid, from its data directory (first line of ``postmaster.pid``)."""
    return int((Path(pg.data) / "postmaster.pid").read_text().split()[0])


@dataclass
class Setup:
    """One configuration: its cluster of server processes (and HAProxy), its database."""

    key: str
    cluster: Any  # tests/cluster/harness.py Cluster
    pg: Any | None  # tests/pgcluster.py PostgresCluster, or None for SQLite
    dsn: str
    cookie: str = ""
    ids: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return CONFIGS[self.key]

    def groups(self) -> dict[str, int]:
        """Component name -> the pid whose process tree is that component."""
        found = {
            f"server {node.name}": node.process.pid for node in self.cluster.members if node.running
        }
        if self.pg is not None:
            found["postgres"] = postmaster_pid(self.pg)
        found["haproxy"] = self.cluster.haproxy.pid
        return found

    def versions(self) -> int:
        """The sum of the benchmark's interactions' versions, read from the database."""
        marks = ",".join(["%s" if self.pg else "?"] * len(self.ids))
        query = f"SELECT sum(version) FROM interactions WHERE id IN ({marks})"
        return int(self._one(query, self.ids))

    def unpublished(self) -> int:
        """Notifications committed and never published (both stores keep published ones for
        the replay, marked: ``published_us`` in SQLite, ``published_at`` in PostgreSQL)."""
        column = "published_us" if self.pg is None else "published_at"
        query = f"SELECT count(*) FROM outbox WHERE kind = 'notification' AND {column} IS NULL"
        return int(self._one(query, []))

    def pg_stats(self) -> dict[str, int]:
        """The database's counters from ``pg_stat_database`` (PostgreSQL only, else empty).
        Each backend adds its own at most once a second (idle ones within 10 s), so deltas
        over a run of seconds are approximate."""
        if self.pg is None:
            return {}
        import psycopg

        names = ("xact_commit", "xact_rollback", "tup_fetched", "tup_inserted", "tup_updated")
        query = f"SELECT {', '.join(names)} FROM pg_stat_database WHERE datname = %s"
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(query, [self.dsn.rsplit("/", 1)[1]]).fetchone()
        assert row is not None
        return dict(zip(names, (int(v) for v in row), strict=True))

    def _one(self, query: str, params: list[str]) -> Any:
        if self.pg is None:
            with sqlite3.connect(f"file:{self.dsn}?mode=ro", uri=True) as conn:
                return conn.execute(query, params).fetchone()[0]
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(query, params).fetchone()
            assert row is not None
            return row[0]


def start_setup(key: str, work: Path, pg: Any | None, interactions: int) -> Setup:
    h = harness()
    dsn = pg.create_database() if pg is not None else str(work / key / "interactions.sqlite3")
    cluster = h.Cluster(dsn, work / key, nodes=NODES[key], settings={})
    # Before start: the cluster's own agents (capacity 5) are added beside this one.
    from adapters.server.agents import add_agent

    add_agent(
        cluster.agents_file,
        AGENT,
        PASSWORD,
        name="Bench",
        mailboxes=[h.MAILBOX],
        capacity=interactions + FAILOVER_SPARE,
    )
    setup = Setup(key, cluster, pg, dsn)
    cluster.start()
    return setup


def prepare(setup: Setup, count: int) -> None:
    """Ready, ``count`` mails over SMTP (to each process in turn), Accept them all."""
    cluster = setup.cluster
    api = cluster.base_url + "/api/v2"
    with httpx.Client(base_url=api, auth=(AGENT, PASSWORD), timeout=10) as http:
        http.post("/me/channels/email", json={"operationName": "Ready"}).raise_for_status()
        for n in range(count):
            deliver(cluster.smtp_port(n % len(cluster.members)), f"Benchmark order {n}")
        accepted: list[str] = []
        deadline = time.monotonic() + 120
        while len(accepted) < count and time.monotonic() < deadline:
            for i in http.get("/me/interactions").json()["interactions"]:
                if i["state"] == "Invited":
                    r = http.post(f"/me/interactions/{i['id']}", json={"operationName": "Accept"})
                    if r.status_code == 200:
                        accepted.append(i["id"])
            time.sleep(0.05)
        if len(accepted) < count:
            raise RuntimeError(f"{setup.key}: only {len(accepted)} of {count} accepted")
        cookie = http.cookies.get("JSESSIONID")
    if not cookie:
        raise RuntimeError(f"{setup.key}: no session cookie")
    # The cookie alone must do, on every process directly (what wrk and the writer send).
    for i in range(len(cluster.members)):
        r = httpx.post(
            f"{cluster.node_url(i)}/api/v2/me/interactions/{accepted[0]}",
            json={"operationName": "UpdateProperties", "userData": {"n": 0}},
            headers={"Cookie": f"JSESSIONID={cookie}"},
            timeout=10,
        )
        if r.status_code != 200 or r.json().get("status") != "ok":
            raise RuntimeError(f"{setup.key}: update with the cookie on node {i}: {r.text}")
    setup.cookie, setup.ids = cookie, accepted


# ------------------------------------------------------------------------------ 1: wrk


_LOG_LINE = re.compile(r"\] \S+ (\S+)/(\S+) \S+ (\d{3}) ")


def haproxy_counts(log: Path, offset: int) -> tuple[Counter[str], Counter[str], int]:
    """Requests per server and per status in HAProxy's log from ``offset``; the new offset."""
    servers: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    with log.open("rb") as f:
        f.seek(offset)
        data = f.read()
    for line in data.decode(errors="replace").splitlines():
        found = _LOG_LINE.search(line)
        if found and found.group(1) == "api":
            servers[found.group(2)] += 1
            statuses[found.group(3)] += 1
    return servers, statuses, offset + len(data)


def py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` of ``pid`` (raw collapsed stacks, every thread) into ``out``."""
    spy = find_py_spy()
    if spy is None:
        print("py-spy not found (pip install py-spy); no profile", file=sys.stderr)
        return None
    command = [spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds)))]
    command += ["--threads", "--format", "raw", "--rate", "100", "--output", str(out)]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def run_wrk(
    setup: Setup,
    seconds: float,
    args: argparse.Namespace,
    profile: Path | None = None,
    idle: dict[str, int] | None = None,
    extra: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One wrk run through HAProxy; its figures with the CPU of every component. With
    ``profile`` (a directory), each server process is sampled by py-spy meanwhile. ``idle``:
    the other configurations' processes, whose CPU meanwhile is "idle configurations"."""
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "bench.lua"),
        setup.cluster.base_url,
        "--",
        str(args.threads),
        setup.cookie,
        *setup.ids,
    ]
    log = Path(setup.cluster.haproxy_log)
    offset = log.stat().st_size
    groups = setup.groups()
    groups.update(extra or {})
    names = {k: thread_names(pid) for k, pid in groups.items() if k.startswith("server ")}
    groups.update({f"idle: {k}": pid for k, pid in (idle or {}).items()})
    stats = setup.pg_stats()
    with tempfile.TemporaryFile() as out:
        before = read_cpu(groups, names)
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        spies = []
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            for name, pid in groups.items():
                if name.startswith("server "):
                    target = profile / f"{setup.key}-{name[7:]}.txt"
                    spies.append(py_spy(pid, seconds - 1, target))
        try:
            status, usage = wait_rusage(process, seconds + 60)
            for spy in spies:
                if spy is not None:
                    spy.wait(60)
        finally:
            for spy in spies:
                if spy is not None and spy.poll() is None:
                    spy.kill()
                    spy.wait()
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        after = read_cpu(groups, names)
        out.seek(0)
        text = out.read().decode(errors="replace")
    found = re.search(r"^BENCH (\{.*\})$", text, re.MULTILINE)
    if status != 0 or found is None:
        raise RuntimeError(f"wrk failed ({status}):\n{text}")
    result: dict[str, Any] = json.loads(found.group(1))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["ok"] = result["requests"] - result["errors"]["status"]
    cpu = cpu_between(before, after, {"wrk": usage.ru_utime + usage.ru_stime})
    cpu["idle configurations"] = sum(cpu.pop(k) for k in list(cpu) if k.startswith("idle: "))
    result["cpu_s"] = cpu
    result["threads_s"] = threads_between(before, after)
    time.sleep(0.3)  # HAProxy writes its log line when the response is done
    result["pg_stats"] = {k: v - stats[k] for k, v in setup.pg_stats().items()}
    servers, statuses, _ = haproxy_counts(log, offset)
    result["per_server"] = dict(servers)
    result["statuses"] = dict(statuses)
    return result


def wait_rusage(process: subprocess.Popen[bytes], timeout: float) -> tuple[int, Any]:
    """Wait for ``process`` with ``os.wait4`` (its own rusage, not every child's); its exit
    status. Killed (its group) at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise RuntimeError(f"{process.args[0]} did not finish within {timeout:g} s")
        time.sleep(0.02)


# ------------------------------------------------------------------------------ 2: notifications


def listener_main(url: str) -> int:
    """The CometD client (``run.py _listen URL``, a process of its own): READY once
    subscribed; ``COUNT lo hi`` answers how many notifications with ``lo <= benchSeq < hi``
    arrived; ``STOP`` (or end of input) answers ``RESULT`` with every arrival, and exits."""
    return asyncio.run(_listen(url))


async def _listen(url: str) -> int:
    from websockets.asyncio.client import connect

    credentials = base64.b64encode(f"{AGENT}:{PASSWORD}".encode()).decode()
    arrivals: list[tuple[int, int, int]] = []  # (benchSeq, benchSent µs, arrival µs)
    problems: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def read_input() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.strip())
        loop.call_soon_threadsafe(commands.put_nowait, "STOP")

    threading.Thread(target=read_input, daemon=True).start()
    ws_url = url.replace("http://", "ws://", 1) + NOTIFICATIONS
    async with connect(
        ws_url,
        additional_headers={"Authorization": f"Basic {credentials}"},
        max_size=None,
        compression=None,
    ) as ws:
        numbers = iter(range(1, 1 << 62))

        async def call(*messages: dict[str, Any]) -> list[dict[str, Any]]:
            batch = [{**m, "id": str(next(numbers))} for m in messages]
            await ws.send(json.dumps(batch))
            wanted = {m["id"] for m in batch}
            replies: list[dict[str, Any]] = []
            while wanted:
                for reply in json.loads(await ws.recv()):
                    if reply.get("id") in wanted:
                        wanted.discard(reply["id"])
                        replies.append(reply)
            return replies

        [hello] = await call(
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "minimumVersion": "1.0",
                "supportedConnectionTypes": ["websocket"],
            }
        )
        if not hello.get("successful"):
            print(f"FAILED handshake {hello}", flush=True)
            return 1
        client_id = hello["clientId"]

        def connect_message() -> dict[str, Any]:
            return {
                "channel": "/meta/connect",
                "clientId": client_id,
                "connectionType": "websocket",
                "id": str(next(numbers)),
            }

        replies = await call(
            {**connect_message(), "advice": {"timeout": 0}},
            {"channel": "/meta/subscribe", "clientId": client_id, "subscription": TOPIC},
        )
        if not all(r.get("successful") for r in replies):
            print(f"FAILED subscribe {replies}", flush=True)
            return 1
        await ws.send(json.dumps([connect_message()]))

        async def receive() -> None:
            async for frame in ws:
                now = time.monotonic_ns() // 1000
                for message in json.loads(frame):
                    channel = message.get("channel")
                    if channel == TOPIC:
                        problems["notifications"] += 1  # (a count, not a problem)
                        data = message.get("data") or {}
                        user_data = data.get("userData") or {}
                        seq = user_data.get("benchSeq")
                        if isinstance(seq, int):
                            arrivals.append((seq, int(user_data.get("benchSent", 0)), now))
                    elif channel == "/meta/connect":
                        if not message.get("successful"):
                            problems[f"connect: {message.get('error')}"] += 1
                            return
                        await ws.send(json.dumps([connect_message()]))
                    else:
                        problems[f"channel {channel}"] += 1

        receiving = asyncio.create_task(receive())
        print("READY", client_id, flush=True)
        try:
            while True:
                command = await commands.get()
                if command.startswith("COUNT"):
                    lo, hi = (int(v) for v in command.split()[1:3])
                    got = sum(1 for seq, _, _ in arrivals if lo <= seq < hi)
                    state = "done" if receiving.done() else "open"
                    print(f"COUNT {got} {state}", flush=True)
                elif command == "STOP":
                    break
        finally:
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiving
            # Leave, or the session outlives the socket (maxInterval) and fills its queue.
            with contextlib.suppress(Exception):
                await ws.send(json.dumps([{"channel": "/meta/disconnect", "clientId": client_id}]))
                await asyncio.wait_for(ws.recv(), 2)
    print("RESULT " + json.dumps({"arrivals": arrivals, "problems": problems}), flush=True)
    return 0


class Child:
    """A helper process of this script (``run.py _listen`` or ``_engine_writer``), driven
    over its stdin and stdout, one line a command or an answer."""

    what = "the helper process"

    def __init__(self, *argv: str, nice: int = 0) -> None:
        prefix = ["nice", "-n", str(nice)] if nice else []
        self.process = subprocess.Popen(
            [*prefix, sys.executable, str(Path(__file__).resolve()), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own group: stopped by stop(), never by a ^C
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("EOF")

    def expect(self, word: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.what} did not answer {word}") from None
            if line.startswith(word):
                return line
            if line == "EOF" or line.startswith("FAILED"):
                raise RuntimeError(f"{self.what} failed: {line}")

    def tell(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class Listener(Child):
    """The CometD client's process (``listener_main``)."""

    what = "the CometD client"

    def __init__(self, url: str) -> None:
        super().__init__("_listen", url)
        ready = self.expect("READY", 30)
        self.client_id = ready.split()[1]

    def count(self, lo: int, hi: int) -> tuple[int, bool]:
        self.tell(f"COUNT {lo} {hi}")
        _, got, state = self.expect("COUNT", 10).split()
        return int(got), state == "open"

    def result(self) -> dict[str, Any]:
        self.tell("STOP")
        found: dict[str, Any] = json.loads(self.expect("RESULT", 30).split(" ", 1)[1])
        return found


def engine_writer_main(dsn: str, agents_file: str) -> int:
    """An embedding backend's worker (``run.py _engine_writer DSN AGENTS_FILE``, a process of
    its own, for part 2 with ``--writers engine``): an ``Engine`` on the cluster's PostgreSQL
    store with the cluster's agents, following (a server process leads), as the many worker
    processes of a backend that embeds the core are. It answers READY once open; each ``RUN
    first count start_ns index writers rate id...`` line is its share (every ``writers``-th
    update from ``index``) of one open-loop schedule: update k falls due at ``start_ns + k /
    rate`` (CLOCK_MONOTONIC ns, which every process on the machine shares) and is an
    ``UpdateProperties`` of ``ids[k % len(ids)]`` through ``Engine.execute``, with ``benchSeq``
    ``first + k`` and ``benchSent`` (the call's start, µs) in its ``userData``. Answered by
    ``DONE {json}``: (seq, sent µs, returned µs, 200 or 409, the start of the commit's last
    round trip µs) per update, how late each call started, and whether it fell more than 2 s
    behind (it stops there)."""
    from adapters.postgres import PostgresStore
    from adapters.server.agents import FileAgentDirectory
    from interactions_core import Engine

    class TimedStore(PostgresStore):
        """The store, noting when a commit's last round trip starts: its outbox lock is the
        first statement of that trip (``PostgresStore._commit``), which ends with COMMIT.
        The same statements, in the same round trips."""

        last_trip_ns = 0

        def _lock_outbox(self, conn: Any) -> None:
            self.last_trip_ns = time.monotonic_ns()
            super()._lock_outbox(conn)

    store = TimedStore(dsn, pool_size=2, application_name="bench-writer", migrate=False)
    engine = Engine(store=store, agents=FileAgentDirectory(Path(agents_file)))
    engine.follow()  # the cluster's leader routes; this worker only commits

    def execute(agent: str, iid: str, body: Any) -> tuple[bool, int]:
        store.last_trip_ns = 0
        result = engine.execute(agent, iid, body)
        return result.ok, store.last_trip_ns // 1000

    print("READY", flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] != "RUN":
                break
            first, count, start_ns, index, writers = (int(v) for v in words[1:6])
            done = engine_writes(
                execute, words[7:], float(words[6]), first, count, start_ns, index, writers
            )
            print("DONE " + json.dumps(done), flush=True)
    finally:
        engine.close()
    return 0


def engine_writes(
    execute: Any,
    ids: list[str],
    rate: float,
    first: int,
    count: int,
    start_ns: int,
    index: int,
    writers: int,
    backlog_s: float = 2.0,
) -> dict[str, Any]:
    """One writer's share of the schedule (``engine_writer_main``): one call at a time, each
    started when it falls due, or at once when the calls before it ran late."""
    records: list[tuple[int, int, int, int, int]] = []
    late: list[float] = []
    overloaded = False
    for k in range(index, count, writers):
        due_ns = start_ns + round(k * 1e9 / rate)
        now = time.monotonic_ns()
        if due_ns > now:
            time.sleep((due_ns - now) / 1e9)
        elif now - due_ns > backlog_s * 1e9:
            overloaded = True
            break
        sent_ns = time.monotonic_ns()
        late.append((sent_ns - due_ns) / 1e9)
        seq, sent = first + k, sent_ns // 1000
        user_data = {"benchSeq": seq, "benchSent": sent}
        body = {"operationName": "UpdateProperties", "userData": user_data}
        ok, last_trip = execute(AGENT, ids[k % len(ids)], body)
        records.append((seq, sent, time.monotonic_ns() // 1000, 200 if ok else 409, last_trip))
    return {"records": records, "late_s": late, "overloaded": overloaded}


class EngineWriters:
    """Part 2's writer with ``--writers engine``: ``n`` processes (``engine_writer_main``), each
    committing its share of the updates through an Engine of its own. With ``n`` dividing the
    number of interactions, no two writers ever update the same interaction (no version
    conflicts between them)."""

    def __init__(self, setup: Setup, n: int, nice: int = 0) -> None:
        self.children: list[Child] = []
        try:
            for _ in range(n):
                agents = str(setup.cluster.agents_file)
                child = Child("_engine_writer", setup.dsn, agents, nice=nice)
                child.what = "an engine writer"
                self.children.append(child)
            for child in self.children:
                child.expect("READY", 60)
        except BaseException:
            self.stop()
            raise

    @property
    def pids(self) -> list[int]:
        return [child.process.pid for child in self.children]

    def write(self, ids: list[str], rate: float, seconds: float, first: int) -> dict[str, Any]:
        """``write_updates``'s schedule and answer, the updates committed by the writers."""
        count = int(rate * seconds)
        start_ns = time.monotonic_ns() + 50_000_000
        n = len(self.children)
        for i, child in enumerate(self.children):
            child.tell(f"RUN {first} {count} {start_ns} {i} {n} {rate} {' '.join(ids)}")
        parts = [
            json.loads(child.expect("DONE", seconds + 60).split(" ", 1)[1])
            for child in self.children
        ]
        return {
            "records": sorted(r for part in parts for r in part["records"]),
            "late_s": [v for part in parts for v in part["late_s"]],
            "overloaded": any(part["overloaded"] for part in parts),
        }

    def stop(self) -> None:
        for child in self.children:
            child.stop()


class RawHttp:
    """One keep-alive HTTP/1.1 connection for the writer: a request written as bytes, the
    response's head read up to its blank line and its body by ``Content-Length``. Far less CPU
    per request than a general client, which matters on 2 cores shared with the servers."""

    def __init__(self, host: str, port: int, cookie: str) -> None:
        self.host, self.port = host, port
        self.head = (
            f"Host: {host}:{port}\r\nCookie: JSESSIONID={cookie}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes) -> int:
        """The response's status; 0 if the connection failed (it is opened again next time:
        the update is not sent twice, it may or may not have been applied)."""
        try:
            if self.writer is None:
                await self.open()
            assert self.reader is not None and self.writer is not None
            self.writer.write(
                b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
                % (path.encode(), self.head, len(body), body)
            )
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if found is None:
                raise ConnectionError("a response without Content-Length")
            await self.reader.readexactly(int(found.group(1)))
            return status
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            await self.close()
            return 0

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()


async def write_updates(
    url: str,
    cookie: str,
    ids: list[str],
    rate: float,
    seconds: float,
    connections: int,
    first: int,
    backlog_s: float = 2.0,
) -> dict[str, Any]:
    """``rate`` updates a second for ``seconds``, open loop, to ``url``. The updates fall due
    on a fixed schedule into a queue, whatever became of the earlier ones; ``connections``
    workers, each with a keep-alive connection of its own (``RawHttp``), send them in order,
    so there are never more requests in flight than connections. ``benchSent`` is when a
    worker sends it; how late that was after its due time is kept. Returns (seq, sent µs,
    answered µs, status) per update. Should more than ``backlog_s`` seconds' worth wait in the
    queue (the server cannot keep up), it stops there (``overloaded``) instead of queueing
    without end."""
    count = int(rate * seconds)
    records: list[tuple[int, int, int, int]] = []
    late: list[float] = []
    overloaded = False
    due_updates: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    pool = [RawHttp(host, int(port), cookie) for _ in range(connections)]
    for connection in pool:  # every connection open before the clock starts
        await connection.open()

    async def worker(connection: RawHttp) -> None:
        while (item := await due_updates.get()) is not None:
            k, due = item
            seq = first + k
            sent_ns = time.monotonic_ns()
            late.append(sent_ns / 1e9 - due)
            sent = sent_ns // 1000
            body = (
                b'{"operationName":"UpdateProperties","userData":{"benchSeq":%d,"benchSent":%d}}'
                % (seq, sent)
            )
            path = f"/api/v2/me/interactions/{ids[k % len(ids)]}"
            status = await connection.post(path, body)
            records.append((seq, sent, time.monotonic_ns() // 1000, status))

    workers = [asyncio.create_task(worker(connection)) for connection in pool]
    try:
        start = time.monotonic() + 0.05
        for k in range(count):
            due = start + k / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if due_updates.qsize() > rate * backlog_s:
                overloaded = True
                break
            due_updates.put_nowait((k, due))
        for _ in workers:
            due_updates.put_nowait(None)
        await asyncio.gather(*workers)
    finally:
        for connection in pool:
            await connection.close()
    return {"records": records, "late_s": late, "overloaded": overloaded}


def notification_round(
    setup: Setup, args: argparse.Namespace, rate: float, first: int, writer: str = "http"
) -> dict[str, Any]:
    """One measurement of part 2 on ``setup`` (two processes), the client on node2. The
    updates are committed by node1 (``writer`` "http": ``UpdateProperties`` POSTed to it) or
    by ``--engine-writers`` embedding workers ("engine": ``EngineWriters``). ``first``: the
    first benchSeq of this round (a warm-up takes the seqs before it)."""
    cluster = setup.cluster
    writer_url, listener_url = cluster.node_url(0), cluster.node_url(1)
    engines = (
        EngineWriters(setup, args.engine_writers, args.writer_nice) if writer == "engine" else None
    )

    def write(seconds: float, first: int) -> dict[str, Any]:
        if engines is not None:
            return engines.write(setup.ids, rate, seconds, first)
        return asyncio.run(
            write_updates(
                writer_url, setup.cookie, setup.ids, rate, seconds, args.writer_connections, first
            )
        )

    try:
        listener = Listener(listener_url)
        try:
            groups = setup.groups()
            groups["cometd client"] = listener.process.pid
            for i, pid in enumerate(engines.pids if engines is not None else ()):
                groups[f"engine writer {i + 1}"] = pid
            warm_ok = 0
            if args.warmup > 0:
                warm_first = first - int(rate * args.warmup)
                warm = write(args.warmup, warm_first)
                warm_ok = sum(1 for r in warm["records"] if 200 <= r[3] < 300)
                wait_received(listener, warm_first, first, int(rate * args.warmup))
            stats = setup.pg_stats()
            names = {k: thread_names(pid) for k, pid in groups.items() if k.startswith("server ")}
            before = read_cpu(groups, names)
            spies = []
            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                for name, pid in groups.items():
                    if name.startswith(("server ", "engine writer ")):
                        target = args.profile / f"notify-{writer}-{rate:g}-{name}.txt"
                        spies.append(py_spy(pid, args.duration - 1, target))
            written = write(args.duration, first)
            after = read_cpu(groups, names)
            for spy in spies:
                if spy is not None:
                    spy.wait(60)
            stats = {k: v - stats[k] for k, v in setup.pg_stats().items()}
            sent = len(written["records"])
            wait_received(listener, first, first + sent, sent)
            got = listener.result()
        finally:
            listener.stop()
    finally:
        if engines is not None:
            engines.stop()
    summary = summarise_notifications(written, got, first, cpu_between(before, after))
    summary["threads_us_per_update"] = {
        server: {k: v / max(1, summary["sent"]) * 1e6 for k, v in threads.items()}
        for server, threads in threads_between(before, after).items()
    }
    us = summary["cpu_us_per_update"]
    us["engine writers"] = sum(us.pop(k) for k in list(us) if k.startswith("engine writer "))
    summary["warmup_2xx"] = warm_ok
    summary["db_per_update"] = {k: v / max(1, summary["sent"]) for k, v in stats.items()}
    summary["offered_rate"] = rate
    summary["writer"] = writer
    return summary


def wait_received(listener: Listener, lo: int, hi: int, expected: int, patience: float = 15):
    """Until the client has every notification of [lo, hi), or ``patience`` seconds pass."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        got, open_ = listener.count(lo, hi)
        if got >= expected or not open_:
            return
        time.sleep(0.1)


def pct(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values``, nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summarise_notifications(
    written: dict[str, Any], got: dict[str, Any], first: int, cpu: dict[str, float]
) -> dict[str, Any]:
    records = {
        seq: (sent, answered, status) for seq, sent, answered, status, *_ in written["records"]
    }
    # The engine writer's records also say when the commit's last round trip started: then
    # commit -> client lies between arrival - answered and arrival - that.
    last_trips = {r[0]: r[4] for r in written["records"] if len(r) > 4 and r[4]}
    arrivals: dict[int, int] = {}
    duplicates = 0
    for seq, _sent, arrived in got["arrivals"]:
        if seq < first or seq not in records:
            continue
        if seq in arrivals:
            duplicates += 1
            continue
        arrivals[seq] = arrived
    to_client = [(arrivals[s] - records[s][0]) / 1000 for s in arrivals]
    after_answer = [(arrivals[s] - records[s][1]) / 1000 for s in arrivals]
    after_last_trip = [(arrivals[s] - last_trips[s]) / 1000 for s in arrivals if s in last_trips]
    http_ms = [(answered - sent) / 1000 for sent, answered, _ in records.values()]
    ok = sum(1 for _, _, status in records.values() if 200 <= status < 300)
    late = [v * 1000 for v in written["late_s"]]
    updates = len(records)
    return {
        "sent": updates,
        "answered_2xx": ok,
        "received": len(arrivals),
        "duplicates": duplicates,
        "missing": sorted(set(records) - set(arrivals))[:20],
        "client_problems": got["problems"],
        "p50_ms": pct(to_client, 0.5),
        "p90_ms": pct(to_client, 0.9),
        "p99_ms": pct(to_client, 0.99),
        "max_ms": max(to_client, default=float("nan")),
        "after_answer_p50_ms": pct(after_answer, 0.5),
        "after_answer_p99_ms": pct(after_answer, 0.99),
        "after_last_trip_p50_ms": pct(after_last_trip, 0.5),
        "after_last_trip_p99_ms": pct(after_last_trip, 0.99),
        "after_answer_negative": sum(1 for v in after_answer if v < 0) / max(1, len(after_answer)),
        "http_p50_ms": pct(http_ms, 0.5),
        "http_p99_ms": pct(http_ms, 0.99),
        "send_late_p99_ms": pct(late, 0.99),
        "send_late_max_ms": max(late, default=float("nan")),
        "overloaded": written["overloaded"],
        "rate": updates / max(1e-9, cpu["wall"]),
        "cpu_s": cpu,
        "cpu_us_per_update": {k: v / max(1, updates) * 1e6 for k, v in cpu.items() if k != "wall"},
    }


# ------------------------------------------------------------------------------ 3: failover


def role_of(url: str) -> str | None:
    try:
        return str(httpx.get(url + "/health", timeout=2).json().get("role"))
    except (httpx.HTTPError, ValueError):
        return None


def leaders(cluster: Any) -> list[int]:
    return [
        i
        for i, node in enumerate(cluster.members)
        if node.running and role_of(cluster.node_url(i)) == "leader"
    ]


def wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not within {timeout:g} s")


def poll_until(check: Any, since: float, timeout: float, every: float = 0.02) -> float | None:
    """Seconds from ``since`` to the first true ``check()``, polled every ``every`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic() - since
        time.sleep(every)
    return None


def invited_check(url: str, cookie: str, subject: str, found: dict[str, Any]) -> Any:
    """A check: is the mail ``subject`` listed Invited on ``url``? (its id into ``found``)."""

    def check() -> bool:
        try:
            r = httpx.get(
                url + "/api/v2/me/interactions",
                headers={"Cookie": f"JSESSIONID={cookie}"},
                timeout=2,
            )
            listed = r.json()["interactions"]
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        for i in listed:
            if i["email_object"]["Subject"] == subject and i["state"] == "Invited":
                found["id"] = i["id"]
                return True
        return False

    return check


class Pollers:
    """Each check polled in a thread of its own from now on; ``join()``: for each, the
    seconds from ``since`` to its first true answer (None: not within ``timeout``)."""

    def __init__(self, checks: dict[str, Any], since: float, timeout: float) -> None:
        self.times: dict[str, float | None] = {}
        self.timeout = timeout
        self.threads = [
            threading.Thread(target=self._run, args=(name, check, since), daemon=True)
            for name, check in checks.items()
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, name: str, check: Any, since: float) -> None:
        self.times[name] = poll_until(check, since, self.timeout)

    def join(self) -> dict[str, float | None]:
        for thread in self.threads:
            thread.join(self.timeout + 10)
        return dict(self.times)


def failover(setup: Setup, kills: int) -> list[dict[str, Any]]:
    cluster = setup.cluster
    results: list[dict[str, Any]] = []
    wait_for("exactly one leader", lambda: len(leaders(cluster)) == 1, 30)
    for kill in range(kills):
        [leader] = leaders(cluster)
        survivor = 1 - leader
        url = cluster.node_url(survivor)
        subject = f"Failover {kill} {uuid.uuid4().hex[:8]}"
        found: dict[str, Any] = {}
        checks = {
            "leader_s": partial(is_leader, url),
            "routed_s": invited_check(url, setup.cookie, subject, found),
        }
        killed_at = time.monotonic()
        cluster.kill(leader, signal.SIGKILL)
        pollers = Pollers(checks, killed_at, 60)
        deliver(cluster.smtp_port(survivor), subject)
        delivered = time.monotonic() - killed_at
        times = pollers.join()
        result = {
            "killed": cluster.members[leader].name,
            "survivor": cluster.members[survivor].name,
            "delivered_s": delivered,
            **times,
        }
        results.append(result)
        print(
            f"  failover {kill + 1}: killed {result['killed']}, the mail accepted by "
            f"{result['survivor']} {delivered * 1000:.0f} ms after the kill; survivor leader "
            f"after {fmt_s(times.get('leader_s'))}, the mail Invited after "
            f"{fmt_s(times.get('routed_s'))}",
            flush=True,
        )
        if "id" in found:  # held, so that it is not offered again while the next kill runs
            httpx.post(
                f"{url}/api/v2/me/interactions/{found['id']}",
                json={"operationName": "Accept"},
                headers={"Cookie": f"JSESSIONID={setup.cookie}"},
                timeout=10,
            )
        cluster.restart(leader)
        wait_for("one leader after the restart", partial(leads_alone, cluster, survivor), 30)
        time.sleep(1)
    return results


def is_leader(url: str) -> bool:
    return role_of(url) == "leader"


def leads_alone(cluster: Any, i: int) -> bool:
    return leaders(cluster) == [i]


def fmt_s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


# ------------------------------------------------------------------------------ the run


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "_listen":
        return listener_main(sys.argv[2])
    if len(sys.argv) >= 4 and sys.argv[1] == "_engine_writer":
        return engine_writer_main(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--interactions", type=int, default=64, help="accepted per config")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="of pg1,pg2,sqlite")
    parser.add_argument(
        "--rates",
        type=lambda text: [float(v) for v in text.split(",") if v],
        default=[500.0, 100.0],
        help="part 2: updates a second, one measurement each per round; the targets are for "
        "500 (empty: no part 2)",
    )
    parser.add_argument(
        "--writers",
        type=lambda text: [v for v in text.split(",") if v],
        default=["http", "engine"],
        help="part 2: who commits the updates, of http (POSTs to node1) and engine (embedding "
        "workers, Engine.execute on the store), each measured at every rate",
    )
    parser.add_argument("--writer-connections", type=int, default=8)
    parser.add_argument(
        "--engine-writers",
        type=int,
        default=4,
        help="part 2, engine: worker processes (a divisor of --interactions)",
    )
    parser.add_argument(
        "--writer-nice",
        type=int,
        default=10,
        help="part 2, engine: the workers' niceness (the load generator behind the servers, "
        "PostgreSQL and the client on these shared cores, as if it ran elsewhere)",
    )
    parser.add_argument(
        "--subscribed",
        action="store_true",
        help="part 1 with the agent's CometD session on the first process (raw Bayeux client)",
    )
    parser.add_argument("--kills", type=int, default=5, help="part 3: leader kills (0: none)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy profiles of every server process in round 1's update runs, here "
        "(the sampling costs CPU: not a run of record)",
    )
    args = parser.parse_args()
    for tool in ("wrk",):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install -y {tool})", file=sys.stderr)
            return 2
    keys = [k for k in args.configs.split(",") if k]
    if any(w not in ("http", "engine") for w in args.writers):
        parser.error("--writers: of http,engine")
    if args.engine_writers < 1 or args.interactions % args.engine_writers:
        parser.error("--engine-writers: a divisor of --interactions, so that no two share one")
    if not keys or any(k not in CONFIGS for k in keys):
        parser.error(f"--configs: of {','.join(CONFIGS)}")
    # SIGTERM ends the run like ^C: through every finally, so everything started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    print(
        f"machine: {os.cpu_count()} CPUs (shared by every process below), load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}, Python {sys.version.split()[0]}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    setups: dict[str, Setup] = {}
    pgs: list[Any] = []
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in keys}
    notes: dict[tuple[str, float], list[dict[str, Any]]] = {
        (writer, rate): [] for writer in args.writers for rate in args.rates
    }
    failovers: list[dict[str, Any]] = []
    checks: dict[str, dict[str, int]] = {}
    findings: dict[str, dict[str, int]] = {}
    try:
        for key in keys:
            pg = None
            if key != "sqlite":
                pg = pgcluster().PostgresCluster().start()
                pgs.append(pg)
            started = time.monotonic()
            setups[key] = start_setup(key, work, pg, args.interactions)
            prepare(setups[key], args.interactions)
            print(
                f"{key}: {CONFIGS[key]}: {len(setups[key].ids)} interactions accepted, "
                f"HAProxy {setups[key].cluster.base_url}, set up in "
                f"{time.monotonic() - started:.1f} s",
                flush=True,
            )
        idle = idle_reading(setups, 3.0)
        wall, busy, rest = idle["wall"], idle["machine_busy"], idle["other"]
        print(
            f"everything set up and idle (3 s): machine busy {busy / wall:.2f} of "
            f"{os.cpu_count()} cores: this benchmark's processes {(busy - rest) / wall:.2f}, "
            f"the rest {rest / wall:.2f}",
            flush=True,
        )
        start_versions = {k: s.versions() for k, s in setups.items()}
        answered = dict.fromkeys(setups, 0)
        runs = dict.fromkeys(setups, 0)
        seq = 1_000_000
        for round_no in range(args.rounds):
            order = keys[round_no % len(keys) :] + keys[: round_no % len(keys)]
            for key in order:
                setup = setups[key]
                # --subscribed: the agent's CometD session on the first process, as an agent
                # working at the desktop has; every update's notification goes to it.
                listener = Listener(setup.cluster.node_url(0)) if args.subscribed else None
                extra = {"cometd client": listener.process.pid} if listener else None
                if args.warmup > 0:
                    warm = run_wrk(setup, args.warmup, args, extra=extra)
                    answered[key] += warm["ok"]
                    runs[key] += 1
                others = {
                    f"{k} {name}": pid
                    for k, other in setups.items()
                    if k != key
                    for name, pid in other.groups().items()
                }
                profile = args.profile if round_no == 0 else None
                r = run_wrk(setup, args.duration, args, profile, others, extra)
                if listener is not None:
                    time.sleep(1.0)  # the last notifications on their way
                    got = listener.result()
                    listener.stop()
                    r["client_notifications"] = got["problems"].get("notifications", 0)
                    r["client_problems"] = {
                        k: v for k, v in got["problems"].items() if k != "notifications"
                    }
                answered[key] += r["ok"]
                runs[key] += 1
                results[key].append(r)
                print_wrk_round(round_no, key, r)
            for writer, rate in notes if "pg2" in setups else ():
                n = notification_round(setups["pg2"], args, rate, seq, writer)
                seq += 1_000_000
                answered["pg2"] += n["answered_2xx"] + n["warmup_2xx"]
                notes[writer, rate].append(n)
                print_notification_round(round_no, n)
        for key, setup in setups.items():
            committed = setup.versions() - start_versions[key]
            time.sleep(1.5)  # the tails poll at least once a second
            checks[key] = {
                "answered_2xx": answered[key],
                "committed": committed,
                "in_flight_max": args.connections * runs[key],
                "unpublished": setup.unpublished(),
            }
        if "pg2" in setups and args.kills > 0:
            failovers = failover(setups["pg2"], args.kills)
    finally:
        for setup in setups.values():
            with contextlib.suppress(Exception):
                setup.cluster.stop()
        findings = log_findings(setups)
        for pg in pgs:
            with contextlib.suppress(Exception):
                pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    summary = summarise(results, notes, failovers)
    print()
    print_tables(summary, args)
    checks_ok = print_checks(checks)
    for key, counts in findings.items():
        print(f"server logs {key}, WARNING and above: " + ("none" if not counts else ""))
        for message, count in list(counts.items())[:12]:
            print(f"  {count:6d} x {message}")
    line = {
        "date": date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "args": {k: str(v) for k, v in vars(args).items()},
        "summary": summary,
        "checks": checks,
        "server_logs": findings,
    }
    if args.json is not None:
        notifications = {f"{writer} {rate:g}": runs for (writer, rate), runs in notes.items()}
        everything = {**line, "idle": idle, "rounds": results, "notifications": notifications}
        args.json.write_text(json.dumps({**everything, "failovers": failovers}, indent=1))
    print("RESULT " + json.dumps(line))
    return 0 if checks_ok else 1


_LOGGED = re.compile(r"^(WARNING|ERROR|CRITICAL) \[[^]]*\] (.*)$")


def log_findings(setups: dict[str, Setup]) -> dict[str, dict[str, int]]:
    """What the server processes logged at WARNING and above (and tracebacks), per
    configuration: each message once, numbers made ``N``, with its count."""
    found: dict[str, dict[str, int]] = {}
    for key, setup in setups.items():
        counts: Counter[str] = Counter()
        for node in setup.cluster.members:
            try:
                text = Path(node.log).read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                logged = _LOGGED.match(line)
                if logged:
                    message = re.sub(r"\d+", "N", logged.group(2))[:160]
                    counts[f"{logged.group(1)} {message}"] += 1
                elif line.startswith("Traceback"):
                    counts["Traceback"] += 1
        found[key] = dict(counts.most_common())
    return found


def idle_reading(setups: dict[str, Setup], seconds: float) -> dict[str, float]:
    groups = {f"{k} {name}": pid for k, s in setups.items() for name, pid in s.groups().items()}
    before = read_cpu(groups)
    time.sleep(seconds)
    return cpu_between(before, read_cpu(groups))


# ------------------------------------------------------------------------------ reporting


def per_update(r: dict[str, Any]) -> dict[str, float]:
    """CPU µs per request of each component of one wrk run (and "servers": their sum)."""
    cpu = r["cpu_s"]
    out = {k: v / r["requests"] * 1e6 for k, v in cpu.items() if k != "wall"}
    out["servers"] = sum(v for k, v in out.items() if k.startswith("server "))
    return out


def print_wrk_round(round_no: int, key: str, r: dict[str, Any]) -> None:
    lat, cpu, us = r["latency_us"], r["cpu_s"], per_update(r)
    servers = ", ".join(f"{k[7:]} {v:.0f}" for k, v in us.items() if k.startswith("server "))
    split = "/".join(str(v) for _, v in sorted(r["per_server"].items()))
    print(
        f"  round {round_no + 1} {key:6} {r['rps']:7.0f} req/s  p50 {lat['p50'] / 1000:.1f} ms"
        f"  p99 {lat['p99'] / 1000:.1f} ms  non-2xx {r['errors']['status']}  per server "
        f"{split}  CPU µs/update: servers {us['servers']:.0f} ({servers}), postgres "
        f"{us.get('postgres', 0):.0f}, haproxy {us['haproxy']:.0f}, wrk {us['wrk']:.0f}, "
        f"idle configurations {us['idle configurations']:.0f}, other {us['other']:.0f}; "
        f"machine idle {cpu['machine_idle'] / cpu['wall']:.2f} cores"
        + (
            f"; CometD client {us.get('cometd client', 0):.0f} µs/update, received "
            f"{r['client_notifications']} notifications (warm-up included)"
            + (f", problems {r['client_problems']}" if r["client_problems"] else "")
            if "client_notifications" in r
            else ""
        ),
        flush=True,
    )


def print_notification_round(round_no: int, n: dict[str, Any]) -> None:
    us = n["cpu_us_per_update"]
    engine = n["writer"] == "engine"
    answered, writer = ("returned", "engine writers") if engine else ("answer", "bench")
    print(
        f"  round {round_no + 1} notify {n['writer']} {n['offered_rate']:g}/s (achieved "
        f"{n['rate']:.0f}): sent {n['sent']}, ok {n['answered_2xx']}, received {n['received']} "
        f"(duplicates {n['duplicates']}); send->client p50 {n['p50_ms']:.1f} p99 "
        f"{n['p99_ms']:.1f} max {n['max_ms']:.1f} ms; {'execute' if engine else 'HTTP'} p50 "
        f"{n['http_p50_ms']:.1f} p99 {n['http_p99_ms']:.1f} ms; after the {answered} p50 "
        f"{n['after_answer_p50_ms']:.1f} p99 {n['after_answer_p99_ms']:.1f} ms, "
        f"{n['after_answer_negative']:.0%} negative; CPU µs/update: A "
        f"{us.get('server node1', 0):.0f}, B {us.get('server node2', 0):.0f}, postgres "
        f"{us.get('postgres', 0):.0f}, writer {us[writer]:.0f}, client {us['cometd client']:.0f}"
        + ("; OVERLOADED: the writer stopped early" if n["overloaded"] else ""),
        flush=True,
    )


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(
    results: dict[str, list[dict[str, Any]]],
    notes: dict[tuple[str, float], list[dict[str, Any]]],
    failovers: list[dict[str, Any]],
) -> dict[str, Any]:
    out: dict[str, Any] = {"configs": {}}
    for key, runs in results.items():
        if not runs:
            continue
        us = [per_update(r) for r in runs]
        names = sorted({k for u in us for k in u})
        out["configs"][key] = {
            "rps": med([r["rps"] for r in runs]),
            "rps_min": min(r["rps"] for r in runs),
            "rps_max": max(r["rps"] for r in runs),
            "p50_ms": med([r["latency_us"]["p50"] / 1000 for r in runs]),
            "p99_ms": med([r["latency_us"]["p99"] / 1000 for r in runs]),
            "p99_max_ms": max(r["latency_us"]["p99"] / 1000 for r in runs),
            "non2xx": sum(r["errors"]["status"] for r in runs),
            "socket_errors": sum(v for r in runs for k, v in r["errors"].items() if k != "status"),
            "per_server": {
                name: sum(r["per_server"].get(name, 0) for r in runs)
                for name in sorted({n for r in runs for n in r["per_server"]})
            },
            "cpu_us_per_update": {n: med([u.get(n, 0.0) for u in us]) for n in names},
            "cores": {
                n: med([r["cpu_s"].get(n, 0.0) / r["cpu_s"]["wall"] for r in runs])
                for n in {k for r in runs for k in r["cpu_s"] if k != "wall"}
            },
            "db_per_update": {
                n: med([r["pg_stats"][n] / r["requests"] for r in runs])
                for n in runs[0]["pg_stats"]
            },
            "threads_us_per_update": {
                server: {
                    name: med(
                        [r["threads_s"][server].get(name, 0.0) / r["requests"] * 1e6 for r in runs]
                    )
                    for name in sorted({n for r in runs for n in r["threads_s"].get(server, {})})
                }
                for server in runs[0]["threads_s"]
            },
        }
    c = out["configs"]
    if "pg1" in c and "pg2" in c:
        out["pg2_over_pg1"] = c["pg2"]["rps"] / c["pg1"]["rps"]
    if "pg1" in c and "sqlite" in c:
        out["pg1_over_sqlite"] = c["pg1"]["rps"] / c["sqlite"]["rps"]
    if "pg2" in c and "sqlite" in c:
        out["pg2_over_sqlite"] = c["pg2"]["rps"] / c["sqlite"]["rps"]
    out["notifications"] = {
        (f"{rate:g}" if writer == "http" else f"{writer} {rate:g}"): summarise_rate(runs)
        for (writer, rate), runs in notes.items()
        if runs
    }
    if failovers:
        leader = [f["leader_s"] for f in failovers if f.get("leader_s") is not None]
        routed = [f["routed_s"] for f in failovers if f.get("routed_s") is not None]
        out["failover"] = {
            "kills": len(failovers),
            "leader_median_s": med(leader),
            "leader_max_s": max(leader, default=float("nan")),
            "routed_median_s": med(routed),
            "routed_max_s": max(routed, default=float("nan")),
            "never": sum(1 for f in failovers if f.get("routed_s") is None),
            "per_kill": failovers,
        }
    return out


def summarise_rate(notes: list[dict[str, Any]]) -> dict[str, Any]:
    """Part 2 at one rate: medians over rounds (max and sums where said)."""
    return {
        "rounds": len(notes),
        "writer": notes[0]["writer"],
        "offered_rate": notes[0]["offered_rate"],
        "rate": med([n["rate"] for n in notes]),
        "sent": sum(n["sent"] for n in notes),
        "answered_2xx": sum(n["answered_2xx"] for n in notes),
        "received": sum(n["received"] for n in notes),
        "duplicates": sum(n["duplicates"] for n in notes),
        "p50_ms": med([n["p50_ms"] for n in notes]),
        "p90_ms": med([n["p90_ms"] for n in notes]),
        "p99_ms": med([n["p99_ms"] for n in notes]),
        "p99_worst_ms": max(n["p99_ms"] for n in notes),
        "max_ms": max(n["max_ms"] for n in notes),
        "http_p50_ms": med([n["http_p50_ms"] for n in notes]),
        "http_p99_ms": med([n["http_p99_ms"] for n in notes]),
        "after_answer_p50_ms": med([n["after_answer_p50_ms"] for n in notes]),
        "after_answer_p99_ms": med([n["after_answer_p99_ms"] for n in notes]),
        "after_answer_p99_worst_ms": max(n["after_answer_p99_ms"] for n in notes),
        "after_last_trip_p50_ms": med([n["after_last_trip_p50_ms"] for n in notes]),
        "after_last_trip_p99_ms": med([n["after_last_trip_p99_ms"] for n in notes]),
        "after_last_trip_p99_worst_ms": max(n["after_last_trip_p99_ms"] for n in notes),
        "after_answer_negative": med([n["after_answer_negative"] for n in notes]),
        "send_late_max_ms": max(n["send_late_max_ms"] for n in notes),
        "overloaded_rounds": sum(1 for n in notes if n["overloaded"]),
        "db_per_update": {
            k: med([n["db_per_update"][k] for n in notes]) for k in notes[0]["db_per_update"]
        },
        "threads_us_per_update": {
            server: {
                name: med([n["threads_us_per_update"][server].get(name, 0.0) for n in notes])
                for name in sorted(
                    {t for n in notes for t in n["threads_us_per_update"].get(server, {})}
                )
            }
            for server in notes[0]["threads_us_per_update"]
        },
        "cpu_us_per_update": {
            k: med([n["cpu_us_per_update"].get(k, 0.0) for n in notes])
            for k in notes[0]["cpu_us_per_update"]
        },
        "per_round": [
            {
                k: n[k]
                for k in (
                    "p50_ms",
                    "p99_ms",
                    "max_ms",
                    "after_answer_p50_ms",
                    "after_answer_p99_ms",
                    "after_last_trip_p50_ms",
                    "after_last_trip_p99_ms",
                    "sent",
                    "received",
                    "overloaded",
                )
            }
            for n in notes
        ],
    }


def print_tables(summary: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"1. UpdateProperties through HAProxy: medians over {args.rounds} rounds of "
        f"{args.duration:g} s, wrk -t{args.threads} -c{args.connections}, "
        f"{args.interactions} interactions; {os.cpu_count()} CPUs shared by all"
    )
    print(
        f"{'configuration':36} {'req/s':>6} {'range':>11} {'p50':>6} {'p99':>6} {'non2xx':>6}"
        f" | µs/update: {'servers':>7} {'(each)':>9} {'pg':>5} {'hapx':>5} {'wrk':>5}"
        f" {'idlecf':>6} {'other':>5} {'busy':>5} | idle cores"
    )
    for key, s in summary["configs"].items():
        us, cores = s["cpu_us_per_update"], s["cores"]
        each = "/".join(f"{v:.0f}" for k, v in sorted(us.items()) if k.startswith("server "))
        print(
            f"{CONFIGS[key]:36} {s['rps']:6.0f} {s['rps_min']:5.0f}-{s['rps_max']:<5.0f} "
            f"{s['p50_ms']:6.1f} {s['p99_ms']:6.1f} {s['non2xx']:6d} |"
            f" {'':10} {us['servers']:7.0f} {each:>9} {us.get('postgres', 0):5.0f}"
            f" {us['haproxy']:5.0f} {us['wrk']:5.0f} {us['idle configurations']:6.0f}"
            f" {us['other']:5.0f}"
            f" {us['machine_busy']:5.0f} | {cores['machine_idle']:.2f}"
        )
    for key, s in summary["configs"].items():
        for server, threads in s["threads_us_per_update"].items():
            print(f"  {key} {server}, CPU µs/update by thread: " + threads_text(threads))
    for key, s in summary["configs"].items():
        if s["db_per_update"]:
            print(
                f"  {key}: PostgreSQL per update (pg_stat_database, approximate): "
                + ", ".join(f"{k} {v:.1f}" for k, v in s["db_per_update"].items())
            )
    for name, label in (
        ("pg2_over_pg1", "(b)/(a)"),
        ("pg1_over_sqlite", "(a)/(c)"),
        ("pg2_over_sqlite", "(b)/(c)"),
    ):
        if name in summary:
            print(f"  req/s {label}: {summary[name]:.2f}x")
    for n in summary["notifications"].values():
        print_notification_summary(n, args)
    f = summary.get("failover")
    if f:
        print(
            f"3. failover, {f['kills']} SIGKILLs of the leader: survivor leader on /health "
            f"median {f['leader_median_s']:.2f} s, max {f['leader_max_s']:.2f} s; routing "
            f"resumed (mail Invited) median {f['routed_median_s']:.2f} s, max "
            f"{f['routed_max_s']:.2f} s; never: {f['never']}"
        )


def threads_text(threads: dict[str, float]) -> str:
    ordered = sorted(threads.items(), key=lambda item: -item[1])
    return ", ".join(f"{name} {v:.0f}" for name, v in ordered if v >= 0.5)


def print_notification_summary(n: dict[str, Any], args: argparse.Namespace) -> None:
    rate = n["offered_rate"]
    judged = rate == 500
    engine = n["writer"] == "engine"
    if engine:
        how = (
            f"{args.engine_writers} embedding workers (Engine.execute) -> PostgreSQL -> B -> "
            "CometD client"
        )
        # COMMIT is the end of the commit's last round trip: commit -> client lies between
        # arrival - the execute's return and arrival - that trip's start (judged on the latter).
        headline = "commit -> client (an upper bound: arrival - the start of the commit's trip)"
        p50, p99 = n["after_last_trip_p50_ms"], n["after_last_trip_p99_ms"]
        worst = n["after_last_trip_p99_worst_ms"]
    else:
        how = "A -> PostgreSQL -> B -> CometD client"
        headline = "send -> client arrival (an upper bound of commit -> client)"
        p50, p99, worst = n["p50_ms"], n["p99_ms"], n["p99_worst_ms"]
    ok50, ok99 = p50 <= TARGET_NOTIFY_P50_MS, p99 <= TARGET_NOTIFY_P99_MS
    print(
        f"2. notification {how}, offered {rate:g}/s (achieved {n['rate']:.0f}/s), "
        f"{n['rounds']} rounds of {args.duration:g} s (medians; max over all):"
    )
    print(
        f"  {headline}: p50 {p50:.1f} ms"
        + (f" (target <= {TARGET_NOTIFY_P50_MS:g}: {'PASS' if ok50 else 'FAIL'})" if judged else "")
        + f", p99 {p99:.1f} ms (worst round {worst:.1f}"
        + (f"; target <= {TARGET_NOTIFY_P99_MS:g}: {'PASS' if ok99 else 'FAIL'}" if judged else "")
        + ")"
    )
    call = "execute (load, commit)" if engine else "HTTP round trip to A"
    print(
        f"  sent {n['sent']}, ok {n['answered_2xx']}, received {n['received']} "
        f"({'all' if n['received'] == n['sent'] else 'NOT ALL'}), duplicates "
        f"{n['duplicates']}; send -> client p50 {n['p50_ms']:.1f} p99 {n['p99_ms']:.1f} max "
        f"{n['max_ms']:.1f} ms; {call} p50 {n['http_p50_ms']:.1f} p99 {n['http_p99_ms']:.1f} "
        f"ms; arrival - {'the return' if engine else 'A' + chr(39) + 's answer'} p50 "
        f"{n['after_answer_p50_ms']:.1f} p99 {n['after_answer_p99_ms']:.1f} ms, negative "
        f"{n['after_answer_negative']:.0%}; calls start at most {n['send_late_max_ms']:.1f} ms "
        "late"
    )
    if engine:
        print(
            f"  lower bound (arrival - the execute's return): p50 {n['after_answer_p50_ms']:.1f}"
            f" ms, p99 {n['after_answer_p99_ms']:.1f} ms ({n['after_answer_negative']:.0%} "
            "negative: the client told before the writer was back from COMMIT)"
        )
    if n["overloaded_rounds"]:
        print(
            f"  OVERLOADED in {n['overloaded_rounds']} of {n['rounds']} rounds: more than 2 s of "
            f"updates went unanswered, so the writer stopped early: {rate:g}/s is more than "
            "the writer sustains here"
        )
    us = n["cpu_us_per_update"]
    print(
        "  CPU µs/update: "
        + ", ".join(f"{k} {v:.0f}" for k, v in us.items() if k != "machine_idle" and v >= 0.5)
    )
    for server, threads in n["threads_us_per_update"].items():
        print(f"  {server}, CPU µs/update by thread: " + threads_text(threads))
    print(
        "  PostgreSQL per update (pg_stat_database, approximate): "
        + ", ".join(f"{k} {v:.1f}" for k, v in n["db_per_update"].items())
    )


def print_checks(checks: dict[str, dict[str, int]]) -> bool:
    ok = True
    for key, c in checks.items():
        # wrk does not count requests still in flight when it stops (at most one per
        # connection per run); those were sent, so they may have been committed too. The
        # part-2 updates on pg2 are all answered and counted separately.
        good = (
            c["answered_2xx"] <= c["committed"] <= c["answered_2xx"] + c["in_flight_max"]
            and c["unpublished"] == 0
        )
        ok &= good
        print(
            f"check {key}: {c['answered_2xx']} updates answered 2xx, {c['committed']} version "
            f"increments committed (at most {c['in_flight_max']} more may have been in flight "
            f"when wrk stopped), {c['unpublished']} notifications unpublished: "
            f"{'OK' if good else 'MISMATCH'}"
        )
    return ok


if __name__ == "__main__":
    raise SystemExit(main())
