"""Ingestion through the service: raw kept, idempotence, threading, automatic mail, refusals."""

from __future__ import annotations

import base64
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

from adapters.smtp.mime import build_message
from interactions_core.ingest import Envelope, IngestLimits, MessageRefused
from interactions_core.model import Address, SubType
from interactions_core.ports import Agent
from interactions_core.service import ServiceConfig
from interactions_core.testing import Harness

ALICE = Agent(id="alice", mailboxes=("support@example.com",))
BOB = Agent(id="bob", mailboxes=("support@example.com",))


def raw(
    subject: str = "Order", message_id: str = "<m1@example.org>", extra: str = "", body: str = "Hi"
) -> bytes:
    return (
        "From: Cee <c@example.org>\r\nTo: support@example.com\r\n"
        f"Subject: {subject}\r\nMessage-ID: {message_id}\r\n"
        f"Date: Mon, 5 Jan 2026 09:00:00 +0000\r\n{extra}\r\n{body}\r\n"
    ).encode()


def make(**config: object) -> Harness:
    return Harness(
        agents=[ALICE, BOB],
        config=ServiceConfig(mailbox_queues={"support@example.com": "Support"}, **config),
    )


def test_raw_message_is_kept_and_the_interaction_waits_in_the_mailbox_queue() -> None:
    h = make()
    data = raw()
    result = h.ingest(data)
    i = h.interaction(result.interaction_id)
    assert i.raw_id is not None and h.attachments.get(i.raw_id) == data
    assert (i.state, i.current_queue, i.mailbox) == ("Queued", "Support", "support@example.com")
    assert i.email.subject == "Order" and i.contact_id == "c@example.org"


def test_same_message_id_same_mailbox_is_idempotent() -> None:
    h = make()
    first = h.ingest(raw())
    again = h.ingest(raw())
    assert again.duplicate and again.interaction_id == first.interaction_id
    assert len(h.store) == 1
    other_box = h.ingest(raw(), mailbox="sales@example.com")
    assert not other_box.duplicate


def test_a_different_message_reusing_a_message_id_is_kept_not_dropped() -> None:
    """Found by fuzzing the receiver: it was acknowledged (250) and silently dropped as a
    duplicate. A retry (same content, other trace headers) is still one interaction."""
    h = make()
    first = h.ingest(raw())
    retry = h.ingest(b"Received: from relay2.example by mx.example\r\n" + raw())
    assert retry.duplicate and retry.interaction_id == first.interaction_id
    other = h.ingest(raw(subject="Something else", body="Another question"))
    assert not other.duplicate and other.interaction_id != first.interaction_id
    assert any("Message-ID <m1@example.org> already used" in p for p in other.problems)
    kept = h.interaction(other.interaction_id)
    assert kept.email.subject == "Something else"
    assert kept.user_data["MessageIdReusedFrom"] == first.interaction_id
    assert len(h.store) == 2


def test_customer_answer_is_threaded_and_prefers_the_last_agent() -> None:
    h = make()
    h.set_channel("alice")
    first = h.ingest(raw())
    iid = first.interaction_id
    assert h.interaction(iid).offer is not None
    h.execute("alice", iid, {"operationName": "Accept"})
    draft = h.execute("alice", iid, {"operationName": "Reply"})["replyInteractionId"]
    h.execute("alice", draft, {"operationName": "Send", "email_object": {"text": "Done."}})
    h.execute("alice", iid, {"operationName": "StopProcessing"})
    our_id = h.sent_mail[0].message_id
    h.set_channel("bob")  # bob has been idle longer than alice now? alice must still win
    h.clock.advance(5)
    answer = h.ingest(
        raw(
            "Re: Order",
            "<m2@example.org>",
            f"In-Reply-To: {our_id}\r\nReferences: <m1@example.org> {our_id}\r\n",
        )
    )
    i = h.interaction(answer.interaction_id)
    assert i.parent_id == draft
    assert i.interaction_subtype == SubType.INBOUND_CUSTOMER_REPLY
    assert i.contact_id == h.interaction(iid).contact_id
    assert i.offer is not None and i.offer.agent_id == "alice"


