"""The service through the wire entry point: the seed's examples, errors, isolation, outbox."""

from __future__ import annotations

from typing import Any

import pytest

from interactions_core.ports import Agent, PermanentMailError, TransientMailError
from interactions_core.testing import Harness, inbound_email

ALICE = Agent(
    id="alice",
    name="Alice Agent",
    addresses=("alice@agents.example",),
    mailboxes=("support@example.com",),
    skills=frozenset({"billing"}),
)
BOB = Agent(id="bob", mailboxes=("support@example.com",), skills=frozenset({"billing"}))
MALLORY = Agent(id="mallory", mailboxes=("other@example.com",))

SEED_ACCEPTED_CAPS = [
    "Transfer",
    "Reply",
    "ReplyAll",
    "StopProcessing",
    "PlaceInQueue",
    "PlaceInWorkbin",
    "UpdateProperties",
]
SEED_REPLY_CREATED_CAPS = ["Cancel", "Send", "PlaceInWorkbin", "UpdateProperties", "LinkAttachment"]


@pytest.fixture
def h() -> Harness:
    return Harness(agents=[ALICE, BOB, MALLORY])


def invite(h: Harness, to_agent: str = "alice", **kw: Any) -> str:
    email = inbound_email(
        sender=kw.pop("sender", '"Cee Customer" <customer@example.org>'),
        to=kw.pop("to", "support@example.com"),
        cc=kw.pop("cc", "colleague@example.org, support@example.com"),
        subject=kw.pop("subject", "Order 42"),
        text=kw.pop("text", "Where is my order?\nThanks"),
        message_id=kw.pop("message_id", "<orig-1@example.org>"),
    )
    return h.deliver(email, offer_to=to_agent)


def test_invited_notification_has_accept_and_reject(h: Harness) -> None:
    iid = invite(h)
    note = h.last_notification("alice")
    assert note["messageTypeName"] == "InteractionStateMessage"
    assert note["id"] == iid
    assert note["channel"] == "email"
    assert note["state"] == "Invited"
    assert note["capabilities"] == ["Accept", "Reject"]
    assert note["interactionSubType"] == "InboundNew"
    assert note["currentQueue"] == "Inbound"


def test_seed_accept(h: Harness) -> None:
    """Seed: Accept → {"status":"ok"}, then an Accepted InteractionStateMessage."""
    iid = invite(h)
    assert h.execute("alice", iid, {"operationName": "Accept"}) == {"status": "ok"}
    note = h.last_notification("alice")
    assert note["state"] == "Accepted"
    # The seed's capability list, plus Forward (allowed after Accept per the seed's table).
    assert [c for c in note["capabilities"] if c != "Forward"] == SEED_ACCEPTED_CAPS
    eo = note["email_object"]
    assert set(eo) >= {
        "ToAddress",
        "FromAddress",
        "CCAddresses",
        "Subject",
        "Text",
        "StructuredText",
        "MimeType",
        "StructuredTextMimeType",
        "TheComment",
        "ContactID",
        "attachments",
    }
    assert eo["FromAddress"] == "Cee Customer <customer@example.org>"
    assert eo["ContactID"] == "customer@example.org"
    assert set(note) >= {
        "messageTypeName",
        "id",
        "channel",
        "email_object",
        "interactionType",
        "interactionSubType",
        "userData",
        "currentQueue",
        "inQueues",
        "outQueues",
        "receivedAt",
        "state",
        "capabilities",
    }
    assert note["receivedAt"].endswith("Z")


def test_seed_reply_all(h: Harness) -> None:
    iid = invite(h)
    h.execute("alice", iid, {"operationName": "Accept"})
    response = h.execute("alice", iid, {"operationName": "ReplyAll", "queueName": "Drafts"})
    assert response["status"] == "ok" and response["replyInteractionId"]
    draft = h.last_notification("alice")
    assert draft["id"] == response["replyInteractionId"]
    assert draft["state"] == "ReplyCreated"
    assert draft["interactionSubType"] == "OutboundReply"
    assert draft["capabilities"] == SEED_REPLY_CREATED_CAPS
    eo = draft["email_object"]
    assert eo["ToAddress"] == "Cee Customer <customer@example.org>"
    assert eo["CCAddresses"] == "colleague@example.org"  # mailbox itself removed
    assert eo["FromAddress"] == "support@example.com"
    assert eo["Subject"] == "Re: Order 42"
    assert "> Where is my order?" in eo["Text"]  # seed: ReplyAll quotes by default
    assert eo["InReplyTo"] == "<orig-1@example.org>"
    assert draft["parentInteractionId"] == iid


