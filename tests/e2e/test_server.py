"""End to end, real processes: ``interactions serve`` as a subprocess, the official CometD
JavaScript client on Node, mail in over SMTP with ``smtplib``, mail out to an ``aiosmtpd`` sink.

The walkthrough runs on both backends: the default SQLite file, and PostgreSQL (a fresh
database of the throwaway cluster, ``tests/pgcluster.py``) selected by the ``database``
setting alone, as an operator would.

Then the server is killed with SIGKILL in the middle of a burst of Sends and restarted: every
Send that was answered ``ok`` is delivered; the only duplicates allowed are the mails handed to
the relay in the instant of the kill (the documented crash window), and they carry the same
Message-ID, so receivers can tell.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from adapters.server.agents import add_agent
from ports import free_port

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "tests" / "cometd" / "js"


class Sink:
    """An aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def parsed(self) -> list[tuple[list[str], Any]]:
        with self.lock:
            return [
                (rcpts, message_from_bytes(raw, policy=policy.default))
                for _, rcpts, raw in self.messages
            ]


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    handler = Sink()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


class ServerProcess:
    def __init__(
        self, config: Path, http_port: int, smtp_port: int, env: dict[str, str] | None = None
    ) -> None:
        self.config = config
        self.http_port = http_port
        self.smtp_port = smtp_port
        self.env = env or {}
        self.backend = "postgres" if "INTERACTIONS_DATABASE" in self.env else "sqlite"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = config.parent / "server.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v2"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "adapters.server.cli", "serve", "--config", str(self.config)],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.base + "/me", auth=("alice", "alice-pw")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("server did not start:\n" + self.log.read_text())

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise


@pytest.fixture
def server(
    request: pytest.FixtureRequest, tmp_path: Path, sink: tuple[Sink, int]
) -> Iterator[ServerProcess]:
    """The server on SQLite, or (``indirect`` parameter ``"postgres"``) on PostgreSQL."""
    backend = getattr(request, "param", "sqlite")
    agents = tmp_path / "agents.json"
    add_agent(agents, "alice", "alice-pw", mailboxes=["support@example.com"], capacity=50)
    http_port, smtp_port = free_port(), free_port()
    config = tmp_path / "config.json"
    settings: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "http_port": http_port,
        "smtp_listen_port": smtp_port,
        "agents_file": str(agents),
        "mailboxes": {"support@example.com": "Support"},
        "message_id_domain": "e2e.example.com",
        "relay": {"host": "127.0.0.1", "port": sink[1], "security": "none"},
    }
    env: dict[str, str] = {}
    if backend == "postgres":
        # As an operator would: the environment variable alone selects PostgreSQL.
        env["INTERACTIONS_DATABASE"] = request.getfixturevalue("postgres_dsn")
    config.write_text(json.dumps(settings))
    process = ServerProcess(config, http_port, smtp_port, env=env)
    process.start()
    yield process
    process.stop()


def deliver(smtp_port: int, n: int) -> str:
    message = EmailMessage()
    message["From"] = "Cee Customer <customer@example.org>"
    message["To"] = "support@example.com"
    message["Cc"] = "colleague@example.org, support@example.com"
    message["Subject"] = f"Order {n}"
    message["Message-ID"] = f"<order-{n}@example.org>"
    message["Date"] = "Mon, 05 Jan 2026 09:00:00 +0000"
    message.set_content(f"Where is order {n}?\n")
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
        smtp.send_message(message)
    return str(message["Message-ID"])


def ensure_node_modules() -> None:
    if not (JS_DIR / "node_modules" / "cometd-nodejs-client").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS_DIR,
            check=True,
            timeout=300,
        )


