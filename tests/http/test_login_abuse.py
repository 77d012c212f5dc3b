"""Login abuse on the real server (issue 12): spraying, forwarded-header spoofing, lock-outs.

The limits are asserted by status codes, and the CPU logins spend by *counting* argon2 calls
and verifications (never by timing them). Address-specific tests run the server exactly as
``interactions serve`` configures uvicorn (``cli.main`` with ``uvicorn.Server.run`` caught, then
run on a thread on a free loopback port), so uvicorn's proxy-header handling is part of the
test; TestClient's client address is the constant "testclient".
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import uvicorn
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

import adapters.server.agents as agents_module
from adapters.cometd.http11 import LongPollingProtocol
from adapters.http.app import AuthMiddleware
from adapters.http.auth import HttpAuth
from adapters.server import cli
from adapters.server.agents import FileAgentDirectory, add_agent
from adapters.server.bootstrap import build
from adapters.server.settings import load_settings

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}
ME = "/api/v2/me"


def basic(agent: str, password: str | None = None) -> dict[str, str]:
    token = base64.b64encode(f"{agent}:{password or PASSWORDS[agent]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Argon2Meter(PasswordHasher):
    """The real hasher, counting verifications and how many run at once; with ``gated``, each
    verification waits until ``opened`` is set."""

    def __init__(self, gated: bool = False) -> None:
        super().__init__()
        self.opened = threading.Event()
        if not gated:
            self.opened.set()
        self.lock = threading.Condition()
        self.calls = 0
        self.running = 0
        self.peak = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.lock.notify_all()
        try:
            self.opened.wait(60)
            return super().verify(hash, password)
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture
def argon2(monkeypatch: pytest.MonkeyPatch) -> Argon2Meter:
    meter = Argon2Meter()
    monkeypatch.setattr(agents_module, "_HASHER", meter)
    return meter


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names the directory was asked to verify (argon2 or its imitation)."""
    names: list[str] = []
    original = FileAgentDirectory.verify

    def counted(self: FileAgentDirectory, agent_id: str, password: str) -> bool:
        names.append(agent_id)
        return original(self, agent_id, password)

    monkeypatch.setattr(FileAgentDirectory, "verify", counted)
    return names


# --- spraying (item 1) ----------------------------------------------------------------------


def test_spraying_names_from_one_address_is_limited_and_cheap(
    tmp_path: Path, argon2: Argon2Meter, verifications: list[str]
) -> None:
    # The address budget is 6 x login_max_failures (default 5: 30); 2 keeps the test short.
    settings = load_settings(data_dir=tmp_path, smtp_listen_port=0, login_max_failures=2)
    server = build(settings, demo_passwords=PASSWORDS)
    budget = 12
    with TestClient(server.app) as client:
        answers = [client.get(ME, headers=basic(f"user{i}", "Summer2026!")) for i in range(25)]
        # The address has spent its budget: every further login from it waits, alice's too.
        alice = client.get(ME, headers=basic("alice"))
    assert [r.status_code for r in answers] == [401] * budget + [429] * (25 - budget)
    assert all(0 < int(r.headers["Retry-After"]) <= 900 for r in answers[budget:])
    assert alice.status_code == 429
    # CPU: one verification per admitted guess, and unknown names do not run argon2 (only the
    # first few measure it on the dummy hash, to imitate its duration).
    assert len(verifications) == budget
    assert argon2.calls <= 4


def test_an_unknown_name_is_answered_like_a_wrong_password(tmp_path: Path) -> None:
    server = build(load_settings(data_dir=tmp_path, smtp_listen_port=0), demo_passwords=PASSWORDS)
    with TestClient(server.app) as client:
        wrong = client.get(ME, headers=basic("alice", "guess"))
        unknown = client.get(ME, headers=basic("mallory", "guess"))

    def shown(r: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
        return r.status_code, r.content, [(k, v) for k, v in r.headers.items() if k != "date"]

    assert shown(wrong) == shown(unknown)
    assert wrong.status_code == 401


def test_every_refused_login_is_one_warning_line_without_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(data_dir=tmp_path, smtp_listen_port=0, login_max_failures=2)
    server = build(settings, demo_passwords=PASSWORDS)
    with caplog.at_level(logging.WARNING, logger="adapters.http.auth"), TestClient(server.app) as c:
        statuses = [c.get(ME, headers=basic("bob", "s3cret-guess")).status_code for _ in range(3)]
        forged = c.get(ME, headers=basic("eve\nINFO forged line", "x")).status_code
        ok = c.get(ME, headers=basic("alice")).status_code
    assert statuses == [401, 401, 429] and forged == 401 and ok == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "adapters.http.auth"]
    assert lines == [
        'login refused: agent=bob address=testclient reason="invalid credentials"',
        'login refused: agent=bob address=testclient reason="invalid credentials"',
        'login refused: agent=bob address=testclient reason="too many failed logins"',
        'login refused: agent="eve\\nINFO forged line" address=testclient '
        'reason="invalid credentials"',
    ]
    assert not any("s3cret" in line for line in lines)


