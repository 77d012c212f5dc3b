"""What only the PostgreSQL adapter has: connection settings, the indexes the reads use, the
row encoding, the bulk import (``load``)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from psycopg import sql

from adapters.postgres import PostgresStore
from adapters.postgres.rows import row_values
from adapters.postgres.store import (
    _BY_MESSAGE_ID_IN,
    _FOR_AGENT,
    _GET,
    _IN_WORKBIN,
    in_queue_sql,
)
from interactions_core.errors import ConcurrencyConflict
from interactions_core.model import Interaction, Offer
from interactions_core.ports import MailEntry
from interactions_core.testing import ManualClock
from interactions_core.testing.contracts.store import T0, interaction, mail, note

from .helpers import Admin, backends, new_schema, unique_name

# --------------------------------------------------------------------------- configuration


def test_every_connection_has_the_application_name_timeout_and_utc(
    postgres_dsn: str, admin: Admin
) -> None:
    name = unique_name()
    with PostgresStore(
        postgres_dsn, application_name=name, statement_timeout_ms=1500, pool_size=3
    ) as store:
        start = threading.Barrier(3)
        seen: list[tuple[str, str, str]] = []

        def look() -> None:
            with store.connection() as conn:
                start.wait()  # three connections at once
                row = conn.execute(
                    "SELECT current_setting('application_name'),"
                    " current_setting('statement_timeout'), current_setting('TimeZone')"
                ).fetchone()
                assert row is not None
                seen.append((str(row[0]), str(row[1]), str(row[2])))

        threads = [threading.Thread(target=look) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == [(name, "1500ms", "UTC")] * 3
        assert len(backends(admin, name)) == 3  # at most pool_size, each configured


def test_options_of_the_dsn_are_kept_a_store_lives_in_its_search_path(postgres_dsn: str) -> None:
    first, second = new_schema(postgres_dsn), new_schema(postgres_dsn)
    with PostgresStore(first) as a, PostgresStore(second) as b:
        with a.unit_of_work() as uow:
            uow.interactions.add(interaction("I1"))
            uow.commit()
        with b.unit_of_work() as uow:
            assert uow.interactions.get("I1") is None  # another schema: another store
        with a.connection() as conn:
            row = conn.execute("SHOW statement_timeout").fetchone()
            assert row is not None and row[0] == "30s"  # ours, added to the DSN's options


def test_the_defaults(postgres_dsn: str, admin: Admin) -> None:
    with PostgresStore(postgres_dsn) as store, store.connection() as conn:
        row = conn.execute(
            "SELECT current_setting('application_name'), current_setting('statement_timeout')"
        ).fetchone()
        assert row == ("interactions", "30s")
        assert store.where == postgres_dsn.split("@", 1)[1]  # host:port/db, no user


def test_commits_are_read_committed_whatever_the_database_default(
    postgres_dsn: str, admin: Admin
) -> None:
    """With ``default_transaction_isolation = serializable`` a losing racer would get a
    serialisation failure (Unavailable) instead of its ``ConcurrencyConflict``: the store says
    its isolation level itself."""
    database = postgres_dsn.rsplit("/", 1)[1]
    admin.execute(
        sql.SQL("ALTER DATABASE {} SET default_transaction_isolation = 'serializable'").format(
            sql.Identifier(database)
        )
    )
    workers = 4
    with PostgresStore(postgres_dsn, pool_size=workers) as store:
        with store.connection() as conn:
            row = conn.execute("SHOW default_transaction_isolation").fetchone()
            assert row == ("serializable",)
        with store.unit_of_work() as uow:
            uow.interactions.add(interaction("I1"))
            uow.commit()
        loaded = threading.Barrier(workers)
        outcomes: list[str] = []

        def race(n: int) -> None:
            with store.unit_of_work() as uow:
                current = uow.interactions.get("I1")
                assert current is not None
                loaded.wait()
                uow.interactions.update(current.model_copy(update={"owner": f"agent{n}"}))
                try:
                    uow.commit()
                    outcomes.append("won")
                except ConcurrencyConflict:
                    outcomes.append("conflict")
                except Exception as exc:
                    outcomes.append(repr(exc))

        threads = [threading.Thread(target=race, args=(n,)) for n in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["conflict"] * (workers - 1) + ["won"]


# --------------------------------------------------------------------------- indexes


INTERACTION_READS = [
    (_GET, ("I1",), "interactions_id_key"),
    (_FOR_AGENT, ("alice", "alice"), "ix_interactions_owner"),
    (_FOR_AGENT, ("alice", "alice"), "ix_interactions_offer_agent"),
    (in_queue_sql(), ("Inbound", 10), "ix_interactions_waiting"),
    (_IN_WORKBIN, ("wb",), "ix_interactions_workbin"),
    (
        _BY_MESSAGE_ID_IN + " ORDER BY pos LIMIT 1",
        ("<I1@example.org>", "support@example.com"),
        "ix_interactions_message_id",
    ),
]
OUTBOX_READS = [
    (
        "SELECT seq FROM outbox WHERE kind = 'notification' AND published_at IS NULL"
        " AND seq > %s ORDER BY seq LIMIT %s",
        (0, 500),
        "ix_outbox_pending_notifications",
    ),
    (
        "SELECT seq FROM outbox WHERE kind = 'notification' AND agent_id = %s AND seq > %s"
        " ORDER BY seq LIMIT %s",
        ("alice", 0, 500),
        "ix_outbox_agent_notifications",
    ),
    (
        "SELECT seq FROM outbox WHERE kind = 'notification' AND published_at IS NOT NULL"
        " AND published_at < %s ORDER BY published_at, seq LIMIT %s",
        (T0, 1000),
        "ix_outbox_published_notifications",
    ),
    (
        "SELECT seq FROM outbox WHERE kind = 'mail' AND status = 'pending'"
        " AND next_attempt_at <= %s",
        (T0,),
        "ix_outbox_mail_due",
    ),
    (
        "SELECT seq FROM outbox WHERE kind = 'mail' AND claimed_by = %s",
        ("me",),
        "ix_outbox_mail_claims",
    ),
]


def test_every_read_can_use_its_index(postgres_dsn: str) -> None:
    """With sequential scans disabled, so the tiny table cannot make a scan cheaper: what is
    checked is that the index *can* serve the query (a partial index whose predicate the query
    does not repeat could not)."""
    with PostgresStore(postgres_dsn) as store:
        with store.unit_of_work() as uow:
            for n in range(20):
                uow.interactions.add(interaction(f"I{n}", n, owner="alice" if n % 3 else None))
            uow.commit()
        with store.connection() as conn, conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")
            for query, params, index in [*INTERACTION_READS, *OUTBOX_READS]:
                text = sql.SQL(query) if isinstance(query, str) else query
                rows = conn.execute(sql.SQL("EXPLAIN ") + text, params)
                plan = "\n".join(row[0] for row in rows)
                assert index in plan, plan
                assert "Seq Scan" not in plan, plan


# --------------------------------------------------------------------------- rows


def test_columns_agree_with_documents_after_every_kind_of_write(
    postgres_dsn: str, admin: Admin
) -> None:
    with PostgresStore(postgres_dsn) as store:
        with store.unit_of_work() as uow:
            uow.interactions.add(interaction("I1"))
            uow.commit()
        offer = Offer(agent_id="alice", offered_at=T0)
        for update in (
            {"state": "Invited", "offer": offer},
            {"state": "Accepted", "owner": "alice", "offer": None},
            {"state": "InWorkbin", "owner": None, "workbin": "wb", "current_queue": None},
        ):
            with store.unit_of_work() as uow:
                current = uow.interactions.get("I1")
                assert current is not None
                uow.interactions.update(current.model_copy(update=update))
                uow.commit()
            ((*columns, data),) = admin.execute(
                "SELECT id, version, state, owner, offer_agent, current_queue, workbin, mailbox,"
                " message_id, received_at, data FROM interactions"
            ).fetchall()
            doc = Interaction.model_validate_json(data)
            assert tuple(columns) == row_values(doc)[:-1]


def test_nul_characters_are_stored_and_found(postgres_dsn: str) -> None:
    """``text`` cannot hold NUL: indexed values map it to U+FFFD, lookups the same way; the
    document keeps the real value (JSON escapes it)."""
    odd = interaction("I\x001", owner="al\x00ice", state="Accepted")
    odd = odd.model_copy(
        update={"email": odd.email.model_copy(update={"message_id": "<a\x00b@x>", "text": "\x00"})}
    )
    with PostgresStore(postgres_dsn) as store:
        with store.unit_of_work() as uow:
            uow.interactions.add(odd)
            uow.outbox.add_notification(note("al\x00ice", "\x00"))
            uow.commit()
        with store.unit_of_work() as uow:
            found = uow.interactions.get("I\x001")
            assert found is not None and found.email.text == "\x00"
            assert [i.id for i in uow.interactions.for_agent("al\x00ice")] == ["I\x001"]
            by_id = uow.interactions.by_message_id("<a\x00b@x>")
            assert by_id is not None and by_id.id == "I\x001"
            assert uow.interactions.in_workbin("w\x00b") == []
        backlog = store.notifications_since("al\x00ice", 0)
        assert [n.to_wire()["text"] for n in backlog.notifications] == ["\x00"]


# --------------------------------------------------------------------------- load


def stored(iid: str, minute: int = 0, version: int = 1, **fields: object) -> Interaction:
    """An interaction as a store holds it (version 1 or more)."""
    return interaction(iid, minute, **fields).model_copy(update={"version": version})


def entry(seq: int, iid: str, attempts: int = 0) -> MailEntry:
    return MailEntry(
        seq=seq,
        mail=mail(iid, seq),
        queued_at=T0,
        attempts=attempts,
        next_attempt_at=T0 + timedelta(minutes=attempts),
        last_error="421 busy" if attempts else None,
    )


def test_load_keeps_rows_as_given_and_the_sequence_continues(postgres_dsn: str) -> None:
    clock = ManualClock()
    rows = [
        stored("I1", 1, version=7),
        stored("I2", 2, version=3, state="Accepted", owner="alice"),
        stored("I3", 0),
    ]
    notes = [note("alice", "kept").model_copy(update={"seq": 40}), note("bob", "new")]
    with PostgresStore(postgres_dsn, clock=clock) as store:
        assert (
            store.load(
                iter(rows), mail=[entry(41, "I2", attempts=2), entry(12, "I1")], notifications=notes
            )
            == 3
        )
        with store.unit_of_work() as uow:
            assert [uow.interactions.get(i.id) for i in rows] == rows  # versions kept
            assert [i.id for i in uow.interactions.in_queue("Inbound")] == ["I3", "I1"]
            assert [i.id for i in uow.interactions.for_agent("alice")] == ["I2"]
        pending = store.pending_notifications()
        assert [(n.seq, n.to_wire()["text"]) for n in pending] == [(40, "kept"), (42, "new")]
        due = store.pending_mail(T0 + timedelta(hours=1))
        assert [(e.seq, e.attempts, e.last_error) for e in due] == [
            (12, 0, None),
            (41, 2, "421 busy"),
        ]
        assert due[1] == entry(41, "I2", attempts=2)
        with store.unit_of_work() as uow:
            uow.interactions.add(interaction("I4"))
            uow.outbox.add_notification(note("alice", "after"))
            uow.commit()
        assert store.pending_notifications()[-1].seq == 43  # above every seq loaded
        with store.unit_of_work() as uow:  # loaded first: stored before I4
            first = uow.interactions.by_message_id("<I1@example.org>")
            assert first is not None and first.version == 7


def test_load_refuses_a_database_that_is_not_empty_and_keeps_nothing_on_error(
    postgres_dsn: str,
) -> None:
    with PostgresStore(postgres_dsn) as store:
        with pytest.raises(ValueError, match="two interactions have the same id"):
            store.load([stored("I1"), stored("I2"), stored("I1")])
        with pytest.raises(ValueError, match="version below 1"):
            store.load([stored("I1", version=0)])
        with pytest.raises(ValueError, match="seq 5 is given twice"):
            store.load(
                [], mail=[entry(5, "I1")], notifications=[note("a").model_copy(update={"seq": 5})]
            )
        assert store.load([]) == 0  # nothing was kept by the failures
        with store.unit_of_work() as uow:
            assert uow.interactions.get("I2") is None
        store.load([stored("I1")])
        with pytest.raises(ValueError, match="already holds interactions"):
            store.load([stored("I9")])
    with PostgresStore(new_schema(postgres_dsn)) as other:
        with other.unit_of_work() as uow:
            uow.outbox.add_notification(note("alice"))
            uow.commit()
        with pytest.raises(ValueError, match="already holds outbox entries"):
            other.load([])
