"""Failover under load: three agents work full lifecycles (Accept, Reply, Send, StopProcessing)
through HAProxy on two server processes while mail keeps coming in over SMTP to both; one
process (the leader in some runs, a follower in others) is SIGKILLed at a random point and
restarted later. Each agent is followed by the official CometD JavaScript client through
HAProxy.

Checked, every run:

* every Send answered ok (and every draft committed as Sent) reaches the relay, and the number
  of duplicates (one Message-ID twice) is reported: the target is 0;
* no interaction is lost or stuck: every mail the SMTP servers accepted ends Completed;
* every client reconnects by itself and ends with its agent's true state;
* routing resumes after the kill (how long it took is printed).
"""

from __future__ import annotations

import asyncio
import random
import signal
import smtplib
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from email import message_from_bytes
from email.message import EmailMessage
from typing import Any

import httpx
import psycopg
import pytest

from jsfollow import Follower, follower

from .harness import MAILBOX, Cluster, MailSink

AGENTS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
CASES = 24
RUNS = [("leader", 0), ("follower", 1), ("leader", 2), ("follower", 3), ("leader", 4)]


def deliver(ports: list[int], n: int) -> None:
    """One mail over SMTP, to a random process; another one if that one is down."""
    message = EmailMessage()
    message["From"] = f"Customer {n} <c{n}@example.org>"
    message["To"] = MAILBOX
    message["Subject"] = f"Failover case {n}"
    message["Message-ID"] = f"<failover-{n}@example.org>"
    message.set_content(f"Hello {n}")
    last: Exception | None = None
    for _ in range(50):
        for port in random.sample(ports, len(ports)):
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                    smtp.send_message(message)
                return
            except (OSError, smtplib.SMTPException) as exc:
                last = exc
        time.sleep(0.2)
    raise AssertionError(f"case {n} could not be delivered: {last}")


class Agent:
    """Works its interactions through HAProxy until told to stop. Every request may fail (a
    process killed under it): it then reads its state again and goes on from what is stored,
    never assuming what an unanswered request did."""

    def __init__(self, api: str, name: str, password: str) -> None:
        self.http = httpx.AsyncClient(base_url=api, auth=(name, password), timeout=10)
        self.name = name
        self.sent_ok: list[str] = []  # drafts whose Send was answered ok
        self.invited_at: dict[int, float] = {}  # case number -> when first seen Invited
        self.drafts: dict[str, str] = {}  # parent -> its reply draft
        self._seen: set[str] = set()

    async def post(self, iid: str, operation: str) -> dict[str, Any] | None:
        try:
            answer = await self.http.post(
                f"/me/interactions/{iid}", json={"operationName": operation}
            )
            body: dict[str, Any] = answer.json()
            return body
        except (httpx.HTTPError, ValueError):
            return None

    async def step(self) -> None:
        try:
            listed = (await self.http.get("/me/interactions")).json()["interactions"]
        except (httpx.HTTPError, ValueError, KeyError):
            await asyncio.sleep(0.1)
            return
        # A draft leaves its agent's list once Sent: what was seen or made is remembered.
        open_drafts = {}
        for i in listed:
            if "Outbound" in i["interactionSubType"] and i["state"] == "ReplyCreated":
                open_drafts[i.get("parentInteractionId")] = i["id"]
                self.drafts[i.get("parentInteractionId")] = i["id"]
        for i in listed:
            iid, state = i["id"], i["state"]
            if "Outbound" in i["interactionSubType"]:
                continue
            if state == "Invited":
                if iid not in self._seen:
                    self._seen.add(iid)
                    case = int(i["email_object"]["Subject"].rsplit(" ", 1)[-1])
                    self.invited_at.setdefault(case, time.monotonic())
                await self.post(iid, "Accept")
            elif state == "Accepted":
                if iid in open_drafts:
                    draft = open_drafts[iid]
                    if await self.post(draft, "Send") == {"status": "ok"}:
                        self.sent_ok.append(draft)
                elif iid in self.drafts:  # made, and no longer open: it was sent
                    await self.post(iid, "StopProcessing")
                else:
                    answer = await self.post(iid, "Reply")
                    if answer is not None and answer.get("status") == "ok":
                        self.drafts[iid] = answer["replyInteractionId"]
        await asyncio.sleep(0.05)

    async def run(self, stop: asyncio.Event) -> None:
        await self.http.post("/me/channels/email", json={"operationName": "Ready"})
        while not stop.is_set():
            await self.step()

    async def truth(self) -> dict[str, str]:
        listed = (await self.http.get("/me/interactions")).json()["interactions"]
        return {i["id"]: i["state"] for i in listed}


def client_view(client: Follower) -> dict[str, str]:
    """What the client believes: its last re-read, updated by every notification after it."""
    view: dict[str, str] = {}
    for event in client.events:
        if event["event"] == "reread":
            view = {i["id"]: i["state"] for i in event["interactions"]}
        elif event["event"] == "message" and event["channel"] == "/me/interactions":
            data = event["data"]
            if "id" in data and "state" in data:
                view[data["id"]] = data["state"]
    return view