def test_seed_reply_has_empty_body_by_default(h: Harness) -> None:
    iid = invite(h)
    h.execute("alice", iid, {"operationName": "Accept"})
    r = h.execute(
        "alice", iid, {"operationName": "Reply", "subjectPrefix": "AW: ", "indentCharacter": "|"}
    )
    draft = h.last_notification("alice")
    assert draft["id"] == r["replyInteractionId"]
    assert draft["email_object"]["Text"] == ""
    assert draft["email_object"]["Subject"] == "AW: Order 42"
    assert draft["email_object"]["CCAddresses"] == ""


def test_reply_with_quote_and_start_line(h: Harness) -> None:
    iid = invite(h)
    h.execute("alice", iid, {"operationName": "Accept"})
    h.execute(
        "alice",
        iid,
        {
            "operationName": "Reply",
            "quoteOriginal": True,
            "replyToStartLine": "You wrote:",
            "indentCharacter": "| ",
        },
    )
    text = h.last_notification("alice")["email_object"]["Text"]
    assert "You wrote:\n| Where is my order?\n| Thanks" in text


def test_full_lifecycle_sends_mail(h: Harness) -> None:
    iid = invite(h)
    h.execute("alice", iid, {"operationName": "Accept"})
    draft_id = h.execute("alice", iid, {"operationName": "ReplyAll"})["replyInteractionId"]
    r = h.execute(
        "alice",
        draft_id,
        {
            "operationName": "Send",
            "queueName": "Sent",
            "email_object": {
                "text": "It ships today.",
                "bccAddress": ["audit@example.com"],
            },
        },
    )
    assert r == {"status": "ok"}
    assert h.last_notification("alice")["state"] == "Sent"
    assert h.last_notification("alice")["capabilities"] == []
    (mail,) = h.sent_mail
    assert mail.message_id.endswith("@interactions.localhost>")
    assert [a.addr for a in mail.to] == ["customer@example.org"]
    assert [a.addr for a in mail.bcc] == ["audit@example.com"]
    assert mail.in_reply_to == "<orig-1@example.org>"
    assert mail.references == ("<orig-1@example.org>",)
    assert h.execute("alice", iid, {"operationName": "Complete"}) == {"status": "ok"}
    assert h.last_notification("alice")["state"] == "Completed"
    assert h.interaction(iid).current_queue == "Done"
    assert h.interaction(iid).out_queues == ("Inbound",)
    assert h.service.list_interactions("alice") == []


def test_send_refuses_header_injection_and_foreign_sender(h: Harness) -> None:
    iid = invite(h)
    h.execute("alice", iid, {"operationName": "Accept"})
    draft = h.execute("alice", iid, {"operationName": "Reply"})["replyInteractionId"]
    bad = h.execute(
        "alice",
        draft,
        {"operationName": "Send", "email_object": {"subject": "hi\r\nBcc: victim@example.net"}},
    )
    assert bad["status"] == "error" and "line breaks" in bad["errorDescription"]
    bad = h.execute(
        "alice",
        draft,
        {"operationName": "Send", "email_object": {"toAddress": "x@example.org\nBcc: y@z.org"}},
    )
    assert bad["status"] == "error"
    spoof = h.execute(
        "alice", draft, {"operationName": "Send", "email_object": {"fromAddress": "ceo@bank.com"}}
    )
    assert spoof["status"] == "error" and "may send from" in spoof["errorDescription"]
    invalid = h.execute(
        "alice", draft, {"operationName": "Send", "email_object": {"toAddress": "not an address"}}
    )
    assert invalid["status"] == "error" and "not a valid" in invalid["errorDescription"]
    assert h.sent_mail == []


