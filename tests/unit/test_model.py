"""The wire models read and write the seed's JSON exactly; addresses are validated at the edge."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from interactions_core.addresses import parse_address_list
from interactions_core.errors import InvalidAddress
from interactions_core.model import (
    Address,
    Attachment,
    EmailContent,
    Interaction,
    InteractionStateMessage,
    build,
    cid_references,
    evolve,
    format_address,
    render_message,
)

# The seed's "E-mail Accepted" CometD response, with its placeholders filled in.
SEED_ACCEPTED = {
    "messageTypeName": "InteractionStateMessage",
    "id": "00009a8T8Y13002S",
    "channel": "email",
    "email_object": {
        "ToAddress": "support@example.com",
        "FromAddress": "customer@example.org",
        "CCAddresses": "a@example.org, b@example.org",
        "Subject": "Order",
        "Text": "hello",
        "StructuredText": "<p>hello</p>",
        "MimeType": "text/plain",
        "StructuredTextMimeType": "text/html",
        "TheComment": "note",
        "ContactID": "C1",
        "attachments": [{"id": "a1", "name": "x.pdf", "size": 10, "mimetype": "application/pdf"}],
    },
    "interactionType": "Email",
    "interactionSubType": "InboundNew",
    "userData": {"Mailbox": "support"},
    "currentQueue": "Inbound",
    "inQueues": ["Inbound"],
    "outQueues": [],
    "receivedAt": "2026-01-05T09:00:00.000Z",
    "state": "Accepted",
    "capabilities": [
        "Transfer",
        "Reply",
        "ReplyAll",
        "StopProcessing",
        "PlaceInQueue",
        "PlaceInWorkbin",
        "UpdateProperties",
    ],
}


def test_reads_the_seed_message_and_writes_its_names_back() -> None:
    message = InteractionStateMessage.model_validate(SEED_ACCEPTED)
    assert message.email_object.cc_addresses == "a@example.org, b@example.org"
    assert message.email_object.attachments[0].mimetype == "application/pdf"
    wire = message.to_wire()
    for key, value in SEED_ACCEPTED.items():
        if key == "email_object":
            for k, v in value.items():
                assert wire["email_object"][k] == v
        else:
            assert wire[key] == value
    assert json.loads(json.dumps(wire)) == wire


def test_fast_renderer_is_exactly_the_pydantic_wire_form() -> None:
    i = Interaction(
        id="X",
        state="Accepted",
        mailbox="support@example.com",
        email=EmailContent(
            from_=Address(addr="c@example.org", name="Doe, Jane"),
            to=(Address(addr="support@example.com"),),
            cc=(Address(addr="x@example.org", name="Jörg Ümlaut"),),
            subject="Ünïcode",
            message_id="<m@x>",
            references=("<a@x>", "<m@x>"),
            attachments=(
                Attachment(id="a", name="n", size=1, mimetype="text/plain"),
                Attachment(id="b", name="i.png", size=1, mimetype="image/png", content_id="i@x"),
            ),
        ),
        user_data={"k": 1, "b": True},
        current_queue="Q",
        in_queues=("Q",),
        owner="alice",
    )
    rendered = render_message(i, ("Reply",))
    assert InteractionStateMessage.model_validate(rendered).to_wire() == rendered
    assert rendered["email_object"]["FromAddress"] == '"Doe, Jane" <c@example.org>'
    assert rendered["email_object"]["CCAddresses"] == "Jörg Ümlaut <x@example.org>"


def test_attachments_name_their_content_id_only_when_they_have_one() -> None:
    plain, inline = render_message(
        Interaction(
            id="X",
            state="Accepted",
            email=EmailContent(
                attachments=(
                    Attachment(id="a", name="n.pdf", size=1, mimetype="application/pdf"),
                    Attachment(id="b", name="i.png", size=2, mimetype="image/png", content_id="c"),
                )
            ),
        ),
        (),
    )["email_object"]["attachments"]
    assert plain == {"id": "a", "name": "n.pdf", "size": 1, "mimetype": "application/pdf"}
    assert inline == {
        "id": "b",
        "name": "i.png",
        "size": 2,
        "mimetype": "image/png",
        "contentId": "c",
    }


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ('<img src="cid:a@x">', {"a@x"}),
        ("<img src='CID:b%40x' alt=x>", {"b@x"}),
        ('<td style="background: url(cid:bg)">', {"bg"}),
        ("<img src=cid:bare>", {"bare"}),
        ("<p>write to cid:not-a-reference</p>", set()),
        ("<p>no images</p>", set()),
    ],
)
def test_cid_references(html: str, expected: set[str]) -> None:
    assert cid_references(html) == expected


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_user_data_numbers_are_finite(value: float) -> None:
    with pytest.raises(ValidationError, match="finite"):
        Interaction(id="X", state="Queued", user_data={"n": value})
    assert Interaction(id="X", state="Queued", user_data={"n": 1.5}).user_data == {"n": 1.5}


def test_domain_records_are_immutable() -> None:
    i = Interaction(id="X", state="Queued")
    with pytest.raises(ValidationError, match="frozen"):
        i.state = "Accepted"


def test_evolve_is_model_copy_and_refuses_unknown_fields() -> None:
    i = Interaction(id="X", state="Queued", user_data={"a": 1})
    changed = evolve(i, state="Accepted", owner="alice")
    assert changed == i.model_copy(update={"state": "Accepted", "owner": "alice"})
    assert changed.model_dump() == {**i.model_dump(), "state": "Accepted", "owner": "alice"}
    assert i.state == "Queued" and i.owner is None  # the original is untouched
    with pytest.raises(ValidationError, match="frozen"):
        changed.state = "Completed"
    with pytest.raises(TypeError, match="no field ownr"):
        evolve(i, ownr="alice")
    assert Interaction.model_validate_json(changed.model_dump_json()) == changed


def test_build_is_the_validated_record_without_the_validation() -> None:
    values = {
        "id": "X",
        "state": "Queued",
        "email": EmailContent(subject="s"),
        "owner": "a",
        "received_at": datetime(2026, 1, 5, tzinfo=UTC),
    }
    built = build(Interaction, **values)
    assert built == Interaction(**values)
    assert built.model_dump() == Interaction(**values).model_dump()
    assert built.user_data == {} and built.user_data is not build(Interaction, **values).user_data
    with pytest.raises(TypeError, match=r"missing fields \['state'\]"):
        build(Interaction, id="X")
    with pytest.raises(TypeError, match=r"unknown fields \['ownr'\]"):
        build(Interaction, id="X", state="Queued", ownr="a")
    with pytest.raises(ValidationError, match="frozen"):
        built.state = "Accepted"


def test_interaction_round_trips_through_json_without_revalidating_addresses() -> None:
    # An address that email-validator would refuse is still loadable from storage.
    i = Interaction(id="X", state="Queued", email=EmailContent(from_=Address(addr="odd@@x")))
    assert Interaction.model_validate_json(i.model_dump_json()) == i


def test_address_edge_validation() -> None:
    parsed = parse_address_list('"Doe, Jane" <jane@EXAMPLE.org>, bob@exämple.de')
    assert [a.addr for a in parsed] == ["jane@example.org", "bob@exämple.de"]
    assert parsed[0].name == "Doe, Jane"
    with pytest.raises(InvalidAddress, match="line breaks"):
        parse_address_list("a@example.org\r\nBcc: x@y.org")
    with pytest.raises(InvalidAddress, match="not a valid"):
        parse_address_list("no-at-sign")
    with pytest.raises(InvalidAddress):
        parse_address_list(["ok@example.org", 3])


@given(st.text(min_size=1, max_size=30))
def test_formatted_names_never_break_the_address(name: str) -> None:
    formatted = format_address(Address(addr="x@example.org", name=name))
    assert formatted.endswith("<x@example.org>")
