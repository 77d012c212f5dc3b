"""Benchmark: the in-memory lifecycle per operation vs one bare ``transitions`` trigger.

Run: ``.venv/bin/python benchmarks/core/bench_lifecycle.py``. Prints, in one run:

* the bare cost of one trigger on the shared machine (the baseline);
* the cost of each operation of invite → Accept → ReplyAll (quoted) → Send → StopProcessing
  through the real service on the in-memory ports (unit of work, lifecycle, composition,
  outbox, notification), and its ratio to the baseline (target: ≤ 5×);
* memory per live interaction with 1k and with 100k interactions (target: flat).

Between phases the outbox is drained (what the notification dispatcher does in a server) and
garbage is collected, outside the timed loops; the collector stays on while timing. Medians of
several repeats; machines are noisy, so read the ratios.
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable

from interactions_core import lifecycle
from interactions_core.compose import compose_reply
from interactions_core.lifecycle import MACHINE, State
from interactions_core.model import Address
from interactions_core.operations import Accept, Operation, ReplyAll, Send, StopProcessing
from interactions_core.ports import Agent
from interactions_core.service import InteractionService
from interactions_core.testing import (
    InMemoryAgentDirectory,
    InMemoryAttachmentStore,
    InMemoryStore,
    ManualClock,
    SequentialIds,
    inbound_email,
)

AGENT = Agent(id="alice", addresses=("alice@agents.example",), mailboxes=("support@example.com",))
EMAIL = inbound_email(
    sender='"Cee Customer" <customer@example.org>',
    to="support@example.com",
    cc="colleague@example.org",
    subject="Re: Order 42",
    text="Where is my order?\n" * 20,
    message_id="<orig@example.org>",
)
REPEATS = 7


def service() -> InteractionService:
    clock = ManualClock()
    return InteractionService(
        InMemoryStore(clock),
        InMemoryAgentDirectory([AGENT]),
        InMemoryAttachmentStore(),
        clock,
        SequentialIds(),
    )


def bare_trigger_us(n: int = 20000) -> float:
    class Holder:
        __slots__ = ("state",)

    event = MACHINE.events["Accept"]
    h = Holder()
    runs = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(n):
            h.state = State.INVITED
            event.trigger(h)
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def _per_op(
    svc: InteractionService, ids: list[str], make: Callable[[], Operation]
) -> tuple[float, list[str]]:
    created: list[str] = []
    t = time.perf_counter()
    for iid in ids:
        new = svc.execute("alice", iid, make()).reply_interaction_id
        if new:
            created.append(new)
    return (time.perf_counter() - t) / len(ids) * 1e6, created


def _drained(svc: InteractionService) -> None:
    """What the dispatchers do between operations in a server, done outside the timing."""
    svc.store.mark_notifications_done(
        [x.seq for x in svc.store.pending_notifications(limit=1 << 30)]
    )
    for entry in svc.store.pending_mail(svc.clock.now(), limit=1 << 30):
        svc.store.mark_mail_sent(entry.seq)
    gc.collect()


def lifecycle_us(n: int = 2000) -> dict[str, float]:
    steps: dict[str, list[float]] = {
        k: [] for k in ("invite", "Accept", "ReplyAll", "Send", "StopProcessing")
    }
    for _ in range(REPEATS):
        gc.collect()
        svc = service()
        ids = []
        t0 = time.perf_counter()
        for _ in range(n):
            i = svc.receive(EMAIL, mailbox="support@example.com")
            svc.offer(i.id, "alice")
            ids.append(i.id)
        steps["invite"].append((time.perf_counter() - t0) / n * 1e6)
        _drained(svc)
        us, _ = _per_op(svc, ids, Accept)
        steps["Accept"].append(us)
        _drained(svc)
        us, drafts = _per_op(svc, ids, ReplyAll)
        steps["ReplyAll"].append(us)
        _drained(svc)
        us, _ = _per_op(svc, drafts, Send)
        steps["Send"].append(us)
        _drained(svc)
        us, _ = _per_op(svc, ids, StopProcessing)
        steps["StopProcessing"].append(us)
    return {k: statistics.median(v) for k, v in steps.items()}


def compose_reply_all_us(n: int = 20000) -> float:
    """ReplyAll's composition alone (recipients, subject, threading, text and HTML quote)."""
    original = EMAIL.model_copy(update={"date": ManualClock().now()})
    mailbox = Address(addr="support@example.com")
    own = frozenset({"alice@agents.example", "support@example.com"})
    runs = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(n):
            compose_reply(original, mailbox=mailbox, own=own, reply_all=True, quote=True)
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def memory_per_interaction(n: int) -> float:
    gc.collect()
    svc = service()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(n):
        i = svc.receive(EMAIL, mailbox="support@example.com")
        svc.offer(i.id, "alice")
        svc.execute("alice", i.id, Accept())
    # Drop the outbox (the dispatcher would have drained it) to count live interactions only.
    svc.store.mark_notifications_done(
        [x.seq for x in svc.store.pending_notifications(limit=10 * n)]
    )
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / n


def main() -> None:
    bare = bare_trigger_us()
    print(f"bare transitions trigger (shared machine): {bare:.2f} µs  [baseline]")
    for name, us in lifecycle_us().items():
        label = "invite (receive + offer)" if name == "invite" else name
        print(f"{label:>24}: {us:8.2f} µs/op   {us / bare:5.2f}× bare trigger")
    composed = compose_reply_all_us()
    print(f"{'ReplyAll composition alone':>24}: {composed:8.2f} µs      {composed / bare:5.2f}×")
    small = memory_per_interaction(1_000)
    large = memory_per_interaction(100_000)
    print(f"memory per live interaction: 1k: {small / 1024:.2f} KiB, 100k: {large / 1024:.2f} KiB")
    print(f"ratio 100k/1k: {large / small:.2f}   models on the machine: {len(MACHINE.models)}")
    print(f"capability lookups are cached: {lifecycle.DEFAULT.capabilities.cache_info()}")


if __name__ == "__main__":
    main()
