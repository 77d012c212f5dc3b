"""Bayeux sessions: subscriptions, the outgoing queue, the ``ack`` extension, the held connect.

A session is the server half of one ``clientId``. It is deliberately small (``__slots__``, plain
lists): the issue budgets 10 KB per idle session, transport included.

The ``ack`` extension follows CometD's ``AcknowledgedMessagesSessionExtension`` (Java server) and
``AckExtension.js`` (client): every ``/meta/connect`` reply carries ``ext.ack = <batch id>``; the
client sends the last batch id it received on its next connect; batches up to that id are
forgotten and any later ones (sent but never received) are delivered again, first, in order.

The ``replay`` extension (docs/cometd.md) survives the session: a client handshakes with the
last notification ``seq`` it received, and after each subscribe the server queues what the new
channels carried since then. While that read is in flight the session's queue is *held*: live
messages wait in it, nothing is taken, so the replay and the live messages go out merged, in
``seq`` order, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, KeysView, Sequence
from typing import Protocol

from .protocol import META_CONNECT, Message, Outgoing, SharedMessage, matches


class Link(Protocol):
    """A transport connection that can push messages at any time (a websocket)."""

    agent_id: str | None

    def push(self, messages: Sequence[Outgoing]) -> None: ...


def connect_reply(msg_id: object) -> Message:
    """A successful ``/meta/connect`` reply, echoing the request id (``None``: it had none)."""
    reply: Message = {"channel": META_CONNECT, "successful": True}
    if msg_id is not None:
        reply["id"] = msg_id
    return reply


class HeldConnect:
    """A ``/meta/connect`` waiting for a message or its timeout.

    The future resolves to the reply batch (connect reply first, then the messages), or to
    ``None`` when a newer connect of the same session cancelled it. Held connects are the idle
    cost of every session, so this keeps only what the reply needs: the request ``id``, not a
    prepared reply, and the expiry tick of the server's shared timer, not a timer of its own.
    """

    __slots__ = ("browser_id", "future", "link", "msg_id", "session", "tick")

    def __init__(
        self, session: Session, msg_id: object, browser_id: str | None, link: Link | None
    ) -> None:
        self.session = session
        self.msg_id = msg_id
        self.browser_id = browser_id
        self.link = link
        self.future: asyncio.Future[list[Outgoing] | None] = (
            asyncio.get_running_loop().create_future()
        )
        self.tick: int | None = None
        """The shared timer's tick at which the connect expires (``None``: not scheduled)."""

    def connect_reply(self) -> Message:
        return connect_reply(self.msg_id)


