"""Real SMTP servers for the adapter tests: an ``aiosmtpd`` sink on a free local port.

The sink runs in aiosmtpd's ``Controller`` thread (its own event loop), so it is a separate
server from the code under test exactly as a relay would be. It records every accepted
message and can be told to answer DATA or RCPT with an error, or be stopped and started again
on the same port (relay down / back up).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, message_from_string, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from interactions_core.ports import Agent
from interactions_core.testing import Harness
from ports import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]

    @property
    def message(self) -> EmailMessage:
        if self.data.isascii():
            parsed = message_from_bytes(self.data, policy=policy.default)
        else:  # RFC 6532 raw UTF-8 headers: the bytes parser would keep them as surrogates
            parsed = message_from_string(self.data.decode("utf-8"), policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SinkHandler:
    received: list[Received] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)  # answered (and consumed) first
    refuse_rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply
    sessions: int = 0
    delay: float = 0.0  # seconds before answering DATA (a slow relay)
    in_data: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> Any:
        with self.lock:
            self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self.refuse_rcpt.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.in_data.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            if self.data_replies:
                return self.data_replies.pop(0)
            assert envelope.mail_from is not None
            assert envelope.original_content is not None
            self.received.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    bytes(envelope.original_content),
                    list(envelope.mail_options),
                )
            )
        return "250 2.0.0 Queued"


class Sink:
    """An aiosmtpd server that can go down and come back on the same port."""

    def __init__(self, *, smtputf8: bool = True, **server_kwargs: Any) -> None:
        self.handler = SinkHandler()
        self.port = free_port()
        self.smtputf8 = smtputf8
        self.server_kwargs = server_kwargs
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            enable_SMTPUTF8=self.smtputf8,
            **self.server_kwargs,
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def received(self) -> list[Received]:
        return self.handler.received


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    s.start()
    yield s
    s.stop()


@pytest.fixture
def sink_ascii() -> Iterator[Sink]:
    """A relay that does not offer SMTPUTF8."""
    s = Sink(smtputf8=False)
    s.start()
    yield s
    s.stop()


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``check()`` holds (a deadline against hangs, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


ALICE = Agent(
    id="alice",
    name="Alice",
    addresses=("alice@example.com",),
    mailboxes=("support@example.com",),
)


@pytest.fixture
def harness() -> Harness:
    return Harness(agents=[ALICE])


INBOUND = (
    "From: =?utf-8?q?Bob_M=C3=BCller?= <bob@example.org>\r\n"
    "To: Support <support@example.com>\r\n"
    "Cc: carol@xn--bcher-kva.de\r\n"
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\r\n"
    "Message-ID: <orig-1@example.org>\r\n"
    "References: <older-1@example.org>\r\n"
    "Date: Mon, 05 Jan 2026 08:00:00 +0000\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="b1"\r\n'
    "\r\n"
    "--b1\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "My invoice is wrong.\r\n"
    "--b1\r\n"
    "Content-Type: application/pdf\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "Content-Disposition: attachment; filename*=utf-8''Rechnung%20M%C3%A4rz.pdf\r\n"
    "\r\n"
    "JVBERi0xLjQKJcOkw7zDtsOfCg==\r\n"
    "--b1--\r\n"
).encode("ascii")


_counter = 0


def queued_reply(
    h: Harness,
    *,
    send: dict[str, Any] | None = None,
    attach: bool = True,
) -> Any:
    """Inbound mail -> offered -> Accept -> ReplyAll (quoted) -> [LinkAttachment] -> Send.

    Uses ``service.execute_wire`` directly so the harness's recording transport drains
    nothing: the composed mail stays in the outbox for the transport under test. Returns the
    pending ``MailEntry``.
    """
    global _counter
    _counter += 1
    raw = INBOUND.replace(b"<orig-1@", f"<orig-{_counter}@".encode())
    result = h.service.ingest(raw, mailbox="support@example.com")
    iid = result.interaction_id
    h.service.offer(iid, "alice")
    assert h.service.execute_wire("alice", iid, {"operationName": "Accept"}) == {"status": "ok"}
    reply = h.service.execute_wire(
        "alice", iid, {"operationName": "ReplyAll", "quoteOriginal": True}
    )
    rid = reply["replyInteractionId"]
    if attach:
        att = h.interaction(iid).email.attachments[0]
        ok = h.service.execute_wire(
            "alice", rid, {"operationName": "LinkAttachment", "attachmentId": att.id}
        )
        assert ok == {"status": "ok"}, ok
    body: dict[str, Any] = {"operationName": "Send"}
    if send:
        body["email_object"] = send
    sent = h.service.execute_wire("alice", rid, body)
    assert sent == {"status": "ok"}, sent
    entries = [e for e in h.store.pending_mail(h.clock.now()) if e.mail.interaction_id == rid]
    assert len(entries) == 1
    return entries[0]
