"""Benchmark: the cost of one routing decision as the queue and the agent pool grow.

Run: ``.venv/bin/python benchmarks/core/bench_routing.py``. For 100 and 100,000 waiting
interactions and 10 and 1,000 Ready agents, it measures (medians of repeats):

* the bare decision — pick the oldest waiting interaction and the longest-idle available agent
  (heap work only), and
* a full ``route(max_offers=1)`` — the decision plus the offer's unit of work on the in-memory
  store (Invited notification, commit, index updates).

Target: grows no faster than logarithmically (100k/100 → ×(log 100k / log 100) ≈ 2.5 at most).
"""

from __future__ import annotations

import math
import statistics
import time
from datetime import timedelta

from interactions_core.model import Address, EmailContent
from interactions_core.ports import Agent
from interactions_core.routing import Router, RoutingConfig
from interactions_core.testing import Harness

DECISIONS = 300
REPEATS = 5
EMAIL = EmailContent(
    from_=Address(addr="c@example.org"), to=(Address(addr="support@example.com"),), subject="x"
)


def build(queued: int, agents: int) -> Harness:
    h = Harness(
        agents=[
            Agent(id=f"a{k:04d}", mailboxes=("support@example.com",), capacity=10_000)
            for k in range(agents)
        ],
        routing=RoutingConfig(offer_timeout=timedelta(hours=1)),
    )
    for k in range(agents):
        h.router.set_channel_state(f"a{k:04d}", "email", {"operationName": "Ready"})
        h.clock.advance(0.001)
    for _ in range(queued):
        h.service.receive(EMAIL, mailbox="support@example.com")
    return h


def bare_decision_us(router: Router) -> float:
    skill = ""
    t = time.perf_counter()
    for _ in range(DECISIONS):
        iid = router._head(skill)
        assert iid is not None
        router._pick_agent(skill, (), None)
    return (time.perf_counter() - t) / DECISIONS * 1e6


def full_route_us(h: Harness, batch: int = 50) -> float:
    """Offers in batches; between batches (untimed) the queue is topped up to its size."""
    spent = 0.0
    for _ in range(DECISIONS // batch):
        t = time.perf_counter()
        for _ in range(batch):
            assert h.router.route(max_offers=1) == 1
        spent += time.perf_counter() - t
        for _ in range(batch):
            h.service.receive(EMAIL, mailbox="support@example.com")
    return spent / DECISIONS * 1e6


def main() -> None:
    results: dict[tuple[int, int], tuple[float, float]] = {}
    for queued in (100, 100_000):
        for agents in (10, 1_000):
            h = build(queued, agents)
            bare = statistics.median(bare_decision_us(h.router) for _ in range(REPEATS))
            full = statistics.median(full_route_us(h) for _ in range(REPEATS))
            results[(queued, agents)] = (bare, full)
            print(
                f"queued {queued:>7,}  agents {agents:>5,}: decision {bare:7.2f} µs   "
                f"route+offer {full:7.2f} µs"
            )
    bound = math.log(100_000) / math.log(100)
    for agents in (10, 1_000):
        small, large = results[(100, agents)], results[(100_000, agents)]
        print(
            f"agents {agents:>5,}: 100k/100 queued: decision ×{large[0] / small[0]:.2f}, "
            f"route+offer ×{large[1] / small[1]:.2f}  (log bound ×{bound:.2f})"
        )
    agent_bound = math.log(1000) / math.log(10)
    for queued in (100, 100_000):
        small, large = results[(queued, 10)], results[(queued, 1_000)]
        print(
            f"queued {queued:>7,}: 1000/10 agents: decision ×{large[0] / small[0]:.2f}, "
            f"route+offer ×{large[1] / small[1]:.2f}  (log bound ×{agent_bound:.2f})"
        )


if __name__ == "__main__":
    main()