def test_text_that_cannot_be_utf8_is_refused_before_anything_changes(h: Harness) -> None:
    iid = invite(h)
    h.execute("alice", iid, {"operationName": "Accept"})
    draft = h.execute("alice", iid, {"operationName": "Reply"})["replyInteractionId"]
    bad = h.execute(
        "alice", draft, {"operationName": "Send", "email_object": {"text": "hi \udc80"}}
    )
    assert bad["status"] == "error"
    assert "email_object.text: a lone UTF-16 surrogate" in bad["errorDescription"]
    bad = h.execute("alice", iid, {"operationName": "UpdateProperties", "userData": {"a\ud800": 1}})
    assert bad["status"] == "error" and "userData.a\\ud800" in bad["errorDescription"]
    assert h.sent_mail == []


# Every character str.splitlines() breaks on (what the email package refuses in a header), NUL.
BREAKS = ["\r", "\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00"]


@pytest.mark.parametrize("brk", BREAKS)
def test_no_line_break_of_any_kind_reaches_a_header(h: Harness, brk: str) -> None:
    iid = invite(h)
    h.execute("alice", iid, {"operationName": "Accept"})
    bad = h.execute("alice", iid, {"operationName": "Reply", "subjectPrefix": f"Re{brk} "})
    assert bad["status"] == "error" and "subjectPrefix" in bad["errorDescription"]
    draft = h.execute("alice", iid, {"operationName": "Reply"})["replyInteractionId"]
    bad = h.execute(
        "alice", draft, {"operationName": "Send", "email_object": {"subject": f"a{brk}b"}}
    )
    assert bad["status"] == "error" and "line breaks" in bad["errorDescription"]
    assert h.sent_mail == []


def test_a_subject_that_came_in_with_unicode_line_breaks_is_replied_on_one_line(
    h: Harness,
) -> None:
    raw = (
        b"From: Cee <cee@example.org>\r\nTo: support@example.com\r\n"
        b"Subject: =?utf-8?q?Order=E2=80=A842=C2=85now?=\r\nMessage-ID: <u@example.org>\r\n"
        b"\r\nHi\r\n"
    )
    iid = h.service.ingest(raw, mailbox="support@example.com").interaction_id
    assert h.interaction(iid).email.subject == "Order\u202842\x85now"  # kept as it came
    h.service.offer(iid, "alice")
    h.execute("alice", iid, {"operationName": "Accept"})
    draft = h.execute("alice", iid, {"operationName": "Reply"})["replyInteractionId"]
    assert h.interaction(draft).email.subject == "Re: Order 42 now"
    assert h.execute("alice", draft, {"operationName": "Send"}) == {"status": "ok"}
    assert [m.subject for m in h.sent_mail] == ["Re: Order 42 now"]


def test_errors_are_clear(h: Harness) -> None:
    iid = invite(h)
    r = h.execute("alice", iid, {"operationName": "Dance"})
    assert r["status"] == "error" and "Unknown operationName 'Dance'" in r["errorDescription"]
    assert "Accept" in r["errorDescription"]
    r = h.execute("alice", iid, {})
    assert "Missing operationName" in r["errorDescription"]
    r = h.execute("alice", iid, ["Accept"])
    assert "JSON object" in r["errorDescription"]
    r = h.execute("alice", iid, {"operationName": "Reply", "quoteOriginal": "maybe", "x": 1})
    assert "quoteOriginal" in r["errorDescription"] and "x" in r["errorDescription"]
    r = h.execute("alice", iid, {"operationName": "Send"})
    assert r["errorDescription"].startswith("Operation Send is not allowed in state Invited")
    assert "allowed now: Accept, Reject" in r["errorDescription"]
    r = h.execute("alice", iid, {"operationName": "Transfer"})
    assert "exactly one target" in r["errorDescription"]
    r = h.execute("alice", None, {"operationName": "Accept"})
    assert "needs an interaction id" in r["errorDescription"]


