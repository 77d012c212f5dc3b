"""Sessions and login limits in PostgreSQL, beyond the shared contract
(``tests/http/test_sessions_contract.py``): the server's wiring, a database that goes away
(503, never 500, and the session survives the outage), opens racing in several processes
(bounded, and no deadlock), and what a lookup asks of the database.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from adapters.http.sessions import SessionLimits, session_key
from adapters.postgres import PostgresStore
from adapters.postgres.sessions import PostgresLoginLimits, PostgresSessions
from adapters.server.bootstrap import Server, build
from adapters.server.settings import load_settings
from interactions_core.errors import Unavailable
from pgcluster import PostgresCluster

from .helpers import Admin

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}
ME = "/api/v2/me"
T0 = 1_750_000_000.0


def basic(agent: str, password: str | None = None) -> dict[str, str]:
    token = base64.b64encode(f"{agent}:{password or PASSWORDS[agent]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def server(tmp_path: Path, postgres_dsn: str) -> Iterator[Server]:
    settings = load_settings(
        data_dir=tmp_path,
        smtp_listen_port=0,
        database=postgres_dsn,
        database_pool_size=4,
        database_connect_timeout_seconds=2,  # a request during the outage waits 2 s at most
    )
    yield build(settings, demo_passwords=PASSWORDS)


def test_the_server_keeps_sessions_and_limits_in_its_database(server: Server, admin: Admin) -> None:
    assert isinstance(server.auth.sessions, PostgresSessions)
    assert isinstance(server.auth.limiter.storage, PostgresLoginLimits)
    with TestClient(server.app) as client:
        opened = client.get(ME, headers=basic("alice"))
        assert opened.status_code == 200
        cookie = opened.cookies["JSESSIONID"]
        client.cookies.clear()
        assert client.get(ME, headers=basic("bob", "guess")).status_code == 401
    [(agent, id_hash)] = admin.execute("SELECT agent_id, id_hash FROM http_sessions").fetchall()
    assert (agent, bytes(id_hash)) == ("alice", session_key(cookie))  # hashed, never the cookie
    [(address, failures)] = admin.execute(
        "SELECT address, cardinality(failures) FROM login_addresses"
    ).fetchall()
    assert (address, failures) == ("testclient", 1)
    assert admin.execute("SELECT failures FROM login_pairs").fetchall() == [(1,)]


def outage(cluster: PostgresCluster, dsn: str, on: bool) -> None:
    """The database refuses connections (and loses the ones it had), or takes them again."""
    name = dsn.rsplit("/", 1)[-1]
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if on else "true"}')
        if on:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


def test_a_database_outage_answers_503_and_the_session_survives_it(
    server: Server,
    postgres_cluster: PostgresCluster,
    postgres_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with TestClient(server.app) as client:
        assert client.get(ME, headers=basic("alice")).status_code == 200
        cookie = {"Cookie": f"JSESSIONID={client.cookies['JSESSIONID']}"}
        client.cookies.clear()
        outage(postgres_cluster, postgres_dsn, True)
        try:
            during = [
                client.get(ME, headers=cookie),  # the session lookup
                client.get(ME, headers=basic("alice")),  # the limiter, then the session
                client.get(ME, headers=basic("bob", "guess")),
                client.post(ME + "/logout", headers=cookie),
            ]
        finally:
            outage(postgres_cluster, postgres_dsn, False)
        assert [r.status_code for r in during] == [503] * 4
        assert all(r.headers["Retry-After"] == "1" for r in during)
        assert all(r.json()["status"] == "error" for r in during)
        # Back: the same cookie works (an outage is not a logout).
        assert client.get(ME, headers=cookie).status_code == 200
        # A logout whose delete fails is a 503 too, and leaves the session open.
        sessions = server.auth.sessions

        def down(key: bytes) -> None:
            raise Unavailable("PostgreSQL is unavailable")

        monkeypatch.setattr(sessions, "end", down)
        assert client.post(ME + "/logout", headers=cookie).status_code == 503
        monkeypatch.undo()
        assert client.get(ME, headers=cookie).status_code == 200
        assert client.post(ME + "/logout", headers=cookie).status_code == 200
        assert client.get(ME, headers=cookie).status_code == 401


def test_opens_racing_in_two_processes_keep_the_bounds_and_never_deadlock(
    postgres_dsn: str,
) -> None:
    """64 opens at once through two stores (two pools, as two processes): per agent exactly
    the bound is left; the overall bound is kept (two opens racing may each leave one over it
    until the next open: at most the opens in flight); no open fails (a deadlock between two
    evictions would be an ``Unavailable``)."""
    limits = SessionLimits(ttl=3600.0, max_sessions=20, max_per_agent=4)
    stores = [PostgresStore(postgres_dsn, pool_size=8) for _ in range(2)]
    try:
        handles = [PostgresSessions.of(store) for store in stores]
        barrier = threading.Barrier(16)

        def opener(n: int) -> None:
            barrier.wait(30)
            for i in range(4):
                agent = "alice" if n % 2 else f"agent{n}-{i}"
                handles[n % 2].open(session_key(f"s-{n}-{i}"), agent, "c", T0 + i, limits)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(opener, range(16)))
        with stores[0].connection() as conn:
            per_agent = dict(
                conn.execute("SELECT agent_id, count(*) FROM http_sessions GROUP BY 1").fetchall()
            )
        assert per_agent["alice"] == 4
        assert 20 <= sum(per_agent.values()) <= 20 + 16
        handles[0].open(session_key("last"), "bob", "c", T0 + 10, limits)
        assert handles[1].count() <= 20 + 16
    finally:
        for store in stores:
            store.close()


def test_a_lookup_is_one_primary_key_read(postgres_dsn: str, admin: Admin) -> None:
    """What a request with a cookie costs the database: an index scan on the primary key (a
    write only when the recorded use is older than the touch interval)."""
    with PostgresStore(postgres_dsn, pool_size=2) as store:
        sessions = PostgresSessions.of(store)
        limits = SessionLimits(ttl=3600.0, max_sessions=100_000, max_per_agent=32)
        for n in range(2000):
            sessions.open(session_key(f"s{n}"), f"agent{n % 100}", "c", T0 + n, limits)
    admin.execute("ANALYZE http_sessions")
    plan = admin.execute(
        "EXPLAIN SELECT agent_id, csrf_token, used_s FROM http_sessions WHERE id_hash = %s",
        (session_key("s5"),),
    ).fetchall()
    assert "Index Scan using http_sessions_pkey" in plan[0][0]
    sweep = admin.execute(
        "EXPLAIN DELETE FROM http_sessions WHERE id_hash IN (SELECT id_hash FROM http_sessions"
        " WHERE used_s <= %s ORDER BY used_s LIMIT 10 FOR UPDATE SKIP LOCKED)",
        (T0,),
    ).fetchall()
    assert "ix_http_sessions_used" in "\n".join(row[0] for row in sweep)


def test_a_database_at_version_2_gains_the_tables_and_keeps_its_data(
    postgres_dsn: str, admin: Admin
) -> None:
    from adapters.postgres import migrate
    from adapters.postgres.migrations import apply_migrations

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        assert apply_migrations(conn, target=2) == [1, 2]
    admin.execute("INSERT INTO notification_purges (agent_id, through_seq) VALUES ('alice', 7)")
    assert migrate(postgres_dsn) == [3, 4]
    assert admin.execute("SELECT through_seq FROM notification_purges").fetchall() == [(7,)]
    with PostgresStore(postgres_dsn, migrate=False) as store:
        sessions = PostgresSessions.of(store)
        limits = SessionLimits(ttl=60.0, max_sessions=10, max_per_agent=2)
        sessions.open(session_key("s"), "alice", "c", T0, limits)
        found = sessions.get(session_key("s"), T0 + 1, limits)
        assert found is not None and found.agent_id == "alice"
