"""CoreRunner: one call at a time, in order, on the loop (inline) or on its worker thread."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from adapters.runtime import CoreRunner


@pytest.mark.parametrize("inline", [False, True])
def test_a_call_runs_on_the_loop_only_when_inline(inline: bool) -> None:
    core = CoreRunner(inline=inline)

    async def main() -> tuple[int, int, int]:
        loop_thread = threading.get_ident()
        ran = await core.run_quiet(threading.get_ident)
        offloaded = await core.offload(threading.get_ident)
        return loop_thread, ran, offloaded

    try:
        loop_thread, ran, offloaded = asyncio.run(main())
    finally:
        core.shutdown()
    assert (ran == loop_thread) is inline
    assert offloaded != loop_thread  # offload: always the worker thread


def test_wakers_run_after_calls_that_may_commit_only() -> None:
    core = CoreRunner(inline=True)
    woken: list[str] = []
    core.on_change(lambda: woken.append("woken"))

    async def main() -> None:
        await core.run_quiet(lambda: None)
        assert woken == []
        await core.run(lambda: None)
        assert woken == ["woken"]
        await core.offload(lambda: None)
        assert woken == ["woken", "woken"]
        with pytest.raises(ZeroDivisionError):
            await core.run(lambda: 1 // 0)
        assert len(woken) == 3  # woken whatever the call did

    try:
        asyncio.run(main())
    finally:
        core.shutdown()


def test_inline_calls_wait_for_an_offloaded_call_then_run_on_the_loop() -> None:
    """While a call runs on the worker thread, a call made inline must not run beside it: it
    waits, without holding the loop, and runs on the loop once the thread is idle."""
    core = CoreRunner(inline=True)
    release = threading.Event()
    order: list[str] = []

    def slow() -> None:
        release.wait(10)
        order.append("offloaded")

    async def main() -> None:
        loop_thread = threading.get_ident()
        first = asyncio.ensure_future(core.offload(slow))
        await asyncio.sleep(0)  # the offloaded call is on the thread, waiting
        threads: list[int] = []

        def quick(n: int) -> None:
            threads.append(threading.get_ident())
            order.append(f"quick {n}")

        calls = [asyncio.ensure_future(core.run_quiet(quick, n)) for n in range(3)]
        await asyncio.sleep(0.05)
        assert order == []  # nothing ran beside the offloaded call
        release.set()
        await asyncio.gather(first, *calls)
        assert order == ["offloaded", "quick 0", "quick 1", "quick 2"]
        assert threads == [loop_thread] * 3
        # The thread is idle again: the next call runs inline.
        assert await core.run_quiet(threading.get_ident) == loop_thread

    try:
        asyncio.run(main())
    finally:
        core.shutdown()


FOREIGN_CALLS = 500


def test_calls_from_another_thread_never_overlap_inline_calls() -> None:
    """The SMTP receiver calls ``run_blocking`` from its own thread while operations run
    inline on the loop: at no moment may two calls run at once (the Engine is not
    thread-safe). Counted over hundreds of interleavings; the GIL's switch interval is cut
    for the test (from 5 ms to 0.1 ms), so that the threads hand it over at many more points
    and each foreign call does not wait out whole intervals (it took 260 s with 2,000 calls
    at the default)."""
    core = CoreRunner(inline=True)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    running = 0
    most = 0
    calls = 0
    guard = threading.Lock()

    def call() -> None:
        nonlocal running, most, calls
        with guard:
            running += 1
            most = max(most, running)
            calls += 1
        for _ in range(200):  # a little work, so that overlaps would be seen
            pass
        with guard:
            running -= 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = threading.Event()

        def other_thread() -> None:
            for _ in range(FOREIGN_CALLS):
                core.run_blocking(call)
            done.set()

        worker = threading.Thread(target=other_thread)
        worker.start()
        inline = 0
        while not done.is_set():
            await core.run_quiet(call)
            inline += 1
            if inline % 50 == 0:
                await asyncio.sleep(0)
        await loop.run_in_executor(None, worker.join)
        assert inline > 0

    try:
        asyncio.run(main())
    finally:
        core.shutdown()
        sys.setswitchinterval(interval)
    assert most == 1
    assert calls > FOREIGN_CALLS


def test_a_loaded_runner_does_not_stay_on_its_thread() -> None:
    """32 callers in a loop, as a loaded server's requests are, while one call is offloaded:
    only that call runs on the worker thread; every other one runs on the loop (callers that
    came while it ran were not sent to the thread, where the next ones would queue behind
    them for as long as the load lasts)."""
    core = CoreRunner(inline=True)
    release = threading.Event()
    on_thread = 0
    done = 0

    def call() -> None:
        nonlocal on_thread, done
        if threading.current_thread() is not threading.main_thread():
            on_thread += 1
        done += 1

    async def main() -> None:
        stop = asyncio.Event()

        async def caller() -> None:
            while not stop.is_set():
                await core.run_quiet(call)
                await asyncio.sleep(0)

        callers = [asyncio.ensure_future(caller()) for _ in range(32)]
        await asyncio.sleep(0.01)
        offloaded = asyncio.ensure_future(core.offload(lambda: release.wait(10)))
        await asyncio.sleep(0.05)
        release.set()
        await offloaded
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*callers)

    try:
        asyncio.run(main())
    finally:
        core.shutdown()
    assert done > 100
    assert on_thread == 0  # the offloaded call is a lambda, not counted
