"""Every operation in every state, allowed and refused, through the wire-format entry point."""

from __future__ import annotations

from typing import Any

import pytest

from interactions_core import lifecycle
from interactions_core.lifecycle import AGENT_OPERATIONS, STATES, State
from interactions_core.model import (
    Address,
    Attachment,
    EmailContent,
    Interaction,
    Offer,
    SubType,
)
from interactions_core.ports import Agent
from interactions_core.testing import Harness

ALICE = Agent(id="alice", addresses=("alice@agents.example",), mailboxes=("support@example.com",))
BOB = Agent(id="bob", mailboxes=("support@example.com",))

OUTBOUND_STATES = {State.REPLY_CREATED, State.FAILED, State.SENT, State.CANCELLED}

BODIES: dict[str, dict[str, Any]] = {
    "Accept": {"operationName": "Accept"},
    "Reject": {"operationName": "Reject"},
    "Transfer": {"operationName": "Transfer", "agentId": "bob"},
    "Reply": {"operationName": "Reply"},
    "ReplyAll": {"operationName": "ReplyAll"},
    "Forward": {"operationName": "Forward", "toAddress": "third@example.net"},
    "StopProcessing": {"operationName": "StopProcessing"},
    "PlaceInQueue": {"operationName": "PlaceInQueue", "queueName": "Inbound"},
    "Cancel": {"operationName": "CancelReply"},
    "Send": {"operationName": "Send", "email_object": {"toAddress": "customer@example.org"}},
    "PlaceInWorkbin": {"operationName": "PlaceInWorkbin"},
    "Pull": {"operationName": "Pull"},
    "UpdateProperties": {"operationName": "UpdateProperties", "userData": {"Priority": 3}},
    "LinkAttachment": {"operationName": "LinkAttachment", "attachmentId": "att-1"},
}

PARENT_EMAIL = EmailContent(
    from_=Address(addr="customer@example.org", name="Cee Customer"),
    to=(Address(addr="support@example.com"),),
    subject="Order 42",
    text="Where is my order?",
    message_id="<orig@example.org>",
    attachments=(Attachment(id="att-1", name="invoice.pdf", size=10, mimetype="application/pdf"),),
)


def put(h: Harness, interaction: Interaction) -> Interaction:
    with h.store.unit_of_work() as uow:
        stored = uow.interactions.add(interaction)
        uow.commit()
    return stored


def make_in_state(h: Harness, state: str) -> str:
    """An interaction in ``state`` that alice is entitled to act on."""
    parent = put(
        h,
        Interaction(
            id="P1",
            state=State.ACCEPTED,
            mailbox="support@example.com",
            email=PARENT_EMAIL,
            owner="alice",
            last_agent="alice",
            current_queue="Inbound",
        ),
    )
    outbound = state in OUTBOUND_STATES
    fields: dict[str, Any] = {
        "id": "X1",
        "state": state,
        "mailbox": "support@example.com",
        "last_agent": "alice",
        "current_queue": "Drafts" if outbound else "Inbound",
    }
    if outbound:
        fields |= {
            "interaction_subtype": SubType.OUTBOUND_REPLY,
            "parent_id": parent.id,
            "email": EmailContent(
                from_=Address(addr="support@example.com"),
                to=(Address(addr="customer@example.org"),),
                subject="Re: Order 42",
            ),
        }
    else:
        fields["email"] = PARENT_EMAIL
    if state == State.INVITED:
        fields["offer"] = Offer(agent_id="alice", offered_at=h.clock.now())
    elif state == State.IN_WORKBIN:
        fields["workbin"] = "agent:alice/Personal"
    elif state not in {State.SENT, State.CANCELLED, State.COMPLETED}:
        fields["owner"] = "alice"
    return put(h, Interaction(**fields)).id


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("operation", AGENT_OPERATIONS)
def test_operation_in_state(state: str, operation: str) -> None:
    h = Harness(agents=[ALICE, BOB])
    iid = make_in_state(h, state)
    before = len(h.notifications("alice"))
    response = h.execute("alice", iid, BODIES[operation])
    allowed = lifecycle.capabilities(state)
    if operation not in allowed:
        assert response["status"] == "error"
        assert f"not allowed in state {state}" in response["errorDescription"]
        assert len(h.notifications("alice")) == before, "a refused operation notifies nothing"
        return
    assert response["status"] == "ok", response
    creates = operation in {"Reply", "ReplyAll", "Forward"}
    assert ("replyInteractionId" in response) is creates
    notes = h.notifications("alice")[before:]
    assert notes, "every allowed operation notifies the agent"
    last = notes[-1]
    if creates:
        assert last["id"] == response["replyInteractionId"]
        assert last["state"] == State.REPLY_CREATED
        return
    expected = lifecycle.fire(
        operation,
        state,
        outbound=state in OUTBOUND_STATES,
        returning=False,
    )
    if operation == "Transfer":
        expected = lifecycle.fire("Offer", expected)  # a transfer to an agent is an offer
    assert h.interaction(iid).state == expected
    assert last["id"] == iid
    if operation == "Transfer":
        # alice sees it leave; bob is invited with Accept/Reject.
        assert last["state"] == State.TRANSFERRED and last["capabilities"] == []
        assert h.notifications("bob")[-1]["state"] == State.INVITED
        assert h.notifications("bob")[-1]["capabilities"] == [
            "Accept",
            "Reject",
        ]
    else:
        assert last["state"] == expected


@pytest.mark.parametrize("state", STATES)
def test_capabilities_are_what_the_machine_accepts(state: str) -> None:
    """No second list: capabilities == the agent triggers the machine accepts in the state."""
    accepted = set()
    for op in AGENT_OPERATIONS:
        for outbound in (False, True):
            for returning in (False, True):
                try:
                    lifecycle.fire(op, state, outbound=outbound, returning=returning)
                except Exception:
                    continue
                accepted.add(op)
    assert set(lifecycle.capabilities(state)) == accepted


def test_every_capability_is_an_operation_name_a_client_can_send() -> None:
    from interactions_core.operations import OPERATION_NAMES

    for state in STATES:
        for cap in lifecycle.capabilities(state):
            assert cap in OPERATION_NAMES


@pytest.mark.parametrize("state", STATES)
def test_notifications_carry_the_machines_capabilities(state: str) -> None:
    h = Harness(agents=[ALICE, BOB])
    iid = make_in_state(h, state)
    shown = h.service.get_interaction("alice", iid)
    assert shown["capabilities"] == list(lifecycle.capabilities(state))


def _through_transitions(trigger: str, state: str, outbound: bool, returning: bool) -> str | None:
    holder = lifecycle._Holder(state, outbound, returning)
    try:
        done = lifecycle.MACHINE.events[trigger].trigger(holder)
    except Exception:
        return None
    return holder.state if done else None


@pytest.mark.parametrize("state", STATES)
def test_fire_agrees_with_the_machine_for_every_trigger(state: str) -> None:
    """``fire`` answers bare internal transitions without running ``transitions``: it must say
    exactly what running the trigger through the machine says, for every trigger and fact."""
    assert lifecycle._INERT, "the machine has bare internal transitions (Reply, ReplyAll...)"
    for trigger in lifecycle.MACHINE.events:
        for outbound in (False, True):
            for returning in (False, True):
                expected = _through_transitions(trigger, state, outbound, returning)
                try:
                    got: str | None = lifecycle.fire(
                        trigger, state, outbound=outbound, returning=returning
                    )
                except Exception:
                    got = None
                assert got == expected, (trigger, state, outbound, returning)
