"""The core's ``Notifier`` port, delivering notifications to the agent's Bayeux sessions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from interactions_core.ports import Notification

if TYPE_CHECKING:
    from .server import BayeuxServer


class CometdNotifier:
    """``publish`` queues ``notification.to_wire()`` on the notification's topic.

    Every live session of the agent subscribed to the topic (or to its ``/v2`` alias, e.g.
    ``/v2/me/interactions``) gets it, on the channel that session subscribed to. A session
    between two connects keeps it queued for its next connect; an agent with no session gets
    nothing (the service keeps the state; clients reload it after a handshake).

    Never blocks: it only appends to in-memory queues. It is meant to be called on the event
    loop thread; a call from another thread is handed over to the loop.
    """

    __slots__ = ("_server",)

    def __init__(self, server: BayeuxServer) -> None:
        self._server = server

    def publish(self, notification: Notification) -> None:
        data = notification.to_wire()
        agent_id, topic, seq = notification.agent_id, notification.topic, notification.seq
        server = self._server
        if server.on_loop_thread():
            server.deliver(agent_id, topic, data, seq)
        else:

            def deliver() -> None:
                server.deliver(agent_id, topic, data, seq)

            server.call_on_loop(deliver)
