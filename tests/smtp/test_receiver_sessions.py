"""The receiver keeps only the SMTP sessions that are connected now.

Regression (issue 12, the soak): every connection's aiosmtpd protocol stayed in the
receiver's set until ``stop``, about 7 KB each (its streams, transport, session, envelope with
the message), so a server that had received a million mails held all million sessions.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket

from adapters.smtp import ReceiverConfig, SmtpReceiver
from interactions_core.ingest import Envelope

MAIL = (
    b"From: Bob <bob@example.org>\r\nTo: support@example.com\r\nSubject: Help\r\n"
    b"Message-ID: <sessions-{n}@example.org>\r\n\r\nIt broke.\r\n"
)


async def _until_at_most(receiver: SmtpReceiver, count: int) -> int:
    """The number of sessions held, once it dropped to ``count`` or after 500 loop turns."""
    for _ in range(500):
        if len(receiver._sessions) <= count:
            break
        await asyncio.sleep(0.01)
    return len(receiver._sessions)


async def test_sessions_are_forgotten_when_their_connection_ends() -> None:
    stored: list[bytes] = []

    def ingest(raw: bytes, envelope: Envelope, mailbox: str) -> object:
        stored.append(raw)
        return None

    config = ReceiverConfig(port=0, recipients={"support@example.com": "support@example.com"})
    receiver = SmtpReceiver(config, ingest)
    await receiver.start()
    try:

        def deliver(n: int) -> None:
            with smtplib.SMTP("127.0.0.1", receiver.port, timeout=30) as s:
                s.sendmail(
                    "bob@example.org",
                    ["support@example.com"],
                    MAIL.replace(b"{n}", str(n).encode()),
                )

        def drop() -> None:  # a client that goes away in the middle of a session
            with socket.create_connection(("127.0.0.1", receiver.port), timeout=30) as s:
                s.recv(1024)
                s.sendall(b"EHLO client.test\r\nMAIL FROM:<bob@example.org>\r\n")

        for n in range(25):
            await asyncio.to_thread(deliver, n)
        for _ in range(5):
            await asyncio.to_thread(drop)
        assert len(stored) == 25
        assert await _until_at_most(receiver, 0) == 0

        # An open session is still held (and closed by stop).
        client = await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", receiver.port, timeout=30)
        try:
            assert await _until_at_most(receiver, 1) == 1
        finally:
            await asyncio.to_thread(client.close)
    finally:
        await receiver.stop()
