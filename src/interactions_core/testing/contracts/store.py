"""``StoreContract``: the one test case every ``ports.Store`` implementation must pass.

A backend's test module subclasses it and implements ``make_store``::

    from interactions_core.testing.contracts import StoreContract

    class TestPostgresStore(StoreContract):
        def make_store(self, clock: ManualClock) -> Store:
            return PostgresStore(dsn, clock=clock)

The reference semantics are ``interactions_core.memory.InMemoryStore``'s, and the contract is
the one documented in ``interactions_core.ports`` (``Store``, ``UnitOfWork``,
``OutboxReader``...). Nothing here is timed: concurrency is forced with barriers, never with
sleeps. The store is made on first use of ``self.store``, inside the test, so fixtures of the
subclass (a database server, say) are ready by then; it is closed after the test.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from interactions_core.errors import AlreadyIngested, ConcurrencyConflict, OperationNotAllowed
from interactions_core.lifecycle import STATES, WAITING_STATES
from interactions_core.memory import (
    InMemoryAgentDirectory,
    InMemoryAttachmentStore,
    ManualClock,
    SequentialIds,
)
from interactions_core.model import (
    Address,
    Attachment,
    EmailContent,
    Interaction,
    Offer,
)
from interactions_core.operations import parse_operation
from interactions_core.ports import (
    TOPIC_WORKBINS,
    Agent,
    ChangeFeed,
    ChannelState,
    Notification,
    OutgoingMail,
    RawMessage,
    Store,
)
from interactions_core.service import InteractionService

__all__ = ["T0", "StoreContract", "interaction", "mail", "note"]

T0 = ManualClock().now()
"""The time a ``ManualClock`` starts at (the clock every contract test starts with)."""


def interaction(iid: str, minute: int = 0, **fields: Any) -> Interaction:
    """A queued inbound interaction received ``minute`` minutes after T0."""
    values: dict[str, Any] = {
        "id": iid,
        "state": "Queued",
        "mailbox": "support@example.com",
        "current_queue": "Inbound",
        "in_queues": ("Inbound",),
        "received_at": T0 + timedelta(minutes=minute),
        "email": EmailContent(
            from_=Address(addr="bob@example.org", name="Bob"),
            to=(Address(addr="support@example.com"),),
            subject=f"Subject {iid}",
            text="It broke.",
            message_id=f"<{iid}@example.org>",
        ),
    }
    values.update(fields)
    return Interaction(**values)


def mail(interaction_id: str, n: int = 1) -> OutgoingMail:
    """An outgoing reply with every field set (``n`` varies its subject and Message-ID)."""
    return OutgoingMail(
        interaction_id=interaction_id,
        mailbox="support@example.com",
        from_=Address(addr="support@example.com", name="Support"),
        to=(Address(addr="bob@example.org", name="Bob Ünicode"),),
        cc=(Address(addr="carol@example.org"),),
        subject=f"Re: help {n}",
        text="Fixed.",
        html="<p>Fixed.</p>",
        message_id=f"<m{n}@interactions.localhost>",
        in_reply_to="<orig@example.org>",
        references=("<root@example.org>", "<orig@example.org>"),
        date=T0,
        attachments=(Attachment(id="a" * 64, name="log.txt", size=3, mimetype="text/plain"),),
    )


def note(agent_id: str, text: str = "hello", topic: str | None = None) -> Notification:
    """A notification for ``agent_id`` whose wire form is ``{"messageTypeName": "Test", ...}``."""
    payload = RawMessage(data={"messageTypeName": "Test", "text": text})
    if topic is None:
        return Notification(agent_id=agent_id, payload=payload)
    return Notification(agent_id=agent_id, topic=topic, payload=payload)


def _inbound(subject: str, message_id: str | None = None) -> EmailContent:
    return EmailContent(
        from_=Address(addr="bob@example.org", name="Bob"),
        to=(Address(addr="support@example.com"),),
        subject=subject,
        text="It broke.",
        message_id=message_id,
    )


class StoreContract(ABC):
    """Subclass and implement ``make_store``; every ``test_*`` method then runs for it."""

    clock: ManualClock
    tmp_path: Path

    @abstractmethod
    def make_store(self, clock: ManualClock) -> Store:
        """A new, empty store using ``clock`` for outbox timestamps.

        ``self.tmp_path`` (pytest's ``tmp_path`` of the test) is set when it is called.
        """

    def close_store(self, store: Store) -> None:
        """Release the store after the test (default: ``store.close()``); override it to drop
        what the test left behind, e.g. a database schema."""
        store.close()

    @pytest.fixture(autouse=True)
    def _store_contract(self, tmp_path: Path) -> Iterator[None]:
        self.tmp_path = tmp_path
        self.clock = ManualClock()
        self._stores: list[Store] = []
        yield
        for store in self._stores:
            self.close_store(store)

    @property
    def store(self) -> Store:
        """The store under test: made by ``make_store`` on first use, closed after the test."""
        if not self._stores:
            self._stores.append(self.make_store(self.clock))
        return self._stores[0]

    # ------------------------------------------------------------------ helpers

    def add(self, *items: Interaction) -> list[Interaction]:
        with self.store.unit_of_work() as uow:
            stored = [uow.interactions.add(i) for i in items]
            uow.commit()
        return stored

    def get(self, iid: str) -> Interaction | None:
        with self.store.unit_of_work() as uow:
            return uow.interactions.get(iid)

    def change(self, iid: str, **fields: Any) -> Interaction:
        with self.store.unit_of_work() as uow:
            current = uow.interactions.get(iid)
            assert current is not None
            changed = uow.interactions.update(current.model_copy(update=fields))
            uow.commit()
        return changed

    def notify(self, *texts: str, agent_id: str = "alice") -> None:
        """One commit per text: a notification for ``agent_id`` with that text."""
        for text in texts:
            with self.store.unit_of_work() as uow:
                uow.outbox.add_notification(note(agent_id, text))
                uow.commit()

    def service(self) -> InteractionService:
        """The core's service on this store, with one agent, alice (mailbox support@...)."""
        alice = Agent(id="alice", mailboxes=("support@example.com",))
        return InteractionService(
            self.store,
            InMemoryAgentDirectory([alice]),
            InMemoryAttachmentStore(),
            self.clock,
            SequentialIds(),
        )

    @staticmethod
    def ids(found: list[Interaction]) -> list[str]:
        return [i.id for i in found]

    # ------------------------------------------------------------------ add / get / update

    def test_add_stores_at_version_1_and_get_returns_it_equal(self) -> None:
        original = interaction(
            "I1",
            version=7,
            user_data={"Priority": 3, "VIP": True, "Score": 0.5, "Note": "ünicode"},
            offer=Offer(agent_id="alice", offered_at=T0, returns_to="bob"),
            rejected_by=("carol",),
            workbin="agent:alice/Personal",
        )
        [stored] = self.add(original)
        assert stored.version == 1
        assert stored == original.model_copy(update={"version": 1})
        assert self.get("I1") == stored
        assert self.get("nope") is None

    def test_uncommitted_add_is_invisible_to_other_units_of_work(self) -> None:
        with self.store.unit_of_work() as uow:
            uow.interactions.add(interaction("I1"))
            assert self.get("I1") is None
            uow.commit()
        assert self.get("I1") is not None

    def test_add_of_an_existing_id_conflicts(self) -> None:
        self.add(interaction("I1"))
        with self.store.unit_of_work() as uow, pytest.raises(ConcurrencyConflict):
            uow.interactions.add(interaction("I1"))
        with self.store.unit_of_work() as uow:
            uow.interactions.add(interaction("I2"))
            with pytest.raises(ConcurrencyConflict):
                uow.interactions.add(interaction("I2"))

    def test_two_units_of_work_adding_the_same_id_one_commits(self) -> None:
        first, second = self.store.unit_of_work(), self.store.unit_of_work()
        first.interactions.add(interaction("I1", comment="first"))
        second.interactions.add(interaction("I1", comment="second"))
        first.commit()
        with pytest.raises(ConcurrencyConflict):
            second.commit()
        second.rollback()
        stored = self.get("I1")
        assert stored is not None and stored.comment == "first" and stored.version == 1

    def test_update_returns_next_version_and_persists(self) -> None:
        self.add(interaction("I1"))
        changed = self.change("I1", state="Invited", offer=Offer(agent_id="alice", offered_at=T0))
        assert changed.version == 2
        assert self.get("I1") == changed
        assert self.change("I1", state="Accepted", owner="alice", offer=None).version == 3

    def test_updates_chain_inside_one_unit_of_work(self) -> None:
        self.add(interaction("I1"))
        with self.store.unit_of_work() as uow:
            loaded = uow.interactions.get("I1")
            assert loaded is not None
            v2 = uow.interactions.update(loaded.model_copy(update={"comment": "a"}))
            v3 = uow.interactions.update(v2.model_copy(update={"comment": "b"}))
            assert (v2.version, v3.version) == (2, 3)
            # Updating again from the stale loaded copy is refused at once.
            with pytest.raises(ConcurrencyConflict):
                uow.interactions.update(loaded)
            uow.commit()
        stored = self.get("I1")
        assert stored is not None and stored.version == 3 and stored.comment == "b"

    def test_add_then_update_in_one_unit_of_work(self) -> None:
        with self.store.unit_of_work() as uow:
            added = uow.interactions.add(interaction("I1"))
            uow.interactions.update(added.model_copy(update={"state": "Invited"}))
            uow.commit()
        stored = self.get("I1")
        assert stored is not None and (stored.version, stored.state) == (2, "Invited")

    def test_stale_update_is_a_conflict_never_a_lost_update(self) -> None:
        self.add(interaction("I1"))
        slow = self.store.unit_of_work()
        loaded = slow.interactions.get("I1")
        assert loaded is not None
        self.change("I1", comment="winner")
        with pytest.raises(ConcurrencyConflict) as caught:  # at update or at commit
            slow.interactions.update(loaded.model_copy(update={"comment": "loser"}))
            slow.commit()
        slow.rollback()
        assert (caught.value.interaction_id, caught.value.expected) == ("I1", 1)
        assert caught.value.actual == 2
        stored = self.get("I1")
        assert stored is not None and (stored.comment, stored.version) == ("winner", 2)

    def test_two_units_of_work_racing_exactly_one_commits(self) -> None:
        self.add(interaction("I1"))
        a, b = self.store.unit_of_work(), self.store.unit_of_work()
        la, lb = a.interactions.get("I1"), b.interactions.get("I1")
        assert la is not None and lb is not None
        a.interactions.update(la.model_copy(update={"owner": "alice"}))
        b.interactions.update(lb.model_copy(update={"owner": "bob"}))
        a.outbox.add_notification(note("alice", "a won"))
        b.outbox.add_notification(note("bob", "b won"))
        a.commit()
        with pytest.raises(ConcurrencyConflict):
            b.commit()
        b.rollback()
        stored = self.get("I1")
        assert stored is not None and (stored.owner, stored.version) == ("alice", 2)
        assert [n.agent_id for n in self.store.pending_notifications()] == ["alice"]

    def test_threads_racing_on_one_interaction_exactly_one_commits(self) -> None:
        self.add(interaction("I1"))
        workers = 8
        loaded = threading.Barrier(workers)
        outcomes: list[str] = []
        lock = threading.Lock()

        def race(n: int) -> None:
            with self.store.unit_of_work() as uow:
                current = uow.interactions.get("I1")
                assert current is not None
                loaded.wait()  # every worker holds version 1 before anyone writes
                try:
                    uow.interactions.update(current.model_copy(update={"owner": f"agent{n}"}))
                    uow.outbox.add_notification(note(f"agent{n}"))
                    uow.commit()
                    result = f"agent{n}"
                except ConcurrencyConflict:
                    result = "conflict"
            with lock:
                outcomes.append(result)

        threads = [threading.Thread(target=race, args=(n,)) for n in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [o for o in outcomes if o != "conflict"]
        assert len(outcomes) == workers and len(winners) == 1
        stored = self.get("I1")
        assert stored is not None and stored.owner == winners[0] and stored.version == 2
        assert [n.agent_id for n in self.store.pending_notifications()] == winners

    def test_concurrent_retrying_writers_lose_no_update(self) -> None:
        self.add(interaction("I1", user_data={"count": 0}))
        workers, rounds = 4, 25

        def bump() -> None:
            for _ in range(rounds):
                while True:
                    with self.store.unit_of_work() as uow:
                        current = uow.interactions.get("I1")
                        assert current is not None
                        count = int(current.user_data["count"]) + 1
                        uow.interactions.update(
                            current.model_copy(update={"user_data": {"count": count}})
                        )
                        try:
                            uow.commit()
                            break
                        except ConcurrencyConflict:
                            continue

        threads = [threading.Thread(target=bump) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stored = self.get("I1")
        assert stored is not None
        assert stored.user_data["count"] == workers * rounds
        assert stored.version == 1 + workers * rounds

    def test_expect_commits_when_unchanged_and_keeps_the_version(self) -> None:
        self.add(interaction("P"), interaction("I1"))
        with self.store.unit_of_work() as uow:
            parent, other = uow.interactions.get("P"), uow.interactions.get("I1")
            assert parent is not None and other is not None
            uow.interactions.expect(parent)
            uow.interactions.update(other.model_copy(update={"comment": "depends on P"}))
            uow.commit()
        stored, dependent = self.get("P"), self.get("I1")
        assert stored is not None and stored.version == 1  # read, never written
        assert dependent is not None and dependent.comment == "depends on P"

    def test_expect_conflicts_when_changed_concurrently_and_writes_nothing(self) -> None:
        self.add(interaction("P"), interaction("I1"))
        slow = self.store.unit_of_work()
        parent, other = slow.interactions.get("P"), slow.interactions.get("I1")
        assert parent is not None and other is not None
        self.change("P", comment="transferred meanwhile")
        with pytest.raises(ConcurrencyConflict) as caught:
            slow.interactions.expect(parent)
            slow.interactions.update(other.model_copy(update={"comment": "lost?"}))
            slow.outbox.add_notification(note("alice", "never"))
            slow.commit()
        slow.rollback()
        assert (caught.value.interaction_id, caught.value.expected, caught.value.actual) == (
            "P",
            1,
            2,
        )
        untouched = self.get("I1")
        assert untouched is not None and (untouched.comment, untouched.version) == ("", 1)
        assert self.store.pending_notifications() == []

    def test_expect_agrees_with_the_unit_of_works_own_writes(self) -> None:
        self.add(interaction("P"))
        with self.store.unit_of_work() as uow:
            loaded = uow.interactions.get("P")
            assert loaded is not None
            changed = uow.interactions.update(loaded.model_copy(update={"comment": "x"}))
            uow.interactions.expect(changed)  # the staged version: fine
            with pytest.raises(ConcurrencyConflict):
                uow.interactions.expect(loaded)  # the version it replaced: stale
            uow.rollback()
        stored = self.get("P")
        assert stored is not None and stored.version == 1

    def test_update_of_an_unknown_interaction_conflicts(self) -> None:
        with self.store.unit_of_work() as uow, pytest.raises(ConcurrencyConflict) as caught:
            uow.interactions.update(interaction("ghost", version=1))
            uow.commit()
        assert caught.value.actual is None
        assert self.get("ghost") is None

    def test_a_failed_commit_writes_nothing(self) -> None:
        self.add(interaction("I1"), interaction("I2"))
        with self.store.unit_of_work() as uow:
            one, two = uow.interactions.get("I1"), uow.interactions.get("I2")
            assert one is not None and two is not None
            uow.interactions.update(one.model_copy(update={"comment": "changed"}))
            uow.interactions.add(interaction("I3"))
            uow.interactions.update(two.model_copy(update={"comment": "changed"}))
            uow.outbox.add_notification(note("alice"))
            uow.outbox.add_mail(mail("I1"))
            self.change("I2", comment="concurrent")
            with pytest.raises(ConcurrencyConflict):
                uow.commit()
        one = self.get("I1")
        assert one is not None and (one.version, one.comment) == (1, "")
        assert self.get("I3") is None
        assert self.store.pending_notifications() == []
        assert self.store.pending_mail(T0 + timedelta(days=1)) == []

    # ------------------------------------------------------------------ rollback

    def test_leaving_without_commit_rolls_back(self) -> None:
        self.add(interaction("I1"))
        with self.store.unit_of_work() as uow:
            loaded = uow.interactions.get("I1")
            assert loaded is not None
            uow.interactions.update(loaded.model_copy(update={"comment": "x"}))
            uow.interactions.add(interaction("I2"))
            uow.outbox.add_notification(note("alice"))
            uow.outbox.add_mail(mail("I1"))
        stored = self.get("I1")
        assert stored is not None and stored.version == 1
        assert self.get("I2") is None
        assert self.store.pending_notifications() == []
        assert self.store.pending_mail(T0 + timedelta(days=1)) == []

    def test_an_exception_rolls_back(self) -> None:
        with pytest.raises(RuntimeError), self.store.unit_of_work() as uow:
            uow.interactions.add(interaction("I1"))
            uow.outbox.add_notification(note("alice"))
            raise RuntimeError("boom")
        assert self.get("I1") is None
        assert self.store.pending_notifications() == []

    def test_rollback_discards_and_the_unit_of_work_is_reusable(self) -> None:
        with self.store.unit_of_work() as uow:
            uow.interactions.add(interaction("I1"))
            uow.rollback()
            assert uow.interactions.get("I1") is None
            uow.interactions.add(interaction("I2"))
            uow.commit()
            uow.interactions.add(interaction("I3"))
            uow.commit()
            uow.commit()  # nothing staged: a no-op
        assert self.get("I1") is None
        assert self.get("I2") is not None and self.get("I3") is not None

    # ------------------------------------------------------------------ queries

    def test_read_your_writes_inside_a_unit_of_work(self) -> None:
        self.add(
            interaction("I1", 1, owner="alice", state="Accepted"),
            interaction("I2", 2),
            interaction("I3", 3, workbin="wb", state="InWorkbin"),
        )
        with self.store.unit_of_work() as uow:
            i1, i2 = uow.interactions.get("I1"), uow.interactions.get("I2")
            assert i1 is not None and i2 is not None
            # I1 goes back to the queue, received first; I2 leaves it; I4 is new, queued.
            uow.interactions.update(i1.model_copy(update={"owner": None, "state": "Revoked"}))
            uow.interactions.update(
                i2.model_copy(
                    update={"state": "Invited", "offer": Offer(agent_id="alice", offered_at=T0)}
                )
            )
            uow.interactions.add(interaction("I4", 0, workbin="wb", state="Transferred"))
            revoked = uow.interactions.get("I1")
            assert revoked is not None and revoked.state == "Revoked"
            assert self.ids(uow.interactions.in_queue("Inbound")) == ["I4", "I1"]
            assert self.ids(uow.interactions.in_queue("Inbound", limit=1)) == ["I4"]
            assert self.ids(uow.interactions.for_agent("alice")) == ["I2"]
            assert self.ids(uow.interactions.in_workbin("wb")) == ["I4", "I3"]
            found = uow.interactions.by_message_id("<I4@example.org>")
            assert found is not None and found.id == "I4"
            # Outside the unit of work, nothing changed yet.
            with self.store.unit_of_work() as other:
                assert self.ids(other.interactions.in_queue("Inbound")) == ["I2"]
                assert other.interactions.by_message_id("<I4@example.org>") is None
            uow.commit()
        with self.store.unit_of_work() as uow:
            assert self.ids(uow.interactions.in_queue("Inbound")) == ["I4", "I1"]

    def test_for_agent_is_owned_or_offered(self) -> None:
        offer = Offer(agent_id="alice", offered_at=T0)
        self.add(
            interaction("I1", 1, owner="alice", state="Accepted"),
            interaction("I2", 2, state="Invited", offer=offer),
            interaction("I3", 3, owner="bob", state="Accepted"),
            interaction("I4", 4, owner="bob", state="Invited", offer=offer),
            interaction("I5", 5, last_agent="alice", state="Sent"),
        )
        with self.store.unit_of_work() as uow:
            assert sorted(self.ids(uow.interactions.for_agent("alice"))) == ["I1", "I2", "I4"]
            assert sorted(self.ids(uow.interactions.for_agent("bob"))) == ["I3", "I4"]
            assert uow.interactions.for_agent("nobody") == []

    def test_in_queue_is_waiting_states_oldest_first_with_limit(self) -> None:
        self.add(
            interaction("I5", 5),
            interaction("I1", 1, state="Revoked"),
            interaction("I3b", 3, state="Transferred"),
            interaction("I3a", 3, state="Rejected"),
            interaction("I0", 0, state="Accepted", owner="alice"),
            interaction("I2", 2, state="Invited"),
            interaction("Ix", 0, current_queue="Other"),
        )
        with self.store.unit_of_work() as uow:
            assert self.ids(uow.interactions.in_queue("Inbound")) == ["I1", "I3a", "I3b", "I5"]
            assert self.ids(uow.interactions.in_queue("Inbound", limit=2)) == ["I1", "I3a"]
            assert uow.interactions.in_queue("Inbound", limit=0) == []
            assert self.ids(uow.interactions.in_queue("Other")) == ["Ix"]
            assert uow.interactions.in_queue("Empty") == []

    def test_in_workbin_oldest_first(self) -> None:
        self.add(
            interaction("W2", 2, workbin="agent:alice/Personal", state="InWorkbin"),
            interaction("W1", 1, workbin="agent:alice/Personal", state="InWorkbin"),
            interaction("W3", 3, workbin="Shared", state="InWorkbin"),
            interaction("Q", 0),
        )
        with self.store.unit_of_work() as uow:
            assert self.ids(uow.interactions.in_workbin("agent:alice/Personal")) == ["W1", "W2"]
            assert self.ids(uow.interactions.in_workbin("Shared")) == ["W3"]
            assert uow.interactions.in_workbin("agent:bob/Personal") == []

    def test_by_message_id_with_and_without_mailbox(self) -> None:
        email = interaction("x").email.model_copy(update={"message_id": "<dup@example.org>"})
        self.add(
            interaction("A", 5, email=email, mailbox="sales@example.com"),
            interaction("B", 1, email=email, mailbox="support@example.com"),
            interaction("C", 9),
        )
        with self.store.unit_of_work() as uow:
            first = uow.interactions.by_message_id("<dup@example.org>")
            assert first is not None and first.id == "A"  # the first stored
            box = uow.interactions.by_message_id("<dup@example.org>", "support@example.com")
            assert box is not None and box.id == "B"
            assert uow.interactions.by_message_id("<dup@example.org>", "other@example.com") is None
            found = uow.interactions.by_message_id("<C@example.org>")
            assert found is not None and found.id == "C"
            assert uow.interactions.by_message_id("<unknown@example.org>") is None

    def test_queries_follow_updates(self) -> None:
        self.add(interaction("I1", 1))
        self.change("I1", state="InWorkbin", workbin="wb", current_queue="Parked")
        with self.store.unit_of_work() as uow:
            assert uow.interactions.in_queue("Inbound") == []
            assert self.ids(uow.interactions.in_workbin("wb")) == ["I1"]
        self.change("I1", state="Accepted", workbin=None, owner="alice")
        with self.store.unit_of_work() as uow:
            assert uow.interactions.in_workbin("wb") == []
            assert self.ids(uow.interactions.for_agent("alice")) == ["I1"]

    def test_in_queue_is_exactly_the_lifecycle_waiting_states(self) -> None:
        self.add(*(interaction(f"S{n}", n, state=state) for n, state in enumerate(STATES)))
        waiting = [f"S{n}" for n, state in enumerate(STATES) if state in WAITING_STATES]
        assert waiting  # the lifecycle has waiting states, or this test proves nothing
        with self.store.unit_of_work() as uow:
            assert self.ids(uow.interactions.in_queue("Inbound")) == waiting

    # ------------------------------------------------------------------ outbox

    def test_outbox_sequence_is_shared_and_strictly_increasing(self) -> None:
        with self.store.unit_of_work() as uow:
            uow.outbox.add_mail(mail("I1", 1))
            uow.outbox.add_notification(note("alice", "1"))
            uow.outbox.add_notification(note("bob", "2"))
            uow.commit()
        with self.store.unit_of_work() as uow:
            uow.outbox.add_notification(note("alice", "3"))
            uow.outbox.add_mail(mail("I1", 2))
            uow.commit()
        notes = self.store.pending_notifications()
        mails = self.store.pending_mail(self.clock.now())
        seqs = [n.seq for n in notes] + [m.seq for m in mails]
        assert len(set(seqs)) == 5 and min(seqs) >= 1
        # Within a commit, notifications first, then mail; each commit after the previous.
        assert notes[0].seq < notes[1].seq < mails[0].seq < notes[2].seq < mails[1].seq
        # A sequence is never reused, even once everything before it is done.
        self.store.mark_notifications_done([n.seq for n in notes])
        for m in mails:
            self.store.mark_mail_sent(m.seq)
        with self.store.unit_of_work() as uow:
            uow.outbox.add_notification(note("alice", "4"))
            uow.commit()
        [later] = self.store.pending_notifications()
        assert later.seq > max(seqs)

    def test_pending_notifications_in_order_after_seq_with_limit(self) -> None:
        for n in range(5):
            with self.store.unit_of_work() as uow:
                uow.outbox.add_notification(note("alice", str(n)))
                uow.commit()
        notes = self.store.pending_notifications()
        assert [n.to_wire()["text"] for n in notes] == ["0", "1", "2", "3", "4"]
        seqs = [n.seq for n in notes]
        assert seqs == sorted(seqs)
        assert [n.seq for n in self.store.pending_notifications(after_seq=seqs[1])] == seqs[2:]
        assert [n.seq for n in self.store.pending_notifications(limit=2)] == seqs[:2]
        assert self.store.pending_notifications(after_seq=seqs[-1]) == []

    def test_mark_notifications_done(self) -> None:
        with self.store.unit_of_work() as uow:
            for n in range(3):
                uow.outbox.add_notification(note("alice", str(n)))
            uow.outbox.add_mail(mail("I1"))
            uow.commit()
        seqs = [n.seq for n in self.store.pending_notifications()]
        [entry] = self.store.pending_mail(self.clock.now())
        self.store.mark_notifications_done([seqs[0], seqs[2], entry.seq, 999_999])
        self.store.mark_notifications_done([])
        assert [n.seq for n in self.store.pending_notifications()] == [seqs[1]]
        assert [e.seq for e in self.store.pending_mail(self.clock.now())] == [entry.seq]

    def test_notification_round_trip_keeps_the_wire_form(self) -> None:
        stored = interaction(
            "I1",
            user_data={"Priority": 3, "VIP": True, "Score": 0.25, "Note": "ünicode ✓"},
            email=interaction("I1").email.model_copy(
                update={
                    "attachments": (
                        Attachment(id="b" * 64, name="a.pdf", size=10, mimetype="application/pdf"),
                    )
                }
            ),
        )
        message = stored.to_message(["Accept", "Reject"])
        with self.store.unit_of_work() as uow:
            uow.outbox.add_notification(Notification(agent_id="alice", payload=message))
            uow.outbox.add_notification(note("bob", topic=TOPIC_WORKBINS))
            uow.commit()
        first, second = self.store.pending_notifications()
        assert (first.agent_id, first.topic) == ("alice", "/me/interactions")
        assert first.to_wire() == message.to_wire()
        assert (second.agent_id, second.topic) == ("bob", TOPIC_WORKBINS)
        assert second.to_wire() == {"messageTypeName": "Test", "text": "hello"}

    def test_uncommitted_outbox_entries_are_not_pending(self) -> None:
        with self.store.unit_of_work() as uow:
            uow.outbox.add_notification(note("alice"))
            uow.outbox.add_mail(mail("I1"))
            assert self.store.pending_notifications() == []
            assert self.store.pending_mail(self.clock.now()) == []
            uow.commit()
        assert len(self.store.pending_notifications()) == 1

    def test_mail_round_trip_and_bookkeeping(self) -> None:
        self.clock.advance(60)
        queued = self.clock.now()
        with self.store.unit_of_work() as uow:
            uow.outbox.add_mail(mail("I1"))
            uow.commit()
        self.clock.advance(3600)
        assert self.store.pending_mail(queued - timedelta(seconds=1)) == []
        [entry] = self.store.pending_mail(queued)
        assert entry.mail == mail("I1")
        assert entry.mail.envelope_recipients == ("bob@example.org", "carol@example.org")
        assert (entry.queued_at, entry.next_attempt_at) == (queued, queued)
        assert (entry.attempts, entry.last_error) == (0, None)

    def test_pending_mail_is_due_entries_by_seq_with_limit(self) -> None:
        with self.store.unit_of_work() as uow:
            for n in range(4):
                uow.outbox.add_mail(mail(f"I{n}", n))
            uow.commit()
        entries = self.store.pending_mail(self.clock.now())
        seqs = [e.seq for e in entries]
        assert [e.mail.interaction_id for e in entries] == ["I0", "I1", "I2", "I3"]
        assert seqs == sorted(seqs)
        later = self.clock.now() + timedelta(minutes=5)
        self.store.reschedule_mail(seqs[0], later, "421 try later")
        assert [e.seq for e in self.store.pending_mail(self.clock.now())] == seqs[1:]
        assert [e.seq for e in self.store.pending_mail(self.clock.now(), limit=2)] == seqs[1:3]
        assert [e.seq for e in self.store.pending_mail(later)] == seqs

    def test_reschedule_sent_and_failed_mail(self) -> None:
        with self.store.unit_of_work() as uow:
            for n in range(3):
                uow.outbox.add_mail(mail(f"I{n}", n))
            uow.commit()
        a, b, c = (e.seq for e in self.store.pending_mail(self.clock.now()))
        first = self.clock.now() + timedelta(seconds=5)
        second = self.clock.now() + timedelta(seconds=15)
        self.store.reschedule_mail(a, first, "421 busy")
        self.store.reschedule_mail(a, second, "timeout")
        self.store.mark_mail_sent(b)
        self.store.mark_mail_failed(c, "550 no such user")
        [entry] = self.store.pending_mail(second)
        assert (entry.seq, entry.attempts, entry.last_error) == (a, 2, "timeout")
        assert entry.next_attempt_at == second
        assert entry.queued_at == self.clock.now()
        # Done entries stay done: later calls on them change nothing.
        self.store.reschedule_mail(b, first, "late")
        self.store.reschedule_mail(c, first, "late")
        self.store.mark_mail_sent(c)
        self.store.mark_mail_failed(b, "late")
        self.store.mark_mail_sent(12345)
        self.store.mark_mail_failed(a, "gave up")
        assert self.store.pending_mail(second + timedelta(days=1)) == []

    # ------------------------------------------------------------------ seq

    def test_every_pending_notification_carries_its_own_seq(self) -> None:
        """A reader must return each notification with the positive seq it stored it under:
        drains read on after the last seq and mark done by seq."""
        self.notify("0", "1")
        with self.store.unit_of_work() as uow:
            uow.outbox.add_mail(mail("I1"))
            uow.outbox.add_notification(note("bob", "2"))
            uow.commit()
        self.notify("3")
        notes = self.store.pending_notifications()
        assert [n.to_wire()["text"] for n in notes] == ["0", "1", "2", "3"]
        seqs = [n.seq for n in notes]
        assert all(s >= 1 for s in seqs), f"notifications returned without their seq: {seqs}"
        assert seqs == sorted(set(seqs)), f"seqs not unique and increasing: {seqs}"
        for k, seq in enumerate(seqs):
            after = self.store.pending_notifications(after_seq=seq)
            assert [n.seq for n in after] == seqs[k + 1 :]
        self.store.mark_notifications_done([seqs[1]])
        assert [n.to_wire()["text"] for n in self.store.pending_notifications()] == ["0", "2", "3"]

    def test_a_drain_reading_on_after_the_last_seq_ends(self) -> None:
        """The loop every dispatcher runs: read after the last seq seen, until empty."""
        texts = [str(n) for n in range(7)]
        self.notify(*texts)
        seen: list[str] = []
        after, batches = 0, 0
        while True:
            batch = self.store.pending_notifications(after_seq=after, limit=3)
            if not batch:
                break
            batches += 1
            assert batches <= 3, (
                f"after_seq={after} returned {[n.seq for n in batch]}: the drain does not move "
                "forward (a reader must return each notification with its seq)"
            )
            seen.extend(n.to_wire()["text"] for n in batch)
            after = batch[-1].seq
        assert seen == texts
        assert len(self.store.pending_notifications()) == 7  # reading marks nothing done

    def test_a_seq_read_twice_is_the_same_seq(self) -> None:
        self.notify("a", "b")
        first = [n.seq for n in self.store.pending_notifications()]
        assert [n.seq for n in self.store.pending_notifications()] == first
        with self.store.unit_of_work() as uow:
            uow.outbox.add_notification(note("alice", "c"))
            uow.commit()
        assert [n.seq for n in self.store.pending_notifications()][:2] == first

    def test_marking_done_twice_or_unknown_seqs_is_a_no_op(self) -> None:
        self.notify("0", "1")
        with self.store.unit_of_work() as uow:
            uow.outbox.add_mail(mail("I1", 1))
            uow.outbox.add_mail(mail("I2", 2))
            uow.commit()
        first, second = (n.seq for n in self.store.pending_notifications())
        sent, failed = (e.seq for e in self.store.pending_mail(self.clock.now()))
        self.store.mark_notifications_done([first])
        self.store.mark_notifications_done([first, first])
        self.store.mark_mail_sent(sent)
        self.store.mark_mail_sent(sent)
        self.store.mark_mail_failed(failed, "550 no")
        self.store.mark_mail_failed(failed, "550 again")
        self.store.reschedule_mail(failed, self.clock.now(), "late")
        # A mail seq is not a notification's, and the reverse.
        self.store.mark_notifications_done([sent, failed])
        self.store.mark_mail_sent(second)
        self.store.mark_mail_failed(second, "not a mail")
        self.store.reschedule_mail(second, self.clock.now(), "not a mail")
        unknown = max(first, second, sent, failed) + 1000
        self.store.mark_notifications_done([unknown, -1, 0])
        self.store.mark_mail_sent(unknown)
        self.store.mark_mail_failed(0, "never queued")
        self.store.reschedule_mail(-1, self.clock.now(), "never queued")
        assert [n.seq for n in self.store.pending_notifications()] == [second]
        assert self.store.pending_mail(self.clock.now() + timedelta(days=1)) == []

    def test_pending_mail_due_before_is_inclusive(self) -> None:
        with self.store.unit_of_work() as uow:
            uow.outbox.add_mail(mail("I1"))
            uow.commit()
        [entry] = self.store.pending_mail(self.clock.now())
        due = self.clock.now() + timedelta(seconds=30)
        self.store.reschedule_mail(entry.seq, due, "421 later")
        assert self.store.pending_mail(due - timedelta(microseconds=1)) == []
        [again] = self.store.pending_mail(due)
        assert (again.seq, again.next_attempt_at, again.attempts) == (entry.seq, due, 1)
        assert self.store.pending_mail(due, limit=0) == []

    # ------------------------------------------------------------------ retention

    def texts(self, notes: list[Notification]) -> list[str]:
        return [n.to_wire()["text"] for n in notes]

    def test_published_notifications_are_kept_for_notifications_since(self) -> None:
        self.notify("a0", "a1")
        self.notify("b0", agent_id="bob")
        self.notify("a2")
        pending = self.store.pending_notifications()
        seqs = {n.to_wire()["text"]: n.seq for n in pending}
        self.store.mark_notifications_done([seqs["a0"], seqs["b0"]])
        # pending_notifications: still only what was not published.
        assert self.texts(self.store.pending_notifications()) == ["a1", "a2"]
        # notifications_since: the agent's own, published or not, in seq order, with seqs.
        backlog = self.store.notifications_since("alice", 0)
        assert self.texts(backlog.notifications) == ["a0", "a1", "a2"]
        assert [n.seq for n in backlog.notifications] == [seqs["a0"], seqs["a1"], seqs["a2"]]
        assert all(n.agent_id == "alice" for n in backlog.notifications)
        assert backlog.notifications[0].topic == "/me/interactions"
        assert backlog.complete is True
        assert backlog.last_seq == max(seqs.values())
        after = self.store.notifications_since("alice", seqs["a0"])
        assert self.texts(after.notifications) == ["a1", "a2"] and after.complete
        # Seqs are shared by every agent: after bob's b0 (committed after a1), only a2.
        assert self.texts(self.store.notifications_since("alice", seqs["b0"]).notifications) == [
            "a2"
        ]
        assert self.texts(self.store.notifications_since("alice", 0, limit=2).notifications) == [
            "a0",
            "a1",
        ]
        assert self.store.notifications_since("alice", 0, limit=0).notifications == []
        assert self.texts(self.store.notifications_since("bob", 0).notifications) == ["b0"]
        last = self.store.notifications_since("alice", seqs["a2"])
        assert (last.notifications, last.complete) == ([], True)
        nobody = self.store.notifications_since("carol", 0)
        assert (nobody.notifications, nobody.complete) == ([], True)
        # The notification as published: the same wire form.
        assert backlog.notifications[0].to_wire() == {"messageTypeName": "Test", "text": "a0"}

    def test_notifications_since_sees_only_committed_entries(self) -> None:
        self.notify("kept")
        with self.store.unit_of_work() as uow:
            uow.outbox.add_notification(note("alice", "staged"))
            backlog = self.store.notifications_since("alice", 0)
            assert self.texts(backlog.notifications) == ["kept"]
            uow.rollback()
        assert self.texts(self.store.notifications_since("alice", 0).notifications) == ["kept"]

    def test_last_seq_is_the_highest_seq_given_and_higher_seqs_are_never_known(self) -> None:
        empty = self.store.notifications_since("alice", 0)
        assert (empty.notifications, empty.complete, empty.last_seq) == ([], True, 0)
        self.notify("a0")
        with self.store.unit_of_work() as uow:
            uow.outbox.add_mail(mail("I1"))
            uow.commit()
        [entry] = self.store.pending_mail(self.clock.now())
        backlog = self.store.notifications_since("alice", 0)
        assert backlog.last_seq == entry.seq  # mail counts: one sequence
        assert self.store.notifications_since("alice", entry.seq).complete is True
        # A seq this store never gave (a client of another database): not complete.
        beyond = self.store.notifications_since("alice", entry.seq + 1)
        assert (beyond.notifications, beyond.complete) == ([], False)

    def test_purge_deletes_published_notifications_before_the_time_only(self) -> None:
        self.notify("old0", "old1", "pending")
        self.notify("bob-old", agent_id="bob")
        seqs = {n.to_wire()["text"]: n.seq for n in self.store.pending_notifications()}
        self.store.mark_notifications_done([seqs["old0"], seqs["old1"], seqs["bob-old"]])
        published_at = self.clock.now()
        self.clock.advance(60)
        self.notify("new")
        [new] = [n.seq for n in self.store.pending_notifications() if n.seq > seqs["bob-old"]]
        self.store.mark_notifications_done([new])
        # Strictly before: nothing published at the cut-off time itself goes.
        assert self.store.purge_notifications(published_at) == 0
        assert self.store.purge_notifications(published_at + timedelta(seconds=1), limit=0) == 0
        assert self.store.purge_notifications(published_at + timedelta(seconds=1), limit=2) == 2
        assert self.store.purge_notifications(published_at + timedelta(seconds=1)) == 1
        assert self.store.purge_notifications(published_at + timedelta(seconds=1)) == 0
        # The pending one is never purged, however old; the one published later is kept.
        assert self.store.purge_notifications(self.clock.now() + timedelta(days=1), 10) == 1
        assert self.texts(self.store.pending_notifications()) == ["pending"]
        assert self.texts(self.store.notifications_since("alice", 0).notifications) == ["pending"]
        assert self.store.notifications_since("bob", 0).notifications == []

    def test_a_purge_makes_the_history_before_it_incomplete_for_that_agent_only(self) -> None:
        self.notify("a0", "a1", "a2")
        self.notify("b0", agent_id="bob")
        a0, a1, a2, b0 = (n.seq for n in self.store.pending_notifications())
        self.store.mark_notifications_done([a0, a1])
        self.clock.advance(60)
        assert self.store.purge_notifications(self.clock.now()) == 2
        for after in (0, a0):
            gap = self.store.notifications_since("alice", after)
            assert self.texts(gap.notifications) == ["a2"]
            assert gap.complete is False, after  # a1 (> after) is gone
        whole = self.store.notifications_since("alice", a1)
        assert self.texts(whole.notifications) == ["a2"] and whole.complete is True
        assert self.store.notifications_since("bob", 0).complete is True  # not bob's
        assert self.texts(self.store.notifications_since("bob", 0).notifications) == ["b0"]
        # A later purge of a lower seq does not lower what was recorded.
        self.store.mark_notifications_done([a2, b0])
        self.clock.advance(60)
        assert self.store.purge_notifications(self.clock.now()) == 2
        assert self.store.notifications_since("alice", a1).complete is False
        assert self.store.notifications_since("alice", a2).complete is True
        assert self.store.notifications_since("bob", b0 - 1).complete is False

    def test_marking_published_again_keeps_the_first_time_and_seqs_go_on_after_a_purge(
        self,
    ) -> None:
        self.notify("a0")
        [first] = self.store.pending_notifications()
        self.store.mark_notifications_done([first.seq])
        published_at = self.clock.now()
        self.clock.advance(600)
        self.store.mark_notifications_done([first.seq])  # already published: a no-op
        assert self.store.purge_notifications(published_at + timedelta(seconds=1)) == 1
        assert self.store.pending_notifications() == []
        self.notify("a1")
        [later] = self.store.pending_notifications()
        assert later.seq > first.seq
        backlog = self.store.notifications_since("alice", first.seq)
        assert self.texts(backlog.notifications) == ["a1"] and backlog.complete is True

    # ------------------------------------------------------------------ close

    def test_close_is_idempotent(self) -> None:
        self.add(interaction("I1"))
        with self.store.unit_of_work() as uow:
            uow.outbox.add_notification(note("alice"))
            uow.outbox.add_mail(mail("I1"))
            uow.commit()
        self.store.close()
        self.store.close()  # and once more after the test: no error either

    def test_close_of_a_store_never_used_is_idempotent(self) -> None:
        self.store.close()
        self.store.close()

    def test_close_after_a_rolled_back_unit_of_work(self) -> None:
        with self.store.unit_of_work() as uow:
            uow.interactions.add(interaction("I1"))
            uow.outbox.add_notification(note("alice"))
            uow.rollback()
        self.store.close()
        self.store.close()

    # ------------------------------------------------------------------ through the service

    def test_service_race_to_accept_one_offer_has_exactly_one_winner(self) -> None:
        service = self.service()
        inbound = service.receive(_inbound("Hi"), mailbox="support@example.com")
        service.offer(inbound.id, "alice")
        accept = parse_operation({"operationName": "Accept"})
        workers = 4
        start = threading.Barrier(workers)
        results: list[str] = []
        lock = threading.Lock()

        def run() -> None:
            start.wait()
            try:
                service.execute("alice", inbound.id, accept)
                outcome = "ok"
            except OperationNotAllowed:
                outcome = "refused"
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=run) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["ok"] + ["refused"] * (workers - 1)
        stored = self.get(inbound.id)
        assert stored is not None and (stored.state, stored.owner) == ("Accepted", "alice")
        assert stored.version == 3
        states = [n.to_wire()["state"] for n in self.store.pending_notifications()]
        assert states == ["Invited", "Accepted"]

    def test_service_reply_and_send_commit_interactions_with_their_outbox(self) -> None:
        service = self.service()
        inbound = service.receive(
            _inbound("Help", message_id="<orig@example.org>"), mailbox="support@example.com"
        )
        service.offer(inbound.id, "alice")
        service.execute_wire("alice", inbound.id, {"operationName": "Accept"})
        reply = service.execute_wire("alice", inbound.id, {"operationName": "Reply"})
        draft_id = reply["replyInteractionId"]
        assert service.execute_wire("alice", draft_id, {"operationName": "Send"}) == {
            "status": "ok"
        }
        [entry] = self.store.pending_mail(self.clock.now())
        assert entry.mail.interaction_id == draft_id
        assert entry.mail.in_reply_to == "<orig@example.org>"
        with self.store.unit_of_work() as uow:
            found = uow.interactions.by_message_id("<orig@example.org>", "support@example.com")
            assert found is not None and found.id == inbound.id
            draft = uow.interactions.get(draft_id)
            assert draft is not None and (draft.state, draft.version) == ("Sent", 2)
            assert draft.parent_id == inbound.id and draft.email.subject == "Re: Help"
            parent = uow.interactions.get(inbound.id)
            assert parent is not None and parent.version == 3  # the reply did not rewrite it
        listed = service.list_interactions("alice")
        assert [m["id"] for m in listed] == [inbound.id]

    # ------------------------------------------------------------------ channel states

    def put_channel(self, agent_id: str, **fields: Any) -> ChannelState:
        with self.store.unit_of_work() as uow:
            before = uow.channels.get(agent_id) or ChannelState(agent_id=agent_id)
            stored = uow.channels.put(before.model_copy(update=fields))
            uow.commit()
        return stored

    def test_channel_states_are_stored_versioned_and_listed_by_agent(self) -> None:
        with self.store.unit_of_work() as uow:
            assert uow.channels.get("alice") is None and uow.channels.all() == []
        first = self.put_channel("bob", ready=True, since=T0)
        assert (first.version, first.ready, first.since) == (1, True, T0)
        self.put_channel("alice", ready=False, reason="Lunch")
        second = self.put_channel("bob", ready=False, reason="Break", since=None)
        assert second.version == 2
        with self.store.unit_of_work() as uow:
            assert uow.channels.get("bob") == second
            listed = uow.channels.all()
        assert [(c.agent_id, c.ready, c.reason, c.version) for c in listed] == [
            ("alice", False, "Lunch", 1),
            ("bob", False, "Break", 2),
        ]

    def test_channel_puts_are_read_back_in_their_unit_of_work_and_rolled_back(self) -> None:
        with self.store.unit_of_work() as uow:
            uow.channels.put(ChannelState(agent_id="alice", ready=True))
            staged = uow.channels.get("alice")
            assert staged is not None and staged.ready and staged.version == 1
            assert [c.agent_id for c in uow.channels.all()] == ["alice"]
        with self.store.unit_of_work() as uow:
            assert uow.channels.get("alice") is None  # left without commit: nothing stored

    def test_two_channel_changes_from_one_version_conflict_and_the_loser_writes_nothing(
        self,
    ) -> None:
        self.put_channel("alice", ready=False)
        with self.store.unit_of_work() as a, self.store.unit_of_work() as b:
            loaded_a = a.channels.get("alice")
            loaded_b = b.channels.get("alice")
            assert loaded_a is not None and loaded_b is not None
            a.channels.put(loaded_a.model_copy(update={"ready": True}))
            a.outbox.add_notification(note("alice", "a"))
            a.commit()
            b.channels.put(loaded_b.model_copy(update={"reason": "Lunch"}))
            b.outbox.add_notification(note("alice", "b"))
            with pytest.raises(ConcurrencyConflict):
                b.commit()
        with self.store.unit_of_work() as uow:
            stored = uow.channels.get("alice")
        assert stored is not None and (stored.ready, stored.reason, stored.version) == (
            True,
            None,
            2,
        )
        texts = [n.to_wire()["text"] for n in self.store.pending_notifications()]
        assert texts == ["a"]

    def test_two_first_channel_states_of_one_agent_conflict(self) -> None:
        with self.store.unit_of_work() as a, self.store.unit_of_work() as b:
            a.channels.put(ChannelState(agent_id="alice", ready=True))
            b.channels.put(ChannelState(agent_id="alice", reason="Lunch"))
            a.commit()
            with pytest.raises(ConcurrencyConflict):
                b.commit()
        with self.store.unit_of_work() as uow:
            stored = uow.channels.get("alice")
        assert stored is not None and stored.ready and stored.version == 1

    def test_a_channel_state_and_an_interaction_commit_together_or_not_at_all(self) -> None:
        [stored] = self.add(interaction("I1"))
        self.change("I1", state="Accepted")
        with self.store.unit_of_work() as uow:
            uow.channels.put(ChannelState(agent_id="alice", ready=True))
            uow.interactions.update(stored.model_copy(update={"state": "Revoked"}))  # stale
            with pytest.raises(ConcurrencyConflict):
                uow.commit()
        with self.store.unit_of_work() as uow:
            assert uow.channels.get("alice") is None

    # ------------------------------------------------------------------ unique ingestion

    def test_a_second_interaction_with_an_ingest_key_is_refused_naming_the_first(self) -> None:
        self.add(interaction("I1", ingest_key="k1"), interaction("I2", ingest_key="k2"))
        with self.store.unit_of_work() as uow:
            uow.interactions.add(interaction("I3", ingest_key="k1"))
            uow.outbox.add_notification(note("alice", "lost"))
            with pytest.raises(AlreadyIngested) as refused:
                uow.commit()
        assert refused.value.existing_id == "I1"
        assert self.get("I3") is None
        assert self.store.pending_notifications() == []
        self.add(interaction("I4"), interaction("I5"))  # no key: never unique

    def test_two_units_of_work_adding_one_ingest_key_at_once_store_one(self) -> None:
        with self.store.unit_of_work() as a, self.store.unit_of_work() as b:
            a.interactions.add(interaction("I1", ingest_key="same"))
            b.interactions.add(interaction("I2", ingest_key="same"))
            a.commit()
            with pytest.raises(AlreadyIngested):
                b.commit()
        assert self.get("I1") is not None and self.get("I2") is None

    def test_one_unit_of_work_adding_one_ingest_key_twice_is_refused(self) -> None:
        with self.store.unit_of_work() as uow:
            uow.interactions.add(interaction("I1", ingest_key="same"))
            uow.interactions.add(interaction("I2", ingest_key="same"))
            with pytest.raises(AlreadyIngested):
                uow.commit()
        assert self.get("I1") is None and self.get("I2") is None

    # ------------------------------------------------------------------ change feed

    @property
    def feed(self) -> ChangeFeed:
        store = self.store
        if not isinstance(store, ChangeFeed):
            pytest.skip(f"{type(store).__name__} has no change feed (one process per store)")
        return store

    def test_the_feed_lists_what_commits_wrote_once_each_as_it_is_now(self) -> None:
        feed = self.feed
        start = feed.feed_position()
        self.add(interaction("I1"), interaction("I2"))
        self.change("I1", state="Accepted")
        self.put_channel("alice", ready=True)
        changes = feed.changes_since(start)
        assert [(i.id, i.version) for i in changes.interactions] == [("I2", 1), ("I1", 2)]
        assert [(c.agent_id, c.ready) for c in changes.channels] == [("alice", True)]
        assert changes.position > start
        assert changes.position <= feed.feed_position()
        again = feed.changes_since(changes.position)
        assert (again.interactions, again.channels, again.position) == ([], [], changes.position)
        self.change("I2", state="Accepted")
        later = feed.changes_since(changes.position)
        assert [(i.id, i.version) for i in later.interactions] == [("I2", 2)]

    def test_the_feed_reads_on_after_a_limit_without_skipping(self) -> None:
        feed = self.feed
        start = feed.feed_position()
        for n in range(5):
            self.add(interaction(f"I{n}"))
        seen: list[str] = []
        position = start
        while True:
            changes = feed.changes_since(position, limit=2)
            assert len(changes.interactions) <= 2
            seen += [i.id for i in changes.interactions]
            if not changes.interactions:
                break
            position = changes.position
        assert seen == [f"I{n}" for n in range(5)]

    def test_a_failed_commit_is_not_in_the_feed(self) -> None:
        feed = self.feed
        [stored] = self.add(interaction("I1"))
        start = feed.feed_position()
        self.change("I1", state="Accepted")
        with self.store.unit_of_work() as uow:
            uow.interactions.update(stored)  # stale
            uow.interactions.add(interaction("I2"))
            with pytest.raises(ConcurrencyConflict):
                uow.commit()
        assert [(i.id, i.version) for i in feed.changes_since(start).interactions] == [("I1", 2)]

    def test_notifications_of_reads_the_agents_asked_for_each_after_its_own_seq(self) -> None:
        feed = self.feed
        start = feed.feed_position()
        self.notify("a1", agent_id="alice")
        self.notify("b1", agent_id="bob")
        self.notify("c1", agent_id="carol")
        self.notify("a2", agent_id="alice")
        self.notify("b2", agent_id="bob")
        every = feed.notifications_after(start)
        seq = {n.to_wire()["text"]: n.seq for n in every}
        first = self.store.pending_notifications()[0]
        self.store.mark_notifications_done([first.seq])  # published or not: both are read
        page = feed.notifications_of({"alice": start, "bob": seq["b1"]})
        assert [n.to_wire()["text"] for n in page.notifications] == ["a1", "a2", "b2"]
        assert [n.agent_id for n in page.notifications] == ["alice", "alice", "bob"]
        assert [n.seq for n in page.notifications] == [seq["a1"], seq["a2"], seq["b2"]]
        assert page.more is False
        assert page.position == feed.feed_position() >= seq["b2"]
        # Nobody asked for: no rows, and the position all the same.
        empty = feed.notifications_of({})
        assert (empty.notifications, empty.more, empty.position) == ([], False, page.position)
        assert feed.notifications_of({"dave": start}).notifications == []
        assert feed.notifications_of({"alice": page.position}).notifications == []

    def test_notifications_of_a_full_page_stops_at_its_last_seq(self) -> None:
        feed = self.feed
        start = feed.feed_position()
        for n in range(3):
            self.notify(f"a{n}", agent_id="alice")
            self.notify(f"b{n}", agent_id="bob")
        page = feed.notifications_of({"alice": start, "bob": start}, limit=4)
        assert [n.to_wire()["text"] for n in page.notifications] == ["a0", "b0", "a1", "b1"]
        assert page.more is True and page.position == page.notifications[-1].seq
        rest = feed.notifications_of({"alice": page.position, "bob": page.position}, limit=4)
        assert [n.to_wire()["text"] for n in rest.notifications] == ["a2", "b2"]
        assert rest.more is False and rest.position == feed.feed_position()
        with pytest.raises(ValueError):
            feed.notifications_of({"alice": start}, limit=0)

    def test_notifications_of_the_position_covers_what_is_committed_later(self) -> None:
        feed = self.feed
        self.notify("a1", agent_id="alice")
        page = feed.notifications_of({"alice": 0})
        self.notify("b1", agent_id="bob")  # another agent's moves the position, not the rows
        self.notify("a2", agent_id="alice")
        later = feed.notifications_of({"alice": page.position, "bob": page.position})
        assert [n.to_wire()["text"] for n in later.notifications] == ["b1", "a2"]
        assert later.position > page.position

    def test_settle_notifications_marks_every_agents_up_to_a_seq(self) -> None:
        feed = self.feed
        start = feed.feed_position()
        self.notify("a1", agent_id="alice")
        self.notify("b1", agent_id="bob")
        self.notify("a2", agent_id="alice")
        a1, b1, a2 = feed.notifications_after(start)
        assert feed.settle_notifications(b1.seq) == 2
        assert [n.seq for n in self.store.pending_notifications()] == [a2.seq]
        assert feed.settle_notifications(b1.seq) == 0  # idempotent
        assert feed.settle_notifications(0) == 0
        # Settled means published: retained for replay, purgeable, never pending again.
        assert [n.seq for n in self.store.notifications_since("alice", start).notifications] == [
            a1.seq,
            a2.seq,
        ]
        # Only the range after ``after_seq``: a2 itself is not above a2.seq.
        assert feed.settle_notifications(feed.feed_position(), after_seq=a2.seq) == 0
        assert feed.settle_notifications(a2.seq, after_seq=a2.seq) == 0
        assert [n.seq for n in self.store.pending_notifications()] == [a2.seq]
        assert feed.settle_notifications(feed.feed_position(), after_seq=b1.seq) == 1
        assert self.store.pending_notifications() == []
        assert self.store.purge_notifications(self.clock.now() + timedelta(seconds=1)) == 3

    def test_notifications_after_lists_every_agents_published_or_not(self) -> None:
        feed = self.feed
        start = feed.feed_position()
        self.notify("a1", agent_id="alice")
        self.notify("b1", agent_id="bob")
        self.notify("a2", agent_id="alice")
        first = self.store.pending_notifications()[0]
        self.store.mark_notifications_done([first.seq])
        found = feed.notifications_after(start)
        assert [(n.agent_id, n.to_wire()["text"]) for n in found] == [
            ("alice", "a1"),
            ("bob", "b1"),
            ("alice", "a2"),
        ]
        seqs = [n.seq for n in found]
        assert seqs == sorted(seqs) and seqs[0] > start
        assert seqs[-1] <= feed.feed_position()
        assert [n.to_wire()["text"] for n in feed.notifications_after(seqs[0], limit=1)] == ["b1"]
        assert feed.notifications_after(seqs[-1]) == []
