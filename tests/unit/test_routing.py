"""Routing rules: readiness, longest-idle, capacity, skills, reject, timeout, moves, workbins."""

from __future__ import annotations

from datetime import timedelta

import pytest

from interactions_core.model import EmailContent
from interactions_core.ports import TOPIC_CHANNELS, TOPIC_WORKBINS, Agent
from interactions_core.routing import RoutingConfig
from interactions_core.service import ServiceConfig
from interactions_core.testing import Harness, inbound_email


def agent(name: str, *skills: str, capacity: int = 5) -> Agent:
    return Agent(
        id=name, mailboxes=("support@example.com",), skills=frozenset(skills), capacity=capacity
    )


def mail(n: int = 1, **kw: str) -> EmailContent:
    return inbound_email(
        sender=f"customer{n}@example.org",
        to=kw.get("to", "support@example.com"),
        subject=f"Question {n}",
        text="Hello",
        message_id=f"<q{n}@example.org>",
    )


def make(*agents: Agent, **config: object) -> Harness:
    routing = RoutingConfig(
        offer_timeout=timedelta(seconds=30),
        queue_skills={"Billing": "billing"},
    )
    service = ServiceConfig(
        mailbox_queues={"billing@example.com": "Billing", "support@example.com": "Inbound"},
        shared_workbins={"Escalations": frozenset()},
        **config,
    )
    return Harness(agents=agents, routing=routing, config=service)


def offered_to(h: Harness, iid: str) -> str | None:
    offer = h.interaction(iid).offer
    return offer.agent_id if offer else None


def test_nobody_ready_means_the_mail_waits_then_goes_to_the_first_ready_agent() -> None:
    h = make(agent("alice"))
    iid = h.deliver(mail())
    assert h.interaction(iid).state == "Queued"
    assert h.set_channel("alice") == {"status": "ok"}
    assert offered_to(h, iid) == "alice"
    note = h.last_notification("alice")
    assert (note["state"], note["capabilities"]) == ("Invited", ["Accept", "Reject"])


def test_channel_state_is_notified_and_validated() -> None:
    h = make(agent("alice"))
    h.set_channel("alice", "Ready")
    h.set_channel("alice", "NotReady")
    states = [n["channels"][0]["userState"]["state"] for n in h.messages("alice", TOPIC_CHANNELS)]
    assert states == ["Ready", "NotReady"]
    assert h.router.agent_state("alice")["channels"][0]["userState"]["state"] == "NotReady"
    bad = h.router.set_channel_state("alice", "voice", {"operationName": "Ready"})
    assert bad == {"status": "error", "errorDescription": "Channel 'voice' not found"}
    bad = h.router.set_channel_state("alice", "email", {"operationName": "Dance"})
    assert "Unknown operationName" in bad["errorDescription"]
    bad = h.router.set_channel_state("alice", "email", "Ready")
    assert bad["status"] == "error"


def test_longest_idle_agent_first() -> None:
    h = make(agent("alice"), agent("bob"))
    h.set_channel("bob")
    h.clock.advance(5)
    h.set_channel("alice")
    first = h.deliver(mail(1))
    second = h.deliver(mail(2))
    third = h.deliver(mail(3))
    assert [offered_to(h, i) for i in (first, second, third)] == ["bob", "alice", "bob"]


def test_capacity_limits_concurrent_interactions() -> None:
    h = make(agent("alice", capacity=1))
    h.set_channel("alice")
    a = h.deliver(mail(1))
    b = h.deliver(mail(2))
    assert offered_to(h, a) == "alice" and offered_to(h, b) is None
    h.execute("alice", a, {"operationName": "Accept"})
    assert offered_to(h, b) is None
    h.execute("alice", a, {"operationName": "StopProcessing"})
    assert offered_to(h, b) == "alice"


def test_skills_from_the_queue() -> None:
    h = make(agent("alice"), agent("bob", "billing"))
    h.set_channel("alice")
    h.clock.advance(1)
    h.set_channel("bob")
    # Ingested through the mailbox map, it lands in Billing and only bob may take it,
    # although alice has been idle longer.
    r = h.ingest(
        b"From: c@example.org\r\nTo: billing@example.com\r\nSubject: invoice\r\n"
        b"Message-ID: <inv@example.org>\r\n\r\nWrong amount\r\n"
    )
    assert h.interaction(r.interaction_id).current_queue == "Billing"
    assert offered_to(h, r.interaction_id) == "bob"
    plain = h.deliver(mail(2))
    assert offered_to(h, plain) == "alice"


def test_reject_goes_to_someone_else_then_back_if_nobody_else() -> None:
    h = make(agent("alice"), agent("bob"))
    h.set_channel("alice")
    h.clock.advance(1)
    h.set_channel("bob")
    iid = h.deliver(mail())
    assert offered_to(h, iid) == "alice"
    h.execute("alice", iid, {"operationName": "Reject"})
    assert offered_to(h, iid) == "bob"
    h.execute("bob", iid, {"operationName": "Reject"})
    # Both refused; nobody else can take it: offered again, longest idle first.
    assert offered_to(h, iid) in {"alice", "bob"}


