"""Authentication units: Basic parsing, sessions vs credentials, disposition headers."""

from __future__ import annotations

import base64

import pytest

from adapters.http.app import content_disposition
from adapters.http.auth import AuthError, HttpAuth, parse_basic


def header(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_parse_basic() -> None:
    assert parse_basic(header("alice", "p:w")["authorization"]) == ("alice", "p:w")
    assert parse_basic("Bearer x") is None
    assert parse_basic("Basic !!!") is None
    assert parse_basic("Basic " + base64.b64encode(b"nocolon").decode()) is None
    assert parse_basic("Basic " + base64.b64encode(b"\xff\xfe:x").decode()) is None


async def test_credentials_for_another_agent_beat_the_session_cookie() -> None:
    auth = HttpAuth(lambda agent, password: password == agent + "-pw")
    alice = await auth.authenticate(header("alice", "alice-pw"), {}, "1.2.3.4")
    cookies = {"JSESSIONID": alice.session_id}
    assert (await auth.authenticate({}, cookies, None)).agent_id == "alice"
    bob = await auth.authenticate(header("bob", "bob-pw"), cookies, None)
    assert bob.agent_id == "bob" and bob.new_session
    with pytest.raises(AuthError) as refused:
        await auth.authenticate(header("bob", "wrong"), cookies, None)
    assert refused.value.status == 401


async def test_csrf_check() -> None:
    auth = HttpAuth(lambda agent, password: True, csrf=True)
    first = await auth.authenticate(header("alice", "x"), {}, None)
    with pytest.raises(AuthError, match="Csrf"):
        auth.check_csrf("POST", {}, first)  # a brand-new session cannot know its token yet
    again = await auth.authenticate({}, {"JSESSIONID": first.session_id}, None)
    auth.check_csrf("GET", {}, again)
    auth.check_csrf("POST", {"x-csrf-token": first.csrf_token}, again)
    with pytest.raises(AuthError):
        auth.check_csrf("DELETE", {"x-csrf-token": "nope"}, again)


@pytest.mark.parametrize(
    ("name", "fallback"),
    [
        ('a"b.txt', 'filename="a_b.txt"'),
        ("x\r\nSet-Cookie: y.txt", 'filename="x__Set-Cookie: y.txt"'),
        ("日本.pdf", 'filename="__.pdf"'),
    ],
)
def test_content_disposition_never_breaks_the_header(name: str, fallback: str) -> None:
    value = content_disposition(name)
    assert fallback in value and "\r" not in value and "\n" not in value


def test_invalid_configuration_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.server.settings import ConfigurationError, load_settings

    monkeypatch.setenv("INTERACTIONS_HTTP_PORT", "eighty")
    with pytest.raises(ConfigurationError, match=r"http_port \(env INTERACTIONS_HTTP_PORT\)"):
        load_settings()
    monkeypatch.delenv("INTERACTIONS_HTTP_PORT")
    with pytest.raises(ConfigurationError, match="mailboxes"):
        load_settings(mailboxes={"not an address": "Q"})
    with pytest.raises(ConfigurationError, match="catch_all"):
        load_settings(catch_all={"@example.com": "nobody@example.com"})
    monkeypatch.setenv("INTERACTIONS_RELAY__HOST", "smtp.example.com")
    assert load_settings().relay is not None


def test_every_domain_error_kind_has_its_status() -> None:
    from adapters.http.app import from_domain
    from interactions_core.errors import (
        ConcurrencyConflict,
        InteractionNotFound,
        InvalidRequest,
        OperationNotAllowed,
        TooLarge,
        Unavailable,
    )

    cases = [
        (InvalidRequest("bad"), 400),
        (InteractionNotFound("X"), 404),
        (OperationNotAllowed("Send", "Invited", ["Accept"]), 409),
        (ConcurrencyConflict("X", 1, 2), 409),
        (TooLarge("big"), 413),
        (Unavailable("busy"), 503),
    ]
    for exc, status in cases:
        response = from_domain(exc)
        assert response.status_code == status
        assert response.body.startswith(b'{"status":"error","errorDescription":')