def test_other_agents_get_the_same_answer_as_unknown_ids(h: Harness) -> None:
    iid = invite(h)
    unknown = h.execute("mallory", "NOPE", {"operationName": "Accept"})
    foreign = h.execute("mallory", iid, {"operationName": "Accept"})
    assert foreign == {
        "status": "error",
        "errorDescription": unknown["errorDescription"].replace("NOPE", iid),
    }
    with pytest.raises(Exception, match="not found"):
        h.service.get_interaction("mallory", iid)
    assert h.service.list_interactions("mallory") == []


def test_reject_then_offer_elsewhere(h: Harness) -> None:
    iid = invite(h)
    assert h.execute("alice", iid, {"operationName": "Reject"}) == {"status": "ok"}
    note = h.last_notification("alice")
    assert (note["state"], note["capabilities"]) == ("Rejected", [])
    assert h.interaction(iid).rejected_by == ("alice",)
    h.service.offer(iid, "bob")
    h.drain()
    assert h.last_notification("bob")["capabilities"] == ["Accept", "Reject"]
    # alice no longer may act on it
    r = h.execute("alice", iid, {"operationName": "Accept"})
    assert r["status"] == "error"


def test_revoke_sends_revoked_with_no_capabilities(h: Harness) -> None:
    iid = invite(h)
    h.service.revoke(iid)
    h.drain()
    note = h.last_notification("alice")
    assert (note["state"], note["capabilities"]) == ("Revoked", [])


def test_transfer_refused_goes_back_with_a_note(h: Harness) -> None:
    iid = invite(h)
    h.execute("alice", iid, {"operationName": "Accept"})
    h.execute("alice", iid, {"operationName": "Transfer", "userUri": "http://x/api/v2/users/bob"})
    assert h.last_notification("bob")["state"] == "Invited"
    h.execute("bob", iid, {"operationName": "Reject"})
    back = h.last_notification("alice")
    assert back["state"] == "Accepted" and "Reply" in back["capabilities"]
    assert "bob rejected" in back["userData"]["TransferResult"]


def test_transfer_to_unknown_agent_or_self(h: Harness) -> None:
    iid = invite(h)
    h.execute("alice", iid, {"operationName": "Accept"})
    r = h.execute("alice", iid, {"operationName": "Transfer", "agentId": "nobody"})
    assert r["errorDescription"] == "Agent 'nobody' not found"
    r = h.execute("alice", iid, {"operationName": "Transfer", "agentId": "alice"})
    assert "own owner" in r["errorDescription"]


def test_workbin_place_and_pull(h: Harness) -> None:
    iid = invite(h)
    h.execute("alice", iid, {"operationName": "Accept"})
    assert h.execute("alice", iid, {"operationName": "PlaceInWorkbin"}) == {"status": "ok"}
    note = h.last_notification("alice")
    assert note["state"] == "InWorkbin" and note["capabilities"] == ["PlaceInQueue", "Pull"]
    with h.store.unit_of_work() as uow:
        assert [i.id for i in uow.interactions.in_workbin("agent:alice/Personal")] == [iid]
    assert h.execute("bob", iid, {"operationName": "Pull"})["status"] == "error"
    assert h.execute("alice", iid, {"operationName": "Pull"}) == {"status": "ok"}
    assert h.last_notification("alice")["state"] == "Accepted"
    r = h.execute("alice", iid, {"operationName": "PlaceInWorkbin", "workbinName": "Nope"})
    assert r["errorDescription"] == "Workbin 'Nope' not found"


def test_update_properties_and_comment(h: Harness) -> None:
    iid = invite(h)
    h.execute("alice", iid, {"operationName": "Accept"})
    h.execute(
        "alice",
        iid,
        {"operationName": "UpdateProperties", "userData": {"a": 1, "b": "x"}, "comment": "VIP"},
    )
    h.execute("alice", iid, {"operationName": "UpdateProperties", "deleteKeys": ["a"]})
    note = h.last_notification("alice")
    assert note["userData"] == {"b": "x"}
    assert note["email_object"]["TheComment"] == "VIP"
    r = h.execute("alice", iid, {"operationName": "UpdateProperties", "userData": {"bin": [1]}})
    assert r["status"] == "error"


