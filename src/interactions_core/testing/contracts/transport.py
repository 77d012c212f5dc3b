"""``MailTransportContract`` and ``AsyncMailTransportContract``: what every transport must do.

A transport hands a mail over (returns) or raises ``TransientMailError`` /
``PermanentMailError`` (``ports.MailTransport``). To check what it handed over, the suite reads
back what arrived at the other end: a subclass implements a factory for the transport under
test, one for a transport whose peer is unreachable, and ``delivered()``::

    class TestMyRelayTransport(AsyncMailTransportContract):
        async def make_transport(self, attachments: AttachmentStore) -> AsyncMailTransport:
            return MyTransport(self.relay.address, attachments)

        async def make_unreachable_transport(
            self, attachments: AttachmentStore
        ) -> AsyncMailTransport:
            return MyTransport(("127.0.0.1", unused_port()), attachments)

        def delivered(self) -> list[DeliveredMail]:
            return [DeliveredMail.parse(m.data, m.rcpt_tos) for m in self.relay.messages]

``MailTransportContract`` is the same suite for the synchronous port (``make_transport`` and
``make_unreachable_transport`` are plain methods there). The asynchronous one runs each test on
an event loop of its own, so it needs no pytest plugin. Transports are made inside the test (so
the subclass's fixtures, e.g. a relay, are ready) and closed after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, message_from_string, policy
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage, MIMEPart
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import pytest

from interactions_core.memory import InMemoryAttachmentStore
from interactions_core.model import Address, Attachment
from interactions_core.ports import (
    AttachmentStore,
    MailTransport,
    OutgoingMail,
    TransientMailError,
)

__all__ = [
    "AsyncMailTransport",
    "AsyncMailTransportContract",
    "DeliveredMail",
    "MailTransportContract",
]


class AsyncMailTransport(Protocol):
    """What ``AsyncMailTransportContract`` needs of an asynchronous transport.

    ``send`` has ``ports.MailTransport.send``'s contract; whatever it returns (a delivery
    report, say) is not looked at.
    """

    async def send(self, mail: OutgoingMail) -> object:
        """Hand one mail over; raise ``TransientMailError`` or ``PermanentMailError``."""
        ...

    async def close(self) -> None:
        """Release the transport's connections; idempotent."""
        ...


@dataclass(frozen=True)
class DeliveredMail:
    """One message as it arrived at the transport's peer.

    ``recipients`` are the envelope recipients the peer received it for (SMTP: the RCPT TO
    addresses; the Maildir's envelope sidecar), or ``None`` for a peer that keeps no envelope
    (every message lands in one folder, recipients unrecorded). Make one with
    ``DeliveredMail.parse``.
    """

    raw: bytes
    message: EmailMessage
    recipients: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, raw: bytes, recipients: Iterable[str] | None = None) -> DeliveredMail:
        """Parse the bytes that arrived (CRLF or LF line endings, RFC 6532 UTF-8 headers)."""
        message = message_from_bytes(raw, policy=policy.default)
        head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
        if not head.isascii():
            # The bytes parser keeps raw UTF-8 in headers as surrogates: parse them as text
            # (the bodies stay parsed from bytes, where 8bit parts decode correctly).
            text = message_from_string(
                head.decode("utf-8", "surrogateescape") + "\n\n", policy=policy.default
            )
            for name in set(message.keys()):
                del message[name]
            for name, value in text.items():
                message[name] = value
        return cls(raw, message, None if recipients is None else tuple(recipients))

    def header_addresses(self, name: str) -> list[tuple[str, str]]:
        """(display name, addr-spec) of each address in header ``name`` (none: ``[]``)."""
        value = self.message[name]
        if value is None:
            return []
        addresses: tuple[HeaderAddress, ...] = value.addresses
        return [(a.display_name, _normal_addr(a.addr_spec)) for a in addresses]


def _normal_addr(addr: str) -> str:
    """An addr-spec compared by its local part and its domain's A-label, case-insensitively."""
    local, _, domain = addr.rpartition("@")
    with contextlib.suppress(UnicodeError):  # not IDNA-encodable: compared as it is
        domain = domain.encode("idna").decode("ascii")
    return f"{local}@{domain}".casefold()


