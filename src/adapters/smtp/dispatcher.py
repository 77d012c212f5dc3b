"""The mail outbox dispatcher: hands due mail to the transport after commit, with retries.

The delivery rules are the core's, written once in ``interactions_core.outbox.MailDrain``
(``settle`` records each attempt); this module adds only scheduling and concurrency:

* an entry is marked sent right after the relay's 250 (``mark_mail_sent``);
* a transient failure is rescheduled with ``RetryPolicy`` (exponential backoff, jitter) until
  the mail is ``max_age`` old, then it fails;
* a permanent failure calls ``on_permanent_failure(entry, reason)`` first (the composition root
  passes ``service.mail_failed``: the draft goes back to its agent as ``Failed``, idempotent),
  then marks the entry failed - a crash in between repeats the idempotent call, never loses it;
* nothing is dropped: an unexpected exception from the transport counts as transient.

Scheduling: one task per process and store. ``wake()`` (called by the composition root after
each commit, from any thread) makes it look for due mail at once; a poll every
``poll_interval`` seconds finds the rest (retries coming due, a missed wake-up, mail left by a
previous run - a restart resumes unsent mail, it is all in the store). Up to
``transport.pool_size`` mails are in flight at once, never the same entry twice.

The crash window: a crash after the relay's 250 and before ``mark_mail_sent`` committed sends
that one mail again after the restart - same bytes, same Message-ID, so receivers can dedupe.
There is no way around it without a two-phase commit with the relay.

Store calls are synchronous (``sqlite3``: a commit may wait on the disk or on another process's
write lock, up to ``busy_timeout``), so by default they run in a worker thread
(``asyncio.to_thread``) and never stall the event loop, which also runs the SMTP receiver and
the CometD server. An in-memory store may pass ``store_in_thread=False``: its calls take
microseconds under a ``threading.Lock``.

One dispatcher per store: it does not claim entries in the store, so two processes draining
the same outbox would both send a mail (the scale-out design claims entries first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from interactions_core.errors import Unavailable
from interactions_core.outbox import MailDrain, Outcome, RetryPolicy
from interactions_core.ports import (
    Clock,
    MailEntry,
    OutboxReader,
    PermanentMailError,
    TransientMailError,
)

from ..eventlog import event
from .base import AsyncMailTransport

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass
class DispatchStats:
    """Counters since ``start`` (for logs, health checks and tests)."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    partially_refused: int = 0
    errors: int = 0  # store or callback errors (logged; the entry is tried again)


def _mail_out(level: int, what: str, entry: MailEntry, **fields: Any) -> None:
    """One line per delivery attempt: ``mail sent`` (INFO), ``mail retry`` (INFO: a transient
    failure, tried again later), ``mail failed`` (WARNING: permanent, the agent is told), with
    the mail's Message-ID, as ``adapters.eventlog.event`` writes it."""
    event(
        log,
        level,
        what,
        {
            "message_id": entry.mail.message_id,
            "interaction": entry.mail.interaction_id,
            "attempt": entry.attempts + 1,
            **fields,
        },
    )


def _log_refused(entry: MailEntry, refused: Mapping[str, str]) -> None:
    log.warning(
        "mail %s (interaction %s) delivered, but the relay refused: %s",
        entry.mail.message_id,
        entry.mail.interaction_id,
        "; ".join(f"<{a}>: {r}" for a, r in refused.items()),
    )