def test_forward_carries_attachments_and_link_attachment(h: Harness) -> None:
    from interactions_core.model import Attachment

    iid = invite(h)
    with h.store.unit_of_work() as uow:
        i = uow.interactions.get(iid)
        assert i is not None
        att = Attachment(id="a1", name="r.pdf", size=3, mimetype="application/pdf")
        uow.interactions.update(
            i.model_copy(update={"email": i.email.model_copy(update={"attachments": (att,)})})
        )
        uow.commit()
    h.execute("alice", iid, {"operationName": "Accept"})
    fwd = h.execute("alice", iid, {"operationName": "Forward", "toAddress": "x@partner.example"})
    draft = h.last_notification("alice")
    assert draft["id"] == fwd["replyInteractionId"]
    assert draft["email_object"]["Subject"] == "Fwd: Order 42"
    assert [a["id"] for a in draft["email_object"]["attachments"]] == ["a1"]
    assert draft["email_object"]["InReplyTo"] == ""
    reply = h.execute("alice", iid, {"operationName": "Reply"})["replyInteractionId"]
    r = h.execute("alice", reply, {"operationName": "LinkAttachment", "attachmentId": "a1"})
    assert r == {"status": "ok"}
    assert h.last_notification("alice")["email_object"]["attachments"][0]["name"] == "r.pdf"
    r = h.execute("alice", reply, {"operationName": "LinkAttachment", "attachmentId": "zz"})
    assert r["errorDescription"] == "Attachment 'zz' not found"


def test_create_email(h: Harness) -> None:
    r = h.execute(
        "alice",
        None,
        {
            "operationName": "CreateEmail",
            "queueName": "Drafts",
            "interactionType": "Outbound",
            "interactionSubType": "OutboundNew",
        },
    )
    assert r["status"] == "ok"
    note = h.last_notification("alice")
    assert note["id"] == r["replyInteractionId"]
    assert note["state"] == "ReplyCreated"
    assert note["interactionType"] == "Outbound"
    assert note["email_object"]["FromAddress"] == "support@example.com"
    r = h.execute(
        "alice",
        note["id"],
        {
            "operationName": "Send",
            "email_object": {"toAddress": "new@example.org", "subject": "Hello", "text": "Hi"},
        },
    )
    assert r == {"status": "ok"} and h.sent_mail[0].subject == "Hello"


def test_cancel_aliases(h: Harness) -> None:
    iid = invite(h)
    h.execute("alice", iid, {"operationName": "Accept"})
    for name in ("CancelReply", "CancelReplyEmail", "Cancel"):
        draft = h.execute("alice", iid, {"operationName": "Reply"})["replyInteractionId"]
        assert h.execute("alice", draft, {"operationName": name}) == {"status": "ok"}
        assert h.last_notification("alice")["state"] == "Cancelled"


def test_transient_failure_retries_then_permanent_failure_notifies(h: Harness) -> None:
    iid = invite(h)
    h.execute("alice", iid, {"operationName": "Accept"})
    draft = h.execute("alice", iid, {"operationName": "Reply"})["replyInteractionId"]
    h.transport.fail_next = [TransientMailError("421 try later")]
    h.execute("alice", draft, {"operationName": "Send"})
    assert h.sent_mail == []
    h.clock.advance(60)
    h.drain()
    assert len(h.sent_mail) == 1
    draft2 = h.execute("alice", iid, {"operationName": "Reply"})["replyInteractionId"]
    h.transport.fail_next = [PermanentMailError("550 no such user")]
    h.execute("alice", draft2, {"operationName": "Send"})
    note = h.last_notification("alice")
    assert note["id"] == draft2 and note["state"] == "Failed"
    assert "Send" in note["capabilities"]
    assert "550" in note["userData"]["DeliveryError"]
    # The agent fixes the address and sends again: the old error does not linger.
    again = h.execute(
        "alice", draft2, {"operationName": "Send", "email_object": {"toAddress": "ok@example.org"}}
    )
    assert again == {"status": "ok"}
    sent = h.last_notification("alice")
    assert sent["state"] == "Sent" and "DeliveryError" not in sent["userData"]


