"""What the core keeps in memory stays bounded however many lifecycles it runs (issue 12).

The router's heaps use lazy invalidation: a changed entry is left in place and dropped when it
reaches the top. Found by the soak (benchmarks/soak): heaps whose top is never taken grew by
one entry or two per lifecycle, for ever. Counts entries, never time.
"""

from __future__ import annotations

from datetime import timedelta

from interactions_core.model import EmailContent
from interactions_core.ports import Agent
from interactions_core.routing import Router, RoutingConfig
from interactions_core.service import ServiceConfig
from interactions_core.testing import Harness, inbound_email

LIFECYCLES = 400
BOUND = 100  # entries; before the fix, each of these heaps held about LIFECYCLES or more


def agent(name: str, *skills: str) -> Agent:
    return Agent(id=name, mailboxes=("support@example.com",), skills=frozenset(skills), capacity=3)


def mail(n: int) -> EmailContent:
    return inbound_email(
        sender=f"customer{n}@example.org",
        to="support@example.com",
        subject=f"Question {n}",
        text="Hello",
        message_id=f"<bounded-{n}@example.org>",
    )


def make(*agents: Agent) -> Harness:
    return Harness(
        agents=agents,
        routing=RoutingConfig(
            offer_timeout=timedelta(seconds=30),
            queue_skills={"Billing": "billing", "French": "fr"},
        ),
        config=ServiceConfig(mailbox_queues={"support@example.com": "Inbound"}),
    )


def offered_to(h: Harness, iid: str) -> str | None:
    offer = h.interaction(iid).offer
    return offer.agent_id if offer else None


def lifecycle(h: Harness, n: int, queue: str | None = None) -> str:
    """Mail in, offered by the router, Accepted and finished by whoever got it."""
    iid = h.deliver(mail(n), queue=queue)
    holder = offered_to(h, iid)
    if holder is None:
        raise AssertionError(f"mail {n} was not offered")
    assert h.execute(holder, iid, {"operationName": "Accept"}) == {"status": "ok"}
    assert h.execute(holder, iid, {"operationName": "StopProcessing"}) == {"status": "ok"}
    return holder


def heap_sizes(router: Router) -> dict[str, int]:
    sizes = {f"agents[{k}]": len(v) for k, v in router._agent_heaps.items()}
    sizes |= {f"queue[{k}]": len(v) for k, v in router._queues.items()}
    sizes["deadlines"] = len(router._deadlines)
    return sizes


def test_agent_skill_heaps_nobody_routes_from_stay_bounded() -> None:
    """Every offer and every finish re-indexes the agent under each of its skills; the heap
    of a skill no waiting mail asks for was never popped."""
    h = make(agent("alice", "billing", "fr"), agent("bob", "billing"))
    h.set_channel("alice")
    h.set_channel("bob")
    largest: dict[str, int] = {}
    for n in range(LIFECYCLES):
        lifecycle(h, n)
        for name, size in heap_sizes(h.router).items():
            largest[name] = max(largest.get(name, 0), size)
    assert largest["agents[billing]"] <= BOUND, largest
    assert largest["agents[fr]"] <= BOUND, largest
    assert max(largest.values()) <= BOUND, largest
    # The rebuilt heaps still decide as before: the longest idle agent with the skill.
    h.clock.advance(1)
    last = lifecycle(h, LIFECYCLES)
    other = "bob" if last == "alice" else "alice"
    assert lifecycle(h, LIFECYCLES + 1, queue="Billing") == other


def test_offers_answered_before_their_deadline_leave_no_deadline_entries() -> None:
    """The deadline heap kept every offer ever made until its deadline passed; with a long
    offer timeout (or a clock that does not reach it) that was every offer."""
    h = make(agent("alice"))
    h.set_channel("alice")
    largest = 0
    for n in range(LIFECYCLES):
        lifecycle(h, n)
        largest = max(largest, len(h.router._deadlines))
    assert largest <= BOUND
    # An offer still times out after the rebuilds.
    iid = h.deliver(mail(LIFECYCLES))
    assert offered_to(h, iid) == "alice"
    assert h.engine.next_deadline() == h.clock.now() + timedelta(seconds=30)
    h.tick(31)
    states = [w["state"] for w in h.notifications("alice", interaction_id=iid)]
    assert states == ["Invited", "Revoked", "Invited"]  # revoked, then offered again


def test_waiting_entries_behind_a_head_that_never_routes_are_dropped() -> None:
    """Mail for a skill nobody has waits at the head of its heap; mail offered by other means
    (an embedder's own dispatch: ``service.offer``) stopped waiting behind it, and its entries
    were only dropped once they reached the top, which they never did."""
    h = make(agent("alice"), agent("bob", "fr"))
    h.set_channel("alice")
    stuck = h.deliver(mail(0), queue="French")  # bob, the only one with "fr", is not Ready
    largest = 0
    for n in range(1, LIFECYCLES + 1):
        iid = h.deliver(mail(n), queue="French", offer_to="alice")
        assert h.execute("alice", iid, {"operationName": "Accept"}) == {"status": "ok"}
        assert h.execute("alice", iid, {"operationName": "StopProcessing"}) == {"status": "ok"}
        largest = max(largest, len(h.router._queues["fr"]))
    assert largest <= BOUND
    assert h.router.waiting_count() == 1
    # The one still waiting is offered as soon as someone who can take it is Ready.
    h.set_channel("bob")
    assert offered_to(h, stuck) == "bob"
