"""The PostgreSQL outbox: notifications and mail committed with the change that caused them,
read after commit by any number of processes.

**Seqs in commit order.** Every outbox entry takes its ``seq`` from one sequence
(``outbox_seq``). A sequence hands out numbers in *allocation* order, and transactions commit in
another order: if transaction A takes seq 10 and B seq 11, and B commits first, a dispatcher
tailing ``seq > last`` reads 11, moves its ``last`` to 11, and never sees 10 when A commits a
moment later. The port promises seqs "strictly increasing in commit order", so allocation is
serialised: the commit takes ``pg_advisory_xact_lock(OUTBOX_LOCK_KEY)`` right before it inserts
its rows (new interactions, then notifications, then mail) and holds it until it ends.

* Why that gives commit order: a transaction's seqs are taken after the lock was granted, and
  the lock is released only at the end of ``COMMIT``, after the transaction became visible
  (PostgreSQL makes a commit visible before it releases its locks). So the next holder takes
  its seqs after the previous holder's are visible: for any snapshot, the committed entries are
  exactly the ones below some seq, and every entry committed later has a higher seq. A reader
  tailing ``seq > last`` can therefore never skip one, and ``last_seq`` (the highest seq
  committed, read in the same snapshot) is a true high-water mark.
* Why as late as possible: the lock serialises the commits that write outbox rows (or add
  interactions), so it is held only for their inserts and the ``COMMIT``: every version check,
  update and row lock of the transaction comes before it. It is always the last lock taken, so
  it cannot be part of a deadlock: its holder waits for nobody.
* Why new interactions too: ``by_message_id`` returns the *first stored* interaction, in commit
  order; inserting them under the same lock makes ``interactions.pos`` commit-ordered as well,
  and means an ``INSERT`` never waits for another transaction's uncommitted row with the same
  id (that one has committed before the lock was granted, or has not inserted yet).
* A transaction aborted after allocating leaves a gap (sequences are not transactional); a
  gap is never filled, so it is harmless. ``tests/postgres/test_outbox_order.py`` runs many
  writers with random delays between their inserts and their commits against one tailer: with
  the lock nothing is skipped; with the lock left out (a test-only subclass) it catches skips.

**Several mail dispatchers.** ``pending_mail`` *claims* what it returns: in one statement it
selects the due entries ``FOR UPDATE SKIP LOCKED`` and sets ``claimed_by`` (this store object's
claimant id) and ``claimed_until`` (the store clock's now + ``mail_lease_seconds``). Another
store (another process) skips entries claimed by someone else until their lease has passed, so
two dispatchers never get the same entry; a dispatcher that dies without finishing releases its
entries when their lease ends. The claimant's own entries are offered to it again (the lease
renewed): the server's dispatcher reads the outbox again while mails are in flight and skips
the ones it holds, and the contract's reader reads the same entries twice. ``mark_mail_sent``,
``mark_mail_failed`` and ``reschedule_mail`` clear the claim; ``close()`` releases the store's
unfinished claims at once. The lease must outlast one delivery attempt (default 300 s).

**Notifications are kept once published**, marked with ``published_at``, until
``purge_notifications`` deletes them and records the highest seq purged per agent (the same
semantics as the SQLite store's migration 3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final

from interactions_core.ports import (
    Changes,
    ChannelState,
    Clock,
    MailEntry,
    Notification,
    NotificationBacklog,
    NotificationPage,
    OutgoingMail,
    StoredMessage,
)

from .connection import Connection, Database
from .rows import decode, text, utc

__all__ = ["INSERT_MAIL", "INSERT_NOTIFICATION", "OUTBOX_LOCK_KEY", "PostgresOutboxReader"]

OUTBOX_LOCK_KEY: Final = 0x1A7E_0002
"""The transaction advisory lock serialising seq allocation (see the module docstring)."""

_BIGINT_MAX: Final = 2**63 - 1

_PENDING_NOTIFICATIONS: Final = (
    "SELECT seq, agent_id, topic, payload FROM outbox"
    " WHERE kind = 'notification' AND published_at IS NULL AND seq > %s"
    " ORDER BY seq LIMIT %s"
)
_MARK_PUBLISHED: Final = (
    "UPDATE outbox SET published_at = %s, status = 'sent', done_at = %s"
    " WHERE kind = 'notification' AND published_at IS NULL AND seq = ANY(%s::bigint[])"
)
# One statement, so one snapshot: the agent's rows, its purge record and the highest seq given
# (the highest stored, or purged: purges only delete, and record what they deleted).
_NOTIFICATIONS_SINCE: Final = (
    "SELECT n.seq, n.agent_id, n.topic, n.payload, m.purged_through, m.last_seq FROM"
    " (SELECT (SELECT through_seq FROM notification_purges WHERE agent_id = %(agent)s)"
    "   AS purged_through,"
    "  GREATEST((SELECT max(seq) FROM outbox),"
    "   (SELECT max(through_seq) FROM notification_purges), 0) AS last_seq) AS m"
    " LEFT JOIN LATERAL (SELECT seq, agent_id, topic, payload FROM outbox"
    "  WHERE kind = 'notification' AND agent_id = %(agent)s AND seq > %(after)s"
    "  ORDER BY seq LIMIT %(limit)s) AS n ON true"
    " ORDER BY n.seq"
)
# Two purgers at once never delete (and count) the same row: SKIP LOCKED.
_PURGE: Final = (
    "WITH gone AS ("
    " DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox"
    "  WHERE kind = 'notification' AND published_at IS NOT NULL AND published_at < %s"
    "  ORDER BY published_at, seq LIMIT %s FOR UPDATE SKIP LOCKED)"
    " RETURNING seq, agent_id),"
    " recorded AS ("
    " INSERT INTO notification_purges (agent_id, through_seq)"
    "  SELECT agent_id, max(seq) FROM gone GROUP BY agent_id"
    " ON CONFLICT (agent_id) DO UPDATE"
    "  SET through_seq = GREATEST(notification_purges.through_seq, EXCLUDED.through_seq))"
    " SELECT count(*) FROM gone"
)
_CLAIM_MAIL: Final = (
    "WITH due AS ("
    " SELECT seq FROM outbox"
    " WHERE kind = 'mail' AND status = 'pending' AND next_attempt_at <= %(due)s"
    "  AND (claimed_until IS NULL OR claimed_until <= %(now)s OR claimed_by = %(me)s)"
    " ORDER BY seq LIMIT %(limit)s"
    " FOR UPDATE SKIP LOCKED)"
    " UPDATE outbox AS o SET claimed_by = %(me)s, claimed_until = %(until)s"
    " FROM due WHERE o.seq = due.seq"
    " RETURNING o.seq, o.payload, o.queued_at, o.attempts, o.next_attempt_at, o.last_error"
)
_FINISH_MAIL: Final = (
    "UPDATE outbox SET status = %s, last_error = COALESCE(%s, last_error), done_at = %s,"
    " claimed_by = NULL, claimed_until = NULL"
    " WHERE seq = %s AND kind = 'mail' AND status = 'pending'"
)
_RESCHEDULE_MAIL: Final = (
    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = %s, last_error = %s,"
    " claimed_by = NULL, claimed_until = NULL"
    " WHERE seq = %s AND kind = 'mail' AND status = 'pending'"
)
_RELEASE_CLAIMS: Final = (
    "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL"
    " WHERE kind = 'mail' AND claimed_by = %s"
)
# The change feed (ports.ChangeFeed). Every seq is taken under the outbox lock, so the highest
# committed one is a true high-water mark: read from the tables (each max is one index probe),
# never from the sequence, whose last value may belong to a transaction still in flight.
_FEED_POSITION: Final = (
    "SELECT GREATEST((SELECT max(seq) FROM outbox),"
    " (SELECT max(change_seq) FROM interactions),"
    " (SELECT max(change_seq) FROM agent_channels),"
    " (SELECT max(through_seq) FROM notification_purges), 0)"
)
_NOTIFICATIONS_AFTER: Final = (
    "SELECT seq, agent_id, topic, payload FROM outbox"
    " WHERE seq > %s AND kind = 'notification' ORDER BY seq LIMIT %s"
)
# Some agents' notifications, each after its own seq (one index range on
# ix_outbox_agent_notifications an agent), with the high-water mark: one statement, so one
# snapshot, and every seq the mark covers is committed or never will be (the outbox lock).
_NOTIFICATIONS_OF: Final = (
    "SELECT m.high, n.seq, n.agent_id, n.topic, n.payload FROM"
    f" ({_FEED_POSITION} AS high) AS m"
    " LEFT JOIN LATERAL (SELECT o.seq, o.agent_id, o.topic, o.payload"
    "  FROM unnest(%(agents)s::text[], %(afters)s::bigint[]) AS a(agent, after)"
    "  CROSS JOIN LATERAL (SELECT seq, agent_id, topic, payload FROM outbox"
    "   WHERE kind = 'notification' AND agent_id = a.agent AND seq > a.after"
    "   ORDER BY seq LIMIT %(limit)s) AS o"
    "  ORDER BY o.seq LIMIT %(limit)s) AS n ON true"
    " ORDER BY n.seq"
)
# The pending ones in a range of seqs (ix_outbox_pending_notifications), whoever's they are.
# The lower bound keeps the scan to the new rows: without it every call walks the index's
# entries of the rows settled before (dead until vacuumed) from the start.
_SETTLE: Final = (
    "UPDATE outbox SET published_at = %s, status = 'sent', done_at = %s"
    " WHERE kind = 'notification' AND published_at IS NULL AND seq > %s AND seq <= %s"
)
_CHANGES_SINCE: Final = (
    "(SELECT change_seq, true, data FROM interactions WHERE change_seq > %(after)s"
    "  ORDER BY change_seq LIMIT %(limit)s)"
    " UNION ALL"
    " (SELECT change_seq, false, data FROM agent_channels WHERE change_seq > %(after)s"
    "  ORDER BY change_seq LIMIT %(limit)s)"
    " ORDER BY 1 LIMIT %(limit)s"
)
INSERT_NOTIFICATION: Final = (
    "INSERT INTO outbox (kind, agent_id, topic, payload, queued_at)"
    " VALUES ('notification', %s, %s, %s, %s)"
)
INSERT_MAIL: Final = (
    "INSERT INTO outbox (kind, interaction_id, payload, queued_at, next_attempt_at)"
    " VALUES ('mail', %s, %s, %s, %s)"
)


def _bigint(n: int) -> int:
    return max(-_BIGINT_MAX - 1, min(n, _BIGINT_MAX))


def _notification(seq: int, agent_id: str, topic: str, payload: str) -> Notification:
    return Notification.model_construct(  # the store's own rows: no validation
        agent_id=agent_id,
        topic=topic,
        payload=StoredMessage(payload),  # decoded when delivered, if ever
        seq=seq,
    )


class PostgresOutboxReader:
    """The ``OutboxReader`` half of ``PostgresStore`` (the statements above)."""

    _db: Database
    _clock: Clock
    _claimant: str
    _lease: timedelta

    # -- the change feed (ports.ChangeFeed)
    def feed_position(self) -> int:
        row = self._db.retryable(lambda c: c.execute(_FEED_POSITION).fetchone())
        return int(row[0]) if row is not None else 0

    def notifications_after(self, after_seq: int, limit: int = 500) -> list[Notification]:
        if limit <= 0 or after_seq >= _BIGINT_MAX:
            return []
        params = (_bigint(after_seq), limit)
        rows = self._db.retryable(lambda c: c.execute(_NOTIFICATIONS_AFTER, params).fetchall())
        return [_notification(*row) for row in rows]

    def notifications_of(self, afters: Mapping[str, int], limit: int = 500) -> NotificationPage:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        agents = sorted(afters)
        params = {
            "agents": [text(a) for a in agents],
            "afters": [_bigint(afters[a]) for a in agents],
            "limit": limit,
        }
        rows = self._db.retryable(lambda c: c.execute(_NOTIFICATIONS_OF, params).fetchall())
        found = [_notification(*row[1:]) for row in rows if row[1] is not None]
        full = len(found) == limit
        return NotificationPage.model_construct(
            notifications=found,
            position=found[-1].seq if full else int(rows[0][0]),
            more=full,
        )

    def settle_notifications(self, through_seq: int, after_seq: int = 0) -> int:
        if through_seq < 1 or after_seq >= through_seq:
            return 0
        now = utc(self._clock.now())
        params = (now, now, _bigint(after_seq), _bigint(through_seq))
        return self._db.retryable(lambda c: c.execute(_SETTLE, params).rowcount)

    def changes_since(self, after_seq: int, limit: int = 500) -> Changes:
        if limit <= 0 or after_seq >= _BIGINT_MAX:
            return Changes(interactions=[], channels=[], position=after_seq)
        params = {"after": _bigint(after_seq), "limit": limit}
        rows = self._db.retryable(lambda c: c.execute(_CHANGES_SINCE, params).fetchall())
        return Changes.model_construct(
            interactions=[decode(data) for _, is_interaction, data in rows if is_interaction],
            channels=[
                ChannelState.model_validate_json(data)
                for _, is_interaction, data in rows
                if not is_interaction
            ],
            position=int(rows[-1][0]) if rows else after_seq,
        )

    def pending_notifications(self, after_seq: int = 0, limit: int = 500) -> list[Notification]:
        if limit <= 0 or after_seq >= _BIGINT_MAX:
            return []
        params = (_bigint(after_seq), limit)
        rows = self._db.retryable(lambda c: c.execute(_PENDING_NOTIFICATIONS, params).fetchall())
        return [_notification(*row) for row in rows]

    def mark_notifications_done(self, seqs: Sequence[int]) -> None:
        # Kept as published (status mirrors it) until purge_notifications deletes them; the
        # ``published_at IS NULL`` guard keeps the first time, and makes a retry harmless.
        wanted = sorted({s for s in seqs if 0 < s <= _BIGINT_MAX})
        if not wanted:
            return
        now = utc(self._clock.now())

        def mark(conn: Connection) -> None:
            conn.execute(_MARK_PUBLISHED, (now, now, wanted))

        self._db.retryable(mark)

    def notifications_since(
        self, agent_id: str, after_seq: int, limit: int = 500
    ) -> NotificationBacklog:
        params = {"agent": text(agent_id), "after": _bigint(after_seq), "limit": max(limit, 0)}
        rows = self._db.retryable(lambda c: c.execute(_NOTIFICATIONS_SINCE, params).fetchall())
        found = [_notification(*row[:4]) for row in rows if row[0] is not None]
        purged_through = int(rows[0][4] or 0) if rows else 0
        last_seq = int(rows[0][5]) if rows else 0
        return NotificationBacklog.model_construct(
            notifications=found,
            complete=purged_through <= after_seq <= last_seq,
            last_seq=last_seq,
        )

    def purge_notifications(self, published_before: datetime, limit: int = 1000) -> int:
        if limit < 1:
            return 0
        # Not retried: after a lost connection whether the delete happened is unknown, and the
        # count returned would be wrong (the next timer run purges whatever is left).
        with self._db.transaction() as conn:
            row = conn.execute(_PURGE, (utc(published_before), limit)).fetchone()
        return int(row[0]) if row is not None else 0

    def pending_mail(self, due_before: datetime, limit: int = 100) -> list[MailEntry]:
        if limit <= 0:
            return []
        now = utc(self._clock.now())
        params = {
            "due": utc(due_before),
            "now": now,
            "me": self._claimant,
            "until": now + self._lease,
            "limit": limit,
        }
        # Retrying is safe: a claim this store made already is offered to it again.
        rows = self._db.retryable(lambda c: c.execute(_CLAIM_MAIL, params).fetchall())
        return [
            MailEntry(
                seq=seq,
                mail=OutgoingMail.model_validate_json(payload),
                queued_at=queued_at,
                attempts=attempts,
                next_attempt_at=next_attempt_at,
                last_error=last_error,
            )
            for seq, payload, queued_at, attempts, next_attempt_at, last_error in sorted(rows)
        ]

    def mark_mail_sent(self, seq: int) -> None:
        self._finish_mail(seq, "sent", None)

    def mark_mail_failed(self, seq: int, error: str) -> None:
        self._finish_mail(seq, "failed", error)

    def reschedule_mail(self, seq: int, next_attempt_at: datetime, error: str) -> None:
        if not 0 < seq <= _BIGINT_MAX:
            return
        # In a transaction, not retried: counting the attempt twice would be wrong.
        with self._db.transaction() as conn:
            conn.execute(_RESCHEDULE_MAIL, (utc(next_attempt_at), error, seq))

    def _finish_mail(self, seq: int, status: str, error: str | None) -> None:
        # Kept (not deleted) as the delivery record; only pending entries change, so a retry
        # after a lost connection is harmless.
        if not 0 < seq <= _BIGINT_MAX:
            return
        params = (status, error, utc(self._clock.now()), seq)

        def finish(conn: Connection) -> None:
            conn.execute(_FINISH_MAIL, params)

        self._db.retryable(finish)

    def release_claims(self, timeout: float | None = None) -> None:
        """Give up this store's claims on unfinished mail now (instead of at the lease's end),
        for another dispatcher to take. ``timeout``: how long to wait for a connection."""

        def release(conn: Connection) -> None:
            conn.execute(_RELEASE_CLAIMS, (self._claimant,))

        self._db.retryable(release, timeout=timeout)
