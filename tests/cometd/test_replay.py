"""The ``replay`` extension, in process: what a (re)handshaking client missed, after its subscribe.

The server's replay source is a real ``InMemoryStore`` read (``notifications_since``) behind a
gate the test opens, so the moment of the read is under control: live notifications published
while it is in flight, or lagging behind it, must come out merged in seq order, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.cometd import BasicAuthenticator, BayeuxServer, CometdSettings, basic_header
from adapters.cometd.server import READ_STATE, Outcome, RequestContext
from interactions_core.memory import InMemoryStore, ManualClock
from interactions_core.ports import (
    TOPIC_WORKBINS,
    Notification,
    NotificationBacklog,
    RawMessage,
)

Message = dict[str, Any]
USERS = {"alice": "alice-pw", "bob": "bob-pw"}


class History:
    """The store behind the server's replay source; ``gate`` closed: reads wait."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.store = InMemoryStore(self.clock)
        self.gate = asyncio.Event()
        self.gate.set()
        self.reads: list[tuple[str, int, int]] = []
        self.fail = False

    async def read(self, agent_id: str, after_seq: int, limit: int) -> NotificationBacklog:
        self.reads.append((agent_id, after_seq, limit))
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("database is locked")
        return self.store.notifications_since(agent_id, after_seq, limit)

    def commit(self, agent_id: str, n: int, topic: str = "/me/interactions") -> Notification:
        """One committed notification ``{"n": n}``; returns it with its seq."""
        with self.store.unit_of_work() as uow:
            payload = RawMessage(data={"n": n})
            uow.outbox.add_notification(
                Notification(agent_id=agent_id, topic=topic, payload=payload)
            )
            uow.commit()
        return self.store.notifications_since(agent_id, 0, 10_000).notifications[-1]

    def publish_all(self) -> list[Notification]:
        """What the dispatcher does: every pending one, marked published."""
        pending = self.store.pending_notifications()
        self.store.mark_notifications_done([n.seq for n in pending])
        return pending


class Client:
    """One long-polling client driving ``BayeuxServer.process`` directly."""

    def __init__(self, server: BayeuxServer, agent: str = "alice") -> None:
        self.server = server
        self.ctx = RequestContext(
            {"authorization": basic_header(agent, USERS[agent])}, {}, "127.0.0.1", "long-polling"
        )
        self.client_id = ""
        self.held: Outcome | None = None

    async def send(self, *messages: Message) -> Outcome:
        return await self.server.process(list(messages), self.ctx)

    async def handshake(self, ext: dict[str, Any] | None = None) -> Message:
        message: Message = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling"],
        }
        if ext is not None:
            message["ext"] = ext
        (reply,) = (await self.send(message)).replies
        assert reply["successful"] is True, reply
        self.client_id = reply["clientId"]
        return reply

    async def subscribe(self, *channels: str) -> None:
        outcome = await self.send(
            {
                "channel": "/meta/subscribe",
                "clientId": self.client_id,
                "subscription": list(channels),
            }
        )
        assert outcome.replies[0]["successful"] is True, outcome.replies

    async def connect(self) -> list[Message]:
        """One connect; a held one is waited for. Returns the messages (the reply dropped)."""
        outcome = await self.send(
            {
                "channel": "/meta/connect",
                "clientId": self.client_id,
                "connectionType": "long-polling",
            }
        )
        replies = outcome.replies
        if outcome.held is not None:
            async with asyncio.timeout(10):  # a guard against a hang, not a timing assertion
                result = await outcome.held.future
            assert result is not None
            replies = [*replies, *result]
        assert replies[0]["channel"] == "/meta/connect" and replies[0]["successful"], replies
        return replies[1:]

    async def receive(self) -> list[Message]:
        """Connect until messages come (the first connect after a handshake is answered at
        once, possibly before the replay read is merged)."""
        for _ in range(3):
            messages = await self.connect()
            if messages:
                return messages
        raise AssertionError("no messages after three connects")

    def start_connect(self) -> asyncio.Task[list[Message]]:
        return asyncio.create_task(self.connect())


def seqs(messages: list[Message]) -> list[tuple[str, int]]:
    return [(m["channel"], m["ext"]["seq"]) for m in messages]


