"""Two real server processes on one PostgreSQL database behind a real HAProxy (rendered from
``deploy/haproxy.cfg``): health checks, a session shared through and around the proxy, CometD
stuck to the process holding its session, and the cross-agent isolation walk of the HTTP API
(tests/http/test_api.py) through the proxy.

Which process leads (routes) is never assumed: the tests wait for outcomes (an offer, a
state), each with a deadline, and assert those.
"""

from __future__ import annotations

import re
import signal
import smtplib
from email.message import EmailMessage
from typing import Any

import httpx

from .harness import RUNNING, Cluster, get_health, wait_until

ALICE = ("alice", "alice-pw")
BOB = ("bob", "bob-pw")
LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def api(cluster: Cluster, i: int | None = None) -> str:
    """The API's base through HAProxy (``i`` None) or on node ``i`` directly."""
    return (cluster.base_url if i is None else cluster.node_url(i)) + "/api/v2"


def deliver(
    smtp_port: int, subject: str = "Order 42", message_id: str = "<o42@example.org>"
) -> None:
    message = EmailMessage()
    message["From"] = "Cee Customer <customer@example.org>"
    message["To"] = "support@example.com"
    message["Subject"] = subject
    message["Message-ID"] = message_id
    message["Date"] = "Mon, 05 Jan 2026 09:00:00 +0000"
    message.set_content("Where is my order?\n")
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
        smtp.send_message(message)


def offered(http: httpx.Client, base: str) -> str:
    """The id of alice's Invited interaction, once one of the processes offered it."""

    def find() -> str | None:
        found = http.get(base + "/me/interactions", auth=ALICE).json()
        invited = [i["id"] for i in found["interactions"] if i["state"] == "Invited"]
        return invited[0] if invited else None

    result: str = wait_until("an offer to alice", find, 60)
    return result


def test_every_node_is_healthy_around_and_through_haproxy(cluster: Cluster) -> None:
    names = {cluster.node_id(i) for i in range(cluster.nodes)}
    for i in range(cluster.nodes):
        health = cluster.health(i)
        assert health is not None and health.status == 200, health
        body = health.body
        assert body["status"] == "ok" and body["node"] == cluster.node_id(i)
        assert body["role"] in RUNNING and body["database"] == "ok"
        assert set(body["tail"]) == {"position", "lag", "ageSeconds"}
    # Through HAProxy, round-robin: every node answers in turn, each with its own id.
    seen: set[str] = set()

    def every_node_answered() -> bool:
        found = get_health(cluster.base_url)
        assert found is not None and found.status == 200, found
        seen.add(found.body["node"])
        return seen == names

    wait_until("every node through HAProxy", every_node_answered, 30)
    # Every log line of a node names it (the banner is no log line).
    for node in cluster.members:
        lines = [line for line in node.log.read_text().splitlines() if LOG_LINE.match(line)]
        assert lines, node.log_tail()
        assert all(f" [{node.name}] " in line for line in lines), lines


def test_a_killed_node_is_taken_out_and_comes_back(cluster: Cluster) -> None:
    killed, other = cluster.node_id(0), cluster.node_id(1)
    cluster.kill(0, signal.SIGKILL)
    assert cluster.health(0) is None  # nothing answers there any more
    # Before HAProxy's checks notice, a request sent to the dead process cannot connect
    # (nothing of it reached a server): HAProxy tries the other one (retry-on conn-failure,
    # option redispatch 1), so the client sees no error. Each its own connection, so each
    # is a first request of its client session, which HAProxy never sends on a reused one.
    for _ in range(2 * cluster.nodes):
        me = httpx.get(api(cluster) + "/me", auth=ALICE, timeout=30)
        assert me.status_code == 200, me.text
    # HAProxy takes it out (fall 2 at inter 1s): then every answer comes from the other one.
    streak: list[str] = []

    def only_the_other() -> bool:
        found = get_health(cluster.base_url)
        if found is None or found.status != 200:
            streak.clear()
            return False
        streak.append(found.body["node"])
        return streak[-6:] == [other] * 6

    wait_until(f"HAProxy without {killed}", only_the_other, 30)
    me = httpx.get(api(cluster) + "/me", auth=ALICE, timeout=30)
    assert me.status_code == 200 and me.json()["user"]["id"] == "alice"
    cluster.restart(0)  # waits until HAProxy sends it requests again
    health = cluster.health(0)
    assert health is not None and health.body["node"] == killed


def test_a_session_made_through_haproxy_is_valid_on_every_node_until_logout(
    cluster: Cluster,
) -> None:
    login = httpx.get(api(cluster) + "/me", auth=ALICE, timeout=30)
    assert login.status_code == 200
    cookie = {"Cookie": f"JSESSIONID={login.cookies['JSESSIONID']}"}
    for i in range(cluster.nodes):
        on_node = httpx.get(api(cluster, i) + "/me", headers=cookie, timeout=30)
        assert on_node.status_code == 200 and on_node.json()["user"]["id"] == "alice"
        assert "set-cookie" not in on_node.headers  # the same session, not a new one
    for _ in range(2 * cluster.nodes):  # through HAProxy: on each node in turn
        assert httpx.get(api(cluster) + "/me", headers=cookie, timeout=30).status_code == 200
    out = httpx.post(api(cluster) + "/me/logout", headers=cookie, timeout=30)
    assert out.status_code == 200
    for i in range(cluster.nodes):
        assert httpx.get(api(cluster, i) + "/me", headers=cookie, timeout=30).status_code == 401
    assert httpx.get(api(cluster) + "/me", headers=cookie, timeout=30).status_code == 401


