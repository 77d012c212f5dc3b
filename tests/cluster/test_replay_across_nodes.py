"""A CometD client whose process dies loses nothing: the official JavaScript client, through
HAProxy, follows an agent while a writer commits a change 25 times a second through HAProxy;
each process is SIGKILLed in turn (so one of them is the client's) and started again.

The client's next request lands on a live process, which answers ``402::session_unknown`` with
the advice to handshake; the client handshakes there with the replay extension's position and
is sent what it missed. Every committed change reaches it (as a notification, or in a re-read
on ``ReadState``), none twice, all in commit order."""

from __future__ import annotations

import asyncio
import signal
import smtplib
import time
from collections.abc import Callable
from email.message import EmailMessage

import httpx
import pytest

from jsfollow import Follower, Writer, follower

from .harness import MAILBOX, Cluster

AUTH = ("alice", "alice-pw")
RATE = 25


def deliver(port: int) -> None:
    message = EmailMessage()
    message["From"] = "Customer <c@example.org>"
    message["To"] = MAILBOX
    message["Subject"] = "Follow me"
    message["Message-ID"] = "<follow-1@example.org>"
    message.set_content("Hello")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(message)


async def accepted(api: str, smtp_port: int) -> str:
    async with httpx.AsyncClient(base_url=api, auth=AUTH, timeout=10) as http:
        assert (await http.post("/me/channels/email", json={"operationName": "Ready"})).is_success
        await asyncio.to_thread(deliver, smtp_port)
        deadline = time.monotonic() + 30
        while True:
            listed = (await http.get("/me/interactions")).json()["interactions"]
            invited = [i["id"] for i in listed if i["state"] == "Invited"]
            if invited:
                break
            assert time.monotonic() < deadline, listed
            await asyncio.sleep(0.05)
        answer = await http.post(f"/me/interactions/{invited[0]}", json={"operationName": "Accept"})
        assert answer.json() == {"status": "ok"}
        return invited[0]


async def run_for(writer: Writer, changes: int) -> None:
    target = writer.count() + changes
    deadline = time.monotonic() + 60
    while writer.count() < target:
        assert writer.is_alive() and time.monotonic() < deadline, writer.count()
        await asyncio.sleep(0.02)


def received(client: Follower, iid: str) -> set[int]:
    return {
        m["data"]["userData"]["n"]
        for m in client.of("message")
        if m["data"].get("id") == iid and "n" in m["data"].get("userData", {})
    }


def reread(client: Follower, iid: str) -> int:
    shown = [
        i["userData"].get("n", 0)
        for e in client.of("reread")
        for i in e["interactions"]
        if i["id"] == iid
    ]
    return max(shown, default=0)


@pytest.mark.parametrize("transport", ["long-polling", "websocket"])
async def test_a_client_whose_process_dies_is_replayed_what_it_missed_elsewhere(
    make_cluster: Callable[..., Cluster], transport: str
) -> None:
    cluster = make_cluster()
    api = f"{cluster.base_url}/api/v2"
    iid = await accepted(api, cluster.smtp_port(0))
    url = f"{cluster.base_url}/api/v2/notifications"
    async with follower(url, api, AUTH, transport) as client:
        await client.wait_for(
            lambda: any(s["successful"] for s in client.of("subscribed")), "never subscribed"
        )
        writer = Writer(api, iid, AUTH, RATE)
        writer.start()
        try:
            await run_for(writer, RATE)
            for i in range(cluster.nodes):
                await asyncio.to_thread(cluster.kill, i, signal.SIGKILL)
                await run_for(writer, RATE)  # committed by the survivor meanwhile
                await asyncio.to_thread(cluster.restart, i)
                await run_for(writer, RATE)
        finally:
            writer.halt.set()
            await asyncio.to_thread(writer.join, 10)
        acked = writer.acked
        await client.wait_for(
            lambda: acked[-1] in received(client, iid) or reread(client, iid) >= acked[-1],
            f"the last change ({acked[-1]}) never reached the client",
        )
        seen, covered = received(client, iid), reread(client, iid)
        missing = [n for n in acked if n not in seen and n > covered]
        assert not missing, f"{len(missing)} committed changes never reached the client"
        seqs = [m["seq"] for m in client.of("message") if m["seq"] is not None]
        assert seqs == sorted(set(seqs)), "a notification came twice or out of order"
        # The client's process died: it was told so (402) by a live one, handshook again there
        # with its position and was replayed (not only re-read) what it missed.
        errors = [str(e["error"]) for e in client.of("connect-failed")]
        assert any("402" in e for e in errors), errors
        handshakes = [h for h in client.of("handshake") if h["successful"]]
        assert len(handshakes) >= 2 and all(h["replay"] for h in handshakes)
        assert all(h["after"] is not None for h in handshakes[1:])
