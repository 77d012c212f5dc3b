"""Crash safety on PostgreSQL: the SQLite crash test (``tests/store/test_sqlite_crash.py``) with
the writer on a ``PostgresStore``: SIGKILLed at five random moments, each run continuing on the
same database; then every reported operation is there, nothing is half-written, and the outbox
resumes. (No ``PRAGMA integrity_check``: the server, not the killed client, writes the data.)

A killed writer may have claimed mail (``pending_mail``) it never finished: those claims end
with their lease (300 s), so the check drains with a clock past it, as a dispatcher started
after the crash does once the lease is over.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import psycopg

from adapters.postgres import PostgresStore
from interactions_core.ids import SystemClock
from interactions_core.model import Interaction
from store.test_sqlite_crash import CrashState, check_nothing_lost, kill_writer_repeatedly

LEASE = timedelta(seconds=300)  # PostgresStore's default mail_lease_seconds (the writer's)


class AfterTheLease:
    """The system clock, past the lease of every claim made until now."""

    def now(self) -> datetime:
        return SystemClock().now() + LEASE + timedelta(seconds=1)


def test_sigkill_at_random_moments_loses_nothing_committed(
    postgres_dsn: str, tmp_path: Path
) -> None:
    entries = kill_writer_repeatedly(postgres_dsn, tmp_path / "committed.log")
    with psycopg.connect(postgres_dsn) as conn:
        # Columns and documents agree (an update never wrote one without the other).
        rows: dict[str, Interaction] = {}
        for iid, version, state, owner, data in conn.execute(
            "SELECT id, version, state, owner, data FROM interactions"
        ):
            doc = Interaction.model_validate_json(data)
            assert (doc.id, doc.version, doc.state, doc.owner) == (iid, version, state, owner)
            rows[iid] = doc
        notifications = [
            (int(seq), json.loads(payload), bool(published))
            for seq, payload, published in conn.execute(
                "SELECT seq, payload, published_at IS NOT NULL FROM outbox"
                " WHERE kind = 'notification'"
            )
        ]
        mail = [
            (str(iid), str(status))
            for iid, status in conn.execute(
                "SELECT interaction_id, status FROM outbox WHERE kind = 'mail' ORDER BY seq"
            )
        ]
    clock = AfterTheLease()
    with PostgresStore(postgres_dsn, clock=clock) as store:
        check_nothing_lost(store, entries, CrashState(rows, notifications, mail), clock)
