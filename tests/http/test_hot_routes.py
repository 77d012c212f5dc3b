"""The hot routes (``adapters.http.hot``) answer exactly what FastAPI's endpoints answer, and what
the OpenAPI document says, for every operation and every error.

Two interactions in the same state walk the same lifecycle side by side: every request on the
first goes through the hot path, the same request on the second through FastAPI's router (the
hot table emptied for that one request). Their answers must be equal (status, the headers a
client reads, and the body with the interactions' own ids and times written as placeholders),
and each body must validate against the schema the OpenAPI document gives for that route and
status. Each request is counted on the side it was meant for, so a hot path that never engaged
(or one that did on the framework's turn) fails the test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient
from test_api import basic, deliver, make_server, offered, wait_for  # tests/http is on sys.path

from adapters.http.app import EXAMPLES, INTERACTION, INTERACTION_SINGULAR, INTERACTIONS
from adapters.http.hot import Handler
from adapters.server.bootstrap import Server

SEEN_HEADERS = ("content-type", "cache-control", "www-authenticate", "retry-after")
ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")


class Paths:
    """Sends each request once through the hot path or once through the framework."""

    def __init__(self, server: Server, client: TestClient) -> None:
        self.client = client
        self.table = server.app.hot_routes
        self.document = client.get("/openapi.json").json()
        self.hot_calls = 0
        self.routes = list(self.table.routes)
        counted = []
        for method, path, pattern, handler in self.routes:
            counted.append((method, path, pattern, self._counting(handler)))
        self.table.routes[:] = counted
        self.hot = list(counted)

    def _counting(self, handler: Handler) -> Handler:
        async def counted(*args: Any) -> Any:
            self.hot_calls += 1
            return await handler(*args)

        return counted

    def send(self, hot: bool, method: str, url: str, **kwargs: Any) -> Any:
        before = self.hot_calls
        self.table.routes[:] = self.hot if hot else []
        try:
            r = self.client.request(method, url, **kwargs)
        finally:
            self.table.routes[:] = self.hot
        assert self.hot_calls - before == (1 if hot else 0), (hot, method, url)
        return r

    def validate(self, template: str, method: str, r: Any) -> None:
        """The body against the document's schema for this route, method and status."""
        responses = self.document["paths"][template][method.lower()]["responses"]
        assert str(r.status_code) in responses, (template, method, r.status_code, r.text)
        schema = responses[str(r.status_code)]["content"]["application/json"]["schema"]
        validator = jsonschema_rs.validator_for(
            {**schema, "components": self.document["components"]}
        )
        validator.validate(r.json())


def normalised(body: Any, ids: dict[str, str]) -> Any:
    text = r"\b(" + "|".join(map(re.escape, sorted(ids, key=len, reverse=True))) + r")\b"

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            value = re.sub(text, lambda m: ids[m.group(1)], value) if ids else value
            return ISO_TIME.sub("<time>", value)
        return value

    return walk(body)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield make_server(tmp_path, login_max_failures=1_000_000)


@pytest.fixture
def client(server: Server) -> Iterator[TestClient]:
    with TestClient(server.app) as c:
        yield c


def test_the_hot_table_is_the_documented_routes(server: Server) -> None:
    table = server.app.hot_routes
    assert {(m, p) for m, p, _, _ in table.routes} == {
        ("POST", INTERACTION),
        ("POST", INTERACTION_SINGULAR),
        ("POST", INTERACTIONS),
        ("GET", INTERACTIONS),
        ("GET", INTERACTION),
    }
    document = server.app.openapi()
    for method, path, _, _ in table.routes:
        assert method.lower() in document["paths"][path], (method, path)


