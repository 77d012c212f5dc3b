"""``interactions migrate --from sqlite:PATH``: a SQLite installation made by the real service
(interactions in many states, replies, uploads and inbound attachments, pending and
rescheduled mail, published and unpublished notifications) moved into PostgreSQL, then
compared field by field; the attachments byte for byte. And the refusals."""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from adapters.postgres import PostgresAttachmentStore, PostgresStore
from adapters.server.cli import main
from adapters.server.settings import load_settings
from adapters.server.transfer import TransferError, move_sqlite_to_postgres
from adapters.sqlite import FileAttachmentStore, SqliteStore
from interactions_core.engine import Engine
from interactions_core.ingest import Envelope
from interactions_core.model import Interaction
from interactions_core.ports import Agent, MailEntry, Notification
from interactions_core.service import ServiceConfig

MAILBOX = "support@example.com"
FAR = datetime(2999, 1, 1, tzinfo=UTC)


def mail(n: int, *, attachment: bytes | None = None) -> bytes:
    message = EmailMessage()
    message["From"] = f"Customer {n} <customer{n}@example.org>"
    message["To"] = MAILBOX
    message["Cc"] = "colleague@example.org"
    message["Subject"] = f"Order {n}"
    message["Message-ID"] = f"<order-{n}@example.org>"
    message["Date"] = "Mon, 05 Jan 2026 09:00:00 +0000"
    message.set_content(f"Where is order {n}?\n")
    message.add_alternative(f"<p>Where is order <b>{n}</b>?</p>", subtype="html")
    if attachment is not None:
        message.add_attachment(
            attachment, maintype="application", subtype="pdf", filename=f"invoice-{n}.pdf"
        )
    return message.as_bytes()


@dataclass
class Installation:
    database: Path
    attachments: Path
    ids: list[str]


def populate(data: Path) -> Installation:
    """A SQLite installation as a server leaves it, built by the real Engine."""
    database, blobs = data / "interactions.sqlite3", data / "attachments"
    data.mkdir(parents=True)
    store = SqliteStore(database)
    engine = Engine(
        store=store,
        agents=[
            Agent(id="alice", mailboxes=(MAILBOX,), addresses=("alice@agents.example",)),
            Agent(id="bob", mailboxes=(MAILBOX,), capacity=2),
        ],
        attachments=FileAttachmentStore(blobs),
        config=ServiceConfig(message_id_domain="t.example", mailbox_queues={MAILBOX: "Support"}),
    )
    engine.start()

    def op(agent: str, iid: str, body: dict[str, object]) -> dict[str, object]:
        result = dict(engine.execute(agent, iid, body))
        assert result["status"] == "ok", result
        return result

    envelope = Envelope(mail_from="customer@example.org", rcpt_tos=(MAILBOX,))
    for n in range(1, 9):
        pdf = b"%PDF-1.4 invoice " + bytes([n]) * (3000 * n) if n % 2 else None
        engine.ingest(mail(n, attachment=pdf), envelope=envelope, mailbox=MAILBOX)
    engine.ingest(mail(1), envelope=envelope, mailbox=MAILBOX)  # a duplicate: deduped
    engine.set_channel_state("alice", {"operationName": "Ready"})  # offered up to capacity
    offered = [str(i["id"]) for i in engine.interactions("alice")]
    assert len(offered) == 5
    first, second, third, fourth, fifth = offered

    op("alice", first, {"operationName": "Accept"})
    draft = str(
        op("alice", first, {"operationName": "ReplyAll", "quoteOriginal": True})[
            "replyInteractionId"
        ]
    )
    engine.add_attachment("alice", draft, "notes.txt", "text/plain", b"see the attached notes\n")
    op("alice", draft, {"operationName": "Send", "email_object": {"text": "It ships today."}})
    op("alice", first, {"operationName": "StopProcessing"})

    op("alice", second, {"operationName": "Accept"})
    kept = str(op("alice", second, {"operationName": "Reply"})["replyInteractionId"])
    op("alice", kept, {"operationName": "UpdateProperties", "userData": {"Priority": 3}})
    engine.add_attachment("alice", kept, "same.txt", "text/plain", b"see the attached notes\n")

    op("alice", third, {"operationName": "Accept"})
    op("alice", third, {"operationName": "PlaceInWorkbin", "workbinName": "Personal"})
    op("alice", fourth, {"operationName": "Reject"})
    op("alice", fifth, {"operationName": "Accept"})
    op("alice", fifth, {"operationName": "Transfer", "agentId": "bob"})

    created = dict(engine.create_email("alice", {"queueName": "Drafts"}))
    outbound = str(created["replyInteractionId"])
    op(
        "alice",
        outbound,
        {
            "operationName": "Send",
            "email_object": {
                "toAddress": "partner@example.net",
                "subject": "Hello",
                "text": "A new mail.",
            },
        },
    )
    # One mail tried once already: its bookkeeping moves with it.
    entries = store.pending_mail(FAR)
    assert len(entries) == 2
    store.reschedule_mail(entries[0].seq, datetime.now(UTC) + timedelta(minutes=5), "421 later")
    # Some notifications published (they stay behind), the rest pending (they move).
    pending = store.pending_notifications()
    store.mark_notifications_done([n.seq for n in pending[:5]])

    ids = [row[0] for row in store.connection().execute("SELECT id FROM interactions ORDER BY pos")]
    store.close()
    return Installation(database, blobs, ids)


