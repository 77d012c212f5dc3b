"""In-memory implementations of every port: store (with its unit of work and outbox), agent
directory, attachment store, notifier, mail transport, clock and ids.

They are production code, not test doubles: an embedder can run the whole core on them (a
demo, a single-process tool, a cache-backed service), and they obey exactly the contracts the
durable adapters do (``interactions_core.testing.contracts`` proves both). Nothing here does
I/O. The ``Harness`` (``interactions_core.testing``) builds an ``Engine`` from them.
"""

from __future__ import annotations

import hashlib
import threading
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import AlreadyIngested, ConcurrencyConflict, TooLarge
from .ids import SystemClock
from .model import Interaction, build, evolve
from .ports import (
    Agent,
    Changes,
    ChannelState,
    Clock,
    MailEntry,
    Notification,
    NotificationBacklog,
    NotificationPage,
    OutgoingMail,
    PermanentMailError,
    TransientMailError,
)
from .staging import StagedUnitOfWork, kept_in, listed_for, listing_key, waiting_in

# --------------------------------------------------------------------------- store


class InMemoryStore:
    """Store + outbox in memory, with the same semantics as the durable stores.

    Committed interactions are immutable records, so sharing them is safe; a unit of work
    stages its changes and applies them atomically at commit, after checking every version.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._rows: dict[str, Interaction] = {}
        self._seq = 0
        # Notifications: every retained one by seq; the pending ones; when the others were
        # published; each agent's retained seqs (increasing); the highest seq purged per agent.
        self._notifications: dict[int, Notification] = {}
        self._pending: set[int] = set()
        self._published: dict[int, datetime] = {}
        self._by_agent: dict[str, list[int]] = {}
        self._purged_through: dict[str, int] = {}
        self._mail: dict[int, MailEntry] = {}
        self._mail_done: dict[int, str | None] = {}  # seq -> failure reason (None = sent)
        self._channels: dict[str, ChannelState] = {}
        self._ingest_keys: dict[str, str] = {}  # ingest key -> interaction id
        # The change feed: ("i", id) / ("c", agent id) -> seq of the commit that last wrote
        # it, in that order (a key written again moves to the end).
        self._changes: dict[tuple[str, str], int] = {}

    def unit_of_work(self) -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(self)

    def close(self) -> None:
        """Nothing to release: the data lives as long as this object (idempotent)."""

    # -- change feed (ports.ChangeFeed): several engines may share this store, as processes
    # share a database
    def feed_position(self) -> int:
        with self._lock:
            return self._seq

    def notifications_after(self, after_seq: int, limit: int = 500) -> list[Notification]:
        with self._lock:
            seqs = sorted(s for s in self._notifications if s > after_seq)[: max(limit, 0)]
            return [self._notifications[s].model_copy(update={"seq": s}) for s in seqs]

    def changes_since(self, after_seq: int, limit: int = 500) -> Changes:
        with self._lock:
            newer: list[tuple[tuple[str, str], int]] = []
            for key, seq in reversed(self._changes.items()):
                if seq <= after_seq:
                    break
                newer.append((key, seq))
            newer.reverse()
            newer = newer[: max(limit, 0)]
            interactions = [self._rows[k] for (kind, k), _ in newer if kind == "i"]
            channels = [self._channels[k] for (kind, k), _ in newer if kind == "c"]
            position = newer[-1][1] if newer else after_seq
        return build(Changes, interactions=interactions, channels=channels, position=position)

    def notifications_of(self, afters: Mapping[str, int], limit: int = 500) -> NotificationPage:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        with self._lock:
            seqs: list[int] = []
            for agent_id, after in afters.items():
                of_agent = self._by_agent.get(agent_id, [])
                start = bisect_right(of_agent, after)
                seqs.extend(of_agent[start : start + limit])
            seqs = sorted(seqs)[:limit]
            found = [self._notifications[s].model_copy(update={"seq": s}) for s in seqs]
            full = len(seqs) == limit
            position = seqs[-1] if full else self._seq
        return build(NotificationPage, notifications=found, position=position, more=full)

    def settle_notifications(self, through_seq: int, after_seq: int = 0) -> int:
        now = self._clock.now()
        with self._lock:
            due = [s for s in self._pending if after_seq < s <= through_seq]
            for s in due:
                self._pending.remove(s)
                self._published[s] = now
        return len(due)

    # -- outbox reader
    def pending_notifications(self, after_seq: int = 0, limit: int = 500) -> list[Notification]:
        with self._lock:
            seqs = sorted(s for s in self._pending if s > after_seq)[: max(limit, 0)]
            return [self._notifications[s].model_copy(update={"seq": s}) for s in seqs]

    def mark_notifications_done(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        now = self._clock.now()
        with self._lock:
            for s in seqs:
                if s in self._pending:
                    self._pending.remove(s)
                    self._published[s] = now

    def notifications_since(
        self, agent_id: str, after_seq: int, limit: int = 500
    ) -> NotificationBacklog:
        with self._lock:
            seqs = self._by_agent.get(agent_id, [])
            start = bisect_right(seqs, after_seq)
            found = [
                self._notifications[s].model_copy(update={"seq": s})
                for s in seqs[start : start + max(limit, 0)]
            ]
            complete = self._purged_through.get(agent_id, 0) <= after_seq <= self._seq
            return build(
                NotificationBacklog, notifications=found, complete=complete, last_seq=self._seq
            )

    def purge_notifications(self, published_before: datetime, limit: int = 1000) -> int:
        with self._lock:
            old = sorted(s for s, at in self._published.items() if at < published_before)
            old = old[: max(limit, 0)]
            purged: dict[str, set[int]] = {}
            for s in old:
                del self._published[s]
                agent_id = self._notifications.pop(s).agent_id
                purged.setdefault(agent_id, set()).add(s)
                self._purged_through[agent_id] = max(self._purged_through.get(agent_id, 0), s)
            for agent_id, gone in purged.items():
                kept = [s for s in self._by_agent[agent_id] if s not in gone]
                if kept:
                    self._by_agent[agent_id] = kept
                else:
                    del self._by_agent[agent_id]
            return len(old)

    def pending_mail(self, due_before: datetime, limit: int = 100) -> list[MailEntry]:
        with self._lock:
            due = [e for e in self._mail.values() if e.next_attempt_at <= due_before]
        due.sort(key=lambda e: e.seq)
        return due[:limit]

    def mark_mail_sent(self, seq: int) -> None:
        with self._lock:
            if self._mail.pop(seq, None) is not None:
                self._mail_done[seq] = None

    def reschedule_mail(self, seq: int, next_attempt_at: datetime, error: str) -> None:
        with self._lock:
            entry = self._mail.get(seq)
            if entry is not None:
                self._mail[seq] = evolve(
                    entry,
                    attempts=entry.attempts + 1,
                    next_attempt_at=next_attempt_at,
                    last_error=error,
                )

    def mark_mail_failed(self, seq: int, error: str) -> None:
        with self._lock:
            if self._mail.pop(seq, None) is not None:
                self._mail_done[seq] = error

    # -- used by the unit of work
    def _commit(
        self,
        expected: dict[str, int | None],
        rows: dict[str, Interaction],
        notifications: list[Notification],
        mail: list[OutgoingMail],
        channels: dict[str, ChannelState] | None = None,
        channels_expected: dict[str, int] | None = None,
    ) -> None:
        now = self._clock.now()
        with self._lock:
            for iid, version in expected.items():
                stored = self._rows.get(iid)
                actual = stored.version if stored is not None else None
                if actual != version:
                    raise ConcurrencyConflict(iid, version or 0, actual)
            for agent_id, channel_version in (channels_expected or {}).items():
                found = self._channels.get(agent_id)
                actual_channel = found.version if found is not None else 0
                if actual_channel != channel_version:
                    raise ConcurrencyConflict(agent_id, channel_version, actual_channel)
            keys: dict[str, str] = {}
            for iid, version in expected.items():
                key = rows[iid].ingest_key if version is None and iid in rows else None
                if key is not None:
                    holder = self._ingest_keys.get(key, keys.get(key))
                    if holder is not None:
                        raise AlreadyIngested(holder)
                    keys[key] = iid
            self._rows.update(rows)
            self._ingest_keys.update(keys)
            self._channels.update(channels or {})
            for n in notifications:
                self._seq += 1
                self._notifications[self._seq] = n  # its seq is stamped when read
                self._pending.add(self._seq)
                self._by_agent.setdefault(n.agent_id, []).append(self._seq)
            for m in mail:
                self._seq += 1
                self._mail[self._seq] = build(
                    MailEntry, seq=self._seq, mail=m, queued_at=now, next_attempt_at=now
                )
            changed = [("i", iid) for iid in rows] + [("c", a) for a in channels or {}]
            if changed:
                self._seq += 1
                for change in changed:
                    self._changes.pop(change, None)
                    self._changes[change] = self._seq

    def _get(self, interaction_id: str) -> Interaction | None:
        return self._rows.get(interaction_id)

    def _all(self) -> list[Interaction]:
        with self._lock:
            return list(self._rows.values())

    def __len__(self) -> int:
        return len(self._rows)


class _Repository:
    def __init__(self, uow: InMemoryUnitOfWork) -> None:
        self._uow = uow

    def get(self, interaction_id: str) -> Interaction | None:
        return self._uow._staged.get(interaction_id, self._uow._store._get)

    def add(self, interaction: Interaction) -> Interaction:
        return self._uow._staged.add(interaction, self._uow._store._get)

    def update(self, interaction: Interaction) -> Interaction:
        return self._uow._staged.update(interaction)

    def expect(self, interaction: Interaction) -> None:
        self._uow._staged.expect(interaction)

    def _visible_rows(self) -> list[Interaction]:
        merged = {i.id: i for i in self._uow._store._all()}
        merged.update(self._uow._rows)
        return list(merged.values())

    def for_agent(self, agent_id: str) -> list[Interaction]:
        return sorted(filter(listed_for(agent_id), self._visible_rows()), key=listing_key)

    def in_queue(self, queue: str, limit: int | None = None) -> list[Interaction]:
        found = sorted(filter(waiting_in(queue), self._visible_rows()), key=listing_key)
        return found if limit is None else found[:limit]

    def in_workbin(self, workbin: str) -> list[Interaction]:
        return sorted(filter(kept_in(workbin), self._visible_rows()), key=listing_key)

    def by_message_id(self, message_id: str, mailbox: str | None = None) -> Interaction | None:
        for i in self._visible_rows():
            if i.email.message_id == message_id and (mailbox is None or i.mailbox == mailbox):
                return i
        return None


class _Outbox:
    def __init__(self, uow: InMemoryUnitOfWork) -> None:
        self._uow = uow

    def add_notification(self, notification: Notification) -> None:
        self._uow._notifications.append(notification)

    def add_mail(self, mail: OutgoingMail) -> None:
        self._uow._mail.append(mail)


class InMemoryUnitOfWork(StagedUnitOfWork[Notification]):
    def __init__(self, store: InMemoryStore) -> None:
        super().__init__()
        self._store = store
        self.interactions = _Repository(self)
        self.outbox = _Outbox(self)

    def commit(self) -> None:
        staged = self._channels
        self._store._commit(
            self._expected,
            self._rows,
            self._notifications,
            self._mail,
            staged.rows,
            staged.expected,
        )
        self._reset()

    def _load_channel(self, agent_id: str) -> ChannelState | None:
        return self._store._channels.get(agent_id)

    def _load_channels(self) -> list[ChannelState]:
        with self._store._lock:
            return list(self._store._channels.values())


# --------------------------------------------------------------------------- other ports


class InMemoryAttachmentStore:
    """Content-addressed (SHA-256) bytes in a dict."""

    def __init__(self, max_size: int = 25 * 1024 * 1024) -> None:
        self._blobs: dict[str, bytes] = {}
        self.max_size = max_size

    def put(self, data: bytes) -> str:
        if len(data) > self.max_size:
            raise TooLarge(f"attachment of {len(data)} bytes exceeds the limit of {self.max_size}")
        content_id = hashlib.sha256(data).hexdigest()
        self._blobs.setdefault(content_id, bytes(data))
        return content_id

    def get(self, content_id: str) -> bytes:
        return self._blobs[content_id]

    def delete(self, content_id: str) -> None:
        self._blobs.pop(content_id, None)

    def close(self) -> None:
        """Nothing to release: the bytes live as long as this object (idempotent)."""


class ManualClock:
    """A clock that only moves when told: timeouts are tested without sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        self._now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when