def test_offer_timeout_revokes_and_offers_again() -> None:
    h = make(agent("alice"), agent("bob"))
    h.set_channel("alice")
    h.clock.advance(1)
    h.set_channel("bob")
    iid = h.deliver(mail())
    assert offered_to(h, iid) == "alice"
    h.tick(29)
    assert offered_to(h, iid) == "alice"
    h.tick(2)
    revoked = h.notifications("alice")[-1]
    assert (revoked["id"], revoked["state"], revoked["capabilities"]) == (iid, "Revoked", [])
    assert offered_to(h, iid) == "bob"


def test_not_ready_keeps_owned_work_and_gets_no_new_offers() -> None:
    h = make(agent("alice"))
    h.set_channel("alice")
    a = h.deliver(mail(1))
    h.execute("alice", a, {"operationName": "Accept"})
    h.set_channel("alice", "NotReady")
    b = h.deliver(mail(2))
    assert h.interaction(a).owner == "alice"
    assert offered_to(h, b) is None
    h.set_channel("alice", "Ready")
    assert offered_to(h, b) == "alice"


def test_transfer_to_skill_and_to_queue() -> None:
    h = make(agent("alice"), agent("bob", "billing"), agent("carol"))
    for name in ("alice", "bob", "carol"):
        h.set_channel(name)
    iid = h.deliver(mail())
    holder = offered_to(h, iid)
    assert holder is not None
    h.execute(holder, iid, {"operationName": "Accept"})
    h.execute(holder, iid, {"operationName": "Transfer", "skill": "billing"})
    assert offered_to(h, iid) == "bob"
    h.execute("bob", iid, {"operationName": "Accept"})
    h.execute("bob", iid, {"operationName": "Transfer", "queueName": "Inbound"})
    i = h.interaction(iid)
    assert i.offer is not None and i.offer.agent_id in {"alice", "carol"}
    assert i.in_queues == ("Inbound", "Inbound")


def test_transfer_to_agent_times_out_back_to_sender_with_a_note() -> None:
    h = make(agent("alice"), agent("bob"))
    h.set_channel("alice")
    iid = h.deliver(mail())
    h.execute("alice", iid, {"operationName": "Accept"})
    h.execute("alice", iid, {"operationName": "Transfer", "agentId": "bob"})
    assert offered_to(h, iid) == "bob"
    h.tick(31)
    i = h.interaction(iid)
    assert (i.state, i.owner) == ("Accepted", "alice")
    assert "did not answer" in str(i.user_data["TransferResult"])
    assert h.notifications("bob")[-1]["state"] == "Revoked"


def test_stop_processing_and_place_in_queue() -> None:
    h = make(agent("alice", capacity=1), done_queue="Archive")
    h.set_channel("alice")
    iid = h.deliver(mail())
    h.execute("alice", iid, {"operationName": "Accept"})
    h.execute("alice", iid, {"operationName": "PlaceInQueue", "queueName": "Inbound"})
    assert offered_to(h, iid) == "alice"  # back in the queue, offered again
    h.execute("alice", iid, {"operationName": "Accept"})
    h.execute("alice", iid, {"operationName": "StopProcessing"})
    i = h.interaction(iid)
    assert (i.state, i.current_queue, i.owner) == ("Completed", "Archive", None)
    assert i.in_queues == ("Inbound", "Inbound", "Archive")
    assert h.router.presence("alice").load == 0


def test_shared_workbin_content_pull_and_notifications() -> None:
    h = make(agent("alice"), agent("bob"))
    h.set_channel("alice")
    iid = h.deliver(mail())
    h.execute("alice", iid, {"operationName": "Accept"})
    r = h.execute("alice", iid, {"operationName": "PlaceInWorkbin", "workbinName": "Escalations"})
    assert r == {"status": "ok"}
    assert [w["workbinName"] for w in h.service.workbins("bob")] == ["Personal", "Escalations"]
    assert [i["id"] for i in h.service.workbin_content("bob", "Escalations")] == [iid]
    changes = h.messages("bob", TOPIC_WORKBINS)
    assert changes[-1]["change"] == "PlaceInWorkbin" and changes[-1]["interactionId"] == iid
    assert h.execute("bob", iid, {"operationName": "Pull"}) == {"status": "ok"}
    assert h.interaction(iid).owner == "bob"
    assert h.service.workbin_content("bob", "Escalations") == []
    assert h.messages("alice", TOPIC_WORKBINS)[-1]["change"] == "Pull"
    # Placed in a queue from the workbin, it leaves it for every member too (found by the
    # stateful test: alice was left seeing it in the workbin, and her Pull said "not found").
    h.execute("bob", iid, {"operationName": "PlaceInWorkbin", "workbinName": "Escalations"})
    assert h.execute("bob", iid, {"operationName": "PlaceInQueue", "queueName": "Inbound"}) == {
        "status": "ok"
    }
    for member in ("alice", "bob"):
        last = h.messages(member, TOPIC_WORKBINS)[-1]
        assert (last["change"], last["interactionId"]) == ("PlaceInQueue", iid), member
    with pytest.raises(Exception, match="Workbin 'Nope' not found"):
        h.service.workbin_content("bob", "Nope")