@pytest.fixture
def history() -> History:
    return History()


@pytest.fixture
def server(history: History) -> Iterator[BayeuxServer]:
    yield BayeuxServer(BasicAuthenticator(USERS), CometdSettings(), replay=history.read)


async def turns(n: int = 5) -> None:
    """Let the loop run the callbacks scheduled so far (flushes are ``call_soon``)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_handshake_confirms_replay_only_when_asked_and_available(
    history: History, server: BayeuxServer
) -> None:
    assert (await Client(server).handshake({"replay": {"after": 3}}))["ext"] == {"replay": True}
    both = await Client(server).handshake({"ack": True, "replay": {}})
    assert both["ext"] == {"ack": True, "replay": True}
    assert "ext" not in await Client(server).handshake()
    plain = BayeuxServer(BasicAuthenticator(USERS), CometdSettings())  # no replay source
    assert "ext" not in await Client(plain).handshake({"replay": {"after": 3}})


async def test_missed_notifications_come_after_the_subscribe_in_seq_order(
    history: History, server: BayeuxServer
) -> None:
    seen = [history.commit("alice", n) for n in (1, 2)]
    missed = [history.commit("alice", n) for n in (3, 4)]
    history.commit("bob", 99)
    history.commit("alice", 5, TOPIC_WORKBINS)  # not subscribed to
    history.publish_all()  # published while alice had no session: today, lost
    client = Client(server)
    await client.handshake({"replay": {"after": seen[-1].seq}})
    await client.subscribe("/me/interactions", "/v2/me/interactions")
    messages = await client.receive()
    assert [m["data"] for m in messages] == [{"n": 3}, {"n": 3}, {"n": 4}, {"n": 4}]
    assert seqs(messages) == [
        ("/me/interactions", missed[0].seq),
        ("/v2/me/interactions", missed[0].seq),
        ("/me/interactions", missed[1].seq),
        ("/v2/me/interactions", missed[1].seq),
    ]
    assert messages[0]["id"] == str(missed[0].seq)
    assert history.reads == [("alice", seen[-1].seq, 501)]
    # Published again later (a lagging dispatcher): a duplicate, dropped; a new one goes out.
    for n in missed:
        server.notifier.publish(n)
    newer = history.commit("alice", 6)
    server.notifier.publish(newer)
    assert seqs(await client.connect()) == [
        ("/me/interactions", newer.seq),
        ("/v2/me/interactions", newer.seq),
    ]


async def test_live_notifications_during_the_read_are_held_and_merged_once(
    history: History, server: BayeuxServer
) -> None:
    first = history.commit("alice", 1)
    history.publish_all()
    lagging = history.commit("alice", 2)  # committed, not yet published
    client = Client(server)
    await client.handshake({"replay": {"after": 0}})
    history.gate.clear()
    await client.subscribe("/me/interactions")
    assert await client.connect() == []  # the first connect: nothing may go out yet
    held = client.start_connect()
    # While the read is in flight: the lagging one is published, and one committed later.
    server.notifier.publish(lagging)
    later = history.commit("alice", 3)
    server.notifier.publish(later)
    await turns()
    assert not held.done()  # held: the replay must go first
    history.gate.set()
    messages = await held
    assert [m["ext"]["seq"] for m in messages] == [first.seq, lagging.seq, later.seq]
    assert [m["data"]["n"] for m in messages] == [1, 2, 3]
    # ``later`` was committed after the read: its own publish is what delivered it, once.
    server.notifier.publish(later)
    newest = history.commit("alice", 4)
    server.notifier.publish(newest)
    assert [m["ext"]["seq"] for m in await client.connect()] == [newest.seq]


async def test_a_later_subscribe_replays_its_own_channels_only(
    history: History, server: BayeuxServer
) -> None:
    a = history.commit("alice", 1)
    w = history.commit("alice", 2, TOPIC_WORKBINS)
    history.publish_all()
    client = Client(server)
    await client.handshake({"replay": {"after": 0}})
    await client.subscribe("/me/interactions")
    assert seqs(await client.receive()) == [("/me/interactions", a.seq)]
    live = history.commit("alice", 3)
    history.publish_all()
    server.notifier.publish(live)
    assert seqs(await client.connect()) == [("/me/interactions", live.seq)]
    await client.subscribe("/me/*")  # adds /me/workbins and /me/channels, not interactions
    assert seqs(await client.receive()) == [("/me/workbins", w.seq)]


async def test_without_a_position_the_client_is_told_to_re_read(
    history: History, server: BayeuxServer
) -> None:
    history.commit("alice", 1)
    history.publish_all()
    client = Client(server)
    await client.handshake({"replay": {}})
    history.gate.clear()
    await client.subscribe("/me/interactions", "/v2/me/interactions")
    last = history.commit("alice", 2)
    server.notifier.publish(last)  # live during the read, and covered by the re-read
    await turns()
    history.gate.set()
    messages = await client.receive()
    assert [m["data"] for m in messages] == [
        {"messageTypeName": READ_STATE, "reason": "no-position"},
    ] * 2
    assert sorted(m["channel"] for m in messages) == ["/me/interactions", "/v2/me/interactions"]
    assert {m["ext"]["seq"] for m in messages} == {last.seq}  # what the re-read covers
    assert history.reads == [("alice", 0, 0)]
    # What the re-read covers is not sent again; what comes after is.
    server.notifier.publish(last)
    newer = history.commit("alice", 3)
    server.notifier.publish(newer)
    assert [m["ext"]["seq"] for m in await client.connect()] == [newer.seq, newer.seq]


@pytest.mark.parametrize("case", ["expired", "unknown-position", "too-many", "unavailable"])
async def test_a_backlog_that_cannot_be_replayed_is_a_read_state(
    history: History, case: str
) -> None:
    server = BayeuxServer(
        BasicAuthenticator(USERS), CometdSettings(replay_max_messages=2), replay=history.read
    )
    notes = [history.commit("alice", n) for n in range(1, 5)]
    history.publish_all()
    after = notes[0].seq
    if case == "expired":
        history.clock.advance(600)
        assert history.store.purge_notifications(history.clock.now(), limit=2) == 2
    elif case == "unknown-position":
        after = notes[-1].seq + 100  # a seq of another database
    elif case == "too-many":
        after = 0  # four to replay, two allowed
    else:
        history.fail = True
    client = Client(server)
    await client.handshake({"replay": {"after": after}})
    await client.subscribe("/me/interactions")
    (message,) = await client.receive()
    assert message["channel"] == "/me/interactions"
    assert message["data"] == {"messageTypeName": READ_STATE, "reason": case}
    if case == "unavailable":
        assert "ext" not in message  # nothing is known
    else:
        assert message["ext"] == {"seq": notes[-1].seq}
    newer = history.commit("alice", 9)
    server.notifier.publish(newer)
    assert [m["data"] for m in await client.connect()] == [{"n": 9}]


async def test_clients_without_the_extension_get_what_they_always_got(
    history: History, server: BayeuxServer
) -> None:
    history.commit("alice", 1)
    history.publish_all()
    client = Client(server)
    await client.handshake()
    await client.subscribe("/me/interactions")
    assert await client.connect() == []
    assert history.reads == []
    newer = history.commit("alice", 2)
    server.notifier.publish(newer)
    server.notifier.publish(newer)  # no dedupe without the extension: as before
    assert [m["data"] for m in await client.connect()] == [{"n": 2}, {"n": 2}]


async def test_a_session_closed_during_the_read_gets_nothing(
    history: History, server: BayeuxServer
) -> None:
    history.commit("alice", 1)
    history.publish_all()
    client = Client(server)
    await client.handshake({"replay": {"after": 0}})
    history.gate.clear()
    await client.subscribe("/me/interactions")
    outcome = await client.send({"channel": "/meta/disconnect", "clientId": client.client_id})
    assert outcome.replies[0]["successful"] is True
    history.gate.set()
    await turns()
    assert len(server.sessions) == 0
    again = await client.send(
        {"channel": "/meta/connect", "clientId": client.client_id, "connectionType": "long-polling"}
    )
    assert again.replies[0]["error"] == "402::session_unknown"
