"""``build(settings)`` with a PostgreSQL URL: the store and the attachments are PostgreSQL's,
each connection carries the configured name and statement timeout, an upload lands in the
database (no file written), the server closes its connections at shutdown; an unreachable
database is ``CannotOpenDatabase`` and leaves nothing open."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from adapters.postgres import PostgresAttachmentStore, PostgresStore
from adapters.server.bootstrap import Server, build
from adapters.server.database import CannotOpenDatabase
from adapters.server.settings import load_settings
from adapters.sqlite import FileAttachmentStore, SqliteStore
from interactions_core.ingest import Envelope
from waiting import eventually

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}
NAME = "wiring-test"


def headers(agent: str = "alice") -> dict[str, str]:
    token = base64.b64encode(f"{agent}:{PASSWORDS[agent]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def connections(dsn: str) -> list[tuple[str, str]]:
    """(application_name, state) of every other connection to the test's database."""
    with psycopg.connect(dsn) as conn:
        return [
            (str(name), str(state))
            for name, state in conn.execute(
                "SELECT application_name, state FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ]


@pytest.fixture
def server(tmp_path: Path, postgres_dsn: str) -> Iterator[Server]:
    settings = load_settings(
        data_dir=tmp_path,
        smtp_listen_port=0,
        database=postgres_dsn,
        database_pool_size=3,
        database_statement_timeout_ms=1234,
        database_application_name=NAME,
        database_connect_timeout_seconds=3,
    )
    yield build(settings, demo_passwords=PASSWORDS)


def test_a_url_builds_postgresql_stores_with_the_settings(
    server: Server, postgres_dsn: str
) -> None:
    assert isinstance(server.store, PostgresStore)
    assert isinstance(server.attachments, PostgresAttachmentStore)
    assert server.attachments.max_size == 25 * 1024 * 1024
    store = server.store
    with store.connection() as conn:
        row = conn.execute("SHOW statement_timeout").fetchone()
        assert row == ("1234ms",)
        assert conn.execute("SHOW application_name").fetchone() == (NAME,)
    names = {name for name, _ in connections(postgres_dsn)}
    assert names == {NAME}
    # The store's pool (2 at start, at most 3) plus the attachments' (2 at start, at most 3).
    assert 2 <= len(connections(postgres_dsn)) <= 6
    server.engine.close()
    # A closed connection's backend leaves pg_stat_activity a moment after the client has gone.
    eventually(lambda: connections(postgres_dsn) == [], 10, "every connection closed")


def test_the_api_runs_on_postgresql_and_closes_at_shutdown(
    server: Server, postgres_dsn: str, tmp_path: Path
) -> None:
    with TestClient(server.app) as client:
        assert client.post(
            "/api/v2/me/channels/email", json={"operationName": "Ready"}, headers=headers()
        ).json() == {"status": "ok"}
        raw = (
            b"From: Cee <customer@example.org>\r\nTo: support@example.com\r\n"
            b"Subject: Order 7\r\nMessage-ID: <o7@example.org>\r\n\r\nWhere is it?\r\n"
        )
        server.ingest(raw, Envelope(mail_from="customer@example.org"), "support@example.com")
        found = client.get("/api/v2/me/interactions", headers=headers()).json()
        (iid,) = [i["id"] for i in found["interactions"] if i["state"] == "Invited"]

        def op(target: str, body: dict[str, Any]) -> Any:
            return client.post(
                f"/api/v2/me/interactions/{target}", json=body, headers=headers()
            ).json()

        assert op(iid, {"operationName": "Accept"}) == {"status": "ok"}
        draft = op(iid, {"operationName": "Reply"})["replyInteractionId"]
        uploaded = client.post(
            f"/api/v2/me/interactions/{draft}/attachments",
            files={"attachment": ("notes.txt", b"the notes", "text/plain")},
            headers=headers(),
        ).json()
        assert uploaded["status"] == "ok"
        got = client.get(
            f"/api/v2/me/interactions/{draft}/attachments/{uploaded['documentId']}",
            headers=headers(),
        )
        assert got.content == b"the notes"
        assert op(draft, {"operationName": "Send"}) == {"status": "ok"}
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM interactions").fetchone() == (2,)
        # The upload and the raw inbound message: in the database, not in files.
        (blobs,) = conn.execute("SELECT count(*) FROM attachments").fetchone() or (0,)
        assert blobs >= 2
    assert not (tmp_path / "attachments").exists()
    assert not (tmp_path / "interactions.sqlite3").exists()
    assert connections(postgres_dsn) == []  # the lifespan's shutdown closed both pools


def test_sqlite_stays_the_default(tmp_path: Path) -> None:
    built = build(load_settings(data_dir=tmp_path, smtp_listen_port=0), demo_passwords=PASSWORDS)
    try:
        assert isinstance(built.store, SqliteStore)
        assert isinstance(built.attachments, FileAttachmentStore)
        assert (tmp_path / "interactions.sqlite3").exists()
    finally:
        built.engine.close()


def test_an_unreachable_database_fails_build_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = load_settings(
        data_dir=tmp_path,
        database=f"postgresql://u:hidden@127.0.0.1:{port}/db",
        database_connect_timeout_seconds=2,
    )
    with pytest.raises(CannotOpenDatabase) as caught:
        build(settings)
    message = str(caught.value)
    assert message == (
        "database (env INTERACTIONS_DATABASE): cannot reach PostgreSQL at"
        f" 127.0.0.1:{port}/db: connection refused"
    )
    assert "hidden" not in message and caught.value.__cause__ is None


def test_a_given_store_is_used_with_postgresql_attachments(
    tmp_path: Path, postgres_dsn: str
) -> None:
    own = SqliteStore(tmp_path / "own.sqlite3")
    built = build(
        load_settings(data_dir=tmp_path, smtp_listen_port=0, database=postgres_dsn),
        store=own,
        demo_passwords=PASSWORDS,
    )
    try:
        assert built.store is own
        assert isinstance(built.attachments, PostgresAttachmentStore)
    finally:
        built.engine.close()
    assert connections(postgres_dsn) == []
