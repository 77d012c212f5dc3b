"""N real ``interactions serve`` processes on one PostgreSQL database behind a real HAProxy.

Plain Python (no pytest): the cluster tests use it through the ``cluster`` fixture
(``conftest.py``), and ``deploy/cluster.py`` (``make cluster``) runs the same processes for a
person. ``Cluster``:

* writes one agents file and one settings file every node reads (the database, the agents,
  the mailboxes, ``trusted_proxies = ["127.0.0.1"]`` for HAProxy, the relay or a shared
  Maildir); each node gets its own ``--port``, ``--smtp-port``, ``--node-id`` and
  ``--data-dir`` on the command line, as an operator would start them;
* renders ``deploy/haproxy.cfg`` for the nodes' ports (``deploy/haproxy_config.py``), checks
  it with ``haproxy -c`` and runs HAProxy in the foreground (``-db``);
* waits, with deadlines, until every node's ``GET /health`` is 200 and HAProxy has sent a
  health request to every node (its answer names the node);
* stops everything whatever happens: each process runs in its own process group, which
  ``stop`` signals (SIGTERM, then SIGKILL); a watchdog process does it if the process that
  started them dies first (SIGKILL, a crash).

Nodes are numbered from 0: ``node_url(0)``, ``kill(1, signal.SIGKILL)``, ``restart(1)``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from aiosmtpd.controller import Controller

from adapters.server.agents import add_agent
from ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MAILBOX = "support@example.com"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
RUNNING = ("leader", "follower")


def haproxy_config() -> ModuleType:
    """``deploy/haproxy_config.py`` (deploy/ is no package: loaded from its path)."""
    name = "interactions_deploy_haproxy_config"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DEPLOY / "haproxy_config.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def wait_until(
    what: str, check: Callable[[], Any], timeout: float, explain: Callable[[], str] = str
) -> Any:
    """``check()``'s first true value; an AssertionError naming ``what`` (and ``explain()``)
    at the deadline. A deadline against hangs, never a timing assertion."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s\n{explain()}")
        time.sleep(0.05)


# ------------------------------------------------------------------------------ mail sink


@dataclass
class SinkMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


