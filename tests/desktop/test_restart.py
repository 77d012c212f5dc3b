"""The server restarts while the page is open (websocket, then long-polling): the page says the
connection is lost, re-handshakes by itself, re-reads the agent's state and interactions, and
says so in the status line. What happened meanwhile is there: an invitation for a mail that
arrived before the page reconnected, a comment set through the API."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .harness import DesktopServer, Page, deliver, wait_until


@pytest.mark.parametrize("transport", ["websocket", "long-polling"])
def test_a_server_restart_loses_nothing(
    desktop: DesktopServer, browser: Callable[..., Page], transport: str
) -> None:
    page = browser()
    page.open("" if transport == "websocket" else "?transport=long-polling")
    page.login("alice")
    assert transport in page.status
    page.ready()
    deliver(desktop.smtp_port, f"Before the restart ({transport})", cc=None)
    page.click(".toast button.primary", "Accept")
    page.wait(".toolbar button[data-capability=StopProcessing]")
    with desktop.api("alice") as api:
        (first,) = api.get("/me/interactions").json()["interactions"]

    desktop.stop()
    wait_until(
        lambda: any(w in page.status for w in ("reconnecting", "Cannot reach")),
        timeout=40,
        what=f"the status line saying the connection is lost: {page.status!r}",
    )
    if transport == "websocket":
        page.shot("11-server-down")
    desktop.start()
    # Right away, before the page is back: a mail (offered to alice, who is Ready) and a
    # change made through the API.
    deliver(desktop.smtp_port, f"While away ({transport})", cc=None)
    with desktop.api("alice") as api:
        answer = api.post(
            f"/me/interactions/{first['id']}",
            json={"operationName": "UpdateProperties", "comment": "changed while away"},
        )
        assert answer.json() == {"status": "ok"}

    page.wait(".toast", timeout=30, text=f"While away ({transport})")
    page.wait_text("#status", "Reconnected at", timeout=30)
    page.wait_text("#status", "up to date", timeout=30)
    page.wait_text(".properties .comment", "changed while away")
    items = [li.text for li in page.all("#mine li")]
    assert len(items) == 2, items
    if transport == "websocket":
        page.shot("12-reconnected")
    assert "Ready" in page.text("#ready-state")
    with desktop.api("alice") as api:
        for i in api.get("/me/interactions").json()["interactions"]:
            name = "Accept" if i["state"] == "Invited" else "StopProcessing"
            api.post(f"/me/interactions/{i['id']}", json={"operationName": name})
            if name == "Accept":
                api.post(f"/me/interactions/{i['id']}", json={"operationName": "StopProcessing"})
    wait_until(lambda: not page.all("#mine li"), what="done")