def database_counts(dsn: str) -> tuple[int, int, list[str]]:
    with psycopg.connect(dsn) as conn:
        inbound, completed = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE state = 'Completed') FROM interactions"
            " WHERE data::jsonb->>'interaction_subtype' NOT LIKE 'Outbound%'"
        ).fetchone() or (0, 0)
        sent = [
            str(m)
            for (m,) in conn.execute(
                "SELECT payload::jsonb->>'message_id' FROM outbox WHERE kind = 'mail'"
            )
        ]
    return int(inbound), int(completed), sent


def states_in(dsn: str, cluster: Cluster) -> str:
    """For a failure message: the interactions by state and holder, and each node's health."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT state, owner, offer_agent, data::jsonb->>'interaction_subtype', count(*)"
            " FROM interactions GROUP BY 1, 2, 3, 4 ORDER BY 1, 2"
        ).fetchall()
    health = [cluster.health(i) for i in range(cluster.nodes)]
    return f"{rows}\n{[h.body if h else None for h in health]}"


async def until(
    what: str, check: Callable[[], Any], limit: float, explain: Callable[[], str] = str
) -> Any:
    deadline = time.monotonic() + limit
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: {explain()}"
        await asyncio.sleep(0.1)
    return found


@pytest.mark.parametrize(("victim", "run"), RUNS, ids=[f"{v}-{n}" for v, n in RUNS])
async def test_a_process_killed_under_load_loses_nothing_and_sends_nothing_twice(
    make_cluster: Callable[..., Cluster],
    postgres_dsn: str,
    sink: MailSink,
    victim: str,
    run: int,
) -> None:
    rng = random.Random(run)
    # A killed process's mail claims lapse after 10 s (300 s by default), so that the test
    # sees its mail sent by the survivor.
    relay = {"host": "127.0.0.1", "port": sink.port, "security": "none", "timeout_seconds": 5}
    cluster = make_cluster(
        passwords=AGENTS,
        settings={"offer_timeout_seconds": 5, "mail_lease_seconds": 10, "relay": relay},
    )
    api = f"{cluster.base_url}/api/v2"
    ports = [cluster.smtp_port(i) for i in range(cluster.nodes)]
    stop = asyncio.Event()
    agents = [Agent(api, name, password) for name, password in AGENTS.items()]
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                follower(
                    f"{cluster.base_url}/api/v2/notifications",
                    api,
                    (name, AGENTS[name]),
                    "websocket" if n == 2 else "long-polling",
                )
            )
            for n, name in enumerate(AGENTS)
        ]
        workers = [asyncio.create_task(a.run(stop)) for a in agents]
        kill_after = rng.randrange(4, CASES - 8)
        killed_at = 0.0
        target = -1
        try:
            for n in range(CASES):
                await asyncio.to_thread(deliver, ports, n)
                if n == kill_after:
                    roles = [cluster.health(i) for i in range(cluster.nodes)]
                    target = next(
                        i
                        for i, h in enumerate(roles)
                        if h is not None
                        and (h.body.get("role") == "leader") == (victim == "leader")
                    )
                    cluster.kill(target, signal.SIGKILL)
                    killed_at = time.monotonic()
                if target >= 0 and n == kill_after + 4:
                    await asyncio.to_thread(cluster.restart, target)
                await asyncio.sleep(rng.uniform(0.05, 0.4))

            def finished() -> bool:
                inbound, completed, _ = database_counts(postgres_dsn)
                return inbound == completed == CASES

            await until(
                "every case Completed", finished, 120, lambda: states_in(postgres_dsn, cluster)
            )
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)

        # Every client ends with its agent's true state (Completed ones have left its list).
        for agent, client in zip(agents, clients, strict=True):
            truth = await agent.truth()

            def agrees(client: Follower = client, truth: dict[str, str] = truth) -> bool:
                view = client_view(client)
                return all(view.get(i) == s for i, s in truth.items())

            await until(f"{agent.name}'s client agrees with the store", agrees, 30)
            assert any(h["successful"] for h in client.of("handshake"))

        # Mail: every committed Send reaches the relay; duplicates counted (target 0).
        _, _, queued = database_counts(postgres_dsn)
        assert len(queued) == CASES

        def delivered() -> bool:
            return {message_from_bytes(m.data)["Message-ID"] for m in cluster.sink_messages} >= set(
                queued
            )

        await until("every sent mail at the relay", delivered, 60)
        ids = Counter(message_from_bytes(m.data)["Message-ID"] for m in cluster.sink_messages)
        duplicates = sum(c - 1 for c in ids.values())
        for agent in agents:
            await agent.http.aclose()
    # Routing resumed: the first case delivered after the kill, Invited.
    later = [t for a in agents for case, t in a.invited_at.items() if case > kill_after]
    resumed = min(later) - killed_at
    print(
        f"run {run}: killed the {victim} after case {kill_after}; a case delivered after the "
        f"kill was first seen Invited {resumed:.2f} s after it; {len(queued)} mails sent, "
        f"{duplicates} duplicates"
    )
    assert duplicates == 0, ids
