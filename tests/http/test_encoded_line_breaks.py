"""A line break hidden in an RFC 2047 encoded word, typed by an agent (issue 12, item 7).

The stdlib's header writer decodes ``=?utf-8?q?Evil=0D=0ABcc:_x@y.org?=`` when it is set as a
Subject and writes the CR LF raw: a new header line. So an agent's Subject (and prefix) is
refused at the edge with a 400 that says why, an uploaded file's name has its encoded words
defused, and the MIME builder refuses (permanently) whatever still gets that far. Checked
over the real HTTP server and against the real MIME builder's bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_api import basic, deliver, make_server, offered, post  # tests/http is on sys.path

from adapters.server.bootstrap import Server
from adapters.smtp import build_message
from adapters.smtp.mime import HeaderInjection
from interactions_core.model import Address, Attachment
from interactions_core.ports import OutgoingMail
from interactions_core.rfc5322 import safe_filename, writes_line_break

HOSTILE = "=?utf-8?q?Evil=0D=0ABcc:_x@evil.org?="


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield make_server(tmp_path)


@pytest.fixture
def client(server: Server) -> Iterator[TestClient]:
    with TestClient(server.app) as c:
        yield c


def draft_of(server: Server, client: TestClient, operation: str = "Reply") -> str:
    post(client, "/channels/email", {"operationName": "Ready"})
    deliver(server)
    iid = offered(client)
    post(client, f"/interactions/{iid}", {"operationName": "Accept"})
    answer: dict[str, Any] = post(client, f"/interactions/{iid}", {"operationName": operation})
    draft: str = answer.json()["replyInteractionId"]
    return draft


def shown(client: TestClient, iid: str) -> dict[str, Any]:
    answer = client.get(f"/api/v2/me/interactions/{iid}", headers=basic("alice"))
    interaction: dict[str, Any] = answer.json()["interaction"]
    return interaction


@pytest.mark.parametrize(
    ("value", "breaks"),
    [
        (HOSTILE, True),
        ("=?utf-8?b?" + "RXZpbA0KQmNjOiB4QGV2aWwub3Jn" + "?=", True),  # the same, base64
        ("Re: =?utf-8?q?caf=C3=A9?=", False),  # an encoded word without a break is fine
        ("a plain subject", False),
        ("literal\r\nbreak", True),
        ("=?utf-8?q?unterminated", False),
    ],
)
def test_writes_line_break_asks_the_writer(value: str, breaks: bool) -> None:
    assert writes_line_break(value) is breaks


def test_a_hostile_subject_is_a_400_and_the_draft_is_untouched(
    server: Server, client: TestClient
) -> None:
    draft = draft_of(server, client)
    before = shown(client, draft)["email_object"]["Subject"]
    body = {"operationName": "Send", "email_object": {"subject": HOSTILE}}
    r = client.post(f"/api/v2/me/interactions/{draft}", json=body, headers=basic("alice"))
    assert r.status_code == 400, r.text
    assert "subject" in r.json()["errorDescription"]
    assert "line break" in r.json()["errorDescription"]
    assert shown(client, draft)["email_object"]["Subject"] == before
    assert shown(client, draft)["state"] == "ReplyCreated"


def test_a_hostile_subject_prefix_is_a_400(server: Server, client: TestClient) -> None:
    post(client, "/channels/email", {"operationName": "Ready"})
    deliver(server)
    iid = offered(client)
    post(client, f"/interactions/{iid}", {"operationName": "Accept"})
    body = {"operationName": "Reply", "subjectPrefix": "=?utf-8?q?=0D=0AX-Evil:_1?="}
    r = client.post(f"/api/v2/me/interactions/{iid}", json=body, headers=basic("alice"))
    assert r.status_code == 400, r.text
    assert "subjectPrefix" in r.json()["errorDescription"]


def test_an_uploaded_name_with_an_encoded_break_is_defused(
    server: Server, client: TestClient
) -> None:
    draft = draft_of(server, client)
    name = HOSTILE + ".pdf"
    r = client.post(
        f"/api/v2/me/interactions/{draft}/attachments",
        files={"attachment": (name, b"%PDF-1.4", "application/pdf")},
        headers=basic("alice"),
    )
    assert r.status_code == 200, r.text
    kept = r.json()["attachment"]["name"]
    assert kept == safe_filename(name) == "= ?utf-8?q?Evil=0D=0ABcc:_x@evil.org?=.pdf"
    # What the MIME builder makes of that draft holds no injected header, in any part.
    attachment = Attachment(id="a1", name=kept, mimetype="application/pdf", size=8)
    data = build_message(mail(attachments=(attachment,)), lambda _blob: b"%PDF-1.4").data
    assert b"\r\nBcc:" not in data and b"\nBcc:" not in data


def mail(**fields: Any) -> OutgoingMail:
    return OutgoingMail(
        interaction_id="i1",
        mailbox="support@example.com",
        from_=Address(addr="support@example.com"),
        to=(Address(addr="c@example.org"),),
        message_id="<m1@example.com>",
        date=datetime(2026, 12, 6, tzinfo=UTC),
        **fields,
    )


def test_the_mime_builder_refuses_what_gets_that_far() -> None:
    """Defence in depth: a mail built by other code (or stored before the rule) never writes
    a decoded break; it is a permanent MimeError, so the agent is told (Failed)."""
    with pytest.raises(HeaderInjection, match="subject"):
        build_message(mail(subject=HOSTILE))
    # A file name stored raw: its encoded word is written defused, never decoded.
    raw = Attachment(id="a1", name=HOSTILE + ".pdf", mimetype="application/pdf", size=3)
    data = build_message(mail(attachments=(raw,)), lambda _blob: b"abc").data
    assert b"\r\nBcc:" not in data
    assert b"= ?utf-8?q?Evil" in data