@pytest.mark.parametrize("refusal", ["Reject", "timeout"])
def test_the_last_agent_refusing_the_answer_lets_another_agent_have_it(refusal: str) -> None:
    """Found by stateful fuzzing: the preference beat ``rejected_by``, so a rejected customer
    answer went straight back to the same agent, forever, while another agent was free."""
    h = make()
    h.set_channel("alice")
    iid = h.ingest(raw()).interaction_id
    h.execute("alice", iid, {"operationName": "Accept"})
    draft = h.execute("alice", iid, {"operationName": "Reply"})["replyInteractionId"]
    h.execute("alice", draft, {"operationName": "Send", "email_object": {"text": "Done."}})
    h.set_channel("bob")
    answer = h.ingest(
        raw("Re: Order", "<m4@example.org>", f"In-Reply-To: {h.sent_mail[0].message_id}\r\n")
    ).interaction_id
    offer = h.interaction(answer).offer
    assert offer is not None and offer.agent_id == "alice"
    if refusal == "Reject":
        assert h.execute("alice", answer, {"operationName": "Reject"}) == {"status": "ok"}
    else:
        h.tick(h.router.config.offer_timeout.total_seconds() + 1)
    offer = h.interaction(answer).offer
    assert offer is not None and offer.agent_id == "bob"
    assert h.interaction(answer).preferred_agent is None


def test_last_agent_not_ready_means_the_queue() -> None:
    h = make()
    h.set_channel("alice")
    iid = h.ingest(raw()).interaction_id
    h.execute("alice", iid, {"operationName": "Accept"})
    draft = h.execute("alice", iid, {"operationName": "Reply"})["replyInteractionId"]
    h.execute("alice", draft, {"operationName": "Send", "email_object": {"text": "Done."}})
    h.set_channel("alice", "NotReady")
    h.set_channel("bob")
    answer = h.ingest(
        raw("Re: Order", "<m3@example.org>", f"In-Reply-To: {h.sent_mail[0].message_id}\r\n")
    )
    offer = h.interaction(answer.interaction_id).offer
    assert offer is not None and offer.agent_id == "bob"


@pytest.mark.parametrize(
    "extra",
    [
        "Auto-Submitted: auto-replied\r\n",
        "Precedence: bulk\r\n",
        "List-Id: <news.example.org>\r\n",
    ],
)
def test_automatic_mail_is_flagged_and_parked_never_offered(extra: str) -> None:
    h = make()
    h.set_channel("alice")
    result = h.ingest(raw(extra=extra))
    i = h.interaction(result.interaction_id)
    assert result.automatic
    assert i.current_queue == "Automatic" and i.offer is None
    assert i.user_data
    assert h.sent_mail == []


def test_null_return_path_is_automatic() -> None:
    h = make()
    result = h.ingest(raw(), envelope=Envelope("", ("support@example.com",)))
    assert result.automatic and h.interaction(result.interaction_id).current_queue == "Automatic"


def test_oversized_message_is_refused_with_a_clear_reason() -> None:
    h = make(ingest_limits=IngestLimits(max_message_bytes=100))
    with pytest.raises(MessageRefused, match="exceeds the limit of 100") as refused:
        h.ingest(raw(body="x" * 200))
    assert refused.value.kind == "too_large"
    assert len(h.store) == 0


def test_malformed_mail_becomes_an_interaction_with_problems_noted() -> None:
    h = make()
    data = (
        b"From: broken\r\nSubject: =?x-unknown?q?abc?=\r\n"
        b"Content-Type: text/plain; charset=x-nope\r\n\r\n\xff\xfe bytes\r\n"
    )
    result = h.ingest(data, mailbox="support@example.com")
    i = h.interaction(result.interaction_id)
    assert result.problems
    assert i.raw_id is not None and h.attachments.get(i.raw_id) == data


# --------------------------------------------------------------------------- hostile names
#
# Issue 12, item 7: a display name decoded into a line break used to cost the whole header:
# From and ContactID empty, a ReplyAll with no recipient, Send refused (400).

INJECTION = "Evil\r\nBcc: x@evil.org"
NEUTRALISED = "Evil Bcc: x@evil.org"


