"""``interactions serve`` and ``interactions migrate`` with either database, as real processes:
an unreachable database is one line naming the setting and where (no traceback, no
password) and a non-zero exit; ``migrate`` prints the schema version before and after; a
password in the URL appears nowhere in what the server prints, its debug log included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from adapters.server.agents import add_agent
from pgcluster import PostgresCluster
from ports import free_port

SECRET = "s3cret-Pa55"


def interactions(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INTERACTIONS_")}
    return subprocess.run(
        [sys.executable, "-m", "adapters.server.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def with_password(dsn: str) -> str:
    """The cluster trusts every local connection: any password is accepted (and must never
    be shown)."""
    return dsn.replace("://postgres@", f"://postgres:{SECRET}@", 1)


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_an_unreachable_database_is_one_line_and_exit_1(tmp_path: Path, command: str) -> None:
    port = free_port()  # nothing listens there
    env = {
        "INTERACTIONS_DATA_DIR": str(tmp_path),
        "INTERACTIONS_DATABASE": f"postgresql://app:{SECRET}@127.0.0.1:{port}/interactions",
        "INTERACTIONS_DATABASE_CONNECT_TIMEOUT_SECONDS": "2",
    }
    started = time.monotonic()
    result = interactions(command, env=env)
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert result.stderr == (
        "interactions: database (env INTERACTIONS_DATABASE): cannot reach PostgreSQL at"
        f" 127.0.0.1:{port}/interactions: connection refused\n"
    )
    assert time.monotonic() - started < 30


def test_a_database_that_refuses_us_is_one_line_too(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    url = with_password(postgres_cluster.dsn("no_such_database"))
    result = interactions(
        "serve", env={"INTERACTIONS_DATA_DIR": str(tmp_path), "INTERACTIONS_DATABASE": url}
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "interactions: database (env INTERACTIONS_DATABASE): cannot reach PostgreSQL at"
        f" 127.0.0.1:{postgres_cluster.port}/no_such_database: "
    )
    assert 'database "no_such_database" does not exist' in line
    assert SECRET not in result.stderr + result.stdout


def test_an_invalid_database_setting_is_exit_2(tmp_path: Path) -> None:
    result = interactions(
        "serve",
        env={
            "INTERACTIONS_DATA_DIR": str(tmp_path),
            "INTERACTIONS_DATABASE": f"postgresql://app:{SECRET}@db:99999/x",
        },
    )
    assert result.returncode == 2
    assert "database (env INTERACTIONS_DATABASE)" in result.stderr
    assert SECRET not in result.stderr


def test_migrate_sqlite_prints_the_versions(tmp_path: Path) -> None:
    env = {"INTERACTIONS_DATA_DIR": str(tmp_path / "data")}
    first = interactions("migrate", env=env)
    assert first.returncode == 0, first.stderr
    from adapters.sqlite.migrations import LATEST_VERSION as latest

    path = tmp_path / "data" / "interactions.sqlite3"
    applied = ", ".join(str(v) for v in range(1, latest + 1))
    assert first.stdout == f"database {path}: schema version 0 -> {latest} (applied {applied})\n"
    again = interactions("migrate", env=env)
    assert again.stdout == f"database {path}: schema version {latest}, up to date\n"
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    bad = interactions("migrate", env={"INTERACTIONS_DATABASE": str(junk)})
    assert bad.returncode == 1
    assert bad.stderr == (
        f"interactions: database (env INTERACTIONS_DATABASE): cannot use SQLite file {junk}:"
        " file is not a database\n"
    )


def test_migrate_postgresql_prints_the_versions(tmp_path: Path, postgres_dsn: str) -> None:
    from adapters.postgres import LATEST_VERSION

    env = {
        "INTERACTIONS_DATA_DIR": str(tmp_path),
        "INTERACTIONS_DATABASE": with_password(postgres_dsn),
    }
    shown = postgres_dsn.replace("://postgres@", "://postgres:***@", 1)
    applied = ", ".join(str(v) for v in range(1, LATEST_VERSION + 1))
    first = interactions("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == (
        f"database {shown}: schema version 0 -> {LATEST_VERSION} (applied {applied})\n"
    )
    again = interactions("migrate", env=env)
    assert again.stdout == f"database {shown}: schema version {LATEST_VERSION}, up to date\n"
    assert not (tmp_path / "interactions.sqlite3").exists()


def test_serve_on_postgresql_never_shows_the_password(tmp_path: Path, postgres_dsn: str) -> None:
    """The banner, the startup and a request's debug log (psycopg's pool included), the
    shutdown: the password appears nowhere; the connections carry the configured name."""
    agents = tmp_path / "agents.json"
    add_agent(agents, "alice", "alice-pw", mailboxes=["support@example.com"])
    http_port = free_port()
    log = tmp_path / "server.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INTERACTIONS_")}
    env = {
        **clean,
        "PYTHONUNBUFFERED": "1",
        "INTERACTIONS_DATA_DIR": str(tmp_path / "data"),
        "INTERACTIONS_DATABASE": with_password(postgres_dsn),
        "INTERACTIONS_AGENTS_FILE": str(agents),
        "INTERACTIONS_DATABASE_APPLICATION_NAME": "cli-test",
        "INTERACTIONS_DATABASE_POOL_SIZE": "3",
    }
    command = [sys.executable, "-m", "adapters.server.cli", "serve", "--log-level", "debug"]
    command += ["--access-log", "--port", str(http_port), "--smtp-port", str(free_port())]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                r = httpx.get(f"http://127.0.0.1:{http_port}/api/v2/me", auth=("alice", "alice-pw"))
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert httpx.get(
            f"http://127.0.0.1:{http_port}/api/v2/me/interactions", auth=("alice", "alice-pw")
        ).json() == {"status": "ok", "interactions": []}
        with psycopg.connect(postgres_dsn) as conn:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT application_name FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ]
        # The store's pool, the leader lock's and the wake-ups' connections, each named.
        assert "cli-test" in names, names
        assert set(names) <= {"cli-test", "cli-test-leader", "cli-test-listen"}, names
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    text = log.read_text()
    shown = postgres_dsn.replace("://postgres@", "://postgres:***@", 1)
    assert f"  database       {shown}  (PostgreSQL, pool 3)" in text
    assert SECRET not in text
    assert "Traceback" not in text
