"""No notification is lost across server restarts: the official CometD JavaScript client (with
the ``replay`` extension, ``tests/cometd/js/replay-extension.mjs``) follows an agent while a
writer commits a state change 25 times a second; the real ``interactions serve`` process is
restarted with SIGTERM, then killed with SIGKILL and started again on the same data directory.

Every change the writer saw committed must reach the client, as a notification or in a re-read
(the client re-reads on ``ReadState``), with no notification twice and all in seq order.
Without replay, what is committed between the restart and the client's re-handshake is lost,
and so is what the killed process had queued for the client but not yet written.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_server import ServerProcess, deliver, free_port

from adapters.server.agents import add_agent
from jsfollow import Writer, follower

AUTH = ("alice", "alice-pw")
RATE = 25  # state changes per second


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    agents = tmp_path / "agents.json"
    add_agent(agents, "alice", "alice-pw", mailboxes=["support@example.com"], capacity=5)
    http_port, smtp_port = free_port(), free_port()
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "data_dir": str(tmp_path / "data"),
                "http_port": http_port,
                "smtp_listen_port": smtp_port,
                "agents_file": str(agents),
                "mailboxes": {"support@example.com": "Support"},
            }
        )
    )
    process = ServerProcess(config, http_port, smtp_port)
    process.start()
    yield process
    process.stop()


async def accepted_interaction(server: ServerProcess) -> str:
    """A mail in over SMTP, offered to alice, accepted: its id."""
    async with httpx.AsyncClient(base_url=server.base, auth=AUTH, timeout=10) as http:
        await http.post("/me/channels/email", json={"operationName": "Ready"})
        await asyncio.to_thread(deliver, server.smtp_port, 1)
        deadline = time.monotonic() + 20
        while True:
            found = (await http.get("/me/interactions")).json()["interactions"]
            invited = [i["id"] for i in found if i["state"] == "Invited"]
            if invited:
                break
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.05)
        answer = await http.post(f"/me/interactions/{invited[0]}", json={"operationName": "Accept"})
        assert answer.json() == {"status": "ok"}
        return invited[0]


async def run_for(writer: Writer, changes: int) -> None:
    """Until the writer had ``changes`` more committed (so the server is up and writing)."""
    target = writer.count() + changes
    deadline = time.monotonic() + 60
    while writer.count() < target:
        assert writer.is_alive() and time.monotonic() < deadline, writer.count()
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("transport", ["long-polling", "websocket"])
async def test_every_committed_change_reaches_the_client_across_restarts(
    server: ServerProcess, transport: str
) -> None:
    iid = await accepted_interaction(server)
    url = f"http://127.0.0.1:{server.http_port}/api/v2/notifications"
    async with follower(url, server.base, AUTH, transport) as client:

        def handshaken() -> int:
            return sum(1 for h in client.of("handshake") if h["successful"])

        await client.wait_for(
            lambda: any(e["successful"] for e in client.of("subscribed")), "never subscribed"
        )
        writer = Writer(server.base, iid, AUTH, RATE)
        writer.start()
        try:
            await run_for(writer, RATE)
            await asyncio.to_thread(server.stop)  # SIGTERM: a clean shutdown
            await asyncio.to_thread(server.start)
            await run_for(writer, 2 * RATE)  # the client re-handshakes meanwhile
            # ...with this process, before it dies: when depends on the client's back-off
            # after the connects that failed during the restart, not on the test's clock.
            await client.wait_for(lambda: handshaken() >= 2, "no re-handshake after SIGTERM")
            await asyncio.to_thread(server.kill)  # SIGKILL: whatever was in memory is gone
            await asyncio.to_thread(server.start)
            await run_for(writer, 2 * RATE)
            await client.wait_for(lambda: handshaken() >= 3, "no re-handshake after SIGKILL")
        finally:
            writer.halt.set()
            await asyncio.to_thread(writer.join, 10)
        acked = writer.acked
        assert len(acked) >= 5 * RATE

        def received() -> set[int]:
            return {
                m["data"]["userData"]["n"]
                for m in client.of("message")
                if "n" in m["data"].get("userData", {})
            }

        def reread() -> int:
            """The highest ``n`` a re-read showed (a re-read covers every change before it)."""
            shown = [
                i["userData"].get("n", 0)
                for e in client.of("reread")
                for i in e["interactions"]
                if i["id"] == iid
            ]
            return max(shown, default=0)

        await client.wait_for(
            lambda: acked[-1] in received() or reread() >= acked[-1],
            f"the last change ({acked[-1]}) never reached the client",
        )
        missing = [n for n in acked if n not in received() and n > reread()]
        assert not missing, f"{len(missing)} committed changes never reached the client: {missing}"

        # Nothing twice, all in order: seqs strictly increase across the three sessions.
        seqs = [m["seq"] for m in client.of("message")]
        assert all(isinstance(s, int) for s in seqs), seqs
        assert seqs == sorted(set(seqs)), "a notification came twice or out of order"
        # The replays did it: the one ReadState is the first handshake's (no position yet).
        handshakes = [h for h in client.of("handshake") if h["successful"]]
        assert len(handshakes) >= 3 and all(h["replay"] for h in handshakes)
        assert [h["after"] is None for h in handshakes] == [True] + [False] * (len(handshakes) - 1)
        read_states = [
            m["data"]
            for m in client.of("message")
            if m["data"].get("messageTypeName") == "ReadState"
        ]
        assert read_states == [{"messageTypeName": "ReadState", "reason": "no-position"}]
