"""Both ways of serving CometD inside an ASGI app: as routes, and in front of the app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp

from adapters.cometd import BasicAuthenticator, BayeuxServer, CometdApp, basic_header, cometd_routes

PATH = "/api/v2/notifications"


def hello(request: Any) -> PlainTextResponse:
    return PlainTextResponse("app")


def as_routes(server: BayeuxServer) -> ASGIApp:
    return Starlette(routes=[*cometd_routes(server, PATH), Route("/hello", hello)])


def in_front(server: BayeuxServer) -> ASGIApp:
    return CometdApp(server, Starlette(routes=[Route("/hello", hello)]), PATH)


@pytest.mark.parametrize("mount", [as_routes, in_front])
def test_handshake_connect_and_the_app_beside(mount: Callable[[BayeuxServer], ASGIApp]) -> None:
    server = BayeuxServer(BasicAuthenticator({"alice": "pw"}))
    headers = {"Authorization": basic_header("alice", "pw")}
    with TestClient(mount(server)) as client:
        shake = client.post(
            PATH + "/handshake",
            json=[
                {
                    "channel": "/meta/handshake",
                    "version": "1.0",
                    "supportedConnectionTypes": ["long-polling"],
                    "id": "1",
                }
            ],
            headers=headers,
        ).json()[0]
        assert shake["successful"] and shake["id"] == "1"
        connect = client.post(
            PATH + "/connect",
            json=[
                {
                    "channel": "/meta/connect",
                    "clientId": shake["clientId"],
                    "connectionType": "long-polling",
                }
            ],
            headers=headers,
        ).json()[0]
        assert connect["successful"]  # the first connect after a handshake returns at once
        refused = client.post(
            PATH,
            json=[
                {
                    "channel": "/meta/handshake",
                    "version": "1.0",
                    "supportedConnectionTypes": ["long-polling"],
                }
            ],
        ).json()[0]
        assert refused["successful"] is False
        assert client.get("/hello").text == "app"
