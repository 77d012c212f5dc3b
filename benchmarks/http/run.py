"""HTTP API benchmark: a full operation round trip against a bare FastAPI endpoint, side by side.

Run: ``.venv/bin/python benchmarks/http/run.py [--duration 15] [--rounds 3] [--profile DIR]``
(needs ``wrk``: ``apt-get install -y wrk``). Before and after, in one run:
``benchmarks/http/run.py --compare HEAD~1 [--new REV2]`` (see "Comparing two revisions").

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

Options: ``--duration``/``--warmup`` seconds per measurement and per warm-up (whole seconds:
wrk takes no fractions), ``--rounds``, ``--connections``/``--threads`` (wrk's), ``--interactions``
(accepted before the rounds; the update mode cycles through them), ``--modes`` (comma-separated
subset of constant,me,update), ``--log-level`` (the server's), ``--profile DIR`` (py-spy raw
profiles of round 1), ``--json FILE`` (every run, the medians, the checks), ``--loop-lag`` and
``--patch`` (experiments: see server.py).

Comparing two revisions (``--compare REV``, e.g. ``HEAD~1`` or a sha): the same run measures two
servers, "base" and "new". REV is checked out (detached) into a temporary ``git worktree``,
removed at the end whatever happens (error, Ctrl-C, SIGTERM). "base" runs REV's own
``benchmarks/http/server.py`` (the current one if REV has none) with REV's ``src`` on
PYTHONPATH, so the wrapper always matches the code it wraps; "new" is the working tree as it is
(``src`` with any uncommitted edits, the current server.py), or with ``--new REV2`` a second
worktree of REV2 (reproducible: neither side depends on uncommitted files). The client side
(this script, bench.lua, wrk) is the current one for both. Each side has its own data directory,
agents file (written by its own ``src``) and set-up, and both servers stay up for the whole run;
only one is ever under load (one wrk at a time), the other is idle. In each round every mode is
measured on both sides back to back (warm-up, then measurement, on each), the side that goes
first alternating from one measurement pair to the next and from round to round, so machine
noise falls on both. The report is a table per side (medians; CPU per request split into the
event-loop thread and the other threads), its checks and targets, then a table of new/base
ratios per mode; ``--json`` holds both sides and the ratios. Nothing is pinned to a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Iterator
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

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


_ADD_AGENT = (
    "import sys; from pathlib import Path; from adapters.server.agents import add_agent; "
    "add_agent(Path(sys.argv[1]), sys.argv[2], sys.argv[3], mailboxes=[sys.argv[4]], "
    "capacity=int(sys.argv[5]))"
)


class Server:
    def __init__(
        self,
        work: Path,
        interactions: int,
        log_level: str,
        patches: str = "",
        src: Path = ROOT / "src",
        script: Path = HERE / "server.py",
    ) -> None:
        self.work = work
        self.src, self.script = src, script
        self.http_port, self.smtp_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"
        self.database = work / "data" / "interactions.sqlite3"
        agents = work / "agents.json"
        capacity = max(interactions, 5)
        if src == ROOT / "src":
            from adapters.server.agents import add_agent

            add_agent(agents, AGENT, PASSWORD, mailboxes=[MAILBOX], capacity=capacity)
        else:  # another revision's code writes its own agents file
            command = [sys.executable, "-c", _ADD_AGENT, str(agents), AGENT, PASSWORD, MAILBOX]
            done = subprocess.run(
                [*command, str(capacity)],
                env={**os.environ, "PYTHONPATH": str(src)},
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise RuntimeError(f"add_agent with {src} failed:\n{done.stderr}")
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
        env = {**os.environ, "PYTHONPATH": str(self.src), "BENCH_PATCHES": self.patches}
        if self.loop_lag:
            env["BENCH_LOOP_LAG"] = "1"
        command = [sys.executable, str(self.script), "serve", "--config", str(self.config)]
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
        try:
            row = conn.execute(
                "SELECT count(*) FROM outbox WHERE kind = 'notification' AND published_us IS NULL"
            )
        except sqlite3.OperationalError as e:  # --compare with a revision before retention,
            if "published_us" not in str(e):  # which deleted a notification once published
                raise
            row = conn.execute("SELECT count(*) FROM outbox WHERE kind = 'notification'")
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


class Side:
    """One server under test, its set-up, its runs and the counts behind its check."""

    def __init__(self, name: str, server: Server, modes: list[str], label: str = "") -> None:
        self.name, self.server, self.label = name, server, label
        self.results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        self.cookie = ""
        self.ids: list[str] = []
        self.updates_ok = self.update_runs = 0
        self.version_start = self.committed = self.left = 0

    def prepare(self, interactions: int) -> None:
        self.cookie, self.ids = prepare(self.server, interactions)
        self.version_start = versions(self.server.database, self.ids)

    def measure(self, mode: str, round_no: int, args: argparse.Namespace) -> None:
        """A warm-up, then one measurement of ``mode``; its line is printed."""
        server, cookie, ids = self.server, self.cookie, self.ids
        if args.warmup > 0:
            warm = wrk(server, mode, args.warmup, args, cookie, ids)
            if mode == "update":
                self.updates_ok += warm["ok"]
                self.update_runs += 1
        spy = None
        if args.profile is not None and round_no == 0:
            profile = args.profile / self.name if self.name else args.profile
            profile.mkdir(parents=True, exist_ok=True)
            spy = py_spy(server.pid, args.duration, profile / f"{mode}.txt")
        r = wrk(server, mode, args.duration, args, cookie, ids)
        if spy is not None:
            spy.wait(60)
        if mode == "update":
            self.updates_ok += r["ok"]
            self.update_runs += 1
        self.results[mode].append(r)
        lat = r["latency_us"]
        side = f"{self.name:4} " if self.name else ""
        print(
            f"  round {round_no + 1} {side}{mode:8} {r['rps']:8.0f} req/s  p50 "
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
            )
            + (
                "; core on the loop: {inline_calls:.0f} calls held it p50 {stall_p50_ms:.3f}"
                " p99 {stall_p99_ms:.3f} max {stall_max_ms:.1f} ms, {stalls_over_2ms:.0f}"
                " over 2 ms".format(**r["loop_lag"])
                if r.get("loop_lag", {}).get("inline_calls")
                else ""
            ),
            flush=True,
        )

    def count_committed(self) -> None:
        self.committed = versions(self.server.database, self.ids) - self.version_start

    def count_left(self) -> None:
        self.left = pending_notifications(self.server.database)

    def check(self, args: argparse.Namespace) -> tuple[bool, str]:
        # wrk counts no request still in flight when it stops (at most one per connection per
        # run); those were sent, so they may have been committed too.
        in_flight = args.connections * self.update_runs
        ok = self.updates_ok <= self.committed <= self.updates_ok + in_flight and self.left == 0
        line = (
            f"check{f' ({self.name})' if self.name else ''}: {self.updates_ok} updates answered "
            f"2xx and counted by wrk, {self.committed} version increments committed (<= "
            f"{in_flight} more may have been in flight when wrk stopped), {self.left} "
            f"notifications left in the outbox: {'OK' if ok else 'MISMATCH'}"
        )
        return ok, line

    def check_json(self) -> dict[str, int]:
        return {"updates_ok": self.updates_ok, "committed": self.committed, "pending": self.left}


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
    parser.add_argument(
        "--compare",
        metavar="REV",
        help="also measure the server of git revision REV ('base', from a temporary worktree) "
        "in the same run, interleaved with the working tree's ('new'); report new/base ratios",
    )
    parser.add_argument(
        "--new",
        metavar="REV2",
        help="with --compare: the 'new' side from a temporary worktree of REV2 instead of the "
        "working tree",
    )
    args = parser.parse_args()
    if args.new is not None and args.compare is None:
        parser.error("--new needs --compare")
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    if args.compare is not None:
        try:
            return compare(args, modes)
        except KeyboardInterrupt:
            print("interrupted: servers stopped, worktrees removed", file=sys.stderr)
            return 130
        except RuntimeError as e:  # a side that cannot start, an unknown revision, git
            print(f"error: {e}", file=sys.stderr)
            return 2

    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    server = Server(work, args.interactions, args.log_level, args.patch)
    server.loop_lag = args.loop_lag
    side = Side("", server, modes)
    try:
        server.start()
        side.prepare(args.interactions)
        print(
            f"server pid {server.pid} on {server.base}; {len(side.ids)} accepted interactions; "
            f"wrk -t{args.threads} -c{args.connections}, {args.duration:g} s x {args.rounds} "
            f"rounds, {args.warmup:g} s warm-up each",
            flush=True,
        )
        for round_no in range(args.rounds):
            # Rotate the order so no endpoint always runs first or last.
            order = modes[round_no % len(modes) :] + modes[: round_no % len(modes)]
            for mode in order:
                side.measure(mode, round_no, args)
        side.count_committed()
        time.sleep(1.5)  # the dispatcher polls at least once a second
        side.count_left()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    checks_ok, line = side.check(args)
    if "update" in modes:
        print(line)

    results = side.results
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
                    **run_header(args, leave_out=("compare", "new")),
                    "results": results,
                    "summary": summary,
                    "verdict": verdict,
                    "check": side.check_json(),
                },
                indent=1,
            )
        )
    return 0 if checks_ok else 1


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout.strip()


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[tuple[str, Path]]:
    """A detached worktree of ``rev`` in a temporary directory: (its sha, its path).

    Removed on the way out whatever happens (``git worktree remove --force``; if that fails,
    the directory is deleted and ``git worktree prune`` forgets it).
    """
    try:
        sha = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except RuntimeError:
        raise RuntimeError(f"{rev!r} is no commit of {ROOT}") from None
    holder = Path(tempfile.mkdtemp(prefix="bench-http-tree-"))
    path = holder / sha[:12]
    try:
        git("worktree", "add", "--detach", "--quiet", str(path), sha)
        yield sha, path
    finally:
        # A second Ctrl-C must not leave the worktree behind half removed.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            remove = ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)]
            removed = subprocess.run(remove, capture_output=True).returncode == 0
            if not removed or path.exists():
                shutil.rmtree(path, ignore_errors=True)
                subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True)
            shutil.rmtree(holder, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)


def server_script(tree: Path) -> tuple[Path, str]:
    """The benchmark server of a worktree: its own server.py, else the current one."""
    own = tree / HERE.relative_to(ROOT) / "server.py"
    if own.exists():
        return own, "its own benchmarks/http/server.py"
    return HERE / "server.py", "the current benchmarks/http/server.py (it has none)"


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def compare(args: argparse.Namespace, modes: list[str]) -> int:
    """Base (``--compare REV``) against new (the working tree or ``--new REV2``), interleaved."""
    # SIGTERM unwinds like Ctrl-C, so the servers stop and the worktrees go.
    signal.signal(signal.SIGTERM, _terminate)
    sides: list[Side] = []
    described: dict[str, dict[str, str]] = {}
    with contextlib.ExitStack() as stack:
        trees: dict[str, tuple[str, str, Path]] = {}  # side: (rev, sha, worktree)
        for name, rev in (("base", args.compare), ("new", args.new)):
            if rev is not None:
                sha, tree = stack.enter_context(worktree(rev))
                trees[name] = (rev, sha, tree)
        for name in ("base", "new"):
            if name in trees:
                rev, sha, tree = trees[name]
                src = tree / "src"
                script, which = server_script(tree)
                label = f"{rev} = {sha[:12]} (worktree {tree}; {which})"
                described[name] = {"rev": rev, "sha": sha, "src": str(src), "script": str(script)}
            else:
                src, script = ROOT / "src", HERE / "server.py"
                head = git("rev-parse", "HEAD")
                edited = git("--no-optional-locks", "status", "--porcelain", "--", "src")
                label = f"working tree {ROOT} (HEAD {head[:12]}"
                label += ", with uncommitted changes in src/)" if edited else ", src/ clean)"
                described[name] = {
                    "rev": "working tree",
                    "sha": head,
                    "src_edited": str(bool(edited)),
                    "src": str(src),
                    "script": str(script),
                }
            work = Path(tempfile.mkdtemp(prefix=f"bench-http-{name}-"))
            stack.callback(shutil.rmtree, work, ignore_errors=True)
            try:
                server = Server(work, args.interactions, args.log_level, args.patch, src, script)
            except Exception as e:  # e.g. the working tree's src/ cannot be imported right now
                raise RuntimeError(f"the {name} side ({label}) failed: {e!r}") from e
            server.loop_lag = args.loop_lag
            stack.callback(server.stop)
            sides.append(Side(name, server, modes, label))
        for side in sides:
            try:
                side.server.start()
                side.prepare(args.interactions)
            except Exception as e:
                raise RuntimeError(f"the {side.name} side ({side.label}) failed: {e}") from e
            print(
                f"{side.name}: {side.label}\n"
                f"      server pid {side.server.pid} on {side.server.base}; "
                f"{len(side.ids)} accepted interactions",
                flush=True,
            )
        print(
            f"wrk -t{args.threads} -c{args.connections}, {args.duration:g} s x {args.rounds} "
            f"rounds, {args.warmup:g} s warm-up each, on each side; one side under load at a time",
            flush=True,
        )
        pair = 0
        for round_no in range(args.rounds):
            order = modes[round_no % len(modes) :] + modes[: round_no % len(modes)]
            for mode in order:
                # Each mode on both sides back to back; who goes first alternates.
                for side in sides if pair % 2 == 0 else sides[::-1]:
                    side.measure(mode, round_no, args)
                pair += 1
        for side in sides:
            side.count_committed()
        time.sleep(1.5)  # the dispatcher polls at least once a second
        for side in sides:
            side.count_left()

    checks = {side.name: side.check(args) for side in sides}
    if "update" in modes:
        for _, line in checks.values():
            print(line)
    summaries: dict[str, dict[str, dict[str, float]]] = {}
    verdicts: dict[str, dict[str, Any]] = {}
    for side in sides:
        summary = summarise(side.results)
        for s in summary.values():
            s["loop_us_per_req"] = s["loop_cpu"] / s["rps"] * 1e6
            s["other_us_per_req"] = s["other_cpu"] / s["rps"] * 1e6
        summaries[side.name] = summary
        print()
        print(f"{side.name}: {side.label}")
        print_table(summary, args, split=True)
        verdicts[side.name] = judge(summary)
        for line in verdicts[side.name]["lines"]:
            print(f"  {line}")
    ratios = compare_ratios(summaries["base"], summaries["new"])
    print()
    print_ratios(ratios, summaries["base"], summaries["new"])
    if args.patch:
        print(f"EXPERIMENT: run-time patches {args.patch!r} on both sides; not the product's")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    **run_header(args),
                    "sides": {
                        side.name: {
                            **described[side.name],
                            "label": side.label,
                            "results": side.results,
                            "summary": summaries[side.name],
                            "verdict": verdicts[side.name],
                            "check": side.check_json(),
                            "check_ok": checks[side.name][0],
                        }
                        for side in sides
                    },
                    "ratios_new_over_base": ratios,
                },
                indent=1,
            )
        )
    return 0 if all(ok for ok, _ in checks.values()) else 1


RATIO_KEYS = (
    ("rps", "req/s"),
    ("p50_ms", "p50"),
    ("p99_ms", "p99"),
    ("server_cpu_us_per_req", "CPU/req"),
    ("loop_us_per_req", "loop/req"),
    ("other_us_per_req", "other/req"),
)


def compare_ratios(
    base: dict[str, dict[str, float]], new: dict[str, dict[str, float]]
) -> dict[str, dict[str, float | None]]:
    """Per mode measured on both sides: new / base of each figure (None over a zero)."""
    out: dict[str, dict[str, float | None]] = {}
    for mode in MODES:
        if mode in base and mode in new:
            out[mode] = {
                key: new[mode][key] / base[mode][key] if base[mode][key] else None
                for key, _ in RATIO_KEYS
            }
    return out


def print_ratios(
    ratios: dict[str, dict[str, float | None]],
    base: dict[str, dict[str, float]],
    new: dict[str, dict[str, float]],
) -> None:
    print("new/base ratios of the medians (req/s: > 1 is faster; latency and CPU: < 1 is less)")
    header = f"{'endpoint':68}" + "".join(f" {title:>9}" for _, title in RATIO_KEYS)
    print(header + f"  {'server CPU/req base -> new':>26}")
    for mode, r in ratios.items():
        cells = "".join(
            f" {'-':>9}" if r[key] is None else f" {r[key]:8.3f}x" for key, _ in RATIO_KEYS
        )
        change = (
            f"{base[mode]['server_cpu_us_per_req']:7.0f}µs -> "
            f"{new[mode]['server_cpu_us_per_req']:6.0f}µs"
        )
        print(f"{LABELS[mode]:68}{cells}  {change:>26}")
    print("(CPU/req: server CPU time per request, loop/req: its event-loop thread's share,")
    print(" other/req: all its other threads'; ratios of medians over the rounds)")


def run_header(args: argparse.Namespace, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """What every ``--json`` file starts with: the date, the options, the machine."""
    return {
        "date": date.today().isoformat(),
        "args": {k: str(v) for k, v in vars(args).items() if k not in leave_out},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }


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


def print_table(
    summary: dict[str, dict[str, float]], args: argparse.Namespace, split: bool = False
) -> None:
    """The medians per mode; ``split`` adds the loop's and the other threads' CPU per request."""
    print(
        f"medians over {args.rounds} rounds of {args.duration:g} s, "
        f"{args.connections} connections, {args.threads} wrk threads"
    )
    header = (
        f"{'endpoint':68} {'req/s':>7} {'range':>13} {'p50':>6} {'p90':>6} {'p99':>6} "
        f"{'p99.9':>6} {'non2xx':>6} {'loop':>5} {'other':>5} {'wrk':>5} {'CPU/req':>8}"
    )
    if split:
        header += f" {'loop/req':>8} {'other/req':>9}"
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
            + (f" {s['loop_us_per_req']:6.0f}µs {s['other_us_per_req']:7.0f}µs" if split else "")
        )
    print("(latencies in ms; CPU: server event-loop thread, server other threads, wrk;")
    if split:
        print(" CPU/req: server CPU time per request = loop/req + other/req, the event-loop")
        print(" thread's and all other threads')")
    else:
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