class MailSink:
    """An aiosmtpd relay in this process (its own thread and loop) keeping what it accepts."""

    def __init__(self) -> None:
        self.port = free_port()
        self._messages: list[SinkMessage] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self._messages.append(
                SinkMessage(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        return "250 OK"

    def start(self) -> MailSink:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    @property
    def messages(self) -> list[SinkMessage]:
        with self._lock:
            return list(self._messages)


# ------------------------------------------------------------------------------ watchdog

# Run by a detached Python: while the starting process (argv[1]) lives, do nothing; when it is
# gone, SIGKILL every process group listed in the file argv[2] (one per line), then remove the
# directory argv[3] if one is given.
_WATCHDOG = """
import os, shutil, signal, sys, time
parent, listing = int(sys.argv[1]), sys.argv[2]
while True:
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    time.sleep(1)
try:
    groups = [int(line) for line in open(listing).read().split()]
except OSError:
    groups = []
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
if len(sys.argv) > 3:
    time.sleep(1)
    shutil.rmtree(sys.argv[3], ignore_errors=True)
"""


class _Watchdog:
    def __init__(self, root: Path, remove_root: bool) -> None:
        self.listing = root / "process-groups"
        self.listing.write_text("")
        command = [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.listing)]
        if remove_root:
            command.append(str(root))
        self._process = subprocess.Popen(
            command,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def watch(self, group: int) -> None:
        with self.listing.open("a") as out:
            out.write(f"{group}\n")

    def unwatch(self, group: int) -> None:
        """A group that ended: not to be signalled (its number may be reused later)."""
        kept = [g for g in self.listing.read_text().split() if g != str(group)]
        self.listing.write_text("".join(f"{g}\n" for g in kept))

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(STOP_TIMEOUT_S)


# ------------------------------------------------------------------------------ processes


def _stop_group(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the process's group, SIGKILL if it has not exited within ``timeout``."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)


@dataclass
class Health:
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.body.get("status") == "ok"


def get_health(url: str) -> Health | None:
    """``GET url/health``; None when nothing answers."""
    try:
        r = httpx.get(url + "/health", timeout=5)
    except httpx.HTTPError:
        return None
    try:
        body = r.json()
    except ValueError:
        body = {"text": r.text}
    return Health(r.status_code, body if isinstance(body, dict) else {"body": body})


@dataclass
class Node:
    """One ``interactions serve`` process: its node id, ports, data directory and log."""

    name: str
    http_port: int
    smtp_port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self, config: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "adapters.server.cli",
            "serve",
            "--config",
            str(config),
            "--port",
            str(self.http_port),
            "--smtp-port",
            str(self.smtp_port),
            "--node-id",
            self.name,
            "--data-dir",
            str(self.data_dir),
        ]

    def log_tail(self, size: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-size:]
        except OSError:
            return ""


def child_environment() -> dict[str, str]:
    """This environment without any INTERACTIONS_* variable (the settings file says it all)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INTERACTIONS_")}
    return {**clean, "PYTHONUNBUFFERED": "1"}


@dataclass
class Cluster:
    """``nodes`` server processes on the database ``dsn`` behind HAProxy; see the module.

    ``relay``: the outgoing relay (a ``MailSink``), else mail goes to one Maildir all nodes
    share (``maildir``). ``settings``: more settings for every node (e.g. ``{"csrf": true}``).
    ``http_ports``, ``smtp_ports``, ``frontend_port``: fixed ports (default: free ones).
    ``output``: where each process's output goes: None, a log file per process under
    ``root``; else a callable given (process name, line) for every line (``make cluster``).
    ``owns_root``: ``root`` is a temporary directory of the caller's, which the watchdog
    removes too if the caller dies without stopping the cluster.
    """

    dsn: str
    root: Path
    nodes: int = 2
    passwords: dict[str, str] = field(
        default_factory=lambda: {"alice": "alice-pw", "bob": "bob-pw"}
    )
    relay: MailSink | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    http_ports: Sequence[int] | None = None
    smtp_ports: Sequence[int] | None = None
    frontend_port: int | None = None
    output: Callable[[str, str], None] | None = None
    owns_root: bool = False
    members: list[Node] = field(init=False, default_factory=list)
    haproxy: subprocess.Popen[bytes] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        http = list(self.http_ports or [free_port() for _ in range(self.nodes)])
        smtp = list(self.smtp_ports or [free_port() for _ in range(self.nodes)])
        if len(http) != self.nodes or len(smtp) != self.nodes:
            raise ValueError("one HTTP and one SMTP port per node")
        self.port = self.frontend_port or free_port()
        self.members = [
            Node(
                name=f"node{i + 1}",
                http_port=http[i],
                smtp_port=smtp[i],
                data_dir=self.root / f"node{i + 1}",
                log=self.root / f"node{i + 1}.log",
            )
            for i in range(self.nodes)
        ]
        self.agents_file = self.root / "agents.json"
        self.config_file = self.root / "settings.json"
        self.haproxy_cfg = self.root / "haproxy.cfg"
        self.haproxy_log = self.root / "haproxy.log"
        self.maildir = self.root / "outbox"
        self._watchdog: _Watchdog | None = None
        self._pumps: list[threading.Thread] = []

    # --- addresses --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """HAProxy's address (``http://127.0.0.1:<port>``); the API is under ``/api/v2``."""
        return f"http://127.0.0.1:{self.port}"

    def node_url(self, i: int) -> str:
        return self.members[i].url

    def smtp_port(self, i: int) -> int:
        return self.members[i].smtp_port

    def node_id(self, i: int) -> str:
        return self.members[i].name

    @property
    def sink_messages(self) -> list[SinkMessage]:
        assert self.relay is not None, "this cluster has no relay (its mail is in the Maildir)"
        return self.relay.messages

    def health(self, i: int) -> Health | None:
        return get_health(self.node_url(i))

    # --- life -------------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Everything, in order; on failure the caller's ``stop`` cleans up (``with`` does)."""
        self._watchdog = _Watchdog(self.root, self.owns_root)
        self._write_files()
        for i in range(self.nodes):
            self._spawn(i)
        for i in range(self.nodes):
            self.wait_healthy(i)
        self._start_haproxy()
        self.wait_routed()

    def stop(self) -> None:
        """HAProxy, then every node (SIGTERM, SIGKILL after 20 s); idempotent."""
        if self.haproxy is not None:
            self._stop(self.haproxy)
            self.haproxy = None
        errors: list[BaseException] = []
        for node in self.members:
            if node.process is not None:
                try:
                    self._stop(node.process)
                except BaseException as exc:  # the others are stopped all the same
                    errors.append(exc)
                node.process = None
        for pump in self._pumps:
            pump.join(5)
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        if errors:
            raise errors[0]

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to node ``i``'s process group; for SIGKILL, SIGTERM and SIGINT, wait
        for it to exit (SIGSTOP and the like return at once)."""
        node = self.members[i]
        assert node.process is not None, f"{node.name} is not running"
        os.killpg(node.process.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            node.process.wait(STOP_TIMEOUT_S * 2)
            if self._watchdog is not None:
                self._watchdog.unwatch(node.process.pid)

    def restart(self, i: int) -> None:
        """Node ``i`` again, on the same ports and data directory (stopped first if it runs),
        then the same waits as at start."""
        node = self.members[i]
        if node.process is not None:
            self._stop(node.process)
        self._spawn(i)
        self.wait_healthy(i)
        if self.haproxy is not None:
            self.wait_routed([node.name])

    # --- waits ------------------------------------------------------------------------------

    def wait_healthy(self, i: int, timeout: float = START_TIMEOUT_S) -> Health:
        node = self.members[i]

        def healthy() -> Health | None:
            if not node.running:
                raise AssertionError(f"{node.name} exited at start:\n{node.log_tail()}")
            found = self.health(i)
            return found if found is not None and found.ok else None

        def explain() -> str:
            return f"last /health: {self.health(i)}\n{node.log_tail()}"

        result: Health = wait_until(f"{node.name} healthy", healthy, timeout, explain)
        return result

    def wait_routed(
        self, names: Sequence[str] | None = None, timeout: float = START_TIMEOUT_S
    ) -> None:
        """Until HAProxy has sent a ``/health`` request to each of ``names`` (default: every
        running node): round-robin, so each comes round once HAProxy counts it up."""
        wanted = set(names or [n.name for n in self.members if n.running])
        seen: set[str] = set()

        def all_seen() -> bool:
            assert self.haproxy is not None and self.haproxy.poll() is None, self._haproxy_log()
            found = get_health(self.base_url)
            if found is not None and found.ok:
                seen.add(str(found.body.get("node")))
            return wanted <= seen

        wait_until(
            f"HAProxy routing to {sorted(wanted)}",
            all_seen,
            timeout,
            lambda: f"seen {sorted(seen)}\n{self._haproxy_log()}",
        )

    # --- inside -----------------------------------------------------------------------------

    def _write_files(self) -> None:
        for agent, password in self.passwords.items():
            add_agent(
                self.agents_file,
                agent,
                password,
                name=agent.capitalize(),
                mailboxes=[MAILBOX],
                addresses=[f"{agent}@agents.example"],
                capacity=5,
            )
        settings: dict[str, Any] = {
            "database": self.dsn,
            "agents_file": str(self.agents_file),
            "mailboxes": {MAILBOX: "Support"},
            "message_id_domain": "cluster.example.com",
            "trusted_proxies": ["127.0.0.1"],
        }
        if self.relay is not None:
            settings["relay"] = {"host": "127.0.0.1", "port": self.relay.port, "security": "none"}
        else:
            settings["maildir"] = str(self.maildir)
        settings.update(self.settings)
        self.config_file.write_text(json.dumps(settings, indent=2))

    def _popen(self, name: str, command: list[str], log: Path) -> subprocess.Popen[bytes]:
        if self.output is None:
            with log.open("ab") as out:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=child_environment(),
                    start_new_session=True,  # its own group: signalled as one, never by a ^C
                )
        else:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=child_environment(),
                start_new_session=True,
            )
            pump = threading.Thread(
                target=self._pump, args=(name, process, log), name=f"output-{name}", daemon=True
            )
            pump.start()
            self._pumps.append(pump)
        assert self._watchdog is not None
        self._watchdog.watch(process.pid)
        return process

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        _stop_group(process)
        if self._watchdog is not None:
            self._watchdog.unwatch(process.pid)

    def _pump(self, name: str, process: subprocess.Popen[bytes], log: Path) -> None:
        """Each line to ``output`` and to the log file (for ``log_tail``)."""
        assert process.stdout is not None and self.output is not None
        with log.open("ab") as out:
            for raw in process.stdout:
                out.write(raw)
                out.flush()
                self.output(name, raw.decode(errors="replace").rstrip("\n"))

    def _spawn(self, i: int) -> None:
        node = self.members[i]
        node.data_dir.mkdir(parents=True, exist_ok=True)
        node.starts += 1
        node.process = self._popen(node.name, node.command(self.config_file), node.log)

    def _start_haproxy(self) -> None:
        config = haproxy_config()
        text = config.render(
            [config.Node(n.name, "127.0.0.1", n.http_port) for n in self.members],
            f"127.0.0.1:{self.port}",
        )
        self.haproxy_cfg.write_text(text)
        config.check(self.haproxy_cfg)
        self.haproxy = self._popen(
            "haproxy",
            [config.haproxy_binary(), "-db", "-f", str(self.haproxy_cfg)],
            self.haproxy_log,
        )

    def _haproxy_log(self) -> str:
        try:
            return self.haproxy_log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@contextlib.contextmanager
def temporary_root(prefix: str = "interactions-cluster-") -> Iterator[Path]:
    """A temporary directory, removed afterwards whatever happened."""
    import shutil

    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def demo_passwords() -> dict[str, str]:
    """Fresh random passwords for alice and bob (``make cluster``)."""
    return {agent: secrets.token_urlsafe(9) for agent in ("alice", "bob")}