# --- the real server under uvicorn, as ``serve`` runs it ------------------------------------


@contextmanager
def serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> Iterator[tuple[httpx.Client, uvicorn.Server]]:
    agents = tmp_path / "agents.json"
    for agent, password in PASSWORDS.items():
        add_agent(agents, agent, password, mailboxes=["support@example.com"])
    config = tmp_path / "config.json"
    values = {"data_dir": str(tmp_path), "smtp_listen_port": 0, "agents_file": str(agents)}
    config.write_text(json.dumps(values | settings))
    run = uvicorn.Server.run
    caught: list[uvicorn.Server] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: caught.append(self))
    argv = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", "0"]
    assert cli.main([*argv, "--log-level", "warning"]) == 0
    (server,) = caught
    thread = threading.Thread(target=run, args=(server,), daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            time.sleep(0.02)
        assert server.started, "the server did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client, server
    finally:
        server.should_exit = True
        thread.join(60)


def login(
    client: httpx.Client, agent: str, password: str | None = None, forwarded: str | None = None
) -> httpx.Response:
    """A password login (no session cookie: a session would be let in without one)."""
    headers = basic(agent, password)
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    client.cookies.clear()
    return client.get(ME, headers=headers)


def test_forwarded_for_from_an_untrusted_peer_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: uvicorn believed X-Forwarded-For from 127.0.0.1, so a spoofed header per guess
    gave 12 x 401 and a locked-out agent's password got in."""
    with serving(tmp_path, monkeypatch) as (client, server):
        statuses = [
            login(client, "alice", f"guess{i}", forwarded=f"203.0.113.{i}").status_code
            for i in range(12)
        ]
        assert statuses == [401] * 5 + [429] * 7
        # Still the same client (127.0.0.1) in back-off for alice, whatever it claims.
        assert login(client, "alice", forwarded="198.51.100.99").status_code == 429
        # uvicorn is told to trust nobody (its default would be 127.0.0.1 and ::1).
        assert server.config.proxy_headers is False and server.config.forwarded_allow_ips == []


def test_forwarded_for_from_a_trusted_proxy_is_honoured_and_nobody_is_locked_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attacker, office = "203.0.113.5", "198.51.100.9"
    with serving(tmp_path, monkeypatch, trusted_proxies=["127.0.0.1"]) as (client, server):
        assert server.config.proxy_headers is True
        for i in range(5):
            assert login(client, "alice", f"guess{i}", forwarded=attacker).status_code == 401
        blocked = login(client, "alice", "guess5", forwarded=attacker)
        assert blocked.status_code == 429 and blocked.headers["Retry-After"] == "5"
        # What the client wrote left of the proxy's entry is not believed.
        spoofed = login(client, "alice", "guess6", forwarded=f"{office}, {attacker}")
        assert spoofed.status_code == 429
        # Alice, from another address, is not locked out by the attacker's failures.
        assert login(client, "alice", forwarded=office).status_code == 200
        # On the attacker's (shared) address: failures for alice put alice in back-off there...
        assert login(client, "alice", forwarded=attacker).status_code == 429
        # ... while failures for other names do not refuse a correct password.
        assert login(client, "bob", forwarded=attacker).status_code == 200


def test_concurrent_verifications_are_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argon2 = Argon2Meter(gated=True)
    monkeypatch.setattr(agents_module, "_HASHER", argon2)
    with (
        serving(tmp_path, monkeypatch, trusted_proxies=["127.0.0.1"]) as (client, _),
        ThreadPoolExecutor(10) as pool,
    ):
        # Ten guesses from ten addresses: no limiter stops them, only the slots (4) do.
        futures = [
            pool.submit(login, client, "alice", "guess", f"203.0.113.{i}") for i in range(10)
        ]
        try:
            waiting = set(futures)
            while len(futures) - len(waiting) < 6:  # the six turned away answer at once
                done, waiting = wait(waiting, timeout=60, return_when=FIRST_COMPLETED)
                if not done:
                    break
            early = [f.result() for f in futures if f.done()]
            assert [r.status_code for r in early] == [503] * 6
            assert all(r.headers["Retry-After"] == "1" for r in early)
            with argon2.lock:  # the four admitted are all in argon2
                assert argon2.lock.wait_for(lambda: argon2.running == 4, 60)
        finally:
            argon2.opened.set()
        statuses = sorted(f.result().status_code for f in futures)
    assert statuses == [401] * 4 + [503] * 6
    assert argon2.calls == 4 and argon2.peak == 4


# --- our own code path: AuthMiddleware on a crafted ASGI scope ------------------------------


def middleware(trusted: list[str]) -> Callable[[str, list[str]], Any]:
    auth = HttpAuth(lambda agent, password: password == agent + "-pw", trusted_proxies=trusted)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    stack = AuthMiddleware(app, auth)

    async def call(password: str, forwarded: list[str]) -> int:
        headers = [(b"authorization", basic("alice", password)["Authorization"].encode())]
        headers += [(b"x-forwarded-for", value.encode()) for value in forwarded]
        scope: Scope = {
            "type": "http",
            "method": "GET",
            "path": ME,
            "headers": headers,
            "client": ("127.0.0.1", 40000),
        }
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b""}

        async def send(message: Message) -> None:
            sent.append(message)

        await stack(scope, receive, send)
        status: int = sent[0]["status"]
        return status

    return call


