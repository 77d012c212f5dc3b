"""Bulk import into an empty database: what moving an installation from SQLite needs.

``PostgresStore.load`` runs it in one transaction, so an import is all there or not at all
(a failure half-way leaves the database empty, to be loaded again). Rows are kept as given:
interactions with their ids, versions and states, in the order given (their stored order, for
``by_message_id``); pending mail with its seq, ``queued_at``, ``attempts``, ``next_attempt_at``
and ``last_error``; notifications as unpublished, with their seq. Keeping seqs keeps what the
connected clients hold meaningful (their last seq, a mail's seq in a log); an entry with seq 0
gets a new one, above every seq given, and the sequence continues above them all.

``COPY ... FROM STDIN`` streams the rows (the interactions are not held in memory: an
iterator of a million is fine). It holds the outbox lock (outbox.py) throughout, so no
concurrent commit can slip rows in between the emptiness check and the copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from psycopg import errors as pg_errors

from interactions_core.model import Interaction
from interactions_core.ports import MailEntry, Notification

from .connection import Connection
from .outbox import OUTBOX_LOCK_KEY
from .rows import COLUMNS, encode_json, row_values, text, utc

__all__ = ["load"]

_COPY_INTERACTIONS = f"COPY interactions ({COLUMNS}) FROM STDIN"
_COPY_OUTBOX = (
    "COPY outbox (seq, kind, agent_id, topic, interaction_id, payload, queued_at, attempts,"
    " next_attempt_at, last_error) FROM STDIN"
)


def _assign_seqs(
    notifications: list[Notification], mail: list[MailEntry]
) -> tuple[list[int], list[int]]:
    """Each entry's seq: the one given (> 0; unique over both lists), or a new one after
    every seq given (notifications first, then mail, each in the order given)."""
    given: set[int] = set()
    for seq in [n.seq for n in notifications] + [m.seq for m in mail]:
        if seq > 0:
            if seq in given:
                raise ValueError(f"cannot load: outbox seq {seq} is given twice")
            given.add(seq)
    following = max(given, default=0)

    def seqs(entries: list[int]) -> list[int]:
        nonlocal following
        out = []
        for seq in entries:
            if seq <= 0:
                following += 1
                seq = following
            out.append(seq)
        return out

    return seqs([n.seq for n in notifications]), seqs([m.seq for m in mail])


def load(
    conn: Connection,
    interactions: Iterable[Interaction],
    *,
    mail: Iterable[MailEntry],
    notifications: Iterable[Notification],
    now: datetime,
) -> int:
    """Copy everything into the empty database, in the open transaction on ``conn``; returns
    how many interactions were loaded. ``ValueError`` (and nothing kept, once the caller rolls
    back) when the database is not empty or the rows contradict each other."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (OUTBOX_LOCK_KEY,))
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM interactions), EXISTS (SELECT 1 FROM outbox)"
    ).fetchone()
    if row is not None and row[0]:
        raise ValueError(
            "cannot load: the database already holds interactions (load fills an "
            "empty database only)"
        )
    if row is not None and row[1]:
        raise ValueError(
            "cannot load: the database already holds outbox entries (load fills "
            "an empty database only)"
        )
    notes, entries = list(notifications), list(mail)
    note_seqs, mail_seqs = _assign_seqs(notes, entries)
    loaded = 0
    with conn.cursor() as cur:
        try:
            with cur.copy(_COPY_INTERACTIONS) as copy:
                for interaction in interactions:
                    copy.write_row(row_values(interaction))
                    loaded += 1
        except pg_errors.UniqueViolation as exc:
            detail = exc.diag.message_detail or "an id repeats"
            raise ValueError(f"cannot load: two interactions have the same id ({detail})") from exc
        except pg_errors.CheckViolation as exc:
            raise ValueError(
                "cannot load: an interaction has a version below 1 (only stored interactions, "
                "which are at version 1 or more, can be loaded)"
            ) from exc
        when = utc(now)
        outbox: list[tuple[Any, ...]] = [
            (
                seq,
                "notification",
                text(n.agent_id),
                text(n.topic),
                None,
                encode_json(n.to_wire()),
                when,
                0,
                None,
                None,
            )
            for seq, n in zip(note_seqs, notes, strict=True)
        ]
        outbox.extend(
            (
                seq,
                "mail",
                None,
                None,
                text(m.mail.interaction_id),
                m.mail.model_dump_json(),
                utc(m.queued_at),
                m.attempts,
                utc(m.next_attempt_at),
                m.last_error,
            )
            for seq, m in zip(mail_seqs, entries, strict=True)
        )
        if outbox:
            with cur.copy(_COPY_OUTBOX) as copy:
                for values in outbox:
                    copy.write_row(values)
            cur.execute("SELECT setval('outbox_seq', %s)", (max(note_seqs + mail_seqs),))
    return loaded