@pytest.fixture
def installation(tmp_path: Path) -> Installation:
    return populate(tmp_path / "old")


@pytest.fixture
def configured(postgres_dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The environment of an operator moving to PostgreSQL."""
    monkeypatch.setenv("INTERACTIONS_DATABASE", postgres_dsn)
    monkeypatch.setenv("INTERACTIONS_DATA_DIR", str(tmp_path / "new"))
    monkeypatch.delenv("INTERACTIONS_CONFIG", raising=False)
    return postgres_dsn


def sqlite_view(database: Path) -> tuple[list[Interaction], list[MailEntry], list[Notification]]:
    store = SqliteStore(database)
    try:
        with store.unit_of_work() as uow:
            ids = [
                r[0] for r in store.connection().execute("SELECT id FROM interactions ORDER BY pos")
            ]
            interactions = [uow.interactions.get(i) for i in ids]
        return (
            [i for i in interactions if i],
            store.pending_mail(FAR),
            store.pending_notifications(),
        )
    finally:
        store.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_populated_installation_moves_field_by_field(
    installation: Installation, configured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    interactions, mail_entries, notifications = sqlite_view(installation.database)
    before = digest(installation.database)
    assert len(interactions) == len(installation.ids) >= 12
    assert len(mail_entries) == 2 and len(notifications) > 5
    assert {i.state for i in interactions} >= {
        "Invited", "Completed", "Accepted", "Sent", "ReplyCreated", "InWorkbin"
    }  # fmt: skip

    assert main(["migrate", "--from", f"sqlite:{installation.database}"]) == 0
    out = capsys.readouterr().out
    assert f"interactions           {len(interactions)} (versions kept)" in out
    assert "pending mail           2" in out
    assert digest(installation.database) == before  # only read

    store = PostgresStore(configured)
    attachments = PostgresAttachmentStore(configured, max_size=50 * 1024 * 1024)
    try:
        with store.unit_of_work() as uow:
            for old in interactions:
                new = uow.interactions.get(old.id)
                assert new is not None, old.id
                for name in Interaction.model_fields:
                    assert getattr(new, name) == getattr(old, name), (old.id, name)
                assert new == old
        # The queries answer as they did (order included).
        with store.unit_of_work() as uow:
            for agent in ("alice", "bob"):
                assert [i.id for i in uow.interactions.for_agent(agent)] == [
                    i.id
                    for i in sorted(interactions, key=lambda i: (i.received_at, i.id))
                    if i.owner == agent or (i.offer is not None and i.offer.agent_id == agent)
                ]
            assert uow.interactions.by_message_id("<order-1@example.org>", MAILBOX) is not None
        moved_mail = store.pending_mail(FAR)
        assert [
            (m.mail, m.attempts, m.last_error, m.queued_at, m.next_attempt_at) for m in moved_mail
        ] == [
            (m.mail, m.attempts, m.last_error, m.queued_at, m.next_attempt_at) for m in mail_entries
        ]
        assert moved_mail[0].attempts == 1 and moved_mail[0].last_error == "421 later"
        moved = store.pending_notifications()
        assert [(n.agent_id, n.topic, n.to_wire()) for n in moved] == [
            (n.agent_id, n.topic, n.to_wire()) for n in notifications
        ]
        # Every blob, byte for byte; and every one an interaction or a mail refers to is there.
        files = sorted(p for p in installation.attachments.glob("??/*") if p.is_file())
        assert len(files) >= 6
        for file in files:
            assert attachments.get(file.name) == file.read_bytes()
        for i in interactions:
            for a in i.email.attachments:
                attachments.get(a.blob)
            if i.raw_id:
                attachments.get(i.raw_id)
    finally:
        attachments.close()
        store.close()


def test_a_target_with_interactions_is_refused(
    installation: Installation, configured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--from", f"sqlite:{installation.database}"]) == 0
    capsys.readouterr()
    assert main(["migrate", "--from", f"sqlite:{installation.database}"]) == 2
    err = capsys.readouterr().err
    assert "already holds interactions" in err or "already has interactions" in err, err
    assert err.count("\n") == 1


def test_the_attachments_directory_may_be_given(
    installation: Installation, configured: str, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "moved-attachments"
    installation.attachments.rename(elsewhere)
    settings = load_settings()
    with pytest.raises(TransferError, match="--attachments DIR"):
        move_sqlite_to_postgres(settings, installation.database)
    report = move_sqlite_to_postgres(settings, installation.database, elsewhere)
    assert report.blobs >= 6 and not report.missing_blobs


def test_a_damaged_blob_is_refused_before_anything_is_loaded(
    installation: Installation, configured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = next(p for p in installation.attachments.glob("??/*") if p.is_file())
    victim.write_bytes(b"not what it was")
    assert main(["migrate", "--from", f"sqlite:{installation.database}"]) == 2
    assert f"attachment file {victim}" in capsys.readouterr().err
    store = PostgresStore(configured)
    try:
        with store.unit_of_work() as uow:
            assert uow.interactions.get(installation.ids[0]) is None
    finally:
        store.close()


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--from", "sqlite:/nowhere/x.sqlite3"], "no such file"),
        (["--from", "/some/file.sqlite3"], "give sqlite:PATH"),
        (["--from", "mysql:x"], "give sqlite:PATH"),
        (["--attachments", "/tmp"], "--attachments DIR goes with --from"),
    ],
)
def test_bad_arguments_are_refused(
    args: list[str], problem: str, configured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", *args]) == 2
    assert problem in capsys.readouterr().err


def test_not_a_database_is_refused(
    configured: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"hello")
    assert main(["migrate", "--from", f"sqlite:{junk}"]) == 2
    assert "cannot read it" in capsys.readouterr().err
    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).close()
    assert main(["migrate", "--from", f"sqlite:{empty}"]) == 2
    assert "not an interactions database" in capsys.readouterr().err


def test_moving_needs_postgresql_configured(
    installation: Installation, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("INTERACTIONS_DATABASE", raising=False)
    monkeypatch.delenv("INTERACTIONS_CONFIG", raising=False)
    monkeypatch.setenv("INTERACTIONS_DATA_DIR", str(installation.database.parent / "x"))
    assert main(["migrate", "--from", f"sqlite:{installation.database}"]) == 2
    err = capsys.readouterr().err
    assert "database (env INTERACTIONS_DATABASE)" in err and "postgresql://" in err


def test_a_version_1_database_moves_too(
    installation: Installation, configured: str, tmp_path: Path
) -> None:
    """A SQLite file never upgraded since version 1 (no message_id column, no published_us) is
    read as it is: nothing is written to it, not even the upgrade."""
    fixture = Path(__file__).parents[1] / "store" / "fixtures" / "schema_v1.sql"
    old = tmp_path / "v1" / "interactions.sqlite3"
    old.parent.mkdir()
    conn = sqlite3.connect(old, isolation_level=None)
    script = "\n".join(
        line for line in fixture.read_text().splitlines() if not line.startswith("--")
    )
    for statement in script.split(";\n"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("ATTACH DATABASE ? AS v3", (str(installation.database),))
    columns = "id, version, state, owner, offer_agent, current_queue, workbin, mailbox, data"
    conn.execute(
        f"INSERT INTO interactions ({columns}, received_us)"
        f" SELECT {columns}, received_us FROM v3.interactions ORDER BY pos"
    )
    outbox = "kind, agent_id, topic, interaction_id, payload, queued_at, attempts,"
    outbox += " next_attempt_at, due_us, last_error"
    conn.execute(
        f"INSERT INTO outbox ({outbox}) SELECT {outbox} FROM v3.outbox"
        " WHERE status = 'pending' ORDER BY seq"
    )
    conn.execute("DETACH DATABASE v3")
    conn.close()
    before = digest(old)
    interactions, mail_entries, notifications = sqlite_view(installation.database)
    report = move_sqlite_to_postgres(load_settings(), old, installation.attachments)
    assert digest(old) == before
    assert (report.interactions, report.mail, report.notifications) == (
        len(interactions),
        len(mail_entries),
        len(notifications),
    )
    store = PostgresStore(configured)
    try:
        with store.unit_of_work() as uow:
            for i in interactions:
                assert uow.interactions.get(i.id) == i
            assert uow.interactions.by_message_id("<order-2@example.org>") is not None
        assert [n.to_wire() for n in store.pending_notifications()] == [
            n.to_wire() for n in notifications
        ]
        assert [m.mail for m in store.pending_mail(FAR)] == [m.mail for m in mail_entries]
    finally:
        store.close()


def test_a_document_that_does_not_decode_stops_the_move_loading_nothing(
    installation: Installation, configured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sqlite3.connect(installation.database, isolation_level=None)
    victim = installation.ids[3]
    conn.execute("UPDATE interactions SET data = '{\"id\": 1}' WHERE id = ?", (victim,))
    conn.close()
    assert main(["migrate", "--from", f"sqlite:{installation.database}"]) == 2
    err = capsys.readouterr().err
    assert f"interaction '{victim}' (row 4) cannot be read" in err and "nothing was loaded" in err
    assert err.count("\n") == 1
    store = PostgresStore(configured)
    try:
        with store.unit_of_work() as uow:
            assert uow.interactions.get(installation.ids[0]) is None
        assert store.pending_notifications() == []
    finally:
        store.close()