async def test_the_middleware_applies_the_trusted_proxies_itself() -> None:
    """Without uvicorn's help (another server, or proxy headers off), the same rule holds; two
    X-Forwarded-For lines are one list: a proxy chain's last line may hold only proxies."""
    call = middleware(["127.0.0.1", "10.0.0.0/8"])
    chain = ["203.0.113.7", "10.1.1.1"]
    for _ in range(5):
        assert await call("guess", chain) == 401
    assert await call("alice-pw", ["203.0.113.7"]) == 429  # the same client
    assert await call("alice-pw", ["198.51.100.1"]) == 200  # another one


async def test_the_middleware_ignores_forwarded_for_without_trusted_proxies() -> None:
    call = middleware([])
    for i in range(5):
        assert await call("guess", [f"203.0.113.{i}"]) == 401
    assert await call("alice-pw", ["198.51.100.1"]) == 429  # still 127.0.0.1


def handshake(client: httpx.Client, agent: str, password: str, forwarded: str) -> Any:
    """A CometD long-polling handshake with Basic credentials, as the JS client sends it."""
    client.cookies.clear()
    body = [
        {
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling"],
        }
    ]
    headers = basic(agent, password) | {"X-Forwarded-For": forwarded}
    response = client.post("/api/v2/notifications/handshake", json=body, headers=headers)
    assert response.status_code == 200
    return response.json()[0]


def test_cometd_long_polling_served_below_asgi_counts_the_forwarded_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve`` reads long-polling below ASGI (the raw peer, not uvicorn's rewritten client):
    the login limits still count the client a trusted proxy names, as the HTTP API does."""
    attacker, office = "203.0.113.5", "198.51.100.9"
    with serving(tmp_path, monkeypatch, trusted_proxies=["127.0.0.1"]) as (client, server):
        assert issubclass(server.config.http_protocol_class, LongPollingProtocol)
        for i in range(5):
            assert handshake(client, "alice", f"guess{i}", attacker)["successful"] is False
        # The five CometD failures put alice in back-off on the attacker's address only.
        assert login(client, "alice", forwarded=attacker).status_code == 429
        assert handshake(client, "alice", "alice-pw", office)["successful"] is True


def test_fast_long_polling_can_be_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(tmp_path, monkeypatch, cometd={"fast_long_polling": False}) as (client, server):
        assert not issubclass(server.config.http_protocol_class, LongPollingProtocol)
        assert handshake(client, "alice", "alice-pw", "192.0.2.1")["successful"] is True
