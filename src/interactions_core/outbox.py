"""Draining the outbox after commit: notifications to the notifier, mail to the transport.

These are the synchronous drains the in-memory harness and simple embeddings use; the server's
async dispatchers (``adapters``) follow the same rules: an entry is marked done only after it
was handed over, a transient mail failure is rescheduled with exponential backoff and jitter up
to a maximum age, a permanent one fails the outbound interaction and tells its agent.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .ports import (
    Clock,
    MailEntry,
    MailTransport,
    Notifier,
    OutboxReader,
    PermanentMailError,
    TransientMailError,
)


@dataclass(frozen=True)
class RetryPolicy:
    first_delay: timedelta = timedelta(seconds=5)
    max_delay: timedelta = timedelta(minutes=15)
    max_age: timedelta = timedelta(days=2)
    jitter: float = 0.2  # +/- this fraction, so a relay outage does not end in a stampede

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


def drain_notifications(store: OutboxReader, notifier: Notifier, limit: int = 500) -> int:
    """Publish pending notifications in sequence order; returns how many were published."""
    total = 0
    while True:
        batch = store.pending_notifications(limit=limit)
        if not batch:
            return total
        for notification in batch:
            notifier.publish(notification)
        store.mark_notifications_done([n.seq for n in batch])
        total += len(batch)


def drain_mail(
    store: OutboxReader,
    transport: MailTransport,
    clock: Clock,
    on_permanent_failure: Callable[[MailEntry, str], None],
    policy: RetryPolicy | None = None,
    limit: int = 100,
) -> int:
    """Hand every due mail to ``transport`` once; returns how many were sent."""
    policy = policy or RetryPolicy()
    sent = 0
    for entry in store.pending_mail(due_before=clock.now(), limit=limit):
        try:
            transport.send(entry.mail)
        except TransientMailError as exc:
            now = clock.now()
            when = policy.next_attempt(entry, now)
            if when is None:
                reason = f"gave up after {entry.attempts + 1} attempts: {exc}"
                on_permanent_failure(entry, reason)
                store.mark_mail_failed(entry.seq, reason)
            else:
                store.reschedule_mail(entry.seq, when, str(exc))
            continue
        except PermanentMailError as exc:
            # Interaction first (idempotent): a crash in between retries, never loses the failure.
            on_permanent_failure(entry, str(exc))
            store.mark_mail_failed(entry.seq, str(exc))
            continue
        store.mark_mail_sent(entry.seq)
        sent += 1
    return sent
