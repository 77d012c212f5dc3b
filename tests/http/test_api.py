"""The HTTP API on the real composition root (SQLite file, Maildir outbox, SMTP receiver).

Mail comes in over real SMTP (``smtplib`` to the receiver on a free port); the app runs with its
lifespan (dispatchers, router timer) through Starlette's TestClient.
"""

from __future__ import annotations

import base64
import smtplib
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.server.bootstrap import Server, build
from adapters.server.settings import load_settings

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}


def basic(agent: str, password: str | None = None) -> dict[str, str]:
    token = base64.b64encode(f"{agent}:{password or PASSWORDS[agent]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def make_server(tmp_path: Path, **settings: Any) -> Server:
    return build(
        load_settings(data_dir=tmp_path, smtp_listen_port=0, **settings),
        demo_passwords=PASSWORDS,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield make_server(tmp_path, login_max_failures=3)


@pytest.fixture
def client(server: Server) -> Iterator[TestClient]:
    with TestClient(server.app) as c:
        yield c


def deliver(
    server: Server, subject: str = "Order 42", message_id: str = "<o42@example.org>"
) -> None:
    message = EmailMessage()
    message["From"] = "Cee Customer <customer@example.org>"
    message["To"] = "support@example.com"
    message["Cc"] = "colleague@example.org"
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message["Date"] = "Mon, 05 Jan 2026 09:00:00 +0000"
    message.set_content("Where is my order?\n")
    with smtplib.SMTP("127.0.0.1", server.receiver.port, timeout=10) as smtp:
        smtp.send_message(message)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def offered(client: TestClient, agent: str = "alice") -> str:
    def find() -> str | None:
        found = client.get("/api/v2/me/interactions", headers=basic(agent)).json()
        invited = [i["id"] for i in found["interactions"] if i["state"] == "Invited"]
        return invited[0] if invited else None

    result: str = wait_for(find)
    return result


def post(client: TestClient, path: str, body: Any, agent: str = "alice") -> Any:
    return client.post("/api/v2/me" + path, json=body, headers=basic(agent))


def test_walkthrough_over_http(server: Server, client: TestClient) -> None:
    assert post(client, "/channels/email", {"operationName": "Ready"}).json() == {"status": "ok"}
    deliver(server)
    iid = offered(client)
    assert post(client, f"/interactions/{iid}", {"operationName": "Accept"}).json() == {
        "status": "ok"
    }
    r = post(client, f"/interaction/{iid}", {"operationName": "ReplyAll", "quoteOriginal": True})
    draft = r.json()["replyInteractionId"]
    shown = client.get(f"/api/v2/me/interactions/{draft}", headers=basic("alice")).json()
    assert shown["interaction"]["state"] == "ReplyCreated"
    assert shown["interaction"]["email_object"]["Subject"] == "Re: Order 42"
    r = post(client, f"/interactions/{draft}", {"operationName": "Send"})
    assert r.json() == {"status": "ok"}
    outbox = server.settings.maildir_path / "new"
    files = wait_for(lambda: list(outbox.glob("*")))
    text = files[0].read_text()
    assert "In-Reply-To: <o42@example.org>" in text and "Subject: Re: Order 42" in text
    assert (
        post(client, f"/interactions/{iid}", {"operationName": "StopProcessing"}).status_code == 200
    )
    me = client.get("/api/v2/me", headers=basic("alice")).json()
    assert me["user"]["channels"][0]["userState"]["state"] == "Ready"


def test_every_endpoint_as_another_agent_is_404(server: Server, client: TestClient) -> None:
    post(client, "/channels/email", {"operationName": "Ready"})
    deliver(server)
    iid = offered(client)
    post(client, f"/interactions/{iid}", {"operationName": "Accept"})
    draft = post(client, f"/interactions/{iid}", {"operationName": "Reply"}).json()[
        "replyInteractionId"
    ]
    att = client.post(
        f"/api/v2/me/interactions/{draft}/attachments",
        files={"attachment": ("a.txt", b"secret", "text/plain")},
        headers=basic("alice"),
    ).json()["documentId"]
    bob = basic("bob")
    for target in (iid, draft):
        for body in ({"operationName": "Accept"}, {"operationName": "Send"}):
            for path in (f"/interactions/{target}", f"/interaction/{target}"):
                assert post(client, path, body, "bob").status_code == 404
        assert client.get(f"/api/v2/me/interactions/{target}", headers=bob).status_code == 404
        upload = client.post(
            f"/api/v2/me/interactions/{target}/attachments",
            files={"attachment": ("x.txt", b"x", "text/plain")},
            headers=bob,
        )
        assert upload.status_code == 404
        url = f"/api/v2/me/interactions/{target}/attachments/{att}"
        assert client.get(url, headers=bob).status_code == 404
        assert client.delete(url, headers=bob).status_code == 404
    listed = client.get("/api/v2/me/interactions", headers=bob).json()["interactions"]
    assert listed == []
    assert client.get("/api/v2/me/workbins/Personal", headers=bob).json()["interactions"] == []


def test_error_statuses(server: Server, client: TestClient) -> None:
    assert client.get("/api/v2/me").status_code == 401
    assert client.get("/api/v2/me", headers=basic("alice", "wrong")).status_code == 401
    r = client.post("/api/v2/me/interactions/X", content=b"{", headers=basic("alice"))
    assert r.status_code == 400 and r.json()["errorDescription"].startswith("Malformed JSON")
    r = client.post(
        "/api/v2/me/interactions/X", content=b"[" * 100_000 + b"]" * 100_000, headers=basic("alice")
    )
    assert r.status_code == 400
    assert post(client, "/interactions/X", {"operationName": "Dance"}).status_code == 400
    assert post(client, "/interactions/X", {"operationName": "Accept"}).status_code == 404
    r = client.post(
        "/api/v2/me/interactions/X", content=b" " * (2 * 1024 * 1024), headers=basic("alice")
    )
    assert r.status_code == 413
    post(client, "/channels/email", {"operationName": "Ready"})
    deliver(server)
    iid = offered(client)
    r = post(client, f"/interactions/{iid}", {"operationName": "Send"})
    assert r.status_code == 409 and "not allowed in state Invited" in r.json()["errorDescription"]
    assert post(client, "/channels/voice", {"operationName": "Ready"}).status_code == 404
    assert post(client, "/channels/email", {"operationName": "Fly"}).status_code == 400


def test_text_json_cannot_carry_is_refused_at_the_edge(server: Server, client: TestClient) -> None:
    """JSON can escape half a UTF-16 pair, and Python's parser reads NaN: neither can be stored,
    mailed or sent back as JSON, so each is a 400 naming the field (a real pair is fine)."""
    post(client, "/channels/email", {"operationName": "Ready"})
    deliver(server)
    iid = offered(client)
    assert post(client, f"/interactions/{iid}", {"operationName": "Accept"}).status_code == 200
    raw = b'{"operationName":"UpdateProperties","userData":{"note":"a\\ud800b"}}'
    r = client.post(f"/api/v2/me/interactions/{iid}", content=raw, headers=basic("alice"))
    assert r.status_code == 400, r.text
    assert "userData.note: a lone UTF-16 surrogate" in str(r.json())
    raw = b'{"operationName":"UpdateProperties","userData":{"\\udc80":"x"}}'
    r = client.post(f"/api/v2/me/interactions/{iid}", content=raw, headers=basic("alice"))
    assert r.status_code == 400, r.text
    raw = b'{"operationName":"Ready","reason":["\\ud800"]}'
    r = client.post("/api/v2/me/channels/email", content=raw, headers=basic("alice"))
    assert r.status_code == 400 and "reason[0]" in str(r.json())
    huge = b'{"operationName":"UpdateProperties","userData":{"n":1e999}}'
    r = client.post(f"/api/v2/me/interactions/{iid}", content=huge, headers=basic("alice"))
    assert r.status_code == 400 and "userData.n: inf" in r.text
    assert client.get("/api/v2/me/interactions", headers=basic("alice")).status_code == 200
    nan = b'{"operationName":"UpdateProperties","userData":{"n":NaN}}'
    r = client.post(f"/api/v2/me/interactions/{iid}", content=nan, headers=basic("alice"))
    assert r.status_code == 400 and "NaN is not a JSON number" in r.text
    pair = b'{"operationName":"UpdateProperties","userData":{"note":"\\ud83d\\ude00"}}'
    r = client.post(f"/api/v2/me/interactions/{iid}", content=pair, headers=basic("alice"))
    assert r.status_code == 200, r.text
    shown = client.get(f"/api/v2/me/interactions/{iid}", headers=basic("alice")).json()
    assert "\N{GRINNING FACE}" in str(shown)


def test_failed_logins_are_rate_limited(client: TestClient) -> None:
    for _ in range(3):
        assert client.get("/api/v2/me", headers=basic("alice", "nope")).status_code == 401
    r = client.get("/api/v2/me", headers=basic("alice", "nope"))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    # Even the right password waits out the window: no oracle while locked.
    assert client.get("/api/v2/me", headers=basic("alice")).status_code == 429
    assert client.get("/api/v2/me", headers=basic("bob")).status_code == 200


def test_session_cookie_after_basic(client: TestClient) -> None:
    r = client.get("/api/v2/me", headers=basic("alice"))
    assert r.status_code == 200 and "JSESSIONID" in r.cookies
    again = client.get("/api/v2/me")  # the TestClient keeps cookies
    assert again.status_code == 200 and again.json()["user"]["id"] == "alice"


def test_csrf_on(tmp_path: Path) -> None:
    server = make_server(tmp_path, csrf=True)
    with TestClient(server.app) as client:
        r = client.get("/api/v2/me", headers=basic("alice"))
        assert r.headers["X-CSRF-HEADER"] == "X-CSRF-TOKEN"
        token = r.headers["X-CSRF-TOKEN"]
        body = {"operationName": "Ready"}
        r = client.post("/api/v2/me/channels/email", json=body)
        assert r.status_code == 403
        assert r.json()["errorDescription"] == "Missing or invalid Csrf token"
        r = client.post("/api/v2/me/channels/email", json=body, headers={"X-CSRF-TOKEN": "bad"})
        assert r.status_code == 403
        r = client.post("/api/v2/me/channels/email", json=body, headers={"X-CSRF-TOKEN": token})
        assert r.json() == {"status": "ok"}


def test_csrf_off_needs_no_token(client: TestClient) -> None:
    r = client.get("/api/v2/me", headers=basic("alice"))
    assert "X-CSRF-TOKEN" not in r.headers
    assert post(client, "/channels/email", {"operationName": "NotReady"}).json()["status"] == "ok"


def test_attachments(server: Server, client: TestClient) -> None:
    post(client, "/channels/email", {"operationName": "Ready"})
    deliver(server)
    iid = offered(client)
    post(client, f"/interactions/{iid}", {"operationName": "Accept"})
    draft = post(client, f"/interactions/{iid}", {"operationName": "Reply"}).json()[
        "replyInteractionId"
    ]
    url = f"/api/v2/me/interactions/{draft}/attachments"
    r = client.post(
        url,
        files={"attachment": ("Résumé v2.pdf", b"%PDF-1.4", "application/pdf")},
        headers=basic("alice"),
    )
    assert r.status_code == 200
    doc = r.json()["documentId"]
    got = client.get(f"{url}/{doc}", headers=basic("alice"))
    assert got.content == b"%PDF-1.4" and got.headers["content-type"] == "application/pdf"
    disposition = got.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="R_sum_ v2.pdf"')
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9%20v2.pdf" in disposition
    assert client.delete(f"{url}/{doc}", headers=basic("alice")).json() == {"status": "ok"}
    assert client.get(f"{url}/{doc}", headers=basic("alice")).status_code == 404

    # An inline image for the draft's HTML: its contentId is on the wire; a bad one is a 400.
    image = {"attachment": ("shot.png", b"\x89PNG", "image/png")}
    r = client.post(url, files=image, data={"contentId": "<shot1@ui>"}, headers=basic("alice"))
    assert r.status_code == 200, r.text
    assert r.json()["attachment"]["contentId"] == "shot1@ui"
    shown = client.get(f"/api/v2/me/interactions/{draft}", headers=basic("alice")).json()
    assert shown["interaction"]["email_object"]["attachments"][-1]["contentId"] == "shot1@ui"
    r = client.post(url, files=image, data={"contentId": "two words"}, headers=basic("alice"))
    assert r.status_code == 400 and "contentId" in r.json()["errorDescription"]
    other = {"attachment": ("other.png", b"\x89PNG2", "image/png")}
    r = client.post(url, files=other, data={"contentId": "shot1@ui"}, headers=basic("alice"))
    assert r.status_code == 409, r.text


def test_attachment_size_limit(tmp_path: Path) -> None:
    server = make_server(tmp_path, max_attachment_bytes=2048)
    with TestClient(server.app) as client:
        r = client.post(
            "/api/v2/me/interactions/X/attachments",
            files={"attachment": ("big.bin", b"x" * 4096, "application/octet-stream")},
            headers=basic("alice"),
        )
        assert r.status_code == 413


def test_openapi_shows_the_operation_union_with_examples(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/api/v2/me/interactions/{interaction_id}"]["post"]["requestBody"]
    content = body["content"]["application/json"]
    assert content["schema"]["discriminator"]["propertyName"] == "operationName"
    assert {"Accept", "ReplyAll", "Send", "Transfer"} <= set(content["examples"])
    assert "Send" in schema["components"]["schemas"]
