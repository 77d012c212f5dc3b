"""The real server (``interactions serve`` as a subprocess) on PostgreSQL, losing its database.

1. Its connections are terminated (``pg_terminate_backend``) again and again while requests
   and SMTP deliveries run: every answer is 200 or 503 (never 500), SMTP 250 or 4xx (never
   5xx), the next request succeeds, and nothing answered ok is lost.
2. The database refuses connections for a few seconds (``ALLOW_CONNECTIONS false``, and every
   connection terminated): requests answer 503 in the error shape, SMTP answers 451 (the sender
   keeps the mail and tries again), the dispatchers keep running; once the database is back,
   the next request succeeds, the retried mail is stored, mail queued meanwhile is delivered to
   the relay, and every notification is published.
"""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiosmtpd.controller import Controller

from adapters.server.agents import add_agent
from pgcluster import PostgresCluster
from ports import free_port

AUTH = ("alice", "alice-pw")


class Sink:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


class Server:
    """``interactions serve`` on ``dsn`` with its own application name and a short connect
    timeout (so that a request during an outage is answered within seconds)."""

    def __init__(self, tmp: Path, dsn: str, relay_port: int) -> None:
        self.dsn = dsn
        self.application_name = "outage-" + uuid.uuid4().hex[:8]
        self.http_port, self.smtp_port = free_port(), free_port()
        self.log = tmp / "server.log"
        agents = tmp / "agents.json"
        add_agent(agents, "alice", "alice-pw", mailboxes=["support@example.com"], capacity=50)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("INTERACTIONS_")}
        self.env = {
            **clean,
            "PYTHONUNBUFFERED": "1",
            "INTERACTIONS_DATA_DIR": str(tmp / "data"),
            "INTERACTIONS_DATABASE": dsn,
            "INTERACTIONS_DATABASE_APPLICATION_NAME": self.application_name,
            "INTERACTIONS_DATABASE_CONNECT_TIMEOUT_SECONDS": "2",
            "INTERACTIONS_DATABASE_POOL_SIZE": "4",
            "INTERACTIONS_AGENTS_FILE": str(agents),
            "INTERACTIONS_HTTP_PORT": str(self.http_port),
            "INTERACTIONS_SMTP_LISTEN_PORT": str(self.smtp_port),
            "INTERACTIONS_RELAY__HOST": "127.0.0.1",
            "INTERACTIONS_RELAY__PORT": str(relay_port),
            "INTERACTIONS_RELAY__SECURITY": "none",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.base, auth=AUTH, timeout=30)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v2"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "adapters.server.cli", "serve", "--access-log"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if self.http.get("/me").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)

    def stop(self) -> None:
        self.http.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise

    def op(self, iid: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(f"/me/interactions/{iid}", json=body)


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    handler, port = Sink(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def server(tmp_path: Path, postgres_dsn: str, sink: tuple[Sink, int]) -> Iterator[Server]:
    running = Server(tmp_path, postgres_dsn, sink[1])
    running.start()
    yield running
    running.stop()


def admin(cluster: PostgresCluster, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """A statement on the cluster's maintenance database (never the server's own)."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def terminate(cluster: PostgresCluster, server: Server) -> int:
    rows = admin(
        cluster,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        server.application_name,
    )
    return len(rows)


def smtp_deliver(port: int, n: int) -> int:
    """Deliver one mail; the SMTP code the receiver answered DATA with."""
    message = EmailMessage()
    message["From"] = "Cee Customer <customer@example.org>"
    message["To"] = "support@example.com"
    message["Subject"] = f"Order {n}"
    message["Message-ID"] = f"<outage-{n}@example.org>"
    message.set_content(f"Where is order {n}?\n")
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.send_message(message)
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code
    return 250


def wait_for(check: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def accepted(server: Server, count: int, first: int) -> list[str]:
    """``count`` mails delivered and accepted by alice; their interaction ids."""
    assert (
        server.http.post("/me/channels/email", json={"operationName": "Ready"}).status_code == 200
    )
    for n in range(first, first + count):
        assert smtp_deliver(server.smtp_port, n) == 250
    ids: list[str] = []

    def offered() -> bool:
        found = server.http.get("/me/interactions").json()["interactions"]
        ids[:] = [i["id"] for i in found if i["state"] == "Invited"]
        return len(ids) >= count

    wait_for(offered, what="the offers")
    for iid in ids:
        assert server.op(iid, {"operationName": "Accept"}).json() == {"status": "ok"}
    return ids


class Writer(threading.Thread):
    """UpdateProperties ``n = 1, 2, 3...`` on one interaction as fast as answered; a value
    not answered ok is tried again. ``statuses``: every HTTP status seen."""

    def __init__(self, server: Server, iid: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{server.base}/me/interactions/{iid}"
        self.acked: list[int] = []
        self.attempted = 0
        self.statuses: list[int] = []
        self.errors: list[dict[str, Any]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        n = 1
        with httpx.Client(auth=AUTH, timeout=30) as http:
            while not self.halt.is_set():
                self.attempted = n
                r = http.post(
                    self.url, json={"operationName": "UpdateProperties", "userData": {"n": n}}
                )
                self.statuses.append(r.status_code)
                if r.status_code == 200 and r.json() == {"status": "ok"}:
                    self.acked.append(n)
                    n += 1
                else:
                    self.errors.append(r.json())
                    time.sleep(0.2)


def stored(server: Server, iid: str) -> tuple[int, Any]:
    """(version, userData.n) of the interaction as stored in PostgreSQL."""
    with psycopg.connect(server.dsn) as conn:
        row = conn.execute(
            "SELECT version, data::json -> 'user_data' ->> 'n' FROM interactions WHERE id = %s",
            (iid,),
        ).fetchone()
    assert row is not None
    return int(row[0]), row[1]


def check_nothing_lost(server: Server, iid: str, writer: Writer, version_before: int) -> None:
    version, n = stored(server, iid)
    assert n is not None
    last_acked = writer.acked[-1]
    # Ok means committed; a commit whose answer was lost (503 "unknown") may also be there.
    assert last_acked <= int(n) <= writer.attempted
    assert version >= version_before + len(writer.acked)
    assert writer.acked == list(range(1, last_acked + 1))


def test_terminated_connections_are_503_or_success_never_500(
    server: Server, postgres_cluster: PostgresCluster
) -> None:
    (iid,) = accepted(server, 1, first=1)
    version_before, _ = stored(server, iid)
    writer = Writer(server, iid)
    writer.start()
    codes: list[int] = []
    terminated = 0
    try:
        for round_ in range(12):
            time.sleep(0.15)
            terminated += terminate(postgres_cluster, server)
            codes.append(smtp_deliver(server.smtp_port, 100 + round_))
    finally:
        time.sleep(0.3)
        writer.halt.set()
        writer.join(30)
    assert terminated >= 12  # the server's connections were there to be terminated, each time
    assert set(writer.statuses) <= {200, 503}, writer.statuses
    assert all(e["status"] == "error" and e["errorDescription"] for e in writer.errors)
    assert len(writer.acked) > 10
    assert all(code == 250 or 400 <= code < 500 for code in codes), codes
    # The next request succeeds; nothing answered ok is lost.
    assert server.op(iid, {"operationName": "UpdateProperties", "userData": {"x": 1}}).json() == {
        "status": "ok"
    }
    writer.acked.append(writer.attempted + 1)
    writer.attempted += 1
    version, _ = stored(server, iid)
    assert version >= version_before + len(writer.acked)
    assert server.http.get(f"/me/interactions/{iid}").status_code == 200
    assert 'HTTP/1.1" 500' not in server.log.read_text()


def test_an_outage_is_503_and_451_and_everything_catches_up(
    server: Server, postgres_cluster: PostgresCluster, sink: tuple[Sink, int]
) -> None:
    first, second = accepted(server, 2, first=1)
    draft = server.op(first, {"operationName": "Reply"}).json()["replyInteractionId"]
    name = server.dsn.rsplit("/", 1)[1]
    # The version before the writer starts: read while it runs, a commit whose answer is still
    # on its way would count in the version but not yet in ``acked``.
    version_before, _ = stored(server, second)
    writer = Writer(server, second)
    writer.start()
    wait_for(lambda: len(writer.acked) >= 5, what="the writer")

    admin(postgres_cluster, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        terminate(postgres_cluster, server)
        started = time.monotonic()
        during = server.op(draft, {"operationName": "Send", "email_object": {"text": "Answer"}})
        assert during.status_code == 503, during.text
        assert during.json()["status"] == "error"
        assert "PostgreSQL" in during.json()["errorDescription"]
        assert time.monotonic() - started < 15
        assert server.http.get("/me/interactions").status_code == 503
        assert 400 <= smtp_deliver(server.smtp_port, 50) < 500  # kept by the sender, retried
        time.sleep(3)  # the dispatchers poll meanwhile, and fail
    finally:
        admin(postgres_cluster, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    outage = time.monotonic() - started
    back = time.monotonic()
    # The pool reconnects with psycopg_pool's backoff (1, 2, 4... s between attempts): a
    # request in that time may still answer 503; then one succeeds.
    while True:
        after = server.op(draft, {"operationName": "Send", "email_object": {"text": "Answer"}})
        if after.status_code != 503 or time.monotonic() - back > 60:
            break
    recovery = time.monotonic() - back
    print(f"outage {outage:.1f} s, first success {recovery:.1f} s after the database was back")
    assert after.json() == {"status": "ok"}, after.text
    assert smtp_deliver(server.smtp_port, 50) == 250
    time.sleep(0.5)
    writer.halt.set()
    writer.join(30)
    assert set(writer.statuses) <= {200, 503}, writer.statuses
    assert 503 in writer.statuses
    check_nothing_lost(server, second, writer, version_before)

    # The mail dispatcher kept running: the Send made after the outage reaches the relay.
    wait_for(lambda: len(sink[0].messages) == 1, what="the reply at the relay")
    assert b"Subject: Re: Order 1" in sink[0].messages[0]

    # The notification tail kept running: everything committed gets published (marked so
    # by the leader, which this one process is).
    def published() -> bool:
        with psycopg.connect(server.dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM outbox WHERE kind = 'notification' AND published_at IS NULL"
            ).fetchone()
        return row is not None and row[0] == 0

    wait_for(published, what="every notification published")
    with psycopg.connect(server.dsn) as conn:
        retried = conn.execute(
            "SELECT count(*) FROM interactions WHERE message_id = '<outage-50@example.org>'"
        ).fetchone()
    assert retried == (1,)
    log = server.log.read_text()
    # On PostgreSQL the server runs as one node of a cluster: its notification tail.
    assert "notification tail: " in log and "retrying until the database is back" in log
    assert "notification tail: the database is back; caught up" in log
    assert 'HTTP/1.1" 500' not in log
