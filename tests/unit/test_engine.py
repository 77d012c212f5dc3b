"""The Engine and the library's shape: handlers for every operation, the drains' contract
checks, the rules written once (automatic queue, ContactID, strict booleans), typed errors."""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field

from interactions_core import (
    Agent,
    Context,
    Engine,
    Interaction,
    OperationModel,
    OperationSpec,
    OutboxContractError,
    Refused,
    ServiceConfig,
    State,
)
from interactions_core.handlers import HANDLERS
from interactions_core.lifecycle import DEFAULT
from interactions_core.memory import (
    InMemoryStore,
    ManualClock,
    RecordingNotifier,
    RecordingTransport,
    SequentialIds,
)
from interactions_core.operations import _ON_AN_INTERACTION, CreateEmail
from interactions_core.outbox import NotificationDrain
from interactions_core.ports import MailEntry, Notification, PermanentMailError
from interactions_core.testing import Harness, inbound_email

SRC = Path(__file__).resolve().parents[2] / "src" / "interactions_core"
ALICE = Agent(id="alice", mailboxes=("support@example.com",))
BOB = Agent(id="bob", mailboxes=("support@example.com",))
AUTO_REPLY = (
    b"From: Cee <Cee@example.org>\r\nTo: support@example.com\r\nSubject: Out of office\r\n"
    b"Auto-Submitted: auto-replied\r\nMessage-ID: <ooo@example.org>\r\n\r\nAway.\r\n"
)


def engine(**kwargs: Any) -> tuple[Engine, RecordingNotifier, RecordingTransport]:
    clock = ManualClock()
    notifier, transport = RecordingNotifier(), RecordingTransport()
    built = Engine(
        store=InMemoryStore(clock),
        agents=[ALICE, BOB],
        notifier=notifier,
        transport=transport,
        clock=clock,
        ids=SequentialIds(),
        **kwargs,
    )
    return built, notifier, transport


def test_every_member_of_the_operation_union_has_a_handler() -> None:
    members = set(_ON_AN_INTERACTION.__args__)
    assert members == set(HANDLERS), members ^ set(HANDLERS)
    assert CreateEmail not in HANDLERS  # it is not an operation on an interaction


def test_every_agent_operation_of_the_lifecycle_has_a_handler() -> None:
    handled = {m.canonical for m in HANDLERS}
    assert set(DEFAULT.agent_operations) == handled


def test_no_assert_guards_an_invariant_in_the_core() -> None:
    """``python -O`` removes asserts: the core's invariants raise typed errors instead."""
    found = [
        f"{path.relative_to(SRC)}:{node.lineno}"
        for path in SRC.rglob("*.py")
        if "testing" not in path.parts
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assert)
    ]
    assert found == []


def test_pump_routes_publishes_and_sends_until_nothing_is_left() -> None:
    e, notifier, transport = engine()
    e.set_channel_state("alice", {"operationName": "Ready"})
    mail = (
        b"From: Bob <bob@example.org>\r\nTo: support@example.com\r\nSubject: Help\r\n"
        b"Message-ID: <1@example.org>\r\n\r\nIt broke.\r\n"
    )
    iid = e.ingest(mail).interaction_id
    report = e.pump()
    assert report.published >= 2 and report.sent == 0
    assert e.interaction("alice", iid)["state"] == "Invited"
    assert e.execute("alice", iid, {"operationName": "Accept"}).ok
    draft = e.execute("alice", iid, {"operationName": "Reply"}).reply_interaction_id
    assert draft is not None
    assert e.execute("alice", draft, {"operationName": "Send"}).ok
    assert e.pump().sent == 1
    assert [m.in_reply_to for m in transport.sent] == ["<1@example.org>"]
    assert e.pump() == type(report)()  # nothing left
    states = [n.to_wire().get("state") for n in notifier.published if n.agent_id == "alice"]
    assert states[-1] == "Sent"


