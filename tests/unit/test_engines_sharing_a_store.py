"""Several engines on one store, as several server processes on one database: one leads
(routes, runs the offer timeouts), the others follow; agent readiness lives in the store; the
leader follows the others' commits through the change feed (``Engine.sync``)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from interactions_core import Agent, Engine, ServiceConfig, State
from interactions_core.memory import (
    InMemoryAttachmentStore,
    InMemoryStore,
    ManualClock,
    RecordingNotifier,
)
from interactions_core.outbox import NotificationTail
from interactions_core.ports import TOPIC_CHANNELS, TOPIC_INTERACTIONS
from interactions_core.routing import RoutingConfig

MAILBOX = "support@example.com"
AGENTS = [
    Agent(id="alice", mailboxes=(MAILBOX,), capacity=2),
    Agent(id="bob", mailboxes=(MAILBOX,), capacity=2),
]


def raw(n: int, message_id: str | None = None) -> bytes:
    mid = message_id or f"<m{n}@example.org>"
    return (
        f"From: Customer {n} <c{n}@example.org>\r\nTo: {MAILBOX}\r\n"
        f"Subject: Case {n}\r\nMessage-ID: {mid}\r\n"
        f"Date: Mon, 05 Jan 2026 09:00:00 +0000\r\n\r\nHello {n}\r\n"
    ).encode()


class Node:
    """One "process": an engine on the shared store, with its own notifier and tail."""

    def __init__(self, store: InMemoryStore, clock: ManualClock, attachments: object) -> None:
        self.notifier = RecordingNotifier()
        self.engine = Engine(
            store=store,
            agents=AGENTS,
            attachments=attachments,  # type: ignore[arg-type]
            clock=clock,
            config=ServiceConfig(mailbox_queues={MAILBOX: "support"}),
            routing=RoutingConfig(offer_timeout=timedelta(seconds=30)),
        )
        self.tail = NotificationTail(store, store, self.notifier)

    def deliver(self) -> int:
        """What the server's tail does: every committed notification to this node's clients."""
        total, more = 0, True
        while more:
            page = self.tail.take()
            self.tail.publish(page)
            total += len(page.notifications)
            more = page.more
        return total


@pytest.fixture
def cluster() -> tuple[InMemoryStore, ManualClock, Node, Node]:
    clock = ManualClock()
    store = InMemoryStore(clock)
    attachments = InMemoryAttachmentStore()
    a, b = Node(store, clock, attachments), Node(store, clock, attachments)
    a.engine.start()
    b.engine.start(lead=False)
    a.tail.start()
    b.tail.start()
    return store, clock, a, b


def offered(store: InMemoryStore) -> dict[str, str]:
    with store.unit_of_work() as uow:
        return {
            i.id: i.offer.agent_id
            for a in AGENTS
            for i in uow.interactions.for_agent(a.id)
            if i.offer is not None and i.state == State.INVITED
        }


def test_a_follower_never_routes_and_the_leader_routes_what_it_committed(
    cluster: tuple[InMemoryStore, ManualClock, Node, Node],
) -> None:
    store, _, a, b = cluster
    assert a.engine.leading and not b.engine.leading
    assert b.engine.set_channel_state("alice", {"operationName": "Ready"}).ok
    result = b.engine.ingest(raw(1))
    assert offered(store) == {}  # b follows: nothing is offered by it
    assert b.engine.tick(a.engine.clock.now() + timedelta(hours=1)).offered == 0
    report = a.engine.sync()
    assert report.changes >= 2 and report.offered == 1
    assert offered(store) == {result.interaction_id: "alice"}


def test_a_ready_on_one_process_is_read_by_every_process_and_survives_a_restart(
    cluster: tuple[InMemoryStore, ManualClock, Node, Node],
) -> None:
    store, clock, a, b = cluster
    assert b.engine.set_channel_state("bob", {"operationName": "NotReady", "reason": "Lunch"}).ok
    for node in (a, b):
        state = node.engine.agent_state("bob")
        assert state["channels"][0]["userState"]["state"] == "NotReady"
        assert state["channels"][0]["userState"].get("reason") == "Lunch"
    assert b.engine.set_channel_state("bob", {"operationName": "Ready"}).ok
    # A new process on the same store (a restart): bob is still Ready and is offered mail.
    c = Node(store, clock, a.engine.attachments)
    a.engine.follow()
    c.engine.start()
    created = c.engine.ingest(raw(2))
    assert offered(store) == {created.interaction_id: "bob"}
    assert c.engine.agent_state("bob")["load"] == 1
    assert a.engine.agent_state("bob")["load"] == 1  # the load is read from the store


def test_channel_state_notifications_reach_the_node_holding_the_session(
    cluster: tuple[InMemoryStore, ManualClock, Node, Node],
) -> None:
    _, _, a, b = cluster
    a.engine.set_channel_state("alice", {"operationName": "Ready"})
    a.deliver()
    b.deliver()
    for node in (a, b):
        [message] = node.notifier.for_agent("alice", TOPIC_CHANNELS)
        assert message["channels"][0]["userState"]["state"] == "Ready"


def test_an_invitation_reaches_every_node_in_commit_order(
    cluster: tuple[InMemoryStore, ManualClock, Node, Node],
) -> None:
    _, _, a, b = cluster
    b.engine.set_channel_state("alice", {"operationName": "Ready"})
    created = b.engine.ingest(raw(3))
    a.engine.sync()
    assert b.engine.execute("alice", created.interaction_id, {"operationName": "Accept"}).ok
    a.deliver()
    b.deliver()
    for node in (a, b):
        got = [
            (m["interactionId"] if "interactionId" in m else m.get("id"), m["state"])
            for m in node.notifier.for_agent("alice", TOPIC_INTERACTIONS)
        ]
        assert [s for _, s in got] == ["Invited", "Accepted"]
        seqs = [n.seq for n in node.notifier.published]
        assert seqs == sorted(seqs)


def test_a_new_leader_rebuilds_from_the_store_and_runs_the_offer_timeouts(
    cluster: tuple[InMemoryStore, ManualClock, Node, Node],
) -> None:
    store, clock, a, b = cluster
    a.engine.set_channel_state("alice", {"operationName": "Ready"})
    a.engine.set_channel_state("bob", {"operationName": "Ready"})
    created = a.engine.ingest(raw(4))
    first = offered(store)[created.interaction_id]
    # The leader goes away; b takes over and knows the outstanding offer and its deadline.
    a.engine.follow()
    b.engine.lead()
    assert b.engine.next_deadline() == clock.now() + timedelta(seconds=30)
    clock.advance(31)
    report = b.engine.tick()
    assert report.revoked == 1 and report.offered == 1
    second = offered(store)[created.interaction_id]
    assert second != first  # offered again, to the other Ready agent
    assert a.engine.tick().revoked == 0  # the old leader does nothing


def test_two_engines_that_both_believe_they_lead_never_offer_one_interaction_twice(
    cluster: tuple[InMemoryStore, ManualClock, Node, Node],
) -> None:
    """The overlap the leader lock allows (docs/deployment.md): the store's versions decide."""
    store, _, a, b = cluster
    b.engine.lead()
    for agent in ("alice", "bob"):
        a.engine.set_channel_state(agent, {"operationName": "Ready"})
    b.engine.sync()
    ids = [a.engine.service.ingest(raw(n)).interaction_id for n in range(10, 16)]
    barrier = threading.Barrier(2)

    def route(node: Node) -> None:
        barrier.wait()
        node.engine.sync()

    threads = [threading.Thread(target=route, args=(n,)) for n in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.engine.sync()
    b.engine.sync()
    held = offered(store)
    assert set(held) <= set(ids) and len(held) == 4  # two agents, capacity 2 each
    a.deliver()
    invited = [
        m["id"] if "id" in m else m.get("interactionId")
        for agent in ("alice", "bob")
        for m in a.notifier.for_agent(agent, TOPIC_INTERACTIONS)
        if m.get("state") == "Invited"
    ]
    assert len(invited) == len(set(invited)) == len(held)  # each offered once
    loads = {x: sum(1 for v in held.values() if v == x) for x in ("alice", "bob")}
    assert loads == {"alice": 2, "bob": 2}


def test_one_message_delivered_to_two_processes_is_one_interaction(
    cluster: tuple[InMemoryStore, ManualClock, Node, Node],
) -> None:
    store, _, a, b = cluster
    first = a.engine.ingest(raw(20, "<same@example.org>"))
    second = b.engine.ingest(raw(20, "<same@example.org>"))
    assert not first.duplicate and second.duplicate
    assert second.interaction_id == first.interaction_id
    with store.unit_of_work() as uow:
        assert len(uow.interactions.in_queue("support")) == 1
