"""A body that gives a key twice is a 400 naming it, over the real server (issue 12, item 4).

``{"operationName":"UpdateProperties","operationName":"Cancel"}`` used to cancel the draft:
Python's json keeps the last of two equal keys. Now the body is refused before any operation
runs, and the draft is untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_api import basic, deliver, make_server, offered, post  # tests/http is on sys.path

from adapters.server.bootstrap import Server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield make_server(tmp_path)


@pytest.fixture
def client(server: Server) -> Iterator[TestClient]:
    with TestClient(server.app) as c:
        yield c


def raw_post(client: TestClient, path: str, body: bytes) -> tuple[int, dict[str, str]]:
    headers = {**basic("alice"), "Content-Type": "application/json"}
    response = client.post("/api/v2/me" + path, content=body, headers=headers)
    answer: dict[str, str] = response.json()
    return response.status_code, answer


def state_of(client: TestClient, interaction_id: str) -> str:
    shown = client.get(f"/api/v2/me/interactions/{interaction_id}", headers=basic("alice"))
    state: str = shown.json()["interaction"]["state"]
    return state


def test_a_repeated_operation_name_does_not_cancel_the_draft(
    server: Server, client: TestClient
) -> None:
    post(client, "/channels/email", {"operationName": "Ready"})
    deliver(server)
    iid = offered(client)
    post(client, f"/interactions/{iid}", {"operationName": "Accept"})
    draft = post(client, f"/interactions/{iid}", {"operationName": "Reply"}).json()[
        "replyInteractionId"
    ]
    assert state_of(client, draft) == "ReplyCreated"

    body = b'{"operationName":"UpdateProperties","operationName":"Cancel"}'
    for path in (f"/interactions/{draft}", f"/interaction/{draft}"):
        status, answer = raw_post(client, path, body)
        assert status == 400
        assert answer["status"] == "error"
        problem = "operationName: the key 'operationName' is given more than once"
        assert problem in answer["errorDescription"]
    assert state_of(client, draft) == "ReplyCreated"

    # Nested: named with its path, and nothing of the operation applied.
    nested = b'{"operationName":"UpdateProperties","userData":{"Priority":1,"Priority":9}}'
    status, answer = raw_post(client, f"/interactions/{draft}", nested)
    assert status == 400 and "userData.Priority: the key 'Priority'" in answer["errorDescription"]
    shown = client.get(f"/api/v2/me/interactions/{draft}", headers=basic("alice")).json()
    assert "Priority" not in shown["interaction"]["userData"]

    # The draft still works: the same body without the repetition is applied.
    status, answer = raw_post(client, f"/interactions/{draft}", b'{"operationName":"Cancel"}')
    assert (status, answer) == (200, {"status": "ok"})
    assert state_of(client, draft) == "Cancelled"


def test_create_email_and_channel_bodies_are_read_the_same_way(client: TestClient) -> None:
    status, answer = raw_post(
        client, "/channels/email", b'{"operationName":"NotReady","operationName":"Ready"}'
    )
    assert status == 400
    assert "'operationName' is given more than once" in answer["errorDescription"]
    me = client.get("/api/v2/me", headers=basic("alice")).json()
    assert me["user"]["channels"][0]["userState"]["state"] != "Ready"

    status, answer = raw_post(
        client, "/interactions", b'{"operationName":"CreateEmail","queueName":"a","queueName":"b"}'
    )
    assert status == 400 and "queueName: the key 'queueName'" in answer["errorDescription"]
    listed = client.get("/api/v2/me/interactions", headers=basic("alice")).json()
    assert listed["interactions"] == []