class MailDispatcher:
    def __init__(
        self,
        store: OutboxReader,
        transport: AsyncMailTransport,
        clock: Clock,
        on_permanent_failure: Callable[[MailEntry, str], None],
        policy: RetryPolicy | None = None,
        *,
        poll_interval: float = 1.0,
        on_recipients_refused: Callable[[MailEntry, Mapping[str, str]], None] = _log_refused,
        store_in_thread: bool = True,
        rng: Callable[[], float] = random.random,
    ) -> None:
        """``on_recipients_refused``: the mail went to some recipients and the relay refused
        the others; it is done (re-sending would duplicate it for the rest). Default: a
        warning in the log."""
        if poll_interval <= 0:
            raise ValueError("poll_interval must be > 0")
        self.store = store
        self.transport = transport
        self.clock = clock
        self.on_permanent_failure = on_permanent_failure
        self.on_recipients_refused = on_recipients_refused
        self.policy = policy or RetryPolicy()
        self.poll_interval = poll_interval
        self.store_in_thread = store_in_thread
        self.rng = rng
        self.stats = DispatchStats()
        self.rules = MailDrain(store, clock, on_permanent_failure, self.policy, rng)
        self._capacity = max(1, transport.pool_size)
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._unmarked: set[int] = set()  # handed over, but mark_mail_sent failed: never resend
        self._more = False  # the last read filled every free slot: look again when one frees
        self._wake_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self._store_down = False  # the last read raised Unavailable (logged once)
        self._fill_lock = asyncio.Lock()  # one read at a time: no entry started twice

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the dispatcher is already running")
        self._loop = asyncio.get_running_loop()
        self._wake_event = asyncio.Event()
        self._stopping = False
        self._runner = asyncio.create_task(self._run(), name="mail-dispatcher")
        self._wake_event.set()  # look at once: mail may be left from the previous run

    async def stop(self, timeout: float | None = 30.0) -> None:
        """Stop looking for mail and let the sends in flight finish (up to ``timeout``
        seconds; then they are cancelled and stay in the outbox for the next run)."""
        if self._runner is None:
            return
        self._stopping = True
        self._set_wake()
        await self._runner
        self._runner = None
        tasks = list(self._inflight.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._unmarked:
            await self._retry_marks()

    def wake(self) -> None:
        """Look for due mail now. Safe from any thread (e.g. after a commit in a worker)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._set_wake()
        else:
            loop.call_soon_threadsafe(self._set_wake)

    async def drain_once(self) -> int:
        """Start every due mail the free slots allow and wait for them; returns how many were
        started. For embeddings without the background task, and for tests."""
        started = await self._fill()
        while self._inflight:
            await asyncio.wait(list(self._inflight.values()))
        return started

    # ------------------------------------------------------------------ the loop

    def _set_wake(self) -> None:
        if self._wake_event is not None:
            self._wake_event.set()

    async def _run(self) -> None:
        assert self._wake_event is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_event.wait(), self.poll_interval)
            self._wake_event.clear()
            if self._stopping:
                return
            try:
                await self._fill()
            except Unavailable as exc:
                # The database is down (PostgreSQL lost, SQLite locked): one warning when it
                # goes and one when it is back, not a traceback every poll while it lasts.
                self.stats.errors += 1
                if not self._store_down:
                    log.warning("mail dispatcher: %s; retrying until the database is back", exc)
                self._store_down = True
            except Exception:
                self.stats.errors += 1
                log.exception("mail dispatcher: reading the outbox failed; next poll retries")
            else:
                if self._store_down:
                    log.warning("mail dispatcher: the database is back; catching up")
                    self._store_down = False

    async def _fill(self) -> int:
        async with self._fill_lock:
            return await self._fill_locked()

    async def _fill_locked(self) -> int:
        if self._unmarked:
            await self._retry_marks()
        free = self._capacity - len(self._inflight)
        if free <= 0:
            self._more = True
            return 0
        claimed = set(self._inflight) | self._unmarked
        limit = free + len(claimed)
        entries = await self._store(self.store.pending_mail, self.clock.now(), limit)
        started = 0
        for entry in entries:
            if entry.seq in claimed:
                continue
            if started == free:
                break
            self._inflight[entry.seq] = asyncio.create_task(
                self._deliver(entry), name=f"mail-{entry.seq}"
            )
            started += 1
        self._more = len(entries) >= limit
        return started

    async def _store(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self.store_in_thread:
            return await asyncio.to_thread(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    # ------------------------------------------------------------------ one entry

    async def _deliver(self, entry: MailEntry) -> None:
        try:
            try:
                report = await self.transport.send(entry.mail)
            except Exception as exc:  # MailDrain.settle: permanent, transient or unexpected
                if not isinstance(exc, PermanentMailError | TransientMailError):
                    log.exception("mail transport raised an unexpected error for %s", entry.seq)
                outcome = await self._store(self.rules.settle, entry, exc)
                if outcome is Outcome.FAILED:
                    self.stats.failed += 1
                    _mail_out(logging.WARNING, "mail failed", entry, reason=str(exc))
                else:
                    self.stats.retried += 1
                    _mail_out(logging.INFO, "mail retry", entry, reason=str(exc))
                return
            await self._mark_sent(entry)
            self.stats.sent += 1
            _mail_out(
                logging.INFO,
                "mail sent",
                entry,
                recipients=len(report.accepted),
                refused=len(report.refused) or None,
                response=report.response or None,
            )
            if report.refused:
                self.stats.partially_refused += 1
                try:
                    await self._store(self.on_recipients_refused, entry, report.refused)
                except Exception:
                    self.stats.errors += 1
                    log.exception("on_recipients_refused failed for mail %s", entry.seq)
        except Exception:
            self.stats.errors += 1
            log.exception("mail dispatcher: bookkeeping for mail %s failed", entry.seq)
        finally:
            self._inflight.pop(entry.seq, None)
            if self._more:
                self._set_wake()

    async def _mark_sent(self, entry: MailEntry) -> None:
        try:
            await self._store(self.rules.settle, entry, None)
        except Exception:
            # Handed over: keep it out of every later read in this process and mark it again.
            self._unmarked.add(entry.seq)
            raise

    async def _retry_marks(self) -> None:
        for seq in sorted(self._unmarked):
            try:
                await self._store(self.store.mark_mail_sent, seq)
            except Exception:
                self.stats.errors += 1
                log.exception("marking mail %s sent failed again", seq)
                return
            self._unmarked.discard(seq)
