"""Attachment identity over the real server (issue 12, item 6): SQLite, Maildir, real SMTP.

The probe: the same bytes uploaded as first.txt then second.txt. Both answered 200 and the
second answer named second.txt, but the draft held only first.txt, and DELETE removed both.
"""

from __future__ import annotations

import json
import smtplib
import sqlite3
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_api import basic, deliver, make_server, offered, post, wait_for  # tests/http on path

from adapters.server.bootstrap import Server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield make_server(tmp_path)


@pytest.fixture
def client(server: Server) -> Iterator[TestClient]:
    with TestClient(server.app) as c:
        yield c


def accepted(server: Server, client: TestClient, **mail: Any) -> str:
    post(client, "/channels/email", {"operationName": "Ready"})
    if mail:
        with smtplib.SMTP("127.0.0.1", server.receiver.port, timeout=10) as smtp:
            smtp.send_message(mail["message"])
    else:
        deliver(server)
    iid = offered(client)
    post(client, f"/interactions/{iid}", {"operationName": "Accept"})
    return iid


def reply_draft(client: TestClient, iid: str) -> str:
    draft: str = post(client, f"/interactions/{iid}", {"operationName": "Reply"}).json()[
        "replyInteractionId"
    ]
    return draft


def upload(client: TestClient, draft: str, name: str, data: bytes) -> dict[str, Any]:
    r = client.post(
        f"/api/v2/me/interactions/{draft}/attachments",
        files={"attachment": (name, data, "text/plain")},
        headers=basic("alice"),
    )
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def listed(client: TestClient, interaction_id: str) -> list[dict[str, Any]]:
    shown = client.get(f"/api/v2/me/interactions/{interaction_id}", headers=basic("alice"))
    found: list[dict[str, Any]] = shown.json()["interaction"]["email_object"]["attachments"]
    return found


def download(client: TestClient, interaction_id: str, attachment_id: str) -> Any:
    url = f"/api/v2/me/interactions/{interaction_id}/attachments/{attachment_id}"
    return client.get(url, headers=basic("alice"))


def sent_message(server: Server) -> EmailMessage:
    outbox = server.settings.maildir_path / "new"
    (path,) = wait_for(lambda: list(outbox.glob("*")))
    parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_the_probe_same_bytes_under_two_names(server: Server, client: TestClient) -> None:
    draft = reply_draft(client, accepted(server, client))
    first = upload(client, draft, "first.txt", b"same")
    second = upload(client, draft, "second.txt", b"same")
    assert first["attachment"]["name"] == "first.txt"
    assert second["attachment"]["name"] == "second.txt"
    assert first["documentId"] == first["attachment"]["id"]
    assert second["documentId"] == second["attachment"]["id"] != first["documentId"]
    assert listed(client, draft) == [first["attachment"], second["attachment"]]
    for answer in (first, second):
        got = download(client, draft, answer["documentId"])
        assert got.status_code == 200 and got.content == b"same"
        assert answer["attachment"]["name"] in got.headers["content-disposition"]

    url = f"/api/v2/me/interactions/{draft}/attachments/{first['documentId']}"
    assert client.delete(url, headers=basic("alice")).json() == {"status": "ok"}
    assert listed(client, draft) == [second["attachment"]]
    assert download(client, draft, first["documentId"]).status_code == 404
    got = download(client, draft, second["documentId"])
    assert got.status_code == 200 and got.content == b"same"
    assert 'filename="second.txt"' in got.headers["content-disposition"]
    assert client.delete(url, headers=basic("alice")).status_code == 404
    assert listed(client, draft) == [second["attachment"]]


def test_the_mail_sent_carries_both_names(server: Server, client: TestClient) -> None:
    draft = reply_draft(client, accepted(server, client))
    upload(client, draft, "first.txt", b"same")
    upload(client, draft, "second.txt", b"same")
    assert post(client, f"/interactions/{draft}", {"operationName": "Send"}).json() == {
        "status": "ok"
    }
    sent = sent_message(server)
    parts = [(p.get_filename(), p.get_content()) for p in sent.iter_attachments()]
    assert parts == [("first.txt", "same"), ("second.txt", "same")]


def test_rows_stored_before_the_change_still_work(tmp_path: Path) -> None:
    """A draft as stored before attachments had their own id (only ``id``, the content
    address), read by a server started on that database."""
    server = make_server(tmp_path)
    with TestClient(server.app) as client:
        draft = reply_draft(client, accepted(server, client))
        upload(client, draft, "old.txt", b"stored long ago")
    with sqlite3.connect(server.settings.database_path) as db:
        (data,) = db.execute("SELECT data FROM interactions WHERE id = ?", (draft,)).fetchone()
        document = json.loads(data)
        (attachment,) = document["email"]["attachments"]
        blob = attachment.pop("blob")
        attachment["id"] = blob
        db.execute("UPDATE interactions SET data = ? WHERE id = ?", (json.dumps(document), draft))
    db.close()

    server = make_server(tmp_path)
    with TestClient(server.app) as client:
        assert [a["id"] for a in listed(client, draft)] == [blob]
        got = download(client, draft, blob)
        assert got.status_code == 200 and got.content == b"stored long ago"
        # A new upload of the same bytes beside it is a second attachment; both are sent.
        upload(client, draft, "new.txt", b"stored long ago")
        assert [a["name"] for a in listed(client, draft)] == ["old.txt", "new.txt"]
        assert post(client, f"/interactions/{draft}", {"operationName": "Send"}).json() == {
            "status": "ok"
        }
        sent = sent_message(server)
    parts = [(p.get_filename(), p.get_content()) for p in sent.iter_attachments()]
    assert parts == [("old.txt", "stored long ago"), ("new.txt", "stored long ago")]


def test_inbound_twins_are_two_attachments_linked_by_their_own_ids(
    server: Server, client: TestClient
) -> None:
    m = EmailMessage()
    m["From"] = "Cee Customer <customer@example.org>"
    m["To"] = "support@example.com"
    m["Subject"] = "Two copies"
    m["Message-ID"] = "<twins@example.org>"
    m.set_content("Attached twice.\n")
    m.add_attachment(b"twin bytes", maintype="text", subtype="plain", filename="one.txt")
    m.add_attachment(b"twin bytes", maintype="text", subtype="plain", filename="two.txt")
    iid = accepted(server, client, message=m)
    one, two = listed(client, iid)
    assert (one["name"], two["name"]) == ("one.txt", "two.txt")
    assert one["id"] != two["id"]
    for attachment in (one, two):
        got = download(client, iid, attachment["id"])
        assert got.status_code == 200 and got.content == b"twin bytes"
        assert attachment["name"] in got.headers["content-disposition"]

    draft = reply_draft(client, iid)
    r = post(
        client,
        f"/interactions/{draft}",
        {"operationName": "LinkAttachment", "attachmentId": two["id"]},
    )
    assert r.json() == {"status": "ok"}
    assert listed(client, draft) == [two]
    mine = upload(client, draft, "mine.txt", b"twin bytes")
    url = f"/api/v2/me/interactions/{draft}/attachments/{two['id']}"
    assert client.delete(url, headers=basic("alice")).json() == {"status": "ok"}
    assert listed(client, draft) == [mine["attachment"]]
    assert download(client, draft, mine["documentId"]).content == b"twin bytes"
    assert listed(client, iid) == [one, two]  # the original is untouched
