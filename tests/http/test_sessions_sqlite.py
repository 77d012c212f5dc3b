"""Sessions and login limits in the SQLite file, beyond the shared contract
(``test_sessions_contract.py``): the server keeps them there, so they survive a restart; and a
file another process holds locked is a 503, never a 500, while lookups (reads, in WAL mode) go
on working.
"""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from adapters.http.app import AuthMiddleware
from adapters.http.auth import HttpAuth
from adapters.server.bootstrap import build
from adapters.server.settings import load_settings
from adapters.sqlite import SqliteStore
from adapters.sqlite.sessions import SqliteLoginLimits, SqliteSessions

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}
ME = "/api/v2/me"


def basic(agent: str, password: str | None = None) -> dict[str, str]:
    token = base64.b64encode(f"{agent}:{password or PASSWORDS[agent]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_sqlite_keeps_sessions_in_its_file_unless_told_memory(tmp_path: Path) -> None:
    """The default ("auto") keeps sessions and limits in the SQLite file, so that they survive
    a restart, and looks sessions up on the event loop (not blocking: no thread hop);
    "memory" is the opt-out."""
    server = build(load_settings(data_dir=tmp_path, smtp_listen_port=0), demo_passwords=PASSWORDS)
    assert isinstance(server.auth.sessions, SqliteSessions)
    assert not server.auth.sessions.blocking
    assert isinstance(server.auth.limiter.storage, SqliteLoginLimits)
    server.store.close()
    settings = load_settings(data_dir=tmp_path, smtp_listen_port=0, http_sessions="memory")
    server = build(settings, demo_passwords=PASSWORDS)
    assert not isinstance(server.auth.sessions, SqliteSessions)
    assert not isinstance(server.auth.limiter.storage, SqliteLoginLimits)
    server.store.close()


def test_sessions_and_back_offs_survive_a_restart(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, smtp_listen_port=0, csrf=True)
    first = build(settings, demo_passwords=PASSWORDS)
    assert isinstance(first.auth.sessions, SqliteSessions)
    assert isinstance(first.auth.limiter.storage, SqliteLoginLimits)
    with TestClient(first.app) as client:
        opened = client.get(ME, headers=basic("alice"))
        assert opened.status_code == 200
        cookie = {"Cookie": f"JSESSIONID={opened.cookies['JSESSIONID']}"}
        token = opened.headers["X-CSRF-TOKEN"]
        client.cookies.clear()
        guesses = [client.get(ME, headers=basic("bob", "guess")).status_code for _ in range(6)]
        assert guesses == [401] * 5 + [429]
    again = build(settings, demo_passwords=PASSWORDS)  # the same file: a restarted server
    with TestClient(again.app) as client:
        me = client.get(ME, headers=cookie)
        assert me.status_code == 200 and me.headers["X-CSRF-TOKEN"] == token
        ready = client.post(
            ME + "/channels/email",
            json={"operationName": "Ready"},
            headers=cookie | {"X-CSRF-TOKEN": token},
        )
        assert ready.status_code == 200
        assert client.get(ME, headers=basic("bob")).status_code == 429  # still backing off
        assert (
            client.post(ME + "/logout", headers=cookie | {"X-CSRF-TOKEN": token}).status_code == 200
        )
        assert client.get(ME, headers=cookie).status_code == 401


async def call(stack: AuthMiddleware, headers: dict[str, str]) -> int:
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": ME,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("192.0.2.9", 40000),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await stack(scope, receive, send)
    status: int = sent[0]["status"]
    return status


async def test_a_locked_file_is_a_503_and_lookups_go_on(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3", busy_timeout=0.05)
    auth = HttpAuth(
        lambda agent, password: password == PASSWORDS.get(agent),
        sessions=SqliteSessions(store),
        login_limits=SqliteLoginLimits(store),
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    stack = AuthMiddleware(app, auth)
    opened = await auth.authenticate({"authorization": basic("alice")["Authorization"]}, {}, None)
    cookie = {"Cookie": f"JSESSIONID={opened.session_id}"}
    other = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        assert await call(stack, basic("bob")) == 503  # the limiter must write
        assert await call(stack, cookie) == 200  # a lookup only reads
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await call(stack, basic("bob")) == 200
    store.close()


def test_a_version_3_file_gains_the_tables_and_keeps_its_data(tmp_path: Path) -> None:
    from adapters.http.sessions import SessionLimits, session_key
    from adapters.sqlite import LATEST_VERSION, migrate
    from adapters.sqlite.migrations import current_version

    path = tmp_path / "db.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=3) == [1, 2, 3]
    conn.execute("INSERT INTO notification_purges (agent_id, through_seq) VALUES ('alice', 7)")
    conn.close()
    with SqliteStore(path) as store:
        conn = store.connection()
        assert current_version(conn) == LATEST_VERSION >= 4
        assert conn.execute("SELECT through_seq FROM notification_purges").fetchall() == [(7,)]
        sessions = SqliteSessions(store)
        limits = SessionLimits(ttl=60.0, max_sessions=10, max_per_agent=2)
        sessions.open(session_key("s"), "alice", "c", 1000.0, limits)
        found = sessions.get(session_key("s"), 1001.0, limits)
        assert found is not None and found.agent_id == "alice"