def _b64(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


HOSTILE_FROM = {
    # the mail
    "q": ("=?utf-8?q?Evil=0D=0ABcc=3A_x=40evil=2Eorg?=", NEUTRALISED),
    "b": (_b64(INJECTION), NEUTRALISED),
    # an encoded word inside an encoded word: decoded once here, the MIME writer would decode
    # the rest into two header lines
    "nested": (_b64("=?utf-8?q?Evil=0D=0ABcc=3A_x=40evil=2Eorg?="), None),
}


def _hostile(from_name: str, cc: str = "") -> bytes:
    return (
        f"From: {from_name} <c@example.org>\r\nTo: support@example.com\r\n{cc}"
        "Subject: Order\r\nMessage-ID: <hostile@example.org>\r\n"
        "Date: Mon, 5 Jan 2026 09:00:00 +0000\r\n\r\nHi\r\n"
    ).encode()


def _built_headers(data: bytes) -> list[str]:
    """The field names of the header block of a built message, in order."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [line.split(":", 1)[0] for line in head.split("\r\n") if line[:1] not in (" ", "\t")]


@pytest.mark.parametrize("form", HOSTILE_FROM.values(), ids=list(HOSTILE_FROM))
def test_a_hostile_display_name_keeps_the_sender_and_the_reply_all_reaches_them(
    form: tuple[str, str | None],
) -> None:
    name, expected = form
    h = make()
    h.set_channel("alice")
    result = h.ingest(_hostile(name, cc=f"Cc: {name} <d@example.org>, Dee <e@example.org>\r\n"))
    iid = result.interaction_id
    i = h.interaction(iid)
    assert i.contact_id == "c@example.org"
    assert i.email.from_ is not None and i.email.from_.addr == "c@example.org"
    assert [a.addr for a in i.email.cc] == ["d@example.org", "e@example.org"]
    if expected is not None:
        assert i.email.from_.name == expected
    assert any(p.startswith("From: the display name of c@example.org") for p in result.problems)
    assert "From: the display name of c@example.org" in i.user_data["ParseProblems"]

    assert h.execute("alice", iid, {"operationName": "Accept"}) == {"status": "ok"}
    draft = h.execute("alice", iid, {"operationName": "ReplyAll"})["replyInteractionId"]
    reply = h.interaction(draft).email
    assert [a.addr for a in reply.to] == ["c@example.org"]
    assert [a.addr for a in reply.cc] == ["d@example.org", "e@example.org"]
    sent = h.execute("alice", draft, {"operationName": "Send", "email_object": {"text": "Done."}})
    assert sent == {"status": "ok"}

    [mail] = h.sent_mail
    assert [a.addr for a in mail.to] == ["c@example.org"] and mail.bcc == ()
    built = build_message(mail)
    assert _built_headers(built.data) == [
        "Date",
        "From",
        "To",
        "Cc",
        "Subject",
        "Message-ID",
        "In-Reply-To",
        "References",
        "Content-Type",
        "Content-Transfer-Encoding",
        "MIME-Version",
    ]
    assert built.recipients == ("c@example.org", "d@example.org", "e@example.org")
    parsed = message_from_bytes(built.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    assert [(a.display_name, a.addr_spec) for a in parsed["To"].addresses] == [
        (mail.to[0].name, "c@example.org")
    ]
    assert "\n" not in str(parsed["To"]) and "\r" not in str(parsed["To"])


def test_a_hostile_reply_to_name_keeps_the_address_the_reply_goes_to() -> None:
    h = make()
    h.set_channel("alice")
    data = _hostile("Cee").replace(
        b"Subject:", f"Reply-To: {_b64(INJECTION)} <r@example.org>\r\nSubject:".encode()
    )
    iid = h.ingest(data).interaction_id
    assert h.interaction(iid).email.reply_to == (Address(addr="r@example.org", name=NEUTRALISED),)
    h.execute("alice", iid, {"operationName": "Accept"})
    draft = h.execute("alice", iid, {"operationName": "Reply"})["replyInteractionId"]
    assert h.interaction(draft).email.to == (Address(addr="r@example.org", name=NEUTRALISED),)


@pytest.mark.parametrize(
    "to_address",
    [
        '"Evil\r\nBcc: x@evil.org" <c@example.org>',
        '"=?utf-8?q?Evil=0D=0ABcc=3A_x=40evil=2Eorg?=" <c@example.org>',
        f"{_b64(INJECTION)} <c@example.org>",
    ],
)
def test_an_agent_given_name_that_would_inject_a_header_is_a_400(to_address: str) -> None:
    h = make()
    h.set_channel("alice")
    iid = h.ingest(raw()).interaction_id
    h.execute("alice", iid, {"operationName": "Accept"})
    draft = h.execute("alice", iid, {"operationName": "Reply"})["replyInteractionId"]
    body = {"operationName": "Send", "email_object": {"text": "x", "toAddress": to_address}}
    refused = h.execute("alice", draft, body)
    assert refused["status"] == "error" and refused.kind == "invalid"
    assert "toAddress" in refused["errorDescription"]
    assert "line break" in refused["errorDescription"]
    assert h.sent_mail == []