def test_two_agents_racing_on_one_offer_exactly_one_wins(h: Harness) -> None:
    """A stale write is a conflict; the retry sees the new state and is refused clearly."""
    iid = invite(h)
    with h.store.unit_of_work() as uow1, h.store.unit_of_work() as uow2:
        a = uow1.interactions.get(iid)
        b = uow2.interactions.get(iid)
        assert a is not None and b is not None
        uow1.interactions.update(a.model_copy(update={"state": "Accepted", "owner": "alice"}))
        uow2.interactions.update(b.model_copy(update={"state": "Accepted", "owner": "bob"}))
        uow1.commit()
        from interactions_core.errors import ConcurrencyConflict

        with pytest.raises(ConcurrencyConflict):
            uow2.commit()
    assert h.interaction(iid).owner == "alice"


def test_a_transfer_committed_during_a_reply_wins_and_the_reply_is_refused(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply only *expects* its parent's version; a Transfer committed meanwhile makes the
    reply's commit conflict, and its retry sees the parent gone: no orphan draft is left."""
    from interactions_core import compose

    iid = invite(h)
    h.execute("alice", iid, {"operationName": "Accept"})
    real = compose.compose_reply
    calls = []

    def compose_while_transferred(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # another request, committed between load and commit
            queue = {"operationName": "Transfer", "queueName": "Billing"}
            assert h.service.execute_wire("alice", iid, queue) == {"status": "ok"}
        return real(*args, **kwargs)

    monkeypatch.setattr(compose, "compose_reply", compose_while_transferred)
    refused = h.service.execute_wire("alice", iid, {"operationName": "ReplyAll"})
    assert refused["status"] == "error" and "Transferred" in refused["errorDescription"]
    assert len(calls) == 1  # the retry stopped at the lifecycle check
    parent = h.interaction(iid)
    assert parent.state == "Transferred"
    with h.store.unit_of_work() as uow:
        assert [i.id for i in uow.interactions.for_agent("alice")] == []


def test_attachments_on_a_draft(h: Harness) -> None:
    from interactions_core.errors import NotFound, OperationNotAllowed

    iid = invite(h)
    h.execute("alice", iid, {"operationName": "Accept"})
    draft = h.execute("alice", iid, {"operationName": "Reply"})["replyInteractionId"]
    att = h.service.add_attachment("alice", draft, "../../etc/pass\x00wd.txt", "text/plain", b"hi")
    assert att.name == "passwd.txt" and att.size == 2 and att.mimetype == "text/plain"
    assert h.service.get_attachment("alice", draft, att.id) == (att, b"hi")
    odd = h.service.add_attachment("alice", draft, "x.bin", "not a type", b"\x00")
    assert odd.mimetype == "application/octet-stream"
    with pytest.raises(NotFound):
        h.service.get_attachment("mallory", draft, att.id)
    with pytest.raises(OperationNotAllowed):
        h.service.add_attachment("alice", iid, "x.txt", "text/plain", b"inbound")
    h.service.remove_attachment("alice", draft, att.id)
    with pytest.raises(NotFound):
        h.service.get_attachment("alice", draft, att.id)
    h.drain()
    assert [a["id"] for a in h.last_notification("alice")["email_object"]["attachments"]] == [
        odd.id
    ]


def test_send_with_new_text_only_drops_the_composed_html(h: Harness) -> None:
    iid = invite(h)
    h.execute("alice", iid, {"operationName": "Accept"})
    draft = h.execute("alice", iid, {"operationName": "ReplyAll"})["replyInteractionId"]
    assert h.last_notification("alice")["email_object"]["StructuredText"]
    h.execute("alice", draft, {"operationName": "Send", "email_object": {"text": "New"}})
    assert (h.sent_mail[0].text, h.sent_mail[0].html) == ("New", "")
