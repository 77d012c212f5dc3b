"""``adapters.cometd.eager``: a coroutine run at once, and a task only if it has to wait."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import anyio
import pytest

from adapters.cometd import eager


async def started_from_a_callback(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
    """``eager.start`` as the protocol calls it: from a loop callback, in no task."""
    loop = asyncio.get_running_loop()
    started: asyncio.Future[asyncio.Task[Any] | None] = loop.create_future()
    loop.call_soon(lambda: started.set_result(eager.start(loop, coro)))
    return await started


async def test_a_coroutine_that_never_waits_runs_at_once_without_a_task() -> None:
    steps: list[str] = []

    async def cycle() -> None:
        steps.append("ran")

    tasks_before = asyncio.all_tasks()
    assert eager.start(asyncio.get_running_loop(), cycle()) is None
    assert steps == ["ran"]  # before start returned, not at the loop's next turn
    assert asyncio.all_tasks() == tasks_before


async def test_one_that_waits_continues_in_a_task_from_where_it_stopped() -> None:
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[str] = loop.create_future()
    steps: list[object] = []

    async def cycle() -> str:
        steps.append(asyncio.current_task())
        steps.append(await gate)
        await asyncio.sleep(0)  # a bare yield, handed to the task too
        steps.append(asyncio.current_task())
        return "done"

    task = await started_from_a_callback(cycle())
    assert task is not None
    assert steps == [None]  # the first step ran outside any task, at once
    gate.set_result("opened")
    assert await task == "done"
    assert steps == [None, "opened", task]


async def test_an_exception_after_the_first_wait_is_the_tasks() -> None:
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()

    async def cycle() -> None:
        await gate
        raise LookupError("after the wait")

    task = eager.start(loop, cycle())
    assert task is not None
    gate.set_result(None)
    with pytest.raises(LookupError, match="after the wait"):
        await task


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits() -> None:
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()
    seen: list[str] = []

    async def cycle() -> None:
        try:
            await gate
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            seen.append("cleaned up")

    task = eager.start(loop, cycle())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled", "cleaned up"]
    assert gate.cancelled()


async def test_in_task_moves_the_rest_into_the_task_so_anyio_works() -> None:
    seen: list[object] = []

    async def cycle() -> int:
        seen.append(asyncio.current_task())
        await eager.in_task()
        seen.append(asyncio.current_task())
        # anyio's thread hop needs a current task (its cancel scope): it has one now.
        return await anyio.to_thread.run_sync(lambda: 42)

    task = await started_from_a_callback(cycle())
    assert task is not None
    assert await task == 42
    assert seen == [None, task]


async def test_in_task_moves_the_rest_even_when_started_from_a_task() -> None:
    # start() called in this test's task: the first step looks like this task's, yet the
    # rest is the new task's, so in_task must move there before anyio enters a cancel scope.
    loop = asyncio.get_running_loop()
    seen: list[object] = []

    async def cycle() -> int:
        await eager.in_task()
        seen.append(asyncio.current_task())
        return await anyio.to_thread.run_sync(lambda: 7)

    task = eager.start(loop, cycle())
    assert task is not None and seen == []
    assert await task == 7
    assert seen == [task]


async def test_in_task_inside_a_task_does_not_wait() -> None:
    async def inner() -> object:
        await eager.in_task()
        return asyncio.current_task()

    current = asyncio.current_task()
    # Already in a task (this test's): no suspension, so the same task runs on.
    assert await inner() is current