def test_hot_and_framework_answers_are_equal_and_documented(
    server: Server, client: TestClient
) -> None:
    paths = Paths(server, client)
    alice = basic("alice")
    client.post("/api/v2/me/channels/email", json={"operationName": "Ready"}, headers=alice)
    deliver(server, subject="Order 42", message_id="<hot@example.org>")
    first = offered(client)
    deliver(server, subject="Order 42", message_id="<framework@example.org>")
    second = wait_for(
        lambda: next(
            (
                i["id"]
                for i in client.get(INTERACTIONS, headers=alice).json()["interactions"]
                if i["state"] == "Invited" and i["id"] != first
            ),
            None,
        )
    )
    ids = {first: "<it>", second: "<it>"}
    ids |= {"hot@example.org": "<message-id>", "framework@example.org": "<message-id>"}
    sides = {True: first, False: second}  # hot path: first; framework: second
    drafts: dict[bool, str] = {}

    def both(
        method: str,
        template: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        draft: bool = False,
        agent: str = "alice",
        target: str | None = None,
    ) -> Any:
        answers = []
        for hot in (True, False):
            iid = target or (drafts[hot] if draft else sides[hot])
            url = template.replace("{interaction_id}", iid)
            kwargs: dict[str, Any] = {"headers": basic(agent)}
            if raw is not None:
                kwargs["content"] = raw
            elif body is not None:
                kwargs["json"] = body
            r = paths.send(hot, method, url, **kwargs)
            paths.validate(template, method, r)
            answers.append(r)
        hot_r, framework_r = answers
        for hot, r in zip((True, False), answers, strict=True):
            made = r.json().get("replyInteractionId")
            if made is not None:  # a draft: the next draft=True requests act on it
                drafts[hot] = made
                ids[made] = "<draft>"
        assert hot_r.status_code == framework_r.status_code, (template, body, hot_r.text)
        for name in SEEN_HEADERS:
            assert hot_r.headers.get(name) == framework_r.headers.get(name), name
        assert int(hot_r.headers["content-length"]) == len(hot_r.content)
        assert normalised(hot_r.json(), ids) == normalised(framework_r.json(), ids), body
        return hot_r, framework_r

    # Reads, and every operation's example refused in state Invited (or accepted by it).
    both("GET", INTERACTIONS)
    both("GET", INTERACTION)
    for name, example in EXAMPLES.items():
        if name not in ("Accept", "Reject"):
            both("POST", INTERACTION, example)
    # Malformed, hostile and unknown requests: the 400s, 404s and 413 of both paths.
    for raw in (b"{", b"", b"[]", b'"x"', b"[" * 5000 + b"]" * 5000, b'{"a":1,"a":2}', b"\xff"):
        both("POST", INTERACTION, raw=raw)
    both("POST", INTERACTION, raw=b" " * (server.settings.max_body_bytes + 1))
    both("POST", INTERACTION, {"operationName": "Dance"})
    both("POST", INTERACTION, {"operationName": "Transfer"})
    both("POST", INTERACTION, raw=b'{"operationName":"UpdateProperties","userData":{"n":1e999}}')
    both("POST", INTERACTION, {"operationName": "Accept"}, target="NO-SUCH-ID")
    both("GET", INTERACTION, target="NO-SUCH-ID")
    both("POST", INTERACTION, {"operationName": "Accept"}, agent="bob")  # not bob's: 404
    both("GET", INTERACTION, agent="bob")
    # The lifecycle, on both spellings of the path.
    both("POST", INTERACTION, {"operationName": "Accept"})
    both("POST", INTERACTION_SINGULAR, {"operationName": "UpdateProperties", "comment": "VIP"})
    both("POST", INTERACTION, {"operationName": "Accept"})  # not again: 409
    both("POST", INTERACTION, EXAMPLES["ReplyAll"])
    both("GET", INTERACTION, draft=True)
    both("GET", INTERACTIONS)
    both(
        "POST",
        INTERACTION,
        {"operationName": "Send", "email_object": {"toAddress": "@"}},
        draft=True,
    )
    both("POST", INTERACTION, {"operationName": "CancelReply"}, draft=True)
    both("POST", INTERACTION, {"operationName": "Reply"})
    both("POST", INTERACTION, EXAMPLES["Send"], draft=True)
    both("POST", INTERACTION, {"operationName": "StopProcessing"})
    # CreateEmail, good and bad, and the list afterwards.
    both("POST", INTERACTIONS, {"operationName": "CreateEmail", "queueName": "Drafts"})
    both("POST", INTERACTIONS, {"operationName": "CreateEmail", "replyInteractionId": 3})
    both("POST", INTERACTIONS, {"operationName": "Accept"})
    both("POST", INTERACTIONS, raw=b"{")
    assert paths.hot_calls > 40
