"""Crash safety (issue 4, item 7): SIGKILL a writer at random moments; nothing committed is lost.

A child process (``crash_writer.py``) runs real operations through the service on a SQLite
store and logs each one, fsynced, after its commit returned. It is killed with SIGKILL at
random (seeded) moments, five times, each run continuing on the same database. Then:

* the database opens and passes ``PRAGMA integrity_check`` (SQLite only);
* every operation the child reported is there, with its outbox rows;
* nothing is half-written: each interaction's version matches exactly the notifications and
  mail its operations produced (counting the notifications the child already published and
  deleted), and a reply exists exactly when its parent was touched by Reply;
* the outbox resumes: draining publishes exactly what was not done, in sequence order.

No assertion depends on timing: the random delays only choose where the kills land.

The run and every check but the integrity check are backend-neutral: ``kill_writer_repeatedly``
takes the writer's store spec (``sqlite:PATH`` or a ``postgresql://`` DSN), and
``check_nothing_lost`` takes the rows as read from the database (``CrashState``), so
``tests/postgres/test_postgres_crash.py`` runs the same test on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.sqlite import SqliteStore
from interactions_core.ids import SystemClock
from interactions_core.model import Interaction, SubType
from interactions_core.outbox import drain_mail, drain_notifications
from interactions_core.ports import Clock, MailEntry, Store
from interactions_core.testing import RecordingNotifier, RecordingTransport

WRITER = Path(__file__).with_name("crash_writer.py")
SRC = Path(__file__).resolve().parents[2] / "src"
KILLS = 5
SEED = 20260105
STARTUP_GUARD = 120.0  # seconds: only a guard against a child that never starts

# Notification states and mail count an interaction has at each version (see crash_writer).
INBOUND_NOTIFICATIONS = {1: [], 2: ["Invited"], 3: ["Invited", "Accepted"]}
DRAFT_NOTIFICATIONS = {1: ["ReplyCreated"], 2: ["ReplyCreated", "Sent"]}
DRAFT_MAIL = {1: 0, 2: 1}


def read_log(path: Path) -> list[dict[str, Any]]:
    """The reported entries; a line torn by the kill (always a run's last) is no report."""
    entries: list[dict[str, Any]] = []
    if not path.exists():
        return entries
    lines = path.read_text(encoding="utf-8").split("\n")
    for n, line in enumerate(lines):
        if not line:
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            following = [json.loads(x) for x in lines[n + 1 :] if x]
            assert not following or following[0]["op"] == "start", f"torn line mid-run: {line!r}"
    return entries


def run_and_kill(spec: str, log: Path, run: int, rng: random.Random) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    child = subprocess.Popen(
        [sys.executable, str(WRITER), spec, str(log), str(run)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # Wait until this run has completed a first full iteration, then kill at a random
        # moment of the following ones.
        guard = time.monotonic() + STARTUP_GUARD
        while not any(e["op"] == "send" and e["id"].startswith(f"R{run}-") for e in read_log(log)):
            if child.poll() is not None:
                _, err = child.communicate()
                pytest.fail(f"writer exited early ({child.returncode}): {err.decode()}")
            if time.monotonic() > guard:
                pytest.fail("writer did not start")
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL, "the writer must die by SIGKILL, not exit"


def kill_writer_repeatedly(spec: str, log: Path) -> list[dict[str, Any]]:
    """Run the writer on ``spec`` and SIGKILL it, ``KILLS`` times; what it reported."""
    rng = random.Random(SEED)
    for run in range(KILLS):
        run_and_kill(spec, log, run, rng)
    return read_log(log)


@dataclass
class CrashState:
    """What the database holds after the kills, read by the backend's own SQL."""

    rows: dict[str, Interaction]
    """Every interaction by id (its columns already checked against its document)."""
    notifications: list[tuple[int, dict[str, Any], bool]]
    """Every retained notification: (seq, wire form, published)."""
    mail: list[tuple[str, str]]
    """Every mail entry, in seq order: (interaction id, status)."""


def check_nothing_lost(
    store: Store, entries: list[dict[str, Any]], state: CrashState, clock: Clock
) -> None:
    """Every reported operation is there, nothing is half-written, and the outbox resumes
    (draining it with ``clock``: exactly what is not done, in sequence order)."""
    rows = state.rows

    # 1. Every reported operation is there.
    for e in entries:
        op = e["op"]
        if op in ("receive", "offer", "accept"):
            minimum = {"receive": 1, "offer": 2, "accept": 3}[op]
            assert rows[e["id"]].version >= minimum, e
        elif op == "reply":  # the reply only checked its parent's version: still Accepted
            assert (rows[e["id"]].state, rows[e["id"]].version) == ("Accepted", 3), e
            assert rows[e["reply"]].parent_id == e["id"], e
        elif op == "send":
            assert (rows[e["id"]].state, rows[e["id"]].version) == ("Sent", 2), e

    # 2. Nothing half-written: each version has exactly its outbox rows.
    committed: dict[int, tuple[str, str]] = {}
    for e in entries:
        if e["op"] == "published":  # done (kept as published), or published again after a kill
            assert committed.setdefault(e["seq"], (e["id"], e["state"])) == (e["id"], e["state"])
    pending_before = {}
    for seq, wire, published in state.notifications:
        row = (wire["id"], wire["state"])
        assert committed.setdefault(seq, row) == row
        if not published:  # published ones are kept (retention) until purged
            pending_before[seq] = row
    states: dict[str, list[str]] = defaultdict(list)
    for seq in sorted(committed):
        iid, status = committed[seq]
        states[iid].append(status)
    mail_rows: dict[str, list[str]] = defaultdict(list)
    for iid, status in state.mail:
        mail_rows[iid].append(status)
    assert set(states) <= set(rows) and set(mail_rows) <= set(rows)
    drafts = defaultdict(list)
    for i in rows.values():
        if i.parent_id is not None:
            drafts[i.parent_id].append(i.id)
    for i in rows.values():
        if i.interaction_subtype == SubType.INBOUND_NEW:
            assert states[i.id] == INBOUND_NOTIFICATIONS[i.version], i.id
            assert i.id not in mail_rows, i.id
            assert len(drafts[i.id]) <= (1 if i.version == 3 else 0), i.id
        else:
            assert states[i.id] == DRAFT_NOTIFICATIONS[i.version], i.id
            assert len(mail_rows.get(i.id, [])) == DRAFT_MAIL[i.version], i.id
            assert rows[i.parent_id or ""].version == 3, i.id
    reported_mail = {e["id"] for e in entries if e["op"] == "mailed"}
    for iid, statuses in mail_rows.items():
        # Marked sent only after the hand-over was reported; a kill in between leaves it
        # pending, to be handed over again (at least once, with the same Message-ID).
        if iid in reported_mail:
            assert statuses in (["pending"], ["sent"]), iid
        else:
            assert statuses == ["pending"], iid

    # 3. The outbox resumes: exactly what is not done, in sequence order.
    notifier = RecordingNotifier()
    drain_notifications(store, notifier)
    published = [n.seq for n in notifier.published]
    assert published == sorted(pending_before)
    assert store.pending_notifications() == []
    pending_mail = {iid for iid, s in mail_rows.items() if s == ["pending"]}
    transport = RecordingTransport()

    def failed(entry: MailEntry, reason: str) -> None:
        raise AssertionError(reason)

    drain_mail(store, transport, clock, failed, limit=10_000)
    assert {m.interaction_id for m in transport.sent} == pending_mail
    assert store.pending_mail(clock.now()) == []

    # The runs did real work, and every run was cut off (five kills, five starts).
    assert sum(e["op"] == "start" for e in entries) == KILLS
    assert sum(e["op"] == "send" for e in entries) >= KILLS


def test_sigkill_at_random_moments_loses_nothing_committed(tmp_path: Path) -> None:
    db, log = tmp_path / "crash.sqlite3", tmp_path / "committed.log"
    entries = kill_writer_repeatedly(f"sqlite:{db}", log)

    with SqliteStore(db) as store:
        conn = store.connection()
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []

        # Columns and documents agree (an update never wrote one without the other).
        rows: dict[str, Interaction] = {}
        for iid, version, state, owner, data in conn.execute(
            "SELECT id, version, state, owner, data FROM interactions"
        ):
            doc = Interaction.model_validate_json(data)
            assert (doc.id, doc.version, doc.state, doc.owner) == (iid, version, state, owner)
            rows[iid] = doc
        notifications = [
            (seq, json.loads(payload), published_us is not None)
            for seq, payload, published_us in conn.execute(
                "SELECT seq, payload, published_us FROM outbox WHERE kind = 'notification'"
            )
        ]
        mail = list(
            conn.execute(
                "SELECT interaction_id, status FROM outbox WHERE kind = 'mail' ORDER BY seq"
            )
        )
        check_nothing_lost(store, entries, CrashState(rows, notifications, mail), SystemClock())