def _text(part: MIMEPart | None) -> str | None:
    if part is None:
        return None
    content = part.get_content()
    if not isinstance(content, str):
        raise TypeError(f"a {part.get_content_type()} body that is not text")
    return content.replace("\r\n", "\n").rstrip("\n")


_T = TypeVar("_T")

DATE = datetime(2026, 1, 5, 9, 30, 15, tzinfo=UTC)

BINARY = bytes(range(256)) * 4 + b"\r\n\n\r\x00"
"""Attachment bytes a transport could alter: every byte value and bare CR and LF."""


class _TransportContract(ABC, Generic[_T]):
    """The tests, written once for both ports: subclasses provide the driving."""

    tmp_path: Path
    attachments: InMemoryAttachmentStore

    @abstractmethod
    def delivered(self) -> list[DeliveredMail]:
        """Every message that has arrived from the transport under test (``make_transport``'s)
        so far, in any order, each once per hand-over. Read from the peer (the relay's
        received messages, the mailbox's files), not from the transport."""

    # -- driving, provided by MailTransportContract / AsyncMailTransportContract
    @abstractmethod
    def _open(self, unreachable: bool) -> _T: ...

    @abstractmethod
    def _send(self, transport: _T, mail: OutgoingMail) -> None: ...

    @abstractmethod
    def _close(self, transport: _T) -> None: ...

    def _start(self) -> None:
        """Before the test."""

    def _stop(self) -> None:
        """After the test, once every transport is closed."""

    @pytest.fixture(autouse=True)
    def _transport_contract(self, tmp_path: Path) -> Iterator[None]:
        self.tmp_path = tmp_path
        self.attachments = InMemoryAttachmentStore()
        self._transports: list[_T] = []
        self._unreachable: list[_T] = []
        self._start()
        try:
            yield
        finally:
            try:
                for transport in (*self._transports, *self._unreachable):
                    self._close(transport)
            finally:
                self._stop()

    # ------------------------------------------------------------------ helpers

    @property
    def transport(self) -> _T:
        """The transport under test, made on first use."""
        if not self._transports:
            self._transports.append(self._open(unreachable=False))
        return self._transports[0]

    def send(self, mail: OutgoingMail) -> None:
        """Hand ``mail`` to the transport under test."""
        self._send(self.transport, mail)

    def send_unreachable(self, mail: OutgoingMail) -> None:
        """Hand ``mail`` to a transport whose peer is unreachable."""
        if not self._unreachable:
            self._unreachable.append(self._open(unreachable=True))
        self._send(self._unreachable[0], mail)

    def arrived(self, message_id: str) -> list[DeliveredMail]:
        """What arrived with that Message-ID."""
        return [d for d in self.delivered() if d.message["Message-ID"] == message_id]

    def only(self, mail: OutgoingMail) -> DeliveredMail:
        """The one message that arrived for ``mail``."""
        found = self.arrived(mail.message_id)
        assert len(found) == 1, f"{len(found)} messages arrived for {mail.message_id}"
        return found[0]

    def attach(self, name: str, data: bytes, mimetype: str) -> Attachment:
        """An attachment whose bytes are in the store the transports were given."""
        return Attachment(
            id=self.attachments.put(data), name=name, size=len(data), mimetype=mimetype
        )

    @staticmethod
    def outgoing(n: int = 1, **fields: Any) -> OutgoingMail:
        """A reply to Bob (Cc Carol) from the support mailbox; ``fields`` override."""
        values: dict[str, Any] = {
            "interaction_id": f"I{n}",
            "mailbox": "support@example.com",
            "from_": Address(addr="support@example.com", name="Support Team"),
            "to": (Address(addr="bob@example.org", name="Bob Smith"),),
            "cc": (Address(addr="carol@example.org"),),
            "subject": f"Re: Order {n}",
            "text": f"Hello Bob,\nyour order {n} is on its way.\n",
            "message_id": f"<reply-{n}@interactions.example.com>",
            "in_reply_to": f"<question-{n}@example.org>",
            "references": (f"<first-{n}@example.org>", f"<question-{n}@example.org>"),
            "date": DATE,
        }
        values.update(fields)
        return OutgoingMail(**values)

    # ------------------------------------------------------------------ headers

    def test_headers_arrive_as_composed(self) -> None:
        mail = self.outgoing(
            to=(
                Address(addr="bob@example.org", name="Bob Smith"),
                Address(addr="dave@example.net"),
            ),
            cc=(Address(addr="carol@example.org", name="Carol"), Address(addr="erin@example.org")),
            reply_to=(Address(addr="replies@example.com", name="Replies"),),
        )
        self.send(mail)
        got = self.only(mail)
        m = got.message
        assert got.header_addresses("From") == [("Support Team", "support@example.com")]
        assert got.header_addresses("To") == [
            ("Bob Smith", "bob@example.org"),
            ("", "dave@example.net"),
        ]
        assert got.header_addresses("Cc") == [
            ("Carol", "carol@example.org"),
            ("", "erin@example.org"),
        ]
        assert got.header_addresses("Reply-To") == [("Replies", "replies@example.com")]
        assert m["Subject"] == "Re: Order 1"
        assert m["Message-ID"] == "<reply-1@interactions.example.com>"
        assert m["In-Reply-To"] == "<question-1@example.org>"
        assert str(m["References"]).split() == ["<first-1@example.org>", "<question-1@example.org>"]
        assert m["Date"].datetime == DATE
        assert m["Bcc"] is None
        for unique in ("From", "To", "Cc", "Subject", "Message-ID", "Date", "In-Reply-To"):
            assert len(m.get_all(unique) or []) == 1, f"{unique} appears more than once"

    def test_a_mail_without_a_thread_has_no_thread_headers(self) -> None:
        mail = self.outgoing(in_reply_to=None, references=(), cc=(), subject="New question")
        self.send(mail)
        m = self.only(mail).message
        assert (m["In-Reply-To"], m["References"], m["Cc"]) == (None, None, None)
        assert m["Subject"] == "New question"

    # ------------------------------------------------------------------ recipients

    def test_bcc_is_delivered_but_in_no_header(self) -> None:
        mail = self.outgoing(
            bcc=(
                Address(addr="boss@example.net", name="The Boss"),
                Address(addr="audit@example.net"),
            )
        )
        self.send(mail)
        got = self.only(mail)
        assert got.message["Bcc"] is None
        assert b"boss@example.net" not in got.raw and b"audit@example.net" not in got.raw
        assert b"The Boss" not in got.raw
        if got.recipients is not None:  # a peer with an envelope: every recipient on it
            assert sorted(_normal_addr(r) for r in got.recipients) == [
                "audit@example.net",
                "bob@example.org",
                "boss@example.net",
                "carol@example.org",
            ]

    def test_a_mail_only_to_bcc_recipients_is_delivered(self) -> None:
        mail = self.outgoing(to=(), cc=(), bcc=(Address(addr="hidden@example.net"),))
        self.send(mail)
        got = self.only(mail)
        assert (got.message["To"], got.message["Cc"], got.message["Bcc"]) == (None, None, None)
        assert b"hidden@example.net" not in got.raw
        if got.recipients is not None:
            assert [_normal_addr(r) for r in got.recipients] == ["hidden@example.net"]

    # ------------------------------------------------------------------ bodies

    def test_text_only(self) -> None:
        mail = self.outgoing(text="Line one.\nLine two.\n\n-- \nSupport\n")
        self.send(mail)
        m = self.only(mail).message
        assert _text(m.get_body(("plain",))) == "Line one.\nLine two.\n\n-- \nSupport"
        assert m.get_body(("html",)) is None

    def test_text_and_html_are_alternatives(self) -> None:
        mail = self.outgoing(text="Plain *words*.", html="<p>Rich <b>words</b>.</p>")
        self.send(mail)
        m = self.only(mail).message
        assert m.get_content_type() == "multipart/alternative"
        assert _text(m.get_body(("plain",))) == "Plain *words*."
        assert _text(m.get_body(("html",))) == "<p>Rich <b>words</b>.</p>"
        assert [p.get_content_type() for p in m.iter_parts()] == ["text/plain", "text/html"]

    # ------------------------------------------------------------------ attachments

    def test_attachments_arrive_with_their_name_type_and_bytes(self) -> None:
        pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(range(256))
        mail = self.outgoing(
            html="<p>See the attachments.</p>",
            attachments=(
                self.attach("data.bin", BINARY, "application/octet-stream"),
                self.attach("invoice.pdf", pdf, "application/pdf"),
                self.attach("notes.txt", b"line 1\nline 2\r\nline 3", "text/plain"),
            ),
        )
        self.send(mail)
        m = self.only(mail).message
        parts = list(m.iter_attachments())
        found = [
            (p.get_filename(), p.get_content_type(), p.get_payload(decode=True)) for p in parts
        ]
        assert found == [
            ("data.bin", "application/octet-stream", BINARY),
            ("invoice.pdf", "application/pdf", pdf),
            ("notes.txt", "text/plain", b"line 1\nline 2\r\nline 3"),
        ]
        assert _text(m.get_body(("plain",))) == "Hello Bob,\nyour order 1 is on its way."
        assert _text(m.get_body(("html",))) == "<p>See the attachments.</p>"

    def test_an_empty_attachment_arrives_empty(self) -> None:
        mail = self.outgoing(
            attachments=(self.attach("empty.dat", b"", "application/octet-stream"),)
        )
        self.send(mail)
        [part] = self.only(mail).message.iter_attachments()
        assert part.get_filename() == "empty.dat"
        assert part.get_payload(decode=True) == b""

    # ------------------------------------------------------------------ non-ASCII

    def test_non_ascii_headers_bodies_and_names_round_trip(self) -> None:
        subject = "Re: Grüße aus Köln – 日本語の件 ✓ " + "sehr lange Betreffzeile " * 4
        mail = self.outgoing(
            from_=Address(addr="support@example.com", name="Kundenservice Müller & Söhne"),
            to=(Address(addr="bob@example.org", name="Bob Müller, Jr."),),
            cc=(Address(addr="dora@bücher.de", name="Dora Ñúñez"),),
            subject=subject,
            text="Hallo Bob,\nwir prüfen das – 日本語 ✓\n",
            html="<p>Hallo Bob, wir prüfen das – 日本語 ✓</p>",
            attachments=(
                self.attach("Rechnung März – 2026.pdf", b"%PDF-1.4\n", "application/pdf"),
            ),
        )
        self.send(mail)
        got = self.only(mail)
        m = got.message
        assert got.header_addresses("From") == [
            ("Kundenservice Müller & Söhne", "support@example.com")
        ]
        assert got.header_addresses("To") == [("Bob Müller, Jr.", "bob@example.org")]
        assert got.header_addresses("Cc") == [("Dora Ñúñez", _normal_addr("dora@bücher.de"))]
        assert " ".join(str(m["Subject"]).split()) == " ".join(subject.split())
        assert _text(m.get_body(("plain",))) == "Hallo Bob,\nwir prüfen das – 日本語 ✓"
        assert _text(m.get_body(("html",))) == "<p>Hallo Bob, wir prüfen das – 日本語 ✓</p>"
        [part] = m.iter_attachments()
        assert part.get_filename() == "Rechnung März – 2026.pdf"
        assert part.get_payload(decode=True) == b"%PDF-1.4\n"

    # ------------------------------------------------------------------ retries, failures

    def test_a_retry_is_the_same_message(self) -> None:
        """The outbox retries a mail by handing the same ``OutgoingMail`` over again: it must
        arrive under the same Message-ID (and Date), never a new one."""
        mail = self.outgoing(
            attachments=(self.attach("a.bin", BINARY, "application/octet-stream"),)
        )
        self.send(mail)
        self.send(mail)
        first, second = self.arrived(mail.message_id)
        for got in (first, second):
            assert got.message["Message-ID"] == mail.message_id
            assert got.message["Date"].datetime == DATE
            assert got.message["Subject"] == mail.subject
        assert len(self.delivered()) == 2

    def test_each_mail_arrives_once(self) -> None:
        mails = [self.outgoing(n) for n in range(1, 6)]
        for mail in mails:
            self.send(mail)
        arrived = sorted(str(d.message["Message-ID"]) for d in self.delivered())
        assert arrived == sorted(m.message_id for m in mails)
        for mail in mails:
            assert self.only(mail).message["Subject"] == mail.subject

    def test_an_unreachable_peer_is_a_transient_failure(self) -> None:
        mail = self.outgoing()
        with pytest.raises(TransientMailError):
            self.send_unreachable(mail)
        assert self.arrived(mail.message_id) == []
        # Retried through a transport whose peer is there: the same message arrives.
        self.send(mail)
        assert self.only(mail).message["Message-ID"] == mail.message_id

    # ------------------------------------------------------------------ close

    def test_close_is_idempotent(self) -> None:
        mail = self.outgoing()
        self.send(mail)
        self._close(self.transport)
        self._close(self.transport)  # and once more after the test
        assert len(self.arrived(mail.message_id)) == 1  # closing lost nothing handed over

    def test_close_of_a_transport_never_used(self) -> None:
        self._close(self.transport)
        self._close(self.transport)