class JsClient:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []

    async def next(self, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            assert self.process.stdout is not None
            while True:
                line = await self.process.stdout.readline()
                assert line, "the Node client exited"
                event: dict[str, Any] = json.loads(line)
                self.events.append(event)
                if predicate(event):
                    return event

        return await asyncio.wait_for(read(), timeout)

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


def interaction_message(state: str) -> Any:
    return lambda e: e.get("event") == "message" and e["data"].get("state") == state


@pytest.mark.parametrize("server", ["sqlite", "postgres"], indirect=True)
async def test_walkthrough_with_the_official_client(
    server: ServerProcess, sink: tuple[Sink, int]
) -> None:
    ensure_node_modules()
    config = {
        "url": f"http://127.0.0.1:{server.http_port}/api/v2/notifications",
        "transport": "long-polling",
        "auth": "header",
        "user": "alice",
        "password": "alice-pw",
        "subscribe": ["/me/interactions"],
    }
    node = await asyncio.create_subprocess_exec(
        "node",
        str(JS_DIR / "client.mjs"),
        json.dumps(config),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=JS_DIR,
    )
    js = JsClient(node)
    try:
        await js.next(lambda e: e.get("event") == "subscribed" and e["successful"])
        async with httpx.AsyncClient(base_url=server.base, auth=("alice", "alice-pw")) as http:
            r = await http.post("/me/channels/email", json={"operationName": "Ready"})
            assert r.json() == {"status": "ok"}
            original_id = await asyncio.to_thread(deliver, server.smtp_port, 1)
            invited = await js.next(interaction_message("Invited"))
            iid = invited["data"]["id"]
            assert invited["data"]["capabilities"] == ["Accept", "Reject"]
            assert (
                await http.post(f"/me/interactions/{iid}", json={"operationName": "Accept"})
            ).json() == {"status": "ok"}
            accepted = await js.next(interaction_message("Accepted"))
            assert "ReplyAll" in accepted["data"]["capabilities"]
            r = await http.post(
                f"/me/interactions/{iid}",
                json={"operationName": "ReplyAll", "quoteOriginal": True},
            )
            draft = r.json()["replyInteractionId"]
            created = await js.next(interaction_message("ReplyCreated"))
            assert created["data"]["id"] == draft
            assert created["data"]["capabilities"] == [
                "Cancel",
                "Send",
                "PlaceInWorkbin",
                "UpdateProperties",
                "LinkAttachment",
            ]
            quoted = created["data"]["email_object"]["Text"]
            r = await http.post(
                f"/me/interactions/{draft}",
                json={
                    "operationName": "Send",
                    "email_object": {"text": "It ships today.\n" + quoted},
                },
            )
            assert r.json() == {"status": "ok"}
            sent = await js.next(interaction_message("Sent"))
            assert sent["data"]["capabilities"] == []
            assert (
                await http.post(f"/me/interactions/{iid}", json={"operationName": "StopProcessing"})
            ).json() == {"status": "ok"}
            await js.next(interaction_message("Completed"))

        deadline = time.monotonic() + 15
        while not sink[0].messages and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        ((rcpts, reply),) = sink[0].parsed()
        assert sorted(rcpts) == ["colleague@example.org", "customer@example.org"]
        assert reply["To"] == "Cee Customer <customer@example.org>"
        assert reply["Cc"] == "colleague@example.org"
        assert reply["Subject"] == "Re: Order 1"
        assert reply["In-Reply-To"] == original_id
        assert reply["References"] == original_id
        assert reply["Message-ID"].endswith("@e2e.example.com>")
        body = reply.get_body(("plain",)).get_content().replace("\r\n", "\n")
        assert body.startswith("It ships today.\n")
        assert "> Where is order 1?" in body
        states = [e["data"]["state"] for e in js.events if e.get("event") == "message"]
        assert states == ["Invited", "Accepted", "ReplyCreated", "Sent", "Completed"]
        if server.backend == "postgres":  # it really ran on PostgreSQL, and only there
            assert "(PostgreSQL, pool 10)" in server.log.read_text()
            data = server.config.parent / "data"
            assert not (data / "interactions.sqlite3").exists()
            assert not (data / "attachments").exists()
    finally:
        await js.close()


def test_sigkill_during_a_burst_of_sends_loses_nothing(
    server: ServerProcess, sink: tuple[Sink, int]
) -> None:
    http = httpx.Client(base_url=server.base, auth=("alice", "alice-pw"), timeout=10)
    http.post("/me/channels/email", json={"operationName": "Ready"})
    count = 40
    for n in range(count):
        deliver(server.smtp_port, 100 + n)
    drafts: dict[str, str] = {}  # draft id -> the Message-ID it answers

    def pending() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = http.get("/me/interactions").json()["interactions"]
        return [i for i in found if i["state"] == "Invited"]

    deadline = time.monotonic() + 20
    while len(drafts) < count and time.monotonic() < deadline:
        for i in pending():
            http.post(f"/me/interactions/{i['id']}", json={"operationName": "Accept"})
            r = http.post(f"/me/interactions/{i['id']}", json={"operationName": "Reply"})
            drafts[r.json()["replyInteractionId"]] = i["email_object"]["MessageId"]
        time.sleep(0.05)
    assert len(drafts) == count

    accepted: list[str] = []
    lock = threading.Lock()

    def send(draft: str) -> None:
        try:
            r = httpx.post(
                f"{server.base}/me/interactions/{draft}",
                json={"operationName": "Send", "email_object": {"text": "Answer"}},
                auth=("alice", "alice-pw"),
                timeout=5,
            )
        except httpx.HTTPError:
            return  # the server died before answering: not accepted
        if r.status_code == 200 and r.json() == {"status": "ok"}:
            with lock:
                accepted.append(draft)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(send, d) for d in drafts]
        while len(accepted) < count // 2:
            time.sleep(0.005)
        server.kill()
        for f in futures:
            f.result()
    assert 0 < len(accepted) <= count

    server.start()
    wanted = {drafts[d] for d in accepted}

    def delivered() -> dict[str, list[str]]:
        by_parent: dict[str, list[str]] = {}
        for _, message in sink[0].parsed():
            by_parent.setdefault(str(message["In-Reply-To"]), []).append(str(message["Message-ID"]))
        return by_parent

    deadline = time.monotonic() + 30
    while not wanted <= set(delivered()) and time.monotonic() < deadline:
        time.sleep(0.1)
    got = delivered()
    missing = wanted - set(got)
    assert not missing, f"accepted Sends never delivered: {missing}"
    duplicated = {parent: ids for parent, ids in got.items() if len(ids) > 1}
    for ids in duplicated.values():
        assert len(set(ids)) == 1, "a retry must be the same message (same Message-ID)"
    # Only mails in flight at the kill can be handed over twice (pool of 4 connections).
    assert len(duplicated) <= 4, duplicated
    http.close()


def test_sigterm_stops_cleanly(server: ServerProcess) -> None:
    """SIGTERM during a held CometD connect: the connect is answered, the lifespan shuts down
    in order, the process ends promptly, with no traceback."""
    url = f"http://127.0.0.1:{server.http_port}/api/v2/notifications"
    client = httpx.Client(auth=("alice", "alice-pw"), timeout=30)
    hello = client.post(
        url,
        json=[
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
            }
        ],
    ).json()[0]
    connect = {
        "channel": "/meta/connect",
        "clientId": hello["clientId"],
        "connectionType": "long-polling",
    }
    client.post(url, json=[connect])  # the first connect is answered at once
    answered: list[int] = []
    held = threading.Thread(
        target=lambda: answered.append(client.post(url, json=[connect]).status_code)
    )
    held.start()
    time.sleep(0.5)  # now held by the server
    assert server.process is not None
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    # uvicorn ends a signalled process by the signal itself after its graceful shutdown.
    assert server.process.wait(15) in (0, -signal.SIGTERM)
    held.join(5)
    assert answered == [200]
    assert time.monotonic() - started < 10
    log = server.log.read_text()
    assert "Application shutdown complete" in log and "Traceback" not in log
    client.close()