def test_a_permanent_failure_sends_the_draft_back_in_the_same_pump() -> None:
    e, notifier, transport = engine()
    h_iid = e.receive(
        inbound_email(sender="bob@example.org", to="support@example.com", subject="Hi"),
        mailbox="support@example.com",
    ).id
    e.service.offer(h_iid, "alice")
    e.execute("alice", h_iid, {"operationName": "Accept"})
    draft = e.execute("alice", h_iid, {"operationName": "Reply"}).reply_interaction_id
    assert draft is not None
    e.execute("alice", draft, {"operationName": "Send"})
    transport.fail_next.append(PermanentMailError("550 no such user"))
    e.pump()
    shown = e.interaction("alice", draft)
    assert shown["state"] == "Failed" and "550" in shown["userData"]["DeliveryError"]
    assert notifier.published[-1].to_wire()["state"] == "Failed"


def test_tick_takes_the_time_it_is_given() -> None:
    e, notifier, _ = engine()
    iid = e.receive(
        inbound_email(sender="bob@example.org", to="support@example.com"),
        mailbox="support@example.com",
    ).id
    e.set_channel_state("alice", {"operationName": "Ready"})
    deadline = e.next_deadline()
    assert deadline is not None
    assert e.tick(deadline - timedelta(seconds=1)).revoked == 0
    report = e.tick(deadline)
    assert (report.revoked, report.offered) == (1, 1)  # alice is the only Ready agent
    e.pump()
    states = [n.to_wire()["state"] for n in notifier.published if n.topic == "/me/interactions"]
    assert states == ["Invited", "Revoked", "Invited"]
    assert e.interaction("alice", iid)["state"] == "Invited"


class _NoSeqReader(InMemoryStore):
    """A reader that breaks the port: entries without their seq."""

    def pending_notifications(self, after_seq: int = 0, limit: int = 500) -> list[Notification]:
        return [n.model_copy(update={"seq": 0}) for n in super().pending_notifications(0, limit)]


class _ForgetfulReader(InMemoryStore):
    """A reader that ignores after_seq and never marks anything done."""

    def pending_notifications(self, after_seq: int = 0, limit: int = 500) -> list[Notification]:
        return super().pending_notifications(0, limit)

    def mark_notifications_done(self, seqs: Sequence[int]) -> None:
        return None


@pytest.mark.parametrize("reader", [_NoSeqReader, _ForgetfulReader])
def test_a_reader_breaking_the_seq_contract_is_an_error_not_a_loop(
    reader: type[InMemoryStore],
) -> None:
    store = reader(ManualClock())
    with store.unit_of_work() as uow:
        for n in range(3):
            uow.outbox.add_notification(Notification(agent_id="alice", payload=_Raw(n)))
        uow.commit()
    notifier = RecordingNotifier()
    with pytest.raises(OutboxContractError, match="seq"):
        NotificationDrain(store, notifier, limit=2).run()
    assert len(notifier.published) <= 3


class _Raw:
    def __init__(self, n: int) -> None:
        self.n = n

    def to_wire(self) -> dict[str, Any]:
        return {"n": self.n}


def test_the_automatic_queue_is_configured_once_and_never_routed() -> None:
    """Regression: with ServiceConfig(automatic_queue="Bulk"), an auto-reply was offered."""
    h = Harness(agents=[ALICE], config=ServiceConfig(automatic_queue="Bulk"))
    h.set_channel("alice")
    result = h.ingest(AUTO_REPLY)
    assert result.automatic
    found = h.interaction(result.interaction_id)
    assert (found.current_queue, found.state, found.offer) == ("Bulk", "Queued", None)
    assert h.notifications("alice") == []


def test_contact_id_is_one_rule_for_bytes_and_parsed_mail() -> None:
    """Regression: receive() gave Cee@example.org, ingest() cee@example.org."""
    h = Harness(agents=[ALICE])
    by_bytes = h.interaction(h.ingest(AUTO_REPLY.replace(b"Auto-Submitted", b"X-N")).interaction_id)
    by_model = h.interaction(
        h.deliver(inbound_email(sender="Cee <Cee@example.org>", to="support@example.com"))
    )
    assert by_bytes.contact_id == by_model.contact_id == "cee@example.org"


