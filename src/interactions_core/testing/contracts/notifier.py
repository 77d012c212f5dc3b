"""``NotifierContract``: what every ``ports.Notifier`` must do.

A notifier hands notifications to the agents' live clients. To see what arrived, a subclass
implements the factory and an observer: ``subscribe(agent_id)`` starts listening as that agent
(on every topic), ``received(agent_id, count)`` returns what arrived for it::

    class TestMyPushNotifier(NotifierContract):
        def make_notifier(self) -> Notifier:
            return self.server.notifier

        def subscribe(self, agent_id: str) -> None:
            self.clients[agent_id] = TestClient(self.server, agent_id).subscribe(*TOPICS)

        def received(self, agent_id: str, count: int) -> list[Observed]:
            return self.clients[agent_id].wait_for(count)

Delivery may be asynchronous: ``received`` waits (with a deadline of its own) until ``count``
notifications arrived. The tests end every check with a *fence*, one last notification per
agent, so waiting for an exact count is never a timing assumption. The notifier is made inside
the test (the subclass's fixtures are ready by then) and closed after it.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from interactions_core.ports import (
    TOPIC_CHANNELS,
    TOPIC_INTERACTIONS,
    TOPIC_WORKBINS,
    Notification,
    Notifier,
    RawMessage,
)

__all__ = ["TOPICS", "NotifierContract", "Observed"]

TOPICS = (TOPIC_INTERACTIONS, TOPIC_WORKBINS, TOPIC_CHANNELS)
"""The topics the contract publishes on: ``subscribe`` listens on all of them."""


class Observed(NamedTuple):
    """One notification as an observer received it: its topic and its wire data."""

    topic: str
    data: dict[str, Any]


class NotifierContract(ABC):
    """Subclass and implement ``make_notifier``, ``subscribe`` and ``received``.

    The agents the tests observe are ``alice`` and ``bob``; ``nobody`` is never subscribed.
    """

    @abstractmethod
    def make_notifier(self) -> Notifier:
        """The notifier under test (called once per test, before any ``subscribe``)."""

    @abstractmethod
    def subscribe(self, agent_id: str) -> None:
        """Start observing what the notifier delivers to ``agent_id``, on every topic of
        ``TOPICS``; once it returns, a notification published is seen by the observer."""

    @abstractmethod
    def received(self, agent_id: str, count: int) -> list[Observed]:
        """Everything ``agent_id``'s observer received since ``subscribe``, in arrival order.

        Waits until at least ``count`` arrived or a deadline of the implementation's passed
        (then it returns what arrived: the test fails on it).
        """

    @pytest.fixture(autouse=True)
    def _notifier_contract(self) -> Iterator[None]:
        self._notifiers: list[Notifier] = []
        self._seq = 0
        yield
        for notifier in self._notifiers:
            notifier.close()

    # ------------------------------------------------------------------ helpers

    @property
    def notifier(self) -> Notifier:
        """The notifier under test, made on first use."""
        if not self._notifiers:
            self._notifiers.append(self.make_notifier())
        return self._notifiers[0]

    def listen(self, agent_id: str) -> None:
        """``subscribe(agent_id)``, once the notifier under test exists."""
        if not self._notifiers:
            self._notifiers.append(self.make_notifier())
        self.subscribe(agent_id)

    def note(
        self, agent_id: str, text: str, topic: str = TOPIC_INTERACTIONS, **data: Any
    ) -> Notification:
        """A notification as a drain publishes it: committed, so carrying a positive seq."""
        self._seq += 1
        payload = RawMessage(data={"messageTypeName": "Test", "text": text, **data})
        return Notification(agent_id=agent_id, topic=topic, payload=payload, seq=self._seq)

    def publish(self, agent_id: str, *texts: str, topic: str = TOPIC_INTERACTIONS) -> None:
        for text in texts:
            self.notifier.publish(self.note(agent_id, text, topic))

    def texts(self, agent_id: str, count: int) -> list[str]:
        """The texts ``agent_id`` received, once ``count`` arrived."""
        return [str(o.data.get("text")) for o in self.received(agent_id, count)]

    def fence(self, *agent_ids: str) -> None:
        """One last notification per agent: once it arrived, everything before it did."""
        for agent_id in agent_ids:
            self.notifier.publish(self.note(agent_id, "fence"))

    # ------------------------------------------------------------------ tests

    def test_publish_to_an_agent_with_no_subscriber_never_raises(self) -> None:
        self.listen("alice")
        for topic in TOPICS:
            self.publish("nobody", "lost 1", "lost 2", topic=topic)
        self.publish("alice", "after")
        self.fence("alice")
        assert self.texts("alice", 2) == ["after", "fence"]

    def test_publish_before_anyone_subscribed_never_raises(self) -> None:
        self.publish("alice", "too early")
        self.publish("bob", "too early", topic=TOPIC_WORKBINS)
        self.listen("alice")
        self.publish("alice", "seen")
        self.fence("alice")
        texts = self.texts("alice", 2)
        assert texts[-2:] == ["seen", "fence"]
        assert texts in (["seen", "fence"], ["too early", "seen", "fence"])

    def test_the_order_for_one_agent_is_kept(self) -> None:
        self.listen("alice")
        expected: list[Observed] = []
        for n in range(30):
            topic = TOPICS[n % 3] if n % 4 else TOPIC_INTERACTIONS
            notification = self.note("alice", str(n), topic)
            expected.append(Observed(topic, notification.to_wire()))
            self.notifier.publish(notification)
        self.fence("alice")
        got = self.received("alice", 31)
        assert got[:-1] == expected
        assert got[-1].data["text"] == "fence"

    def test_notifications_for_one_agent_never_reach_another(self) -> None:
        self.listen("alice")
        self.listen("bob")
        for n in range(10):
            self.publish("alice", f"alice {n}", topic=TOPICS[n % 3])
            self.publish("bob", f"bob {n}", topic=TOPICS[(n + 1) % 3])
            self.publish("nobody", f"nobody {n}")
        self.fence("alice", "bob")
        assert self.texts("alice", 11) == [f"alice {n}" for n in range(10)] + ["fence"]
        assert self.texts("bob", 11) == [f"bob {n}" for n in range(10)] + ["fence"]

    def test_an_agent_with_nothing_published_gets_nothing(self) -> None:
        self.listen("alice")
        self.listen("bob")
        self.publish("alice", "for alice", topic=TOPIC_WORKBINS)
        self.fence("alice", "bob")
        assert self.texts("bob", 1) == ["fence"]
        assert self.texts("alice", 2) == ["for alice", "fence"]

    def test_the_topic_and_the_wire_data_arrive_intact(self) -> None:
        self.listen("alice")
        data = {
            "nested": {"list": [1, 2.5, None, True, False, "x"], "empty": {}},
            "unicode": 'Grüße ✓ 日本語 \u2028 "quoted" \\ back',
            "big": 2**53 - 1,
            "negative": -7,
        }
        for topic in TOPICS:
            self.notifier.publish(self.note("alice", topic, topic, **data))
        self.fence("alice")
        got = self.received("alice", 4)
        assert [o.topic for o in got] == [*TOPICS, TOPIC_INTERACTIONS]
        for observed, topic in zip(got, TOPICS, strict=False):
            assert observed.data == {"messageTypeName": "Test", "text": topic, **data}

    def test_publishing_from_other_threads_keeps_the_order(self) -> None:
        """Drains may publish from a worker thread: one thread after the other, in order."""
        self.listen("alice")
        self.publish("alice", "0", "1", "2")

        def more() -> None:
            self.publish("alice", "3", "4", "5")

        worker = threading.Thread(target=more)
        worker.start()
        worker.join()
        self.publish("alice", "6", "7")
        self.fence("alice")
        assert self.texts("alice", 9) == [*"01234567", "fence"]

    def test_close_is_idempotent(self) -> None:
        self.listen("alice")
        self.publish("alice", "before close")
        self.fence("alice")
        assert self.texts("alice", 2) == ["before close", "fence"]
        self.notifier.close()
        self.notifier.close()  # and once more after the test

    def test_close_of_a_notifier_never_used(self) -> None:
        self.notifier.close()
        self.notifier.close()
