"""Run a coroutine's first step at once, and make it a task only if it has to wait.

Most long-poll cycles never wait: a ``/meta/connect`` of a known session is answered, or held,
by ``BayeuxServer.process`` without one ``await`` that suspends. Making each of them a task
costs the task and a turn of the event loop before its first step (and the reply one turn
later than the request): a tenth of the CPU of a cycle at 100 subscribers. Python 3.12 has
``asyncio.eager_task_factory`` for this; 3.11, which this library supports, does not.

``start`` runs the coroutine until its first suspension. Done by then: no task at all. Else the
rest runs in a task that resumes it from where it stopped, waiting on what it was waiting on.

The first step runs in no task of its own (outside any, from a protocol's callback), so code
that needs one (anyio's thread hops and cancel scopes, ``asyncio.timeout``) must first
``await in_task()``, which suspends once during that first step: from then on the coroutine
runs inside the task ``start`` made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from contextvars import ContextVar
from typing import Any, TypeVar

_T = TypeVar("_T")


def start(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, _T]
) -> asyncio.Task[_T] | None:
    """Run ``coro`` to its first suspension; ``None`` if it finished (its result is dropped,
    and an exception it raised in that step propagates from here: it should handle its own),
    else the task running the rest."""
    token = _first_step.set(True)
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    finally:
        _first_step.reset(token)
    return loop.create_task(_resumed(coro, waiting))


_first_step: ContextVar[bool] = ContextVar("eager_first_step", default=False)
"""True while ``start`` runs a coroutine's first step: then the coroutine is in no task of
its own, even when ``start`` was called from one (whose task it would otherwise look like)."""


async def in_task() -> None:
    """Suspend once if in the first step of ``start`` (or in no task at all), so that what
    follows runs in the task ``start`` makes; nothing otherwise."""
    if _first_step.get() or asyncio.current_task() is None:
        turn = asyncio.get_running_loop().create_future()
        turn.get_loop().call_soon(_resolve, turn)
        await turn


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _resumed(coro: Coroutine[Any, Any, _T], waiting: Any) -> _T:
    result: _T = await _Resume(coro, waiting)
    return result


class _Resume:
    """Awaitable that hands a started coroutine's suspensions to the task awaiting it: it
    yields what the coroutine yielded (a future the task then waits on) and passes back what
    the task sends or throws (a cancellation included), as ``yield from coro`` would had the
    task started it."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, waiting = self._coro, self._waiting
        self._waiting = None
        while True:
            try:
                sent = yield waiting
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # what the task throws in: CancelledError
                try:
                    waiting = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting = coro.send(sent)
                except StopIteration as stop:
                    return stop.value
