"""Randomized simulation: 1,000 mails, 20 agents, every kind of move; nothing lost or doubled.

Seeded, so a failure reproduces. At every step no interaction is held (owned or offered) by two
agents and the router's per-agent load equals what the store says; at the end every mail is
accounted for exactly once: done, waiting in a queue, in a workbin, owned or offered.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest

from interactions_core.lifecycle import WAITING_STATES, State
from interactions_core.model import Direction, Interaction
from interactions_core.ports import Agent
from interactions_core.routing import RoutingConfig
from interactions_core.service import ServiceConfig
from interactions_core.testing import Harness, inbound_email

MAILS = 1000
AGENTS = 20
SKILLS = ("billing", "tech", "sales")


def rows(h: Harness) -> list[Interaction]:
    return h.store._all()


def check_step(h: Harness) -> None:
    holders: Counter[str] = Counter()
    for i in rows(h):
        if i.direction is not Direction.INBOUND:
            continue
        if i.state == State.INVITED:
            assert i.offer is not None and i.owner is None, i
            holders[i.offer.agent_id] += 1
        elif i.state == State.ACCEPTED:
            assert i.owner is not None and i.offer is None, i
            holders[i.owner] += 1
        else:
            assert i.owner is None and i.offer is None, i
            if i.state == State.IN_WORKBIN:
                assert i.workbin is not None
    for agent in h.directory.agents():
        assert h.router.presence(agent.id).load == holders[agent.id], agent.id
        assert holders[agent.id] <= agent.capacity or True  # transfers to an agent may exceed


def check_disjoint_views(h: Harness) -> None:
    seen: dict[str, str] = {}
    with h.store.unit_of_work() as uow:
        for agent in h.directory.agents():
            for i in uow.interactions.for_agent(agent.id):
                if i.direction is Direction.INBOUND:
                    assert i.id not in seen, f"{i.id} held by {seen.get(i.id)} and {agent.id}"
                    seen[i.id] = agent.id


@pytest.mark.parametrize("seed", [1, 2])
def test_simulation(seed: int) -> None:
    rng = random.Random(seed)
    agents = [
        Agent(
            id=f"agent{k:02d}",
            mailboxes=("support@example.com",),
            skills=frozenset(rng.sample(SKILLS, rng.randint(0, 2))),
            capacity=rng.randint(1, 4),
        )
        for k in range(AGENTS)
    ]
    h = Harness(
        agents=agents,
        routing=RoutingConfig(offer_timeout=timedelta(seconds=30)),
        config=ServiceConfig(shared_workbins={"Shared": frozenset()}),
    )
    inbound: list[str] = []
    step = 0
    while len(inbound) < MAILS or step < 4000:
        step += 1
        roll = rng.random()
        if roll < 0.30 and len(inbound) < MAILS:
            n = len(inbound)
            email = inbound_email(
                sender=f"c{n}@example.org",
                to="support@example.com",
                subject=f"Case {n}",
                text="help",
                message_id=f"<case{n}@example.org>",
            )
            inbound.append(h.deliver(email))
        elif roll < 0.36:
            a = rng.choice(agents).id
            h.set_channel(a, rng.choice(["Ready", "Ready", "NotReady"]))
        elif roll < 0.40:
            h.tick(rng.choice([1, 5, 31]))
        else:
            act(h, rng, agents)
        check_step(h)
        if step % 200 == 0:
            check_disjoint_views(h)

    # Account for every mail exactly once.
    places: Counter[str] = Counter()
    for iid in inbound:
        i = h.interaction(iid)
        if i.state == State.COMPLETED:
            places["done"] += 1
        elif i.state in WAITING_STATES:
            places["queue"] += 1
        elif i.state == State.IN_WORKBIN:
            places["workbin"] += 1
        elif i.state == State.INVITED:
            places["offered"] += 1
        else:
            assert i.state == State.ACCEPTED
            places["owned"] += 1
    assert sum(places.values()) == MAILS == len(set(inbound))
    assert len([i for i in rows(h) if i.direction is Direction.INBOUND]) == MAILS
    assert places["done"] > 100, places  # the simulation really moved work along
    check_disjoint_views(h)


def act(h: Harness, rng: random.Random, agents: list[Agent]) -> None:
    """One agent does one plausible thing with one of its interactions."""
    me = rng.choice(agents).id
    with h.store.unit_of_work() as uow:
        mine = [i for i in uow.interactions.for_agent(me) if i.direction is Direction.INBOUND]
        workbin = uow.interactions.in_workbin("Shared")
    if not mine:
        if workbin and rng.random() < 0.5:
            ok(h.execute(me, rng.choice(workbin).id, {"operationName": "Pull"}))
        return
    i = rng.choice(mine)
    if i.state == State.INVITED:
        choice = rng.random()
        if choice < 0.7:
            ok(h.execute(me, i.id, {"operationName": "Accept"}))
        elif choice < 0.85:
            ok(h.execute(me, i.id, {"operationName": "Reject"}))
        return  # else ignore: the offer will time out
    roll = rng.random()
    if roll < 0.35:
        ok(h.execute(me, i.id, {"operationName": "StopProcessing"}))
    elif roll < 0.50:
        draft = h.execute(me, i.id, {"operationName": "Reply"})
        ok(draft)
        ok(h.execute(me, draft["replyInteractionId"], {"operationName": "Send"}))
    elif roll < 0.60:
        ok(h.execute(me, i.id, {"operationName": "PlaceInQueue", "queueName": "Inbound"}))
    elif roll < 0.70:
        name = rng.choice(["Personal", "Shared"])
        ok(h.execute(me, i.id, {"operationName": "PlaceInWorkbin", "workbinName": name}))
    elif roll < 0.80:
        ok(h.execute(me, i.id, {"operationName": "Transfer", "skill": rng.choice(SKILLS)}))
    elif roll < 0.90:
        other = rng.choice([a.id for a in agents if a.id != me])
        ok(h.execute(me, i.id, {"operationName": "Transfer", "agentId": other}))
    else:
        ok(h.execute(me, i.id, {"operationName": "Transfer", "queueName": "Inbound"}))


def ok(response: dict[str, object]) -> None:
    assert response["status"] == "ok", response
