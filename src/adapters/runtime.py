"""Driving the ``Engine`` from asyncio: the runtime every adapter and the server share.

The Engine is synchronous and not thread-safe (the router's indexes), while SQLite serialises
writers anyway; so every call into it runs on **one worker thread** (``CoreRunner``), in order,
off the event loop. After each call that may commit, the dispatchers are woken, and they also
poll, so a lost wake-up delays nothing by more than a poll interval.

This module sits beside the adapters, not inside one: the HTTP API, the SMTP receiver, the
CometD server and the composition root (``adapters.server``) all use it without depending on
each other. The rules it applies are the core's (``interactions_core.outbox``); it only adds
scheduling.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Collection
from datetime import timedelta
from functools import partial
from typing import ParamSpec, TypeVar

from interactions_core.engine import Engine
from interactions_core.errors import Unavailable
from interactions_core.outbox import NotificationDrain, NotificationTail

_P = ParamSpec("_P")
_T = TypeVar("_T")
_log = logging.getLogger(__name__)


class _Failures:
    """How a background loop reports its failures. The loops keep running whatever happens
    and catch up on their next round; a database that is down (``Unavailable``: PostgreSQL
    lost, SQLite locked by another process) is one warning when it starts and one when it
    ends, not a traceback every poll for as long as it lasts. Anything else is logged with
    its traceback each time: it is a bug, not an outage."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down = False

    def failed(self, exc: Exception) -> None:
        if isinstance(exc, Unavailable):
            if not self.down:
                _log.warning("%s: %s; retrying until the database is back", self.what, exc)
            self.down = True
        else:
            _log.error("%s failed; retrying", self.what, exc_info=exc)

    def succeeded(self) -> None:
        if self.down:
            _log.warning("%s: the database is back; caught up", self.what)
            self.down = False


class CoreRunner:
    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="interactions-core"
        )
        self._wakers: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def on_change(self, wake: Callable[[], None]) -> None:
        """``wake`` runs on the event loop after every core call."""
        self._wakers.append(wake)

    async def run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """A call that may commit: the dispatchers are woken afterwards."""
        try:
            return await self.run_quiet(fn, *args, **kwargs)
        finally:
            for wake in self._wakers:
                wake()

    async def run_quiet(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """A read, or the dispatchers' own bookkeeping: wakes nobody (a dispatcher woken by
        its own calls would spin forever)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    def run_blocking(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """From another (non-loop) thread: run on the core thread and wait."""
        result = self._executor.submit(partial(fn, *args, **kwargs)).result()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            for wake in self._wakers:
                loop.call_soon_threadsafe(wake)
        return result

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


class NotificationDispatcher:
    """Drains the notification outbox to the notifier, in sequence order, after each commit:
    ``NotificationDrain``'s store calls on the core thread, its publishing on the loop."""

    def __init__(self, core: CoreRunner, drain: NotificationDrain, poll: float = 1.0) -> None:
        self._core = core
        self._drain = drain
        self._poll = poll
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failures = _Failures("notification dispatch")
        self.published = 0

    def wake(self) -> None:
        self._event.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notification-dispatcher")

    async def stop(self) -> None:
        self._stopping = True
        self._event.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.drain_once()  # what was committed before stop is published

    async def drain_once(self) -> int:
        """Publish everything pending (``NotificationDrain.run``, with its store calls on the
        core thread); returns how many were published."""
        total, last = 0, 0
        while True:
            batch = await self._core.run_quiet(self._drain.take, last)
            if not batch:
                return total
            self._drain.publish(batch)
            await self._core.run_quiet(self._drain.ack, batch)
            total += len(batch)
            last = batch[-1].seq
            self.published += len(batch)

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), self._poll)
            self._event.clear()
            if self._stopping:
                return
            try:
                await self.drain_once()
            except Exception as exc:
                self._failures.failed(exc)
                await asyncio.sleep(self._poll)
            else:
                self._failures.succeeded()


