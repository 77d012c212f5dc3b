"""Failures while serving: lost connections, statement timeouts, an exhausted pool, a database
that cannot be reached. Each is ``Unavailable`` (503) or ``DatabaseUnreachable`` (at start),
nothing committed is lost or half-written, and the next call works.

Lost connections are made the way an operator (or a failover) makes them: ``pg_terminate_backend``
of the store's server processes, found by their ``application_name``, from another connection.
No assertion depends on timing: the tests wait for a state (a backend waiting on a lock), with
a guard timeout only.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from adapters.postgres import (
    DatabaseUnreachable,
    PostgresAttachmentStore,
    PostgresStore,
    migrate,
    schema_version,
)
from adapters.postgres.connection import Connection
from adapters.postgres.outbox import OUTBOX_LOCK_KEY
from interactions_core.errors import Unavailable
from interactions_core.model import Interaction
from interactions_core.testing.contracts.store import interaction, note

from .helpers import Admin, backends, terminate, unique_name, wait_for


def add(store: PostgresStore, *items: Interaction) -> None:
    with store.unit_of_work() as uow:
        for i in items:
            uow.interactions.add(i)
        uow.commit()


def get(store: PostgresStore, iid: str) -> Interaction | None:
    with store.unit_of_work() as uow:
        return uow.interactions.get(iid)


def change(store: PostgresStore, iid: str, text: str) -> None:
    with store.unit_of_work() as uow:
        current = uow.interactions.get(iid)
        assert current is not None
        uow.interactions.update(current.model_copy(update={"comment": text}))
        uow.outbox.add_notification(note("alice", text))
        uow.commit()


def waiting_on_a_lock(admin: Admin, application_name: str) -> Callable[[], bool]:
    def check() -> bool:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND wait_event_type IN ('Lock', 'Advisory')",
            (application_name,),
        ).fetchone()
        return row is not None and row[0] >= 1

    return check


def in_background(fn: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


# --------------------------------------------------------------------------- lost connections


def test_after_every_connection_was_terminated_reads_and_commits_work(
    postgres_dsn: str, admin: Admin
) -> None:
    """Idle connections killed (a restart, a failover): the pool holds dead ones. A read is
    retried on a fresh connection, a commit whose BEGIN failed too: no error reaches the
    caller, since nothing had been sent."""
    name = unique_name()
    with PostgresStore(postgres_dsn, application_name=name) as store:
        add(store, interaction("I1"))
        assert terminate(admin, name) >= 1
        found = get(store, "I1")
        assert found is not None and found.version == 1
        assert terminate(admin, name) >= 1
        change(store, "I1", "after the restart")
        stored = get(store, "I1")
        assert stored is not None and (stored.version, stored.comment) == (2, "after the restart")
        assert [n.to_wire()["text"] for n in store.pending_notifications()] == ["after the restart"]


def test_a_connection_lost_during_a_commit_is_unavailable_and_writes_nothing(
    postgres_dsn: str, admin: Admin
) -> None:
    name = unique_name()
    with PostgresStore(postgres_dsn, application_name=name) as store:
        add(store, interaction("I1"))
        # Another transaction holds the row: the store's UPDATE waits for it, mid-transaction.
        blocker = psycopg.connect(postgres_dsn)
        blocker.execute("SELECT 1 FROM interactions WHERE id = 'I1' FOR UPDATE")
        thread, errors = in_background(lambda: change(store, "I1", "lost"))
        wait_for(waiting_on_a_lock(admin, name))
        assert terminate(admin, name) >= 1
        thread.join()
        blocker.rollback()
        blocker.close()
        assert len(errors) == 1 and isinstance(errors[0], Unavailable), errors
        assert "unavailable" in str(errors[0])
        # Nothing of it was written; the pool reconnects and the next unit of work commits.
        stored = get(store, "I1")
        assert stored is not None and (stored.version, stored.comment) == (1, "")
        assert store.pending_notifications() == []
        change(store, "I1", "next")
        stored = get(store, "I1")
        assert stored is not None and (stored.version, stored.comment) == (2, "next")
        assert [n.to_wire()["text"] for n in store.pending_notifications()] == ["next"]


class KilledBeforeCommit(PostgresStore):
    """Terminates its own backend (from another connection) right before ``COMMIT``, once."""

    kill_once = True

    def _before_commit(self, conn: Connection) -> None:
        if self.kill_once:
            self.kill_once = False
            with psycopg.connect(self.dsn, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        super().__init__(dsn)


def test_a_commit_whose_connection_is_lost_is_not_retried(postgres_dsn: str) -> None:
    """Lost at ``COMMIT``: the outcome is unknown to the client, so it is never retried (it
    could apply twice); the caller gets ``Unavailable`` saying so. Here the server had not
    received the ``COMMIT``: nothing was stored."""
    with KilledBeforeCommit(postgres_dsn) as store:
        store.kill_once = False
        add(store, interaction("I1"))
        store.kill_once = True
        with pytest.raises(Unavailable, match="whether the change was stored is unknown"):
            change(store, "I1", "in doubt")
        stored = get(store, "I1")
        assert stored is not None and stored.version == 1
        assert store.pending_notifications() == []
        change(store, "I1", "retried by the caller")
        stored = get(store, "I1")
        assert stored is not None and (stored.version, stored.comment) == (
            2,
            "retried by the caller",
        )


def test_a_database_refusing_connections_is_unavailable_until_it_is_back(
    postgres_dsn: str, admin: Admin
) -> None:
    """As a server restart looks from here: every connection dropped, new ones refused for a
    while. Calls fail fast with ``Unavailable`` (after the pool's wait), then work again once
    the database accepts connections: the pool reconnects on its own."""
    name = unique_name()
    database = postgres_dsn.rsplit("/", 1)[1]
    allow = sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(database))
    refuse = sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(database))
    with PostgresStore(postgres_dsn, application_name=name, connect_timeout_s=1) as store:
        add(store, interaction("I1"))
        with psycopg.connect(postgres_dsn.rsplit("/", 1)[0] + "/postgres", autocommit=True) as su:
            su.execute(refuse)
            try:
                terminate(admin, name)
                for _ in range(2):
                    with pytest.raises(Unavailable):
                        get(store, "I1")
                with pytest.raises(Unavailable):
                    change(store, "I1", "refused")
            finally:
                su.execute(allow)

        def back() -> bool:
            try:
                return get(store, "I1") is not None
            except Unavailable:
                return False

        wait_for(back, timeout=60)
        change(store, "I1", "back")
        stored = get(store, "I1")
        assert stored is not None and (stored.version, stored.comment) == (2, "back")


# --------------------------------------------------------------------------- timeouts


def test_statement_timeout_is_set_and_a_blocked_commit_is_unavailable(
    postgres_dsn: str, admin: Admin
) -> None:
    name = unique_name()
    with PostgresStore(postgres_dsn, application_name=name, statement_timeout_ms=200) as store:
        with store.connection() as conn:
            row = conn.execute("SHOW statement_timeout").fetchone()
            assert row is not None and row[0] == "200ms"
        started = time.monotonic()
        with (
            pytest.raises(Unavailable, match=r"statement timeout \(200 ms\)"),
            store.connection() as conn,
        ):
            conn.execute("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 4
        # A commit stuck behind the outbox lock (held by another session) gives up the same way
        # and writes nothing.
        add(store, interaction("I1"))
        admin.execute("SELECT pg_advisory_lock(%s)", (OUTBOX_LOCK_KEY,))
        try:
            with pytest.raises(Unavailable, match="statement timeout"):
                change(store, "I1", "stuck")
        finally:
            admin.execute("SELECT pg_advisory_unlock(%s)", (OUTBOX_LOCK_KEY,))
        stored = get(store, "I1")
        assert stored is not None and stored.version == 1
        change(store, "I1", "free again")
        assert [n.to_wire()["text"] for n in store.pending_notifications()] == ["free again"]


def test_no_free_connection_within_the_timeout_is_unavailable(
    postgres_dsn: str, admin: Admin
) -> None:
    name = unique_name()
    with PostgresStore(
        postgres_dsn, application_name=name, pool_size=1, connect_timeout_s=0.5
    ) as store:
        add(store, interaction("I1"))
        blocker = psycopg.connect(postgres_dsn)
        blocker.execute("SELECT 1 FROM interactions WHERE id = 'I1' FOR UPDATE")
        thread, errors = in_background(lambda: change(store, "I1", "waits"))
        wait_for(waiting_on_a_lock(admin, name))  # the pool's only connection is in use
        with pytest.raises(Unavailable, match=r"free within 0.5 s \(pool of 1\)"):
            get(store, "I1")
        blocker.rollback()
        blocker.close()
        thread.join()
        assert errors == []
        stored = get(store, "I1")
        assert stored is not None and stored.comment == "waits"
        assert len(backends(admin, name)) == 1


# --------------------------------------------------------------------------- unreachable


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there once the socket is closed


def test_an_unreachable_database_is_named_with_its_cause_and_never_the_password() -> None:
    port = _closed_port()
    dsn = f"postgresql://someone:s3cret-pw@127.0.0.1:{port}/interactions"
    expected = f"cannot reach PostgreSQL at 127.0.0.1:{port}/interactions: connection refused"
    for make in (
        lambda: PostgresStore(dsn, connect_timeout_s=2),
        lambda: PostgresStore(dsn, connect_timeout_s=2, migrate=False),
        lambda: PostgresAttachmentStore(dsn, max_size=10, connect_timeout_s=2),
        lambda: migrate(dsn, connect_timeout_s=2),
        lambda: schema_version(dsn, connect_timeout_s=2),
    ):
        with pytest.raises(DatabaseUnreachable) as caught:
            make()
        assert str(caught.value) == expected
        assert "s3cret" not in str(caught.value) and "someone" not in str(caught.value)


def test_an_unknown_database_says_so(postgres_dsn: str) -> None:
    dsn = postgres_dsn.rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(DatabaseUnreachable, match=r'/no_such_db: database "no_such_db" does not'):
        PostgresStore(dsn)


def test_a_malformed_dsn_is_a_value_error_that_does_not_quote_it() -> None:
    with pytest.raises(ValueError, match="invalid PostgreSQL connection string") as caught:
        PostgresStore("host=localhost password='s3cret")
    assert "s3cret" not in str(caught.value)


def test_the_pool_reconnects_promptly_after_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    """psycopg_pool doubles its reconnect wait from 1 s: after a 20 s outage the server stayed
    503 for about 10 s more. Ours starts at 0.1 s and never waits more than a second, and the
    pool really starts its reconnects with it."""
    from psycopg_pool import ConnectionPool

    from adapters.postgres import connection

    attempt = connection._PromptReconnect(timeout=300.0)
    delays = []
    for step in range(12):
        attempt.update_delay(float(step))
        delays.append(attempt.delay)
    assert delays[0] <= 0.11
    assert max(delays) == connection.RECONNECT_DELAY_MAX_S == 1.0

    started: list[object] = []
    monkeypatch.setattr(
        ConnectionPool,
        "_add_connection",
        lambda self, attempt, growing=False: started.append(attempt),
    )
    pool = connection._Pool("postgresql://nobody@127.0.0.1:1/none", open=False)
    pool._add_connection(None)
    (first,) = started
    assert isinstance(first, connection._PromptReconnect)
