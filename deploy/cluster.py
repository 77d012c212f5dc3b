"""``make cluster``: several ``interactions serve`` processes on one throwaway PostgreSQL behind
HAProxy, in the foreground, to try the scale-out set-up by hand.

    .venv/bin/python deploy/cluster.py            # HAProxy on :8080, nodes on :8081, :8082
    .venv/bin/python deploy/cluster.py --check    # on free ports: the README walkthrough, OK

It starts a PostgreSQL server of its own (``tests/pgcluster.py``: Debian's binaries, a
temporary directory, a free port, run as the ``postgres`` user when we are root), then the
processes (one settings file and one agents file with two demo agents for all; each its own
``--port``, ``--smtp-port``, ``--node-id``), then HAProxy with ``deploy/haproxy.cfg`` rendered
for those ports (``tests/cluster/harness.py`` does the starting and the waiting, as for the
tests). It prints where everything is and every process's output, prefixed with its name.
Ctrl-C or SIGTERM stops HAProxy, the servers and PostgreSQL, and removes the temporary
directory.

``--check`` runs the README's walkthrough through HAProxy (Ready, a test mail over SMTP, Accept,
ReplyAll, Send, StopProcessing; a CometD client on the proxy sees the offer), prints ``OK`` and
stops everything; on a failure it prints the step, the processes' logs and exits with 1.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # before deploy/: tests/cluster is the package

import httpx  # noqa: E402

from cluster.harness import (  # noqa: E402
    Cluster,
    demo_passwords,
    free_port,
    temporary_root,
    wait_until,
)
from pgcluster import PostgresCluster  # noqa: E402

MAILBOX = "support@example.com"
_print_lock = threading.Lock()


def say(text: str = "") -> None:
    with _print_lock:
        print(text, flush=True)


def show_output(name: str, line: str) -> None:
    say(f"{name:>8} | {line}")


class Stop(Exception):
    """SIGTERM (or SIGINT): stop everything."""


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    # Once: a second ^C while stopping must not cut the cleanup short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stop(signal.Signals(signum).name)


def banner(cluster: Cluster, dsn: str, passwords: dict[str, str]) -> str:
    base = cluster.base_url
    lines = [
        f"interactions-core cluster: {cluster.nodes} processes on one PostgreSQL behind HAProxy",
        f"  HTTP API       {base}/api/v2  (HAProxy, round-robin; OpenAPI: {base}/docs)",
        f"  CometD         {base}/api/v2/notifications  (sticky: HAProxy's cookie SERVERID)",
    ]
    for node in cluster.members:
        lines.append(
            f"  {node.name:<14} {node.url}  (health: {node.url}/health)"
            f"  inbound SMTP 127.0.0.1:{node.smtp_port}"
        )
    lines += [
        f"  PostgreSQL     {dsn}",
        f"  outgoing mail  Maildir {cluster.maildir}/new  (shared by the nodes)",
        "  demo agents    " + ", ".join(f"{a} / {p}" for a, p in passwords.items()),
        "",
        "Try it (README.md, two-minute walkthrough), in another terminal:",
        f"  PW='{passwords['alice']}'",
        f"  API={base}/api/v2",
        '  api() { curl -s -u "alice:$PW" -H "Content-Type: application/json" "$@"; echo; }',
        '  api -X POST $API/me/channels/email -d \'{"operationName":"Ready"}\'',
        f"  .venv/bin/interactions send-test-mail --port {cluster.smtp_port(0)}"
        "      # any node's SMTP port",
        "  api $API/me/interactions",
        "",
        f"Ctrl-C stops everything and removes {cluster.root}.",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ --check


class Walkthrough:
    """The README's steps through HAProxy, each checked; ``step`` names the one running."""

    def __init__(self, cluster: Cluster, passwords: dict[str, str]) -> None:
        self.cluster = cluster
        self.api = cluster.base_url + "/api/v2"
        self.auth = ("alice", passwords["alice"])
        self.step = "start"

    def post(self, http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = http.post(self.api + path, json=body, auth=self.auth)
        answer: dict[str, Any] = r.json()
        if r.status_code != 200 or answer.get("status") != "ok":
            raise AssertionError(f"POST {path} {body}: {r.status_code} {r.text}")
        return answer

    def get(self, http: httpx.Client, path: str) -> dict[str, Any]:
        r = http.get(self.api + path, auth=self.auth)
        if r.status_code != 200:
            raise AssertionError(f"GET {path}: {r.status_code} {r.text}")
        answer: dict[str, Any] = r.json()
        return answer

    def begin(self, step: str) -> None:
        self.step = step
        say(f"check: {step}")

    def run(self) -> None:
        cluster = self.cluster
        with httpx.Client(timeout=30) as http, httpx.Client(timeout=60) as cometd:
            self.begin("every node healthy, directly and through HAProxy")
            roles = []
            for i in range(cluster.nodes):
                health = cluster.health(i)
                assert health is not None and health.ok, health
                roles.append(f"{cluster.node_id(i)} {health.body['role']}")
            say(f"       {', '.join(roles)}")

            self.begin("a CometD client through HAProxy (handshake, subscribe)")
            notifications = cluster.base_url + "/api/v2/notifications"
            client_id = self.handshake(cometd, notifications)

            self.begin("1. alice is Ready on the e-mail channel")
            self.post(http, "/me/channels/email", {"operationName": "Ready"})

            last = cluster.nodes - 1
            self.begin(f"2. a customer writes to {MAILBOX} (SMTP of {cluster.node_id(last)})")
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "adapters.server.cli",
                    "send-test-mail",
                    "--port",
                    str(cluster.smtp_port(last)),
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )

            self.begin("3. the Invited interaction, also pushed on /me/interactions: Accept")

            def invited() -> str | None:
                found = self.get(http, "/me/interactions")["interactions"]
                ids = [i["id"] for i in found if i["state"] == "Invited"]
                return ids[0] if ids else None

            iid: str = wait_until("an offer to alice", invited, 60)
            pushed = self.await_notification(cometd, notifications, client_id, iid, "Invited")
            say(f"       {iid} offered; CometD got {pushed}")
            self.post(http, f"/me/interactions/{iid}", {"operationName": "Accept"})

            self.begin("4. reply to all, quoting the original")
            reply = {"operationName": "ReplyAll", "quoteOriginal": True}
            draft = self.post(http, f"/me/interactions/{iid}", reply)["replyInteractionId"]
            shown = self.get(http, f"/me/interactions/{draft}")["interaction"]
            assert shown["state"] == "ReplyCreated", shown
            assert shown["email_object"]["Subject"] == "Re: Where is my order?", shown

            self.begin("5. send it, with the agent's answer above the quote")
            text = "It ships today.\n\n> Where is my order?"
            self.post(
                http,
                f"/me/interactions/{draft}",
                {"operationName": "Send", "email_object": {"text": text}},
            )
            outbox = cluster.maildir / "new"
            files = wait_until("the reply in the Maildir", lambda: list(outbox.glob("*")), 60)
            mail = files[0].read_text()
            assert "In-Reply-To: " in mail and "References: " in mail, mail
            assert "It ships today." in mail and "Subject: Re: Where is my order?" in mail, mail
            say(f"       {files[0]}")

            self.begin("6. done with the customer's mail")
            self.post(http, f"/me/interactions/{iid}", {"operationName": "StopProcessing"})

    def bayeux(self, http: httpx.Client, url: str, message: dict[str, Any]) -> list[dict[str, Any]]:
        r = http.post(url, json=[message], auth=self.auth)
        if r.status_code != 200:
            raise AssertionError(f"CometD {message['channel']}: {r.status_code} {r.text}")
        replies: list[dict[str, Any]] = r.json()
        return replies

    def handshake(self, http: httpx.Client, url: str) -> str:
        shake = self.bayeux(
            http,
            url,
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
            },
        )[0]
        assert shake.get("successful"), shake
        holder = http.cookies.get("SERVERID")
        assert holder in {n.name for n in self.cluster.members}, http.cookies
        client_id = str(shake["clientId"])
        connect = {"channel": "/meta/connect", "clientId": client_id}
        first = self.bayeux(http, url, {**connect, "connectionType": "long-polling"})
        assert first[-1].get("successful"), first
        # As many requests as it takes round-robin to reach every node: all answered by the
        # holder (another node would not know the clientId).
        for _ in range(2 * self.cluster.nodes):
            subscribed = self.bayeux(
                http,
                url,
                {
                    "channel": "/meta/subscribe",
                    "clientId": client_id,
                    "subscription": "/me/interactions",
                },
            )[0]
            assert subscribed.get("successful"), subscribed
        say(f"       session {client_id} held by {holder} (cookie SERVERID={holder})")
        return client_id

    def await_notification(
        self, http: httpx.Client, url: str, client_id: str, iid: str, state: str
    ) -> str:
        """Long-polls (``/meta/connect``) until the notification for ``iid`` in ``state``."""
        connect = {
            "channel": "/meta/connect",
            "clientId": client_id,
            "connectionType": "long-polling",
        }
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for message in self.bayeux(http, url, connect):
                data = message.get("data")
                if (
                    message.get("channel") == "/me/interactions"
                    and isinstance(data, dict)
                    and data.get("id") == iid
                    and data.get("state") == state
                ):
                    return f"{data.get('messageTypeName', 'a notification')} {state}"
                if message.get("channel") == "/meta/connect" and not message.get("successful"):
                    raise AssertionError(f"CometD connect refused: {message}")
        raise AssertionError(f"no {state} notification for {iid} within 60 s")


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2, help="server processes (default 2)")
    parser.add_argument(
        "--port",
        type=int,
        help="HAProxy's port (default 8080); node i listens on port + i",
    )
    parser.add_argument(
        "--smtp-port", type=int, help="node 1's SMTP port (default 2526); node i on + i - 1"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="on free ports (unless given): run the walkthrough, print OK, stop",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.nodes <= 16:
        parser.error("--nodes: 1 to 16")
    if args.port is None and args.check:
        http_ports = [free_port() for _ in range(args.nodes)]
        frontend = free_port()
    else:
        frontend = args.port or 8080
        http_ports = [frontend + i + 1 for i in range(args.nodes)]
    if args.smtp_port is None and args.check:
        smtp_ports = [free_port() for _ in range(args.nodes)]
    else:
        smtp_ports = [(args.smtp_port or 2526) + i for i in range(args.nodes)]

    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    passwords = demo_passwords()
    cluster: Cluster | None = None
    postgres: PostgresCluster | None = None
    status = 0
    try:
        with temporary_root() as root:
            try:
                say("starting PostgreSQL ...")
                postgres = PostgresCluster()  # first: its stop() cleans up a start cut short
                postgres.start()
                dsn = postgres.create_database("interactions")
                cluster = Cluster(
                    dsn,
                    root,
                    nodes=args.nodes,
                    passwords=passwords,
                    http_ports=http_ports,
                    smtp_ports=smtp_ports,
                    frontend_port=frontend,
                    output=None if args.check else show_output,
                    owns_root=True,
                )
                say(f"starting {args.nodes} servers and HAProxy ...")
                with cluster:
                    say(banner(cluster, dsn, passwords))
                    if args.check:
                        status = check(cluster, passwords)
                    else:
                        watch(cluster)
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                say("stopping ...")
                if postgres is not None:
                    postgres.stop()
    except Stop as stop:
        say(f"stopped by {stop}; temporary directory removed")
        return 0
    say("stopped; temporary directory removed")
    return status


def check(cluster: Cluster, passwords: dict[str, str]) -> int:
    walk = Walkthrough(cluster, passwords)
    try:
        walk.run()
    except Exception as exc:
        say(f"FAILED at {walk.step!r}: {type(exc).__name__}: {exc}")
        for node in cluster.members:
            say(f"--- {node.name} ({node.log})\n{node.log_tail()}")
        return 1
    say("OK")
    return 0


def watch(cluster: Cluster) -> None:
    """Until a signal: say once when a process exits by itself."""
    reported: set[str] = set()
    while True:
        time.sleep(0.5)
        for node in cluster.members:
            if not node.running and node.name not in reported:
                reported.add(node.name)
                say(f"{node.name} exited (see its output above); the others go on")
        if cluster.haproxy is not None and cluster.haproxy.poll() is not None:
            say("HAProxy exited; stopping")
            return


if __name__ == "__main__":
    raise SystemExit(main())