class ClusterTail:
    """One process among several on a shared store: delivers every committed notification of
    the agents with a session here to those sessions (``NotificationTail``), and, while this
    process leads, marks everything up to its position published and follows the other
    processes' commits into the router (``Engine.sync``).

    It reads when woken (this process committed; ``wake`` is also what a LISTEN/NOTIFY
    listener calls from its thread, via ``wake_threadsafe``) and every ``poll`` seconds
    otherwise: a lost wake-up delays a delivery by one poll at most, and loses nothing (the
    tail reads from its position, in commit order). Its store reads run on a thread of their
    own, not the core thread: operations do not wait behind them, nor they behind operations.
    ``on_progress(position, lag)`` reports after every read (the node status)."""

    def __init__(
        self,
        core: CoreRunner,
        engine: Engine,
        tail: NotificationTail,
        poll: float = 1.0,
        on_progress: Callable[[int, int], None] | None = None,
        audience: Callable[[], Collection[str]] | None = None,
    ) -> None:
        """``audience``: the agents this process delivers to (those with a session here),
        called on the event loop before each read; ``None``: every agent's notifications."""
        self._core = core
        self._engine = engine
        self._tail = tail
        self._audience = audience
        self._poll = poll
        self._on_progress = on_progress
        self._reader = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="interactions-tail"
        )
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._measured_at = float("-inf")
        self._lag = 0
        self._failures = _Failures("notification tail")
        self.published = 0

    @property
    def position(self) -> int:
        return self._tail.position

    def wake(self) -> None:
        """On the event loop."""
        self._event.set()

    def wake_threadsafe(self) -> None:
        """From any thread (a listener's)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._event.set)

    async def _read(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, partial(fn, *args, **kwargs))

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._read(self._tail.start)
        self._task = asyncio.create_task(self._run(), name="notification-tail")

    async def stop(self) -> None:
        self._stopping = True
        self._event.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.read_once()  # what was committed before stop reaches this process's clients
        self._reader.shutdown(wait=True)

    async def read_once(self) -> int:
        """Deliver everything committed after the position (of this process's agents, when
        it has an ``audience``); while leading, mark it published up to the position and
        follow the change feed into the router. Returns how many were delivered."""
        total = 0
        leading = self._engine.leading
        while True:
            # The audience is taken here, on the loop, where the sessions live.
            agents = None if self._audience is None else frozenset(self._audience())
            page = await self._read(self._tail.take, agents)
            self._tail.publish(page)
            total += len(page.notifications)
            self.published += len(page.notifications)
            if not page.more:
                break
        if leading:
            await self._read(self._tail.settle)  # a failure is retried by the next one
            synced = await self._core.run_quiet(self._engine.sync)
            if synced.offered:
                self._event.set()  # its offers committed notifications: read them next round
        if self._on_progress is not None:
            now = time.monotonic()
            if now - self._measured_at >= 1.0:  # the lag costs a read: once a second at most
                self._measured_at = now
                self._lag = await self._read(self._tail.lag)
            self._on_progress(self._tail.position, self._lag)
        return total

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), self._poll)
            self._event.clear()
            if self._stopping:
                return
            try:
                await self.read_once()
            except Exception as exc:
                self._failures.failed(exc)
                await asyncio.sleep(self._poll)
            else:
                self._failures.succeeded()


class RouterTimer:
    """Runs ``Engine.tick`` (offer timeouts, routing) every ``interval`` seconds."""

    def __init__(self, core: CoreRunner, engine: Engine, interval: float = 1.0) -> None:
        self._core = core
        self._engine = engine
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._failures = _Failures("router tick")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="router-timer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._core.run(self._engine.tick)
            except Exception as exc:
                self._failures.failed(exc)
            else:
                self._failures.succeeded()


class NotificationPurger:
    """Deletes published notifications older than ``retention`` every ``interval`` seconds
    (``Engine.purge_notifications``), ``batch`` at a time: each batch is one short transaction
    on the core thread, so operations interleave with a large purge."""

    def __init__(
        self,
        core: CoreRunner,
        engine: Engine,
        retention: timedelta,
        interval: float | None = None,
        batch: int = 1000,
        active: Callable[[], bool] | None = None,
    ) -> None:
        """``active``: whether this process purges now (in a cluster: the leader alone)."""
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self._core = core
        self._engine = engine
        self._retention = retention
        # A row lives from retention to retention + interval: a fifth of it, within [1, 60] s.
        self.interval = (
            interval if interval is not None else min(60.0, max(1.0, retention.total_seconds() / 5))
        )
        self._batch = batch
        self._active = active
        self._task: asyncio.Task[None] | None = None
        self._failures = _Failures("notification purge")
        self.purged = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notification-purger")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def purge_once(self) -> int:
        """Purge, batch by batch, until a batch is not full; returns how many were deleted."""
        total = 0
        while True:
            count = await self._core.run_quiet(
                self._engine.purge_notifications, self._retention, self._batch
            )
            total += count
            self.purged += count
            if count < self._batch:
                return total

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self._active is not None and not self._active():
                continue
            try:
                await self.purge_once()
            except Exception as exc:
                self._failures.failed(exc)
            else:
                self._failures.succeeded()
