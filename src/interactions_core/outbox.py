"""Draining the outbox after commit: notifications to the notifier, mail to the transport.

The rules are written once, here, and every driver uses them: ``Engine.pump`` (synchronous,
for tests and simple embeddings) and the server's asyncio dispatchers (``adapters.runtime``,
``adapters.smtp.dispatcher``), which only add scheduling and concurrency:

* ``NotificationDrain``: entries are published in ``seq`` order and marked done only after
  they were handed over. A reader that breaks the port's contract (an entry without its
  ``seq``, or a batch that does not move forward) is an ``OutboxContractError``, never a loop.
* ``NotificationTail``: the same for a process among several sharing one store: every
  process reads the committed notifications of the agents it serves from its own position
  (``ports.ChangeFeed``) and hands them to its own notifier (its own CometD sessions); only
  the leader marks them published, up to its position, which starts their retention.
* ``MailDrain.settle``: what becomes of a mail after one delivery attempt. Sent: marked sent.
  A transient failure (and any unexpected error: nothing is dropped) is rescheduled with
  exponential backoff and jitter until the mail is ``max_age`` old, then it fails. A permanent
  failure first fails the outbound interaction (``on_permanent_failure``, idempotent) and then
  marks the entry failed, so a crash in between repeats the idempotent call, never loses it.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from .ports import (
    ChangeFeed,
    Clock,
    MailEntry,
    MailTransport,
    Notification,
    NotificationPage,
    Notifier,
    OutboxReader,
    PermanentMailError,
    TransientMailError,
)

_log = logging.getLogger(__name__)


class OutboxContractError(RuntimeError):
    """An ``OutboxReader`` broke its documented contract (see ``ports.OutboxReader``)."""


@dataclass(frozen=True)
class RetryPolicy:
    first_delay: timedelta = timedelta(seconds=5)
    max_delay: timedelta = timedelta(minutes=15)
    max_age: timedelta = timedelta(days=2)
    jitter: float = 0.2  # +/- this fraction, so a relay outage does not end in a stampede

    def __post_init__(self) -> None:
        if self.first_delay <= timedelta(0) or self.max_delay < self.first_delay:
            raise ValueError("RetryPolicy needs 0 < first_delay <= max_delay")
        if not 0 <= self.jitter < 1:
            raise ValueError("RetryPolicy.jitter must be in [0, 1)")

    def next_attempt(
        self, entry: MailEntry, now: datetime, rng: Callable[[], float] = random.random
    ) -> datetime | None:
        """When to try again, or None when the mail is too old to keep trying."""
        if now - entry.queued_at >= self.max_age:
            return None
        delay = min(self.first_delay * (2**entry.attempts), self.max_delay)
        factor = 1 + self.jitter * (2 * rng() - 1)
        when: datetime = now + delay * factor
        return when


class NotificationDrain:
    """Reads pending notifications in ``seq`` order, hands them over, marks them done.

    ``take`` and ``ack`` touch the store; ``publish`` only the notifier. A synchronous driver
    calls ``run``; an asyncio driver calls ``take`` and ``ack`` where its store calls run and
    ``publish`` on its event loop, with the same checks.
    """

    def __init__(self, reader: OutboxReader, notifier: Notifier, limit: int = 500) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.reader = reader
        self.notifier = notifier
        self.limit = limit
        self.published = 0

    def take(self, after_seq: int = 0) -> list[Notification]:
        """The next batch (seq > ``after_seq``), checked: every entry carries its positive
        seq, strictly increasing."""
        batch = self.reader.pending_notifications(after_seq, self.limit)
        last = after_seq
        for n in batch:
            if n.seq <= last:
                raise OutboxContractError(
                    f"{type(self.reader).__name__}.pending_notifications({after_seq}) returned "
                    f"seq {n.seq} after {last}: every entry must carry its positive seq, in "
                    "increasing order, all > after_seq (ports.OutboxReader)"
                )
            last = n.seq
        return batch

    def publish(self, batch: Sequence[Notification]) -> None:
        for n in batch:
            self.notifier.publish(n)

    def ack(self, batch: Sequence[Notification]) -> None:
        if batch:
            self.reader.mark_notifications_done([n.seq for n in batch])
            self.published += len(batch)

    def ack_and_take(self, batch: Sequence[Notification]) -> list[Notification]:
        """``ack`` a published batch and ``take`` the one after it: one call for a driver
        whose store calls each cost a hop (or a turn of the event loop)."""
        self.ack(batch)
        return self.take(batch[-1].seq)

    def run(self) -> int:
        """Publish everything pending, batch by batch; returns how many were published. Each
        batch must move past the previous one, so a reader that ignores ``mark_*`` cannot make
        this loop forever."""
        total = 0
        batch = self.take(0)
        while batch:
            self.publish(batch)
            total += len(batch)
            batch = self.ack_and_take(batch)
        return total


class NotificationTail:
    """Every committed notification, in ``seq`` order, from this process's position: what a
    process among several on one store (``ports.ChangeFeed``) delivers to its own clients.

    Unlike ``NotificationDrain`` it does not read "pending" entries: another process may have
    published those already, to *its* clients. It starts at the store's ``feed_position``
    (what was committed before is for clients that catch up by replay,
    ``OutboxReader.notifications_since``) and moves forward only. ``settle`` (the leader's
    job: one process, not each) marks everything up to the position published, which starts
    its retention (``purge_notifications``), the backlog committed while no process led
    included.

    **Only the agents it serves.** ``take(agents)`` reads the notifications of those agents
    alone (``ChangeFeed.notifications_of``) and still moves the position to the snapshot's
    high-water mark: with N processes each notification is read by the process holding its
    agent's session, not N times. An agent that was not in the previous read's set is read
    from where that read started: its session may have appeared while that read ran, after
    its set was taken, and what was committed meanwhile would otherwise be skipped.
    ``take()`` without agents reads everyone's (a notifier that is not per agent).
    """

    def __init__(
        self, reader: OutboxReader, feed: ChangeFeed, notifier: Notifier, limit: int = 500
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.reader = reader
        self.feed = feed
        self.notifier = notifier
        self.limit = limit
        self.position = 0
        self.published = 0
        # The position ``settle`` last marked up to: the next marks the range after it, so the
        # first one (from 0) takes the backlog too, and so does the first after leading anew
        # (what was committed while another process or none led is above it).
        self.settled = 0
        # The agents of the last read, and the position it started from; the agents a full
        # page left behind the position, and where each reads on from.
        self._last_agents: frozenset[str] | None = None
        self._last_start = 0
        self._behind: dict[str, int] = {}
        self._taken: tuple[int, dict[str, int] | None] | None = None

    def start(self) -> int:
        """Begin at the store's current position (call once, before the first ``take``)."""
        self.position = self._last_start = self.feed.feed_position()
        return self.position

    def take(self, agents: Collection[str] | None = None) -> NotificationPage:
        """The next page after ``position``: ``agents``' notifications (every agent's when
        ``None``), checked as ``NotificationDrain.take`` checks. Hand it to ``publish``."""
        if agents is None:
            batch = self.feed.notifications_after(self.position, self.limit)
            self._check(batch, None)
            page = NotificationPage.model_construct(
                notifications=batch,
                position=batch[-1].seq if batch else self.position,
                more=len(batch) >= self.limit,
            )
            self._taken = (self.position, None)
            return page
        previous = self._last_agents
        afters: dict[str, int] = {}
        for agent in agents:
            after = self._behind.get(agent, self.position)
            if previous is not None and agent not in previous:
                after = min(after, self._last_start)  # joined while the last read ran
            afters[agent] = after
        page = self.feed.notifications_of(afters, self.limit)
        self._check(page.notifications, afters)
        if page.notifications and page.position < page.notifications[-1].seq:
            raise OutboxContractError(
                f"{type(self.feed).__name__}.notifications_of gave position {page.position}"
                f" below seq {page.notifications[-1].seq} it returned (ports.ChangeFeed)"
            )
        self._taken = (self.position, afters)
        return page

    def _check(self, batch: Sequence[Notification], afters: dict[str, int] | None) -> None:
        last = 0 if afters is not None else self.position
        for n in batch:
            floor = afters.get(n.agent_id) if afters is not None else last
            if floor is None or n.seq <= max(last, floor):
                raise OutboxContractError(
                    f"{type(self.feed).__name__} returned seq {n.seq} of {n.agent_id!r} after"
                    f" {last} (position {self.position}): every entry must carry its positive"
                    " seq, in increasing order, of an agent asked for, above its position"
                    " (ports.ChangeFeed)"
                )
            last = n.seq

    def publish(self, page: NotificationPage) -> None:
        """Hand the page to this process's notifier and move past it."""
        for n in page.notifications:
            self.notifier.publish(n)
        self.published += len(page.notifications)
        taken, self._taken = self._taken, None
        if taken is None or taken[0] != self.position:
            raise RuntimeError("publish a page right after the take that read it")
        start, afters = taken
        # A full page's position is its last seq: each agent is read up to there, no further.
        self.position = max(self.position, page.position)
        self._behind = {}
        if afters is not None and page.more:
            for agent, after in afters.items():
                if max(after, page.position) < self.position:
                    self._behind[agent] = max(after, page.position)
        self._last_agents = None if afters is None else frozenset(afters)
        self._last_start = start

    def settle(self) -> int:
        """Leader: mark every notification up to ``position`` published, whoever's it is
        (each process read its own agents' up to there; idempotent, and what a failed call
        left is marked by the next one). Returns how many were marked."""
        if self.position <= self.settled:
            return 0
        through = self.position
        marked = self.feed.settle_notifications(through, self.settled)
        self.settled = through
        return marked

    def lag(self) -> int:
        """How many seqs the store has given beyond ``position`` (0: caught up)."""
        return max(0, self.feed.feed_position() - self.position)


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"


