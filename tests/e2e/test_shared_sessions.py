"""Two real ``interactions serve`` processes on one PostgreSQL database, as behind a load
balancer: a session cookie made by one is valid on the other, with its CSRF token; a logout on
one ends the session on both at once; wrong passwords on one and then on the other add up to
the shared back-off. Asserted by counting responses, never by timing them (the back-off is set
long enough that no test machine is slow enough to outlast it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.server.agents import add_agent
from ports import free_port

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}


class Serve:
    """One ``interactions serve`` subprocess with its own ports and data directory."""

    def __init__(self, root: Path, name: str, agents: Path, dsn: str) -> None:
        self.log = root / f"{name}.log"
        self.http_port = free_port()
        config = root / f"{name}.json"
        config.write_text(
            json.dumps(
                {
                    "data_dir": str(root / name),
                    "http_port": self.http_port,
                    "smtp_listen_port": free_port(),
                    "agents_file": str(agents),
                    "mailboxes": {"support@example.com": "Support"},
                    "csrf": True,
                    "login_backoff_seconds": 300,
                    "login_backoff_max_seconds": 600,
                }
            )
        )
        clean = {k: v for k, v in os.environ.items() if not k.startswith("INTERACTIONS_")}
        env = {**clean, "PYTHONUNBUFFERED": "1", "INTERACTIONS_DATABASE": dsn}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "adapters.server.cli", "serve", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v2"

    def wait_ready(self) -> None:
        """Until the port answers (a 401 without credentials: no login is spent on it)."""
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.base + "/me").status_code == 401:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.base + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.post(self.base + path, timeout=30, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def servers(tmp_path: Path, postgres_dsn: str) -> Iterator[tuple[Serve, Serve]]:
    agents = tmp_path / "agents.json"
    for agent, password in PASSWORDS.items():
        add_agent(agents, agent, password, mailboxes=["support@example.com"])
    started = [Serve(tmp_path, name, agents, postgres_dsn) for name in ("a", "b")]
    try:
        for server in started:
            server.wait_ready()
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


def test_two_processes_share_sessions_csrf_logout_and_login_limits(
    servers: tuple[Serve, Serve],
) -> None:
    a, b = servers
    # Log in on A (Basic -> cookie and CSRF token).
    login = a.get("/me", auth=("alice", PASSWORDS["alice"]))
    assert login.status_code == 200
    cookie = {"Cookie": f"JSESSIONID={login.cookies['JSESSIONID']}"}
    token = login.headers["X-CSRF-TOKEN"]
    # The cookie on B: the same session (no new cookie), the same CSRF token.
    on_b = b.get("/me", headers=cookie)
    assert on_b.status_code == 200 and on_b.json()["user"]["id"] == "alice"
    assert "set-cookie" not in on_b.headers
    assert on_b.headers["X-CSRF-TOKEN"] == token
    # A's token is accepted by B; no token (or another) is not.
    ready = {"operationName": "Ready"}
    with_token = cookie | {"X-CSRF-TOKEN": token}
    assert b.post("/me/channels/email", json=ready, headers=with_token).status_code == 200
    assert b.post("/me/channels/email", json=ready, headers=cookie).status_code == 403
    forged = cookie | {"X-CSRF-TOKEN": "forged"}
    assert a.post("/me/channels/email", json=ready, headers=forged).status_code == 403
    # Logout on B: the very next request with the cookie is refused on A, and on B.
    assert b.post("/me/logout", headers=with_token).status_code == 200
    assert a.get("/me", headers=cookie).status_code == 401
    assert b.get("/me", headers=cookie).status_code == 401

    # Wrong passwords for bob: 3 on A, then 2 on B: 5 free failures in all.
    guesses = [(a if n < 3 else b).get("/me", auth=("bob", f"guess{n}")) for n in range(5)]
    assert [r.status_code for r in guesses] == [401] * 5
    # The back-off is shared: the next attempt waits on either, even with bob's password.
    for server in (a, b, a):
        waiting = server.get("/me", auth=("bob", PASSWORDS["bob"]))
        assert waiting.status_code == 429
        assert 0 < int(waiting.headers["Retry-After"]) <= 300
    # Another name from the same address is not in bob's back-off.
    assert b.get("/me", auth=("alice", PASSWORDS["alice"])).status_code == 200