class MailTransportContract(_TransportContract[MailTransport]):
    """The suite for a synchronous ``ports.MailTransport``: implement ``make_transport``,
    ``make_unreachable_transport`` and ``delivered``."""

    @abstractmethod
    def make_transport(self, attachments: AttachmentStore) -> MailTransport:
        """The transport under test, reading attachment bytes from ``attachments``; what it
        hands over must show in ``delivered()``. ``self.tmp_path`` is set."""

    @abstractmethod
    def make_unreachable_transport(self, attachments: AttachmentStore) -> MailTransport:
        """A transport of the same kind whose peer can't be reached (nothing listening on
        its port, a mailbox that can't be written...): its ``send`` must raise
        ``TransientMailError``."""

    def _open(self, unreachable: bool) -> MailTransport:
        if unreachable:
            return self.make_unreachable_transport(self.attachments)
        return self.make_transport(self.attachments)

    def _send(self, transport: MailTransport, mail: OutgoingMail) -> None:
        transport.send(mail)

    def _close(self, transport: MailTransport) -> None:
        transport.close()


class AsyncMailTransportContract(_TransportContract[AsyncMailTransport]):
    """The suite for an asynchronous transport (``AsyncMailTransport``): implement
    ``make_transport``, ``make_unreachable_transport`` (both coroutines, run on the test's
    event loop) and ``delivered``."""

    @abstractmethod
    async def make_transport(self, attachments: AttachmentStore) -> AsyncMailTransport:
        """The transport under test, reading attachment bytes from ``attachments``; what it
        hands over must show in ``delivered()``. ``self.tmp_path`` is set."""

    @abstractmethod
    async def make_unreachable_transport(self, attachments: AttachmentStore) -> AsyncMailTransport:
        """A transport of the same kind whose peer can't be reached (nothing listening on
        its port, a mailbox that can't be written...): its ``send`` must raise
        ``TransientMailError``."""

    def _start(self) -> None:
        self._loop = asyncio.new_event_loop()

    def _stop(self) -> None:
        try:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
        finally:
            self._loop.close()

    def _open(self, unreachable: bool) -> AsyncMailTransport:
        if unreachable:
            return self._loop.run_until_complete(self.make_unreachable_transport(self.attachments))
        return self._loop.run_until_complete(self.make_transport(self.attachments))

    def _send(self, transport: AsyncMailTransport, mail: OutgoingMail) -> None:
        self._loop.run_until_complete(transport.send(mail))

    def _close(self, transport: AsyncMailTransport) -> None:
        self._loop.run_until_complete(transport.close())