class MailDrain:
    """The delivery rules: what the store records after each attempt to send one mail."""

    def __init__(
        self,
        reader: OutboxReader,
        clock: Clock,
        on_permanent_failure: Callable[[MailEntry, str], None],
        policy: RetryPolicy | None = None,
        rng: Callable[[], float] = random.random,
        limit: int = 100,
    ) -> None:
        self.reader = reader
        self.clock = clock
        self.on_permanent_failure = on_permanent_failure
        self.policy = policy or RetryPolicy()
        self.rng = rng
        self.limit = limit

    def due(self, limit: int | None = None) -> list[MailEntry]:
        return self.reader.pending_mail(self.clock.now(), limit or self.limit)

    def settle(self, entry: MailEntry, error: BaseException | None) -> Outcome:
        """Record the attempt: ``error`` None = handed over."""
        if error is None:
            self.reader.mark_mail_sent(entry.seq)
            return Outcome.SENT
        reason = str(error) or type(error).__name__
        if isinstance(error, PermanentMailError):
            return self.fail(entry, reason)
        if not isinstance(error, TransientMailError):  # a bug or an unmapped error: keep it
            _log.error("mail transport raised %s for mail %s", type(error).__name__, entry.seq)
            reason = f"{type(error).__name__}: {error}"
        when = self.policy.next_attempt(entry, self.clock.now(), self.rng)
        if when is None:
            return self.fail(entry, f"gave up after {entry.attempts + 1} attempts: {reason}")
        self.reader.reschedule_mail(entry.seq, when, reason)
        return Outcome.RETRY

    def fail(self, entry: MailEntry, reason: str) -> Outcome:
        try:
            # The interaction first (idempotent): a crash before the mark repeats it, harmlessly.
            self.on_permanent_failure(entry, reason)
        except Exception:
            _log.exception("on_permanent_failure failed for mail %s; tried again later", entry.seq)
            self.reader.reschedule_mail(
                entry.seq, self.clock.now() + self.policy.first_delay, reason
            )
            return Outcome.RETRY
        self.reader.mark_mail_failed(entry.seq, reason)
        return Outcome.FAILED

    def run(self, transport: MailTransport) -> Counter[Outcome]:
        """Hand every due mail to a synchronous ``transport`` once; returns how many were
        sent, rescheduled and failed."""
        outcomes: Counter[Outcome] = Counter()
        for entry in self.due():
            try:
                transport.send(entry.mail)
            except Exception as exc:
                outcomes[self.settle(entry, exc)] += 1
                continue
            outcomes[self.settle(entry, None)] += 1
        return outcomes


def drain_notifications(store: OutboxReader, notifier: Notifier, limit: int = 500) -> int:
    """Publish pending notifications in sequence order; returns how many were published."""
    return NotificationDrain(store, notifier, limit).run()


def drain_mail(
    store: OutboxReader,
    transport: MailTransport,
    clock: Clock,
    on_permanent_failure: Callable[[MailEntry, str], None],
    policy: RetryPolicy | None = None,
    limit: int = 100,
) -> int:
    """Hand every due mail to ``transport`` once; returns how many were sent."""
    drain = MailDrain(store, clock, on_permanent_failure, policy, limit=limit)
    return drain.run(transport)[Outcome.SENT]
