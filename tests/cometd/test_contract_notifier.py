"""The CometD notifier against the notifier contract, observed by real Bayeux clients.

The server is the uvicorn + ``BayeuxServer`` harness of ``conftest`` (its own thread and event
loop); each observed agent is a long-polling client speaking HTTP to it from the test thread:
handshake as the agent, subscribe to every contract topic, then ``/meta/connect`` until the
expected messages arrived.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from adapters.cometd import basic_header
from interactions_core.ports import Notifier
from interactions_core.testing.contracts import TOPICS, NotifierContract, Observed

from .conftest import USERS, ServerHarness

Message = dict[str, Any]


class LongPollingObserver:
    """One agent's Bayeux session over long-polling, collecting what arrives on ``TOPICS``."""

    def __init__(self, server: ServerHarness, agent_id: str) -> None:
        self.http = httpx.Client(
            base_url=server.url,
            headers={"Authorization": basic_header(agent_id, USERS[agent_id])},
            timeout=15,
        )
        self.got: list[Observed] = []
        (reply,) = self.post(
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
                "id": "h",
            }
        )
        assert reply["successful"] is True, reply
        self.client_id: str = reply["clientId"]
        (reply,) = self.post(
            {
                "channel": "/meta/subscribe",
                "clientId": self.client_id,
                "subscription": list(TOPICS),
                "id": "s",
            }
        )
        assert reply["successful"] is True, reply
        self.connect()  # the first connect is answered at once; from now on connects are held

    def post(self, message: Message) -> list[Message]:
        response = self.http.post("", json=[message])
        assert response.status_code == 200, (response.status_code, response.text)
        replies: list[Message] = response.json()
        return replies

    def connect(self) -> None:
        """One ``/meta/connect``, held at most a second; keeps the messages it brings."""
        for message in self.post(
            {
                "channel": "/meta/connect",
                "clientId": self.client_id,
                "connectionType": "long-polling",
                "advice": {"timeout": 1000},
                "id": "c",
            }
        ):
            if not message["channel"].startswith("/meta/"):
                self.got.append(Observed(message["channel"], message["data"]))

    def wait_for(self, count: int, deadline: float = 15.0) -> list[Observed]:
        end = time.monotonic() + deadline
        while len(self.got) < count and time.monotonic() < end:
            self.connect()
        return list(self.got)

    def close(self) -> None:
        try:
            self.post({"channel": "/meta/disconnect", "clientId": self.client_id, "id": "d"})
        finally:
            self.http.close()


class TestCometdNotifier(NotifierContract):
    @pytest.fixture(autouse=True)
    def _observers(self, server: ServerHarness) -> Iterator[None]:
        self.server = server
        self.observers: dict[str, LongPollingObserver] = {}
        yield
        for observer in self.observers.values():
            observer.close()

    def make_notifier(self) -> Notifier:
        return self.server.engine.notifier

    def subscribe(self, agent_id: str) -> None:
        self.observers[agent_id] = LongPollingObserver(self.server, agent_id)

    def received(self, agent_id: str, count: int) -> list[Observed]:
        return self.observers[agent_id].wait_for(count)
