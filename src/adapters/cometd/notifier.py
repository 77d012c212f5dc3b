"""The core's ``Notifier`` port, delivering notifications to the agent's Bayeux sessions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from interactions_core.ports import Notification


class Delivery(Protocol):
    """What the notifier needs of the Bayeux server (``BayeuxServer`` is one): it depends on
    this, not on the server module, so the server can build its notifier without a cycle."""

    def on_loop_thread(self) -> bool: ...

    def call_on_loop(self, callback: Callable[[], None]) -> None: ...

    def deliver(
        self,
        agent_id: str,
        topic: str,
        data: dict[str, Any] | Callable[[], dict[str, Any]],
        seq: int = 0,
    ) -> int: ...


class CometdNotifier:
    """``publish`` queues ``notification.to_wire()`` on the notification's topic (decoding a
    payload read from the outbox only when a session of the agent gets it).

    Every live session of the agent subscribed to the topic (or to its ``/v2`` alias, e.g.
    ``/v2/me/interactions``) gets it, on the channel that session subscribed to. A session
    between two connects keeps it queued for its next connect; an agent with no session gets
    nothing (the service keeps the state; clients reload it after a handshake).

    Never blocks: it only appends to in-memory queues. It is meant to be called on the event
    loop thread; a call from another thread is handed over to the loop.
    """

    __slots__ = ("_server",)

    def __init__(self, server: Delivery) -> None:
        self._server = server

    def publish(self, notification: Notification) -> None:
        data = notification.to_wire  # called by deliver, and only if a session gets it
        agent_id, topic, seq = notification.agent_id, notification.topic, notification.seq
        server = self._server
        if server.on_loop_thread():
            server.deliver(agent_id, topic, data, seq)
        else:

            def deliver() -> None:
                server.deliver(agent_id, topic, data, seq)

            server.call_on_loop(deliver)

    def close(self) -> None:
        """Nothing to release (idempotent): the sessions and their queues are the server's,
        closed by ``BayeuxServer.stop``."""
