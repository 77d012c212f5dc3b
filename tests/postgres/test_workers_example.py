"""``examples/postgres_workers.py``, the embedding guide's pattern for several processes on
one PostgreSQL, holds: one router, mail sent once, every notification published once, in
order, by the leader, and a new leader when the old one goes. Two workers in this process,
each with its own store, lock connection and ports, exactly as two processes would have."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from interactions_core import Agent
from interactions_core.errors import InteractionNotFound
from interactions_core.memory import RecordingNotifier, RecordingTransport

from .helpers import Admin

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "postgres_workers.py"
AGENTS = [Agent(id="alice", mailboxes=("support@example.com",))]


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("postgres_workers", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Node:
    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.notifier: RecordingNotifier = worker.engine.notifier
        self.transport: RecordingTransport = worker.engine.transport


@pytest.fixture
def make_node(postgres_dsn: str) -> Iterator[Callable[[str], Node]]:
    workers = example()
    made: list[Node] = []

    def make(name: str) -> Node:
        worker = workers.Worker(
            postgres_dsn,
            AGENTS,
            notifier=RecordingNotifier(),
            transport=RecordingTransport(),
            node_id=name,
            check_interval_s=0.2,
        )
        made.append(Node(worker))
        return made[-1]

    try:
        yield make
    finally:
        for node in made:
            node.worker.close()


def tick_until(nodes: list[Node], done: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        for node in nodes:
            node.worker.tick()
        time.sleep(0.02)


def elected(make_node: Callable[[str], Node]) -> tuple[Node, Node]:
    """Two workers, ticked until one leads: (the leader, the other)."""
    nodes = [make_node("worker-1"), make_node("worker-2")]

    def leaders() -> list[Node]:
        return [n for n in nodes if n.worker.engine.leading]

    tick_until(nodes, lambda: len(leaders()) == 1, "one leader")
    [leader] = leaders()
    return leader, nodes[1] if leader is nodes[0] else nodes[0]


def mail(subject: str, message_id: str) -> bytes:
    return (
        f"From: Bob <bob@example.org>\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{message_id}@example.org>\r\n\r\nStill waiting.\r\n"
    ).encode()


def state(node: Node, iid: str) -> str | None:
    """The interaction's state as alice sees it (None: not hers to see yet, as while queued)."""
    try:
        return str(node.worker.engine.interaction("alice", iid)["state"])
    except InteractionNotFound:
        return None


def test_two_workers_route_once_send_once_and_publish_once_in_order(
    make_node: Callable[[str], Node],
) -> None:
    leader, follower = elected(make_node)
    nodes = [follower, leader]  # the follower's tick first after each of its commits

    # Everything an agent does goes through the follower; the leader routes it.
    assert follower.worker.engine.set_channel_state("alice", {"operationName": "Ready"}).ok
    iid = follower.worker.engine.ingest(mail("Where is my order?", "42")).interaction_id
    assert iid is not None
    tick_until(nodes, lambda: state(follower, iid) == "Invited", "offered by the leader")
    engine = follower.worker.engine
    assert engine.execute("alice", iid, {"operationName": "Accept"}).ok
    draft = engine.execute("alice", iid, {"operationName": "ReplyAll"}).reply_interaction_id
    assert draft is not None
    sent = engine.execute("alice", draft, {"operationName": "Send", "email_object": {"text": "x"}})
    assert sent.ok, sent.description

    def delivered() -> bool:
        return len(leader.transport.sent) + len(follower.transport.sent) >= 1

    tick_until(nodes, delivered, "the reply handed to a transport")
    for _ in range(20):  # more rounds: nothing is sent a second time
        for node in nodes:
            node.worker.tick()
    assert len(leader.transport.sent) + len(follower.transport.sent) == 1

    # Notifications: published by the leader only, each once, in commit order.
    assert follower.notifier.published == []
    seqs = [n.seq for n in leader.notifier.published]
    assert seqs == sorted(set(seqs)) and seqs
    states = [w.get("state") for w in leader.notifier.for_agent("alice") if "state" in w]
    assert states == ["Invited", "Accepted", "ReplyCreated", "Sent"]


def test_when_the_leader_goes_the_other_routes_and_publishes_the_rest(
    make_node: Callable[[str], Node], admin: Admin
) -> None:
    leader, survivor = elected(make_node)
    nodes = [leader, survivor]
    assert survivor.worker.engine.set_channel_state("alice", {"operationName": "Ready"}).ok
    first = survivor.worker.engine.ingest(mail("First", "1")).interaction_id
    assert first is not None
    tick_until(nodes, lambda: state(survivor, first) == "Invited", "the first offered")
    published_before = {n.seq for n in leader.notifier.published}

    leader.worker.close()  # gives up the lock: the survivor is elected at its next check
    alone = [survivor]
    tick_until(alone, lambda: survivor.worker.engine.leading, "the survivor leads")
    second = survivor.worker.engine.ingest(mail("Second", "2")).interaction_id
    assert second is not None
    tick_until(alone, lambda: state(survivor, second) == "Invited", "the second offered")
    tick_until(alone, lambda: bool(survivor.notifier.published), "the survivor publishes")

    # Between them, every notification committed was published, in order on each side.
    after = [n.seq for n in survivor.notifier.published]
    assert after == sorted(after)
    rows = admin.execute("SELECT seq FROM outbox WHERE kind = 'notification'").fetchall()
    committed = {int(seq) for (seq,) in rows}
    assert committed and committed <= published_before | set(after)
    assert survivor.worker.engine.store.pending_notifications(0) == []
    offered = [w["id"] for w in survivor.notifier.for_agent("alice") if w.get("state") == "Invited"]
    assert second in offered
