"""Helpers of the PostgreSQL tests: schemas inside one database, and what the failure tests
need to find and kill a store's backends, or wait for a condition (a guard, never a timing
assumption)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

Admin = psycopg.Connection[Any]


def new_schema(dsn: str) -> str:
    """A new, empty schema in the database at ``dsn``; the DSN of a store living in it (its
    ``search_path``, given in the DSN's ``options``)."""
    name = "s_" + uuid.uuid4().hex[:12]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    return make_conninfo(dsn, options=f"-c search_path={name}")


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def backends(conn: Admin, application_name: str) -> list[int]:
    """The pids of the server processes serving connections with that application name."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()",
        (application_name,),
    ).fetchall()
    return [int(pid) for (pid,) in rows]


def terminate(conn: Admin, application_name: str) -> int:
    """``pg_terminate_backend`` every connection with that application name; waits until those
    are gone (a pool may already be opening new ones), returns how many there were."""
    pids = backends(conn, application_name)
    for pid in pids:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_for(lambda: not set(pids) & set(backends(conn, application_name)))
    return len(pids)


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll ``condition()`` until true (a guard, not a timing assumption: fails after timeout)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the guard time")
        time.sleep(0.01)