@pytest.mark.parametrize("value", ["yes", 1, "true", None])
def test_booleans_on_the_wire_are_strict(value: Any) -> None:
    h = Harness(agents=[ALICE])
    iid = h.deliver(
        inbound_email(sender="bob@example.org", to="support@example.com"), offer_to="alice"
    )
    h.execute("alice", iid, {"operationName": "Accept"})
    answer = h.execute("alice", iid, {"operationName": "ReplyAll", "quoteOriginal": value})
    assert answer.kind == "invalid" and "quoteOriginal" in (answer.description or "")
    assert answer == {"status": "error", "errorDescription": answer.description}


def test_results_carry_the_error_kind_off_the_wire() -> None:
    h = Harness(agents=[ALICE])
    missing = h.execute("alice", "nope", {"operationName": "Accept"})
    assert (missing.ok, missing.kind) == (False, "not_found")
    assert set(missing) == {"status", "errorDescription"}
    iid = h.deliver(inbound_email(sender="bob@example.org", to="support@example.com"))
    h.service.offer(iid, "alice")
    accepted = h.execute("alice", iid, {"operationName": "Accept"})
    assert (accepted.ok, accepted.kind, dict(accepted)) == (True, None, {"status": "ok"})
    again = h.execute("alice", iid, {"operationName": "Accept"})
    assert again.kind == "not_allowed"


def test_only_create_email_goes_to_the_collection() -> None:
    h = Harness(agents=[ALICE])
    answer = h.execute("alice", None, {"operationName": "Accept"})
    assert answer.kind == "invalid" and "only CreateEmail" in (answer.description or "")
    created = h.execute("alice", None, {"operationName": "CreateEmail"})
    assert created.ok and created.reply_interaction_id


def test_notifications_filter_by_interaction() -> None:
    h = Harness(agents=[ALICE])
    first = h.deliver(
        inbound_email(sender="bob@example.org", to="support@example.com"), offer_to="alice"
    )
    second = h.deliver(
        inbound_email(sender="eve@example.org", to="support@example.com"), offer_to="alice"
    )
    assert [n["id"] for n in h.notifications("alice", interaction_id=second)] == [second]
    assert h.last_notification("alice", interaction_id=first)["id"] == first


def test_inbound_email_takes_attachments() -> None:
    h = Harness(agents=[ALICE])
    email = h.email(
        sender="bob@example.org",
        to="support@example.com",
        attachments=[("invoice.pdf", b"%PDF-1.4", "application/pdf"), ("a.bin", b"\x00")],
    )
    iid = h.deliver(email, offer_to="alice")
    shown = h.last_notification("alice")["email_object"]["attachments"]
    assert [(a["name"], a["size"], a["mimetype"]) for a in shown] == [
        ("invoice.pdf", 8, "application/pdf"),
        ("a.bin", 1, "application/octet-stream"),
    ]
    _, data = h.service.get_attachment("alice", iid, shown[0]["id"])
    assert data == b"%PDF-1.4"
    with pytest.raises(ValueError, match="store"):
        inbound_email(sender="bob@example.org", to="x@example.com", attachments=[("a", b"")])


# ---------------------------------------------------------------------- custom operations


class Snooze(OperationModel):
    operation_name: Literal["Snooze"] = Field("Snooze", alias="operationName")
    minutes: int = Field(ge=1, le=1440)


def snooze(ctx: Context, i: Interaction, op: Snooze) -> None:
    until = ctx.service.clock.now() + timedelta(minutes=op.minutes)
    ctx.save(i, user_data={**i.user_data, "SnoozedUntil": until.isoformat()})
    if op.minutes == 13:  # an unlucky number: the handler fails after writing
        raise Refused("not today")


SNOOZE = OperationSpec(Snooze, snooze, transitions=[([State.ACCEPTED], None)])


def accepted(h: Harness) -> str:
    iid = h.deliver(
        inbound_email(sender="bob@example.org", to="support@example.com"), offer_to="alice"
    )
    h.execute("alice", iid, {"operationName": "Accept"})
    return iid


def test_a_custom_operation_is_parsed_allowed_and_run() -> None:
    h = Harness(agents=[ALICE], operations=[SNOOZE])
    iid = accepted(h)
    assert h.last_notification("alice")["capabilities"][-1] == "Snooze"
    assert h.execute("alice", iid, {"operationName": "Snooze", "minutes": 5}).ok
    assert "SnoozedUntil" in h.interaction(iid).user_data
    bad = h.execute("alice", iid, {"operationName": "Snooze", "minutes": 0})
    assert bad.kind == "invalid" and "minutes" in (bad.description or "")
    h.execute("alice", iid, {"operationName": "StopProcessing"})
    refused = h.execute("alice", iid, {"operationName": "Snooze", "minutes": 5})
    assert refused.kind == "not_allowed"