def _bayeux(http: httpx.Client, url: str, message: dict[str, Any]) -> dict[str, Any]:
    r = http.post(url, json=[message], auth=ALICE, timeout=30)
    assert r.status_code == 200, r.text
    reply: dict[str, Any] = r.json()[0]
    return reply


def test_cometd_sticks_to_the_node_holding_its_session(cluster: Cluster) -> None:
    url = cluster.base_url + "/api/v2/notifications"
    with httpx.Client() as http:  # keeps HAProxy's cookie, as a browser or CometD client does
        shake = http.post(
            url + "/handshake",
            json=[
                {
                    "channel": "/meta/handshake",
                    "version": "1.0",
                    "supportedConnectionTypes": ["long-polling"],
                }
            ],
            auth=ALICE,
            timeout=30,
        )
        assert shake.status_code == 200 and shake.json()[0]["successful"], shake.text
        holder = http.cookies.get("SERVERID")
        names = [cluster.node_id(i) for i in range(cluster.nodes)]
        assert holder in names, shake.headers
        client_id = shake.json()[0]["clientId"]
        connect = {
            "channel": "/meta/connect",
            "clientId": client_id,
            "connectionType": "long-polling",
        }
        assert _bayeux(http, url + "/connect", connect)["successful"]  # the first: at once
        # More requests than nodes: round-robin would have sent some elsewhere, where the
        # clientId is unknown (402); the cookie keeps them all on the holder.
        for channel in ("/me/interactions", "/me/channels", "/me/workbins", "/me/interactions"):
            subscribed = _bayeux(
                http,
                url,
                {"channel": "/meta/subscribe", "clientId": client_id, "subscription": channel},
            )
            assert subscribed["successful"], subscribed
    # Around HAProxy: the session lives on the node the cookie names, and only there.
    for i, name in enumerate(names):
        with httpx.Client() as direct:
            reply = _bayeux(
                direct,
                cluster.node_url(i) + "/api/v2/notifications",
                {
                    "channel": "/meta/subscribe",
                    "clientId": client_id,
                    "subscription": "/me/channels",
                },
            )
        assert reply["successful"] is (name == holder), reply


def test_every_endpoint_as_another_agent_is_404_through_haproxy(cluster: Cluster) -> None:
    base = api(cluster)
    with httpx.Client(timeout=30) as http:
        # Ready through HAProxy (on either process), the mail in on the second process: who
        # routes it is the processes' business.
        ready = http.post(base + "/me/channels/email", json={"operationName": "Ready"}, auth=ALICE)
        assert ready.json() == {"status": "ok"}
        deliver(cluster.smtp_port(1))  # any node takes mail in
        iid = offered(http, base)
        accepted = http.post(
            f"{base}/me/interactions/{iid}", json={"operationName": "Accept"}, auth=ALICE
        )
        assert accepted.json() == {"status": "ok"}, accepted.text
        reply = http.post(
            f"{base}/me/interactions/{iid}", json={"operationName": "Reply"}, auth=ALICE
        )
        draft = reply.json()["replyInteractionId"]
        upload = http.post(
            f"{base}/me/interactions/{draft}/attachments",
            files={"attachment": ("a.txt", b"secret", "text/plain")},
            auth=ALICE,
        )
        att = upload.json()["documentId"]
        # alice sees both, through HAProxy (so on either node).
        for target in (iid, draft):
            assert http.get(f"{base}/me/interactions/{target}", auth=ALICE).status_code == 200
        # bob gets 404 everywhere; the walk once per node, so round-robin takes each of his
        # requests to every node.
        for _ in range(cluster.nodes):
            for target in (iid, draft):
                for body in ({"operationName": "Accept"}, {"operationName": "Send"}):
                    for path in (f"/me/interactions/{target}", f"/me/interaction/{target}"):
                        assert http.post(base + path, json=body, auth=BOB).status_code == 404
                assert http.get(f"{base}/me/interactions/{target}", auth=BOB).status_code == 404
                stolen = http.post(
                    f"{base}/me/interactions/{target}/attachments",
                    files={"attachment": ("x.txt", b"x", "text/plain")},
                    auth=BOB,
                )
                assert stolen.status_code == 404
                url = f"{base}/me/interactions/{target}/attachments/{att}"
                assert http.get(url, auth=BOB).status_code == 404
                assert http.delete(url, auth=BOB).status_code == 404
            assert http.get(base + "/me/interactions", auth=BOB).json()["interactions"] == []
        # Nothing bob did changed alice's: the draft still has its attachment, and sends.
        shown = http.get(f"{base}/me/interactions/{draft}", auth=ALICE).json()["interaction"]
        assert shown["state"] == "ReplyCreated"
        kept = http.get(f"{base}/me/interactions/{draft}/attachments/{att}", auth=ALICE)
        assert kept.status_code == 200 and kept.content == b"secret"
        sent = http.post(
            f"{base}/me/interactions/{draft}", json={"operationName": "Send"}, auth=ALICE
        )
        assert sent.json() == {"status": "ok"}, sent.text
    wait_until("the reply at the relay", lambda: cluster.sink_messages, 60)
    (mail,) = cluster.sink_messages
    assert mail.rcpt_tos == ["customer@example.org"]
    assert b"In-Reply-To: <o42@example.org>" in mail.data
