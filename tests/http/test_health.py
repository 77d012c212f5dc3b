"""``GET /health`` on the real composition root (``build(settings)``): unauthenticated, the
node's id, role and tail, the database's state; 200 only while the database answers and the
process is running (leader or follower), 503 otherwise, and never hanging on a database that
does not answer.

The role is the runtime's to write (``adapters.server.node.NodeStatus``, leadership); here the
tests write it themselves where they need a given one, on a server whose lifespan does not run
(so nothing else writes it meanwhile), or right after starting one.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from adapters.server.bootstrap import Server, build
from adapters.server.health import DatabaseCheck, DatabaseUnreachable
from adapters.server.node import NodeStatus, derive_node_id
from adapters.server.settings import ConfigurationError, load_settings

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}


def make_server(tmp_path: Path, **settings: Any) -> Server:
    return build(
        load_settings(data_dir=tmp_path, smtp_listen_port=0, **settings),
        demo_passwords=PASSWORDS,
    )


@pytest.fixture
def built(tmp_path: Path) -> Iterator[Server]:
    """Built, never started: the role stays what the test sets."""
    server = make_server(tmp_path, node_id="node-a")
    try:
        yield server
    finally:
        server.engine.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    """A deadline against hangs, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_a_running_node_is_healthy_without_credentials(tmp_path: Path) -> None:
    server = make_server(tmp_path, node_id="node-a")
    with TestClient(server.app) as client:
        for role in ("leader", "follower"):
            server.node.role = role
            server.node.tail_position, server.node.tail_lag = 42, 3
            r = client.get("/health")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["status"] == "ok" and body["node"] == "node-a" and body["role"] == role
            assert body["database"] == "ok"
            assert body["tail"]["position"] == 42 and body["tail"]["lag"] == 3
            assert body["tail"]["ageSeconds"] >= 0
            assert "errorDescription" not in body
            assert r.headers["cache-control"] == "no-store"
        # Credentials are neither needed nor looked at, and no session is opened.
        wrong = client.get("/health", auth=("alice", "wrong"))
        assert wrong.status_code == 200 and "set-cookie" not in wrong.headers
        # Not part of the documented agent API (answers 503 by design), whose global Basic
        # security is unchanged.
        schema = client.get("/openapi.json").json()
        assert "/health" not in schema["paths"]
        assert schema["security"] == [{"basic": []}]


@pytest.mark.parametrize("role", ["starting", "stopping"])
def test_a_node_starting_or_stopping_is_503(built: Server, role: str) -> None:
    client = TestClient(built.app)  # no lifespan: nothing but the test writes the role
    assert built.node.role == "starting"  # what a process is until the runtime says more
    built.node.role = role  # type: ignore[assignment]
    r = client.get("/health")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "error" and body["role"] == role and body["database"] == "ok"
    assert body["errorDescription"] == f"the process is {role}"
    built.node.role = "follower"
    assert client.get("/health").status_code == 200


def test_an_unreachable_sqlite_file_is_503_and_recovers(built: Server, tmp_path: Path) -> None:
    client = TestClient(built.app)
    built.node.role = "leader"
    assert client.get("/health").status_code == 200
    path = built.settings.database_path
    moved = tmp_path / "elsewhere.sqlite3"
    path.rename(moved)  # the store's open connections go on; a new one cannot open the file
    try:
        r = client.get("/health")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "error" and body["role"] == "leader"
        assert body["database"].startswith("unreachable: cannot open SQLite file")
        assert "the database is unreachable" in body["errorDescription"]
    finally:
        moved.rename(path)
    assert client.get("/health").json()["database"] == "ok"


def _database_name(dsn: str) -> str:
    return dsn.rsplit("/", 1)[-1]


def test_an_unreachable_postgres_database_is_503_and_recovers(
    tmp_path: Path, postgres_dsn: str
) -> None:
    server = make_server(tmp_path, database=postgres_dsn, node_id="pg-node")
    admin = postgres_dsn.rsplit("/", 1)[0] + "/postgres"
    name = _database_name(postgres_dsn)
    try:
        client = TestClient(server.app)
        server.node.role = "follower"
        healthy = client.get("/health")
        assert healthy.status_code == 200 and healthy.json()["database"] == "ok"
        # The database refuses connections, and the store's are ended: as if it went down.
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        try:
            r = client.get("/health")
            assert r.status_code == 503
            body = r.json()
            assert body["status"] == "error" and body["node"] == "pg-node"
            assert body["database"].startswith("unreachable: "), body
            assert "***" not in body["database"] and "password" not in body["database"]
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        # The pool reconnects by itself; the next checks find the database again.
        wait_for(lambda: client.get("/health").status_code == 200)
    finally:
        server.engine.close()


class _Hanging:
    """A probe that blocks until released, counting how many times it was started."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0

    def __call__(self) -> None:
        self.started += 1
        self.release.wait(30)


async def test_a_check_that_does_not_answer_gives_up_and_runs_once_at_a_time() -> None:
    probe = _Hanging()
    check = DatabaseCheck(probe, timeout=0.2)
    try:
        results = await asyncio.gather(check(), check(), check(), return_exceptions=True)
        assert all(isinstance(r, DatabaseUnreachable) for r in results), results
        assert str(results[0]) == "no answer within 0.2 s"
        with pytest.raises(DatabaseUnreachable):
            await check()  # still the same one in flight: no second thread
        assert probe.started == 1
        assert check.in_flight
    finally:
        probe.release.set()
    deadline = time.monotonic() + 30
    while check.in_flight:  # the stuck one ends once released
        assert time.monotonic() < deadline, "the released probe did not end"
        await asyncio.sleep(0.01)
    await check()  # a fresh check runs, and answers at once
    assert probe.started == 2


async def test_a_probe_failure_is_its_reason() -> None:
    def refuse() -> None:
        raise OSError("connection refused\nsecond line")

    with pytest.raises(DatabaseUnreachable, match=r"^connection refused$"):
        await DatabaseCheck(refuse)()


def test_the_node_id_setting_defaults_to_host_and_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INTERACTIONS_NODE_ID", raising=False)
    assert load_settings(data_dir=tmp_path).node_id == derive_node_id(8080)
    assert load_settings(data_dir=tmp_path, http_port=8081).node_id == derive_node_id(8081)
    assert derive_node_id(8081) == f"{socket.gethostname().split('.')[0]}-8081"
    config = tmp_path / "config.json"
    config.write_text('{"node_id": "from-file", "http_port": 9000}')
    assert load_settings(config).node_id == "from-file"
    monkeypatch.setenv("INTERACTIONS_NODE_ID", "from-env")
    assert load_settings(config).node_id == "from-env"
    assert load_settings(config, node_id="from-option").node_id == "from-option"
    monkeypatch.setenv("INTERACTIONS_NODE_ID", "no spaces")
    with pytest.raises(ConfigurationError, match="node_id \\(env INTERACTIONS_NODE_ID\\)"):
        load_settings(config)


def test_a_server_built_without_a_node_id_reports_the_derived_one(tmp_path: Path) -> None:
    if "INTERACTIONS_NODE_ID" in os.environ:
        pytest.skip("INTERACTIONS_NODE_ID is set in this environment")
    server = make_server(tmp_path, http_port=8099)
    try:
        assert isinstance(server.node, NodeStatus)
        assert TestClient(server.app).get("/health").json()["node"] == derive_node_id(8099)
    finally:
        server.engine.close()
