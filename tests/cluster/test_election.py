"""Leader election between real server processes on one PostgreSQL: two and three processes,
the leader SIGKILLed in turn. Exactly one process reports ``leader`` once things settle, a new
one is elected after each kill, routing resumes (mail delivered while the leader was dead gets
offered), and the data shows that no two routers ever acted at once: no interaction was ever
offered while an offer of it was outstanding."""

from __future__ import annotations

import signal
import smtplib
import time
from collections.abc import Callable
from email.message import EmailMessage
from functools import partial
from typing import Any

import httpx
import psycopg
import pytest

from .harness import MAILBOX, Cluster, wait_until

KILLS = 3


def deliver(port: int, n: int) -> None:
    message = EmailMessage()
    message["From"] = f"Customer {n} <c{n}@example.org>"
    message["To"] = MAILBOX
    message["Subject"] = f"Election case {n}"
    message["Message-ID"] = f"<election-{n}@example.org>"
    message.set_content(f"Hello {n}")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(message)


def leaders(cluster: Cluster) -> list[int]:
    found = []
    for i, node in enumerate(cluster.members):
        if not node.running:
            continue
        health = cluster.health(i)
        if health is not None and health.body.get("role") == "leader":
            found.append(i)
    return found


def offers_overlapping(dsn: str) -> list[tuple[str, list[Any]]]:
    """Interactions that were Invited again while an invitation of theirs was outstanding
    (no other state notification of that interaction between the two), from the outbox."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT seq, agent_id, payload::jsonb->>'id', payload::jsonb->>'state' FROM outbox"
            " WHERE kind = 'notification' AND topic = '/me/interactions' ORDER BY seq"
        ).fetchall()
    outstanding: dict[str, tuple[int, str]] = {}
    bad: list[tuple[str, list[Any]]] = []
    for seq, agent, iid, state in rows:
        if state == "Invited":
            if iid in outstanding:
                bad.append((iid, [outstanding[iid], (seq, agent)]))
            outstanding[iid] = (seq, agent)
        else:
            outstanding.pop(iid, None)
    return bad


def new_leader(cluster: Cluster, old: int) -> list[int] | None:
    found = leaders(cluster)
    return found if found and old not in found else None


def equals(count: Callable[[], int], wanted: int) -> bool:
    return count() == wanted


def offered_count(base: str, agents: dict[str, str]) -> Callable[[], int]:
    def count() -> int:
        total = 0
        for agent, password in agents.items():
            try:
                found = httpx.get(
                    f"{base}/api/v2/me/interactions", auth=(agent, password), timeout=5
                ).json()["interactions"]
            except (httpx.HTTPError, KeyError, ValueError):
                return -1
            total += len(found)
        return total

    return count


@pytest.mark.parametrize("nodes", [2, 3])
def test_leaders_killed_in_turn_are_replaced_and_never_two_route(
    make_cluster: Callable[..., Cluster], postgres_dsn: str, nodes: int
) -> None:
    cluster = make_cluster(nodes=nodes, settings={"offer_timeout_seconds": 2})
    api = f"{cluster.base_url}/api/v2"
    for agent, password in cluster.passwords.items():
        answer = httpx.post(
            f"{api}/me/channels/email", json={"operationName": "Ready"}, auth=(agent, password)
        )
        assert answer.json() == {"status": "ok"}
    wait_until("exactly one leader", lambda: len(leaders(cluster)) == 1, 30)
    failovers: list[float] = []
    for n in range(KILLS):
        [leader] = leaders(cluster)
        survivors = [i for i in range(nodes) if i != leader]
        cluster.kill(leader, signal.SIGKILL)
        killed_at = time.monotonic()
        # Mail arrives at a survivor while no process may be routing yet.
        deliver(cluster.smtp_port(survivors[0]), n)
        delivered = n + 1
        new = wait_until("a new leader", partial(new_leader, cluster, leader), 30)
        failovers.append(time.monotonic() - killed_at)
        assert len(new) == 1 and new[0] in survivors
        # Routing resumed: every delivered mail is offered to (or held by) an agent; offers
        # time out after 2 s and go round, so this also runs the new leader's timeouts.
        count = offered_count(cluster.base_url, cluster.passwords)
        wait_until(f"{delivered} interactions offered", partial(equals, count, delivered), 30)
        cluster.restart(leader)
        assert len(leaders(cluster)) == 1  # the restarted one follows
    time.sleep(5)  # let offers time out and go round under the last leader (2 s timeout)
    assert offers_overlapping(postgres_dsn) == []
    assert len(leaders(cluster)) == 1
    print(
        f"{nodes} nodes: new leader seen on /health after SIGKILL: "
        + ", ".join(f"{s:.2f} s" for s in failovers)
    )
