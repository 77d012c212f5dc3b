"""Driving the ``Engine`` from asyncio: the runtime every adapter and the server share.

The Engine is synchronous and not thread-safe (the router's indexes), while SQLite serialises
writers anyway; so every call into it runs one at a time, in order (``CoreRunner``): on one
worker thread, or, on SQLite, on the event loop itself while that thread is idle. After each
call that may commit, the dispatchers are woken, and they also poll, so a lost wake-up delays
nothing by more than a poll interval.

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
import threading
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
    """Runs the Engine's calls one at a time, in order, off or on the event loop.

    By default every call runs on one worker thread (``interactions-core``): right for a store
    whose calls wait on a network (PostgreSQL), as the loop keeps serving meanwhile.

    ``inline=True`` (the server's choice on SQLite, ``adapters.server.bootstrap``) runs a call
    on the event loop itself whenever the worker thread is idle: a SQLite unit of work is tens
    of microseconds of C, and the hop to a thread and back costs more than the call, twice
    (the future's hand-over, and the GIL handed back and forth between the loop and the
    thread, each waking the other: docs/performance.md, "GIL ping-pong"). Calls that may take
    long whatever the store (``offload``: an upload, a download, the start-up's rebuild; the
    SMTP receiver's ``run_blocking`` from its own thread) still run on the worker thread; while
    one runs, an inline call waits (without holding the loop) until the thread is idle, then
    runs on the loop. One call at a time either way (the Engine is not thread-safe). Sending
    the waiting calls to the thread instead would keep a loaded server on the thread for as
    long as calls keep coming (measured: a whole 10 s benchmark round at half the rate).
    """

    def __init__(self, *, inline: bool = False) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="interactions-core"
        )
        self._wakers: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.inline = inline
        # _busy: calls handed to the worker thread and not finished. An inline call runs only
        # when it is 0, holding _lock, so no worker call can start meanwhile; otherwise it
        # waits in _waiters, each resolved (on its loop) when _busy is back to 0.
        self._lock = threading.Lock()
        self._busy = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def on_change(self, wake: Callable[[], None]) -> None:
        """``wake`` runs on the event loop after every core call."""
        self._wakers.append(wake)

    async def run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """A call that may commit: the dispatchers are woken afterwards."""
        try:
            return await self.run_quiet(fn, *args, **kwargs)
        finally:
            self._wake()

    async def offload(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``run``, always on the worker thread: for a call that may hold the loop too long
        (large data, or work proportional to the store's size)."""
        try:
            return await self._on_thread(partial(fn, *args, **kwargs))
        finally:
            self._wake()

    async def run_quiet(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """A read, or the dispatchers' own bookkeeping: wakes nobody (a dispatcher woken by
        its own calls would spin forever)."""
        if not self.inline:
            return await self._on_thread(partial(fn, *args, **kwargs))
        loop = asyncio.get_running_loop()
        self._loop = loop
        while True:
            with self._lock:
                if self._busy == 0:
                    return fn(*args, **kwargs)
                idle = loop.create_future()
                self._waiters.append((loop, idle))
            await idle  # the worker thread's calls are done: try again

    def run_blocking(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """From another (non-loop) thread: run on the core thread and wait."""
        result = self._submit(partial(fn, *args, **kwargs)).result()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            for wake in self._wakers:
                loop.call_soon_threadsafe(wake)
        return result

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)

    def _wake(self) -> None:
        for wake in self._wakers:
            wake()

    async def _on_thread(self, call: Callable[[], _T]) -> _T:
        self._loop = asyncio.get_running_loop()
        return await asyncio.wrap_future(self._submit(call))

    def _submit(self, call: Callable[[], _T]) -> concurrent.futures.Future[_T]:
        def counted() -> _T:
            try:
                return call()
            finally:
                with self._lock:
                    self._busy -= 1
                    waiters = self._waiters if self._busy == 0 else []
                    if waiters:
                        self._waiters = []
                for loop, idle in waiters:
                    with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                        loop.call_soon_threadsafe(_resolve, idle)

        with self._lock:
            self._busy += 1
            try:
                return self._executor.submit(counted)
            except BaseException:
                self._busy -= 1
                raise


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # not cancelled meanwhile
        future.set_result(None)


class NotificationDispatcher:
    """Drains the notification outbox to the notifier, in sequence order, after each commit:
    ``NotificationDrain``'s store calls through the core runner, its publishing on the loop.

    Marking a batch published and reading the next are one call. With the core on the loop
    (``CoreRunner(inline=True)``) each batch is one short call there, and the dispatcher yields
    between batches; a payload read back from the outbox is decoded only if a session gets it
    (``ports.StoredMessage``). Measured against the drain's store calls on a thread of their
    own, that thread's GIL hand-overs held the loop's own calls: 2 ms or more for about 1 % of
    operations instead of 0.2 % (docs/performance.md, "GIL ping-pong")."""

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
        """Publish everything pending (``NotificationDrain.run``, with its store calls through
        the core runner); returns how many were published."""
        total = 0
        batch = await self._core.run_quiet(self._drain.take, 0)
        while batch:
            self._drain.publish(batch)
            total += len(batch)
            self.published += len(batch)
            batch = await self._core.run_quiet(self._drain.ack_and_take, batch)
            await asyncio.sleep(0)  # an inline core ran it on the loop: let others in
        return total

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
            # Off the loop: a batch's DELETE takes milliseconds (docs/performance.md).
            count = await self._core.offload(
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