class Session:
    """One Bayeux client session, bound for life to the agent that handshook it."""

    __slots__ = (
        "ack",
        "advice_sent",
        "agent_id",
        "batch",
        "browser_id",
        "client_id",
        "closed",
        "connected",
        "credential_key",
        "floors",
        "flush_pending",
        "held",
        "last_seen",
        "link",
        "queue",
        "replay_after",
        "replays_pending",
        "subscriptions",
        "timeout_ms",
        "unacked",
    )

    def __init__(
        self,
        client_id: str,
        agent_id: str,
        *,
        browser_id: str | None,
        credential_key: str | None,
        ack: bool,
        now: float,
    ) -> None:
        self.client_id = client_id
        self.agent_id = agent_id
        self.browser_id = browser_id
        self.credential_key = credential_key
        self.ack = ack
        self.batch = 0
        self.subscriptions: list[str] = []
        self.queue: list[SharedMessage] = []
        """Delivered messages waiting for the next reply: shared with every other session that
        receives them, so each is encoded once however many sessions send it."""
        self.unacked: list[tuple[int, list[SharedMessage]]] = []
        self.held: HeldConnect | None = None
        self.connected = False  # a connect was answered since the handshake
        self.last_seen = now
        self.timeout_ms: int | None = None  # the client's own advice.timeout, when it sent one
        self.advice_sent: int | None = None  # the advice last sent, as BayeuxServer keys it
        self.link: Link | None = None
        self.flush_pending = False
        self.closed = False
        self.replay_after = -1
        """The last notification seq the client says it received (``-1``: it does not know)."""
        self.floors: dict[str, int] | None = None
        """With ``replay`` on: per channel, the highest seq delivered or replayed on it; a live
        notification at or below it (``replay_after`` for a channel not in it) is a duplicate.
        ``None``: replay off, nothing is dropped."""
        self.replays_pending = 0
        """Replay reads in flight: while > 0 the queue is held (nothing is taken from it)."""

    # ---------------------------------------------------------------- subscriptions

    def subscribe(self, pattern: str) -> None:
        if pattern not in self.subscriptions:
            self.subscriptions.append(pattern)

    def unsubscribe(self, pattern: str) -> None:
        if pattern in self.subscriptions:
            self.subscriptions.remove(pattern)

    def is_subscribed(self, channel: str) -> bool:
        return any(matches(pattern, channel) for pattern in self.subscriptions)

    # ---------------------------------------------------------------- queue

    def pending(self) -> int:
        """Messages held for this session: queued plus sent-but-unacknowledged."""
        if not self.unacked:  # (no ack extension, or all acknowledged: the common case)
            return len(self.queue)
        return len(self.queue) + sum(len(batch) for _, batch in self.unacked)

    def drop_oldest(self, count: int) -> None:
        """Discard ``count`` of the oldest messages (unacknowledged batches first)."""
        while count > 0 and self.unacked:
            batch_id, batch = self.unacked[0]
            if len(batch) <= count:
                count -= len(batch)
                self.unacked.pop(0)
            else:
                self.unacked[0] = (batch_id, batch[count:])
                count = 0
        if count > 0:
            del self.queue[:count]

    def acknowledge(self, batch_id: int) -> None:
        """Forget batches up to ``batch_id``; put later ones (lost in transit) back in front."""
        if not self.unacked:
            return
        lost: list[SharedMessage] = []
        for sent_id, batch in self.unacked:
            if sent_id > batch_id:
                lost.extend(batch)
        self.unacked.clear()
        if lost:
            self.queue[:0] = lost

    def take(self) -> tuple[list[SharedMessage], int | None]:
        """Everything queued (nothing while a replay read is in flight: the queue is held),
        plus (with ``ack``) the batch id that names it."""
        if self.replays_pending:
            messages: list[SharedMessage] = []
        else:
            messages = self.queue
            self.queue = []
        if not self.ack:
            return messages, None
        self.batch += 1
        if messages:
            self.unacked.append((self.batch, messages))
        return messages, self.batch


class SessionRegistry:
    """Sessions by clientId and by agent, and held long-polls per browser."""

    __slots__ = ("_by_agent", "_by_id", "_held_per_browser")

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}
        # A list, not a dict: an agent has one session or a few, and an empty dict costs four
        # times what a one-element list does (this is paid per idle session).
        self._by_agent: dict[str, list[Session]] = {}
        self._held_per_browser: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._by_id.values()))

    def get(self, client_id: str) -> Session | None:
        return self._by_id.get(client_id)

    def add(self, session: Session) -> None:
        self._by_id[session.client_id] = session
        self._by_agent.setdefault(session.agent_id, []).append(session)

    def remove(self, session: Session) -> None:
        self._by_id.pop(session.client_id, None)
        of_agent = self._by_agent.get(session.agent_id)
        if of_agent is not None and session in of_agent:
            of_agent.remove(session)
            if not of_agent:
                del self._by_agent[session.agent_id]

    def agents(self) -> KeysView[str]:
        """The agents with at least one session (a live view: read it on the loop, or copy
        it there; ``agent in agents()`` is safe from any thread)."""
        return self._by_agent.keys()

    def of_agent(self, agent_id: str) -> Iterator[Session]:
        of_agent = self._by_agent.get(agent_id)
        return iter(()) if of_agent is None else iter(list(of_agent))

    def held_in_browser(self, browser_id: str) -> int:
        return self._held_per_browser.get(browser_id, 0)

    def browser_hold(self, browser_id: str, delta: int) -> None:
        count = self._held_per_browser.get(browser_id, 0) + delta
        if count > 0:
            self._held_per_browser[browser_id] = count
        else:
            self._held_per_browser.pop(browser_id, None)
