"""An attachment's identity is its own, apart from its content's address (issue 12, item 6).

The same bytes uploaded as first.txt then second.txt: both answered 200, the second answer
named second.txt, but the draft held only first.txt (attachments were content-addressed, so
both had the same id) and DELETE removed "both". Now each attachment has its own ``id`` and a
``blob`` (the content address) that two attachments may share.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from adapters.smtp.mime import MimeError, build_message
from interactions_core.errors import NotFound
from interactions_core.ingest import parse_message
from interactions_core.memory import InMemoryAttachmentStore
from interactions_core.model import Attachment, Interaction
from interactions_core.ports import Agent, AttachmentStore, OutgoingMail
from interactions_core.testing import Harness
from interactions_core.testing.contracts import AttachmentStoreContract

ALICE = Agent(id="alice", mailboxes=("support@example.com",))


@pytest.fixture
def h() -> Harness:
    return Harness(agents=[ALICE])


def inbound_with_twins() -> bytes:
    """A customer's mail with the same bytes attached twice, under two names."""
    m = EmailMessage()
    m["From"] = "customer@example.org"
    m["To"] = "support@example.com"
    m["Subject"] = "Twice"
    m["Message-ID"] = "<twins@example.org>"
    m.set_content("See attached.\n")
    m.add_attachment(b"same bytes", maintype="text", subtype="plain", filename="a.txt")
    m.add_attachment(b"other", maintype="text", subtype="plain", filename="b.txt")
    m.add_attachment(b"same bytes", maintype="text", subtype="plain", filename="c.txt")
    return m.as_bytes()


def a_draft(h: Harness) -> tuple[str, str]:
    h.set_channel("alice")
    iid = h.ingest(inbound_with_twins()).interaction_id
    assert h.execute("alice", iid, {"operationName": "Accept"})["status"] == "ok"
    draft = h.execute("alice", iid, {"operationName": "Reply"})["replyInteractionId"]
    return iid, draft


def names(h: Harness, interaction_id: str) -> list[str]:
    return [a.name for a in h.interaction(interaction_id).email.attachments]


def test_the_same_bytes_under_two_names_are_two_attachments(h: Harness) -> None:
    _, draft = a_draft(h)
    first = h.service.add_attachment("alice", draft, "first.txt", "text/plain", b"same")
    second = h.service.add_attachment("alice", draft, "second.txt", "text/plain", b"same")
    assert (first.name, second.name) == ("first.txt", "second.txt")
    assert first.id != second.id
    assert first.blob == second.blob == h.attachments.put(b"same")
    assert names(h, draft) == ["first.txt", "second.txt"]
    assert h.service.get_attachment("alice", draft, second.id) == (second, b"same")

    h.service.remove_attachment("alice", draft, first.id)
    assert names(h, draft) == ["second.txt"]
    with pytest.raises(NotFound):
        h.service.get_attachment("alice", draft, first.id)
    assert h.service.get_attachment("alice", draft, second.id) == (second, b"same")
    with pytest.raises(NotFound):  # removed once; the other one is not removed by its id
        h.service.remove_attachment("alice", draft, first.id)
    assert names(h, draft) == ["second.txt"]


def test_ids_are_unique_in_the_draft_and_stable(h: Harness) -> None:
    _, draft = a_draft(h)
    added = [
        h.service.add_attachment("alice", draft, f"n{n}.txt", "text/plain", b"x") for n in range(20)
    ]
    assert len({a.id for a in added}) == 20
    for a in added:
        assert a.id != a.blob  # never a content address
        assert a.id.isascii() and a.id.isalnum()  # URL- and file-name-safe
    assert [a.id for a in h.interaction(draft).email.attachments] == [a.id for a in added]
    h.execute("alice", draft, {"operationName": "UpdateProperties", "userData": {"k": 1}})
    assert [a.id for a in h.interaction(draft).email.attachments] == [a.id for a in added]


def test_the_same_upload_again_is_the_attachment_it_made(h: Harness) -> None:
    """A retried upload (same bytes, name, type and contentId) answers the attachment the
    first made, and adds nothing; any difference is another attachment."""
    _, draft = a_draft(h)
    once = h.service.add_attachment("alice", draft, "r.pdf", "application/pdf", b"%PDF")
    again = h.service.add_attachment("alice", draft, "r.pdf", "application/pdf", b"%PDF")
    assert again == once
    other_type = h.service.add_attachment("alice", draft, "r.pdf", "text/plain", b"%PDF")
    assert other_type.id != once.id
    assert names(h, draft) == ["r.pdf", "r.pdf"]