def test_a_custom_operation_is_one_atomic_commit() -> None:
    h = Harness(agents=[ALICE], operations=[SNOOZE])
    iid = accepted(h)
    before, seen = h.interaction(iid), len(h.notifications("alice"))
    failed = h.execute("alice", iid, {"operationName": "Snooze", "minutes": 13})
    assert failed.kind == "not_allowed" and "not today" in (failed.description or "")
    assert h.interaction(iid) == before  # the write before the failure was not committed
    assert len(h.notifications("alice")) == seen


def test_registering_changes_only_that_engine() -> None:
    plain = Harness(agents=[ALICE])
    custom = Harness(agents=[ALICE], operations=[SNOOZE])
    assert "Snooze" not in plain.engine.lifecycle.capabilities(State.ACCEPTED)
    assert "Snooze" in custom.engine.lifecycle.capabilities(State.ACCEPTED)
    assert "Snooze" not in DEFAULT.to_mermaid()
    assert "Accepted --> Accepted: Snooze" in custom.engine.lifecycle.to_mermaid()
    unknown = plain.execute("alice", accepted(plain), {"operationName": "Snooze", "minutes": 5})
    assert unknown.kind == "invalid" and "Unknown operationName" in (unknown.description or "")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (OperationSpec(Snooze, snooze), "at least one transition"),
        (OperationSpec(Snooze, snooze, transitions=[(["Nowhere"], None)]), "unknown states"),
        (OperationSpec(Snooze, snooze, transitions=[([State.ACCEPTED], None, "x")]), "condition"),
    ],
)
def test_a_bad_spec_is_refused_with_a_clear_error(spec: OperationSpec[Any], message: str) -> None:
    e, _, _ = engine()
    with pytest.raises(ValueError, match=message):
        e.register_operation(spec)


def test_a_spelling_cannot_be_registered_twice() -> None:
    e, _, _ = engine(operations=[SNOOZE])
    with pytest.raises(ValueError, match="already registered"):
        e.register_operation(SNOOZE)

    class Accept2(OperationModel):
        operation_name: Literal["Accept"] = Field("Accept", alias="operationName")

    with pytest.raises(ValueError, match="already registered"):
        e.register_operation(OperationSpec(Accept2, snooze, transitions=[([State.NEW], None)]))


def test_mail_failure_callback_errors_are_retried_not_lost() -> None:
    e, _, _ = engine()
    calls: list[str] = []

    def broken(entry: MailEntry, reason: str) -> None:
        calls.append(reason)
        raise RuntimeError("store down")

    e.mail_drain.on_permanent_failure = broken
    now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    with e.store.unit_of_work() as uow:
        uow.outbox.add_mail(_mail())
        uow.commit()
    (entry,) = e.store.pending_mail(now.replace(year=2027))
    e.mail_drain.settle(entry, PermanentMailError("550"))
    assert calls == ["550"]
    (again,) = e.store.pending_mail(now.replace(year=2027))
    assert again.attempts == 1  # rescheduled: the failure will be recorded on a later try


def _mail() -> Any:
    from interactions_core import Address, OutgoingMail

    return OutgoingMail(
        interaction_id="I1",
        mailbox="support@example.com",
        from_=Address(addr="support@example.com"),
        to=(Address(addr="bob@example.org"),),
        message_id="<m1@example.com>",
        date=datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
    )


def test_the_docs_name_no_module_that_does_not_exist() -> None:
    page = (SRC.parents[1] / "docs" / "embedding.md").read_text(encoding="utf-8")
    for module in set(re.findall(r"`(interactions_core\.[a-z_.]+)", page)):
        parts = module.split(".")
        assert (SRC.joinpath(*parts[1:]).with_suffix(".py")).exists() or SRC.joinpath(
            *parts[1:]
        ).is_dir(), module