class SequentialIds:
    """Predictable ids for tests: ``I000000000001``, ``<m000001@domain>``."""

    def __init__(self, prefix: str = "I") -> None:
        self._prefix = prefix
        self._n = 0
        self._m = 0

    def interaction_id(self) -> str:
        self._n += 1
        return f"{self._prefix}{self._n:012d}"

    def message_id(self, domain: str) -> str:
        self._m += 1
        return f"<m{self._m:06d}@{domain}>"


class InMemoryAgentDirectory:
    def __init__(self, agents: Iterable[Agent] = ()) -> None:
        self._agents = {a.id: a for a in agents}

    def get(self, agent_id: str) -> Agent | None:
        return self._agents.get(agent_id)

    def agents(self) -> Iterable[Agent]:
        return list(self._agents.values())

    def add(self, agent: Agent) -> None:
        self._agents[agent.id] = agent


class RecordingNotifier:
    """Keeps every published notification, per agent, in order."""

    def __init__(self) -> None:
        self.published: list[Notification] = []

    def publish(self, notification: Notification) -> None:
        self.published.append(notification)

    def for_agent(self, agent_id: str, topic: str | None = None) -> list[dict[str, Any]]:
        """What ``agent_id`` was sent (on ``topic`` when given), in wire form, oldest first."""
        return [
            n.to_wire()
            for n in self.published
            if n.agent_id == agent_id and (topic is None or n.topic == topic)
        ]

    def close(self) -> None:
        """Nothing to release."""


class RecordingTransport:
    """A mail transport that records what it was given; can be told to fail."""

    def __init__(self) -> None:
        self.sent: list[OutgoingMail] = []
        self.fail_next: list[Exception] = []

    def send(self, mail: OutgoingMail) -> None:
        if self.fail_next:
            error = self.fail_next.pop(0)
            if isinstance(error, TransientMailError | PermanentMailError):
                raise error
            raise TransientMailError(str(error))
        self.sent.append(mail)

    def close(self) -> None:
        """Nothing to release (idempotent); what was sent stays in ``sent``."""
