"""The README walkthrough on two server processes behind HAProxy, followed by the official
CometD JavaScript client connected through HAProxy (sticky by its cookie): the agent is Ready
through process A, the mail comes in over SMTP to process B, the client is Invited wherever its
session is, then Accept, ReplyAll and Send go through A, B and HAProxy; the relay receives the
reply once."""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import Callable
from email import message_from_bytes
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from jsfollow import Follower, follower

from .harness import MAILBOX, Cluster

AUTH = ("alice", "alice-pw")


def deliver(port: int, message_id: str) -> None:
    message = EmailMessage()
    message["From"] = "Cee Customer <customer@example.org>"
    message["To"] = MAILBOX
    message["Cc"] = "colleague@example.org"
    message["Subject"] = "Where is my order?"
    message["Message-ID"] = message_id
    message.set_content("Hello,\n\nmy order 42 has not arrived yet.\n\nCee")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(message)


def states(client: Follower, iid: str) -> list[str]:
    return [
        m["data"]["state"]
        for m in client.of("message")
        if m["channel"] == "/me/interactions" and m["data"].get("id") == iid
    ]


def invited(client: Follower) -> list[str]:
    return [
        m["data"]["id"]
        for m in client.of("message")
        if m["channel"] == "/me/interactions" and m["data"].get("state") == "Invited"
    ]


async def until(what: str, check: Callable[[], Any], limit: float = 30) -> Any:
    """``check()``'s first true value (``limit`` only guards against a hang)."""
    deadline = time.monotonic() + limit
    while not (found := check()):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)
    return found


@pytest.mark.parametrize("transport", ["long-polling", "websocket"])
async def test_walkthrough_on_two_processes_behind_haproxy(
    make_cluster: Callable[..., Cluster], transport: str
) -> None:
    cluster = make_cluster()
    a, b = (f"{cluster.node_url(i)}/api/v2" for i in (0, 1))
    via = f"{cluster.base_url}/api/v2"
    url = f"{cluster.base_url}/api/v2/notifications"
    channels = ("/me/interactions", "/me/channels")
    async with (
        follower(url, via, AUTH, transport, channels) as client,
        httpx.AsyncClient(auth=AUTH, timeout=10) as http,
    ):
        await client.wait_for(
            lambda: len([s for s in client.of("subscribed") if s["successful"]]) == 2,
            "never subscribed",
        )
        ready = await http.post(f"{a}/me/channels/email", json={"operationName": "Ready"})
        assert ready.json() == {"status": "ok"}
        await client.wait_for(
            lambda: any(m["channel"] == "/me/channels" for m in client.of("message")),
            "the ChannelStateMessage never reached the client",
        )
        me = (await http.get(f"{b}/me")).json()["user"]
        assert me["channels"][0]["userState"]["state"] == "Ready"

        await asyncio.to_thread(deliver, cluster.smtp_port(1), "<walk-1@example.org>")
        [iid] = await until("never Invited", lambda: invited(client))

        accept = await http.post(f"{a}/me/interactions/{iid}", json={"operationName": "Accept"})
        assert accept.json() == {"status": "ok"}
        reply = (
            await http.post(f"{b}/me/interactions/{iid}", json={"operationName": "ReplyAll"})
        ).json()
        assert reply["status"] == "ok", reply
        draft = reply["replyInteractionId"]
        sent = await http.post(f"{via}/me/interactions/{draft}", json={"operationName": "Send"})
        assert sent.json() == {"status": "ok"}

        messages = await until("the reply never reached the relay", lambda: cluster.sink_messages)
        await client.wait_for(lambda: "Sent" in states(client, draft), "Sent never notified")
        await client.wait_for(
            lambda: states(client, iid)[:2] == ["Invited", "Accepted"], "Accepted not notified"
        )
        # Once: every process's dispatcher drains the one outbox, and a second second changes
        # nothing (a duplicate would have been sent within milliseconds).
        await asyncio.sleep(2)
        messages = cluster.sink_messages
        assert len(messages) == 1, [m.rcpt_tos for m in messages]
        mail = message_from_bytes(messages[0].data)
        assert mail["In-Reply-To"] == "<walk-1@example.org>"
        assert mail["Subject"] == "Re: Where is my order?"
        assert sorted(messages[0].rcpt_tos) == ["colleague@example.org", "customer@example.org"]
        seqs = [m["seq"] for m in client.of("message") if m["seq"] is not None]
        assert seqs == sorted(set(seqs))  # in commit order, none twice
        handshakes = [h for h in client.of("handshake") if h["successful"]]
        assert len(handshakes) == 1  # sticky: one session for the whole walk