def test_the_sent_mail_carries_both_names(h: Harness) -> None:
    _, draft = a_draft(h)
    h.service.add_attachment("alice", draft, "first.txt", "text/plain", b"same")
    h.service.add_attachment("alice", draft, "second.txt", "text/plain", b"same")
    assert h.execute("alice", draft, {"operationName": "Send"})["status"] == "ok"
    (mail,) = h.sent_mail
    parsed = message_from_bytes(build_message(mail, h.attachments).data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    parts = [(p.get_filename(), p.get_content()) for p in parsed.iter_attachments()]
    assert parts == [("first.txt", "same"), ("second.txt", "same")]


def test_mime_reads_the_bytes_by_blob() -> None:
    store = InMemoryAttachmentStore()
    blob = store.put(b"payload")
    attachment = Attachment(id="own-id", blob=blob, name="p.bin", size=7, mimetype="text/plain")
    mail = OutgoingMail(
        interaction_id="I1",
        mailbox="support@example.com",
        from_={"addr": "support@example.com"},
        to=({"addr": "c@example.org"},),
        subject="s",
        text="t",
        message_id="<m1@example.com>",
        date=datetime(2026, 1, 5, tzinfo=UTC),
        attachments=(attachment,),
    )
    parsed = message_from_bytes(build_message(mail, store).data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    ((part,),) = [list(parsed.iter_attachments())]
    assert part.get_content() == "payload"
    with pytest.raises(MimeError, match="missing from the store"):
        build_message(mail, InMemoryAttachmentStore())


def test_ingested_twins_are_two_attachments_with_stable_ids() -> None:
    store = InMemoryAttachmentStore()
    first = parse_message(inbound_with_twins(), attachments=store).email.attachments
    again = parse_message(inbound_with_twins(), attachments=store).email.attachments
    assert [a.name for a in first] == ["a.txt", "b.txt", "c.txt"]
    a, b, c = first
    assert a.blob == c.blob != b.blob
    assert len({a.id, b.id, c.id}) == 3
    # The first part with some bytes keeps the id ingestion always gave it (its blob), so
    # duplicate detection still matches mail ingested before; a repeat is "<blob>-<n>".
    assert (a.id, b.id, c.id) == (a.blob, b.blob, f"{c.blob}-3")
    assert [x.id for x in again] == [x.id for x in first]
    assert store.get(c.blob) == b"same bytes"


def test_ingested_twins_download_link_and_forward_by_their_own_ids(h: Harness) -> None:
    iid, draft = a_draft(h)
    a, _, c = h.interaction(iid).email.attachments
    assert h.service.get_attachment("alice", iid, c.id) == (c, b"same bytes")
    # LinkAttachment copies the one named, with its id and blob.
    r = h.execute("alice", draft, {"operationName": "LinkAttachment", "attachmentId": c.id})
    assert r == {"status": "ok"}
    r = h.execute("alice", draft, {"operationName": "LinkAttachment", "attachmentId": a.id})
    assert r == {"status": "ok"}
    assert names(h, draft) == ["c.txt", "a.txt"]
    h.service.remove_attachment("alice", draft, c.id)
    assert names(h, draft) == ["a.txt"]
    assert h.service.get_attachment("alice", draft, a.id) == (a, b"same bytes")
    # A forward carries all three; each downloads from the forward by its own id.
    fwd = h.execute("alice", iid, {"operationName": "Forward", "toAddress": "x@partner.example"})
    forward = fwd["replyInteractionId"]
    assert names(h, forward) == ["a.txt", "b.txt", "c.txt"]
    assert h.service.get_attachment("alice", forward, c.id)[1] == b"same bytes"
    h.service.remove_attachment("alice", forward, a.id)
    assert names(h, forward) == ["b.txt", "c.txt"]
    assert names(h, iid) == ["a.txt", "b.txt", "c.txt"]  # the original keeps its own


def test_records_without_a_blob_read_their_id_as_the_blob(h: Harness) -> None:
    """Interactions stored before the change: attachments with only ``id`` (then the content
    address) load, and their blob is that id."""
    old = {"id": "a" * 64, "name": "r.pdf", "size": 3, "mimetype": "application/pdf"}
    assert Attachment.model_validate(old).blob == "a" * 64
    assert Attachment(**old).blob == "a" * 64
    new = Attachment(**old, blob="b" * 64)
    assert Attachment.model_validate_json(new.model_dump_json()) == new

    _, draft = a_draft(h)
    h.service.add_attachment("alice", draft, "first.txt", "text/plain", b"same")
    document = json.loads(h.interaction(draft).model_dump_json())
    for attachment in document["email"]["attachments"]:
        attachment["id"] = attachment.pop("blob")  # as written before: id = content address
    loaded = Interaction.model_validate_json(json.dumps(document))
    (found,) = loaded.email.attachments
    assert found.id == found.blob == h.attachments.put(b"same")
    assert found.to_wire() == {
        "id": found.id,
        "name": "first.txt",
        "size": 4,
        "mimetype": "text/plain",
    }


class _KeepingStore(InMemoryAttachmentStore):
    """``delete`` does nothing."""

    def delete(self, content_id: str) -> None:
        pass


class _StrictStore(InMemoryAttachmentStore):
    """``delete`` of an unknown id raises."""

    def delete(self, content_id: str) -> None:
        del self._blobs[content_id]


class _GreedyStore(InMemoryAttachmentStore):
    """``delete`` removes everything."""

    def delete(self, content_id: str) -> None:
        self._blobs.clear()


def contract_outcome(store_type: type[InMemoryAttachmentStore], test: str, **kw: Any) -> bool:
    """Run one contract test on ``store_type`` in-process; True when it passed."""

    class Contract(AttachmentStoreContract):
        def make_attachment_store(self, max_size: int) -> AttachmentStore:
            return store_type(max_size=max_size)

    contract = Contract()
    contract._made = []
    try:
        getattr(contract, test)(**kw)
    except (AssertionError, KeyError, pytest.fail.Exception):
        return False
    return True


@pytest.mark.parametrize(
    ("store_type", "test", "kw"),
    [
        (_KeepingStore, "test_delete_removes_those_bytes_and_no_others", {}),
        (_KeepingStore, "test_delete_is_idempotent", {}),
        (_StrictStore, "test_delete_is_idempotent", {}),
        (_StrictStore, "test_deleting_an_unknown_id_is_a_no_op", {"content_id": "0" * 64}),
        (_GreedyStore, "test_delete_removes_those_bytes_and_no_others", {}),
    ],
)
def test_the_contract_catches_a_wrong_delete(
    store_type: type[InMemoryAttachmentStore], test: str, kw: dict[str, Any]
) -> None:
    assert contract_outcome(InMemoryAttachmentStore, test, **kw)
    assert not contract_outcome(store_type, test, **kw)
