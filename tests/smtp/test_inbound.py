"""Inbound: a real ``smtplib`` client delivers to our receiver, wired to the real service."""

from __future__ import annotations

import asyncio
import mailbox
import smtplib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.smtp import MaildirPoller, ReceiverConfig, RecipientMap, SmtpReceiver
from interactions_core.ingest import Envelope, MessageRefused
from interactions_core.testing import Harness

Call = tuple[bytes, Envelope, str]

RECIPIENTS = {
    "support@example.com": "support@example.com",
    "@sales.example.com": "sales@example.com",
    "vip@sales.example.com": "vip@example.com",
    "@bücher.de": "books@example.com",
}
LIMIT = 64 * 1024

MAIL = (
    b"From: Bob <bob@example.org>\r\n"
    b"To: support@example.com\r\n"
    b"Subject: Help\r\n"
    b"Message-ID: <in-1@example.org>\r\n"
    b"\r\n"
    b"It broke.\r\n"
)


class Wired:
    def __init__(self, receiver: SmtpReceiver, calls: list[Call]) -> None:
        self.receiver = receiver
        self.calls = calls

    @property
    def port(self) -> int:
        return self.receiver.port

    async def client(self, fn: Callable[[smtplib.SMTP], Any]) -> Any:
        """Run ``fn`` with a connected blocking smtplib client, in a worker thread."""

        def run() -> Any:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as s:
                s.ehlo("client.test")
                return fn(s)

        return await asyncio.to_thread(run)


async def wire(ingest: Callable[[bytes, Envelope, str], object]) -> tuple[SmtpReceiver, list[Call]]:
    calls: list[Call] = []

    def recording(raw: bytes, envelope: Envelope, mailbox: str) -> object:
        calls.append((raw, envelope, mailbox))
        return ingest(raw, envelope, mailbox)

    config = ReceiverConfig(port=0, recipients=RECIPIENTS, max_message_size=LIMIT)
    receiver = SmtpReceiver(config, recording)
    await receiver.start()
    return receiver, calls


@pytest.fixture
async def served(harness: Harness) -> AsyncIterator[Wired]:
    harness.set_channel("alice", "Ready")
    receiver, calls = await wire(
        lambda raw, env, box: harness.ingest(raw, envelope=env, mailbox=box)
    )
    yield Wired(receiver, calls)
    await receiver.stop()


async def test_delivered_mail_becomes_an_offered_interaction(
    served: Wired, harness: Harness
) -> None:
    refused = await served.client(
        lambda s: s.sendmail("bob@example.org", ["Support@Example.com"], MAIL)
    )
    assert refused == {}
    assert len(served.calls) == 1
    raw, envelope, box = served.calls[0]
    assert raw == MAIL
    assert box == "support@example.com"
    assert envelope == Envelope(mail_from="bob@example.org", rcpt_tos=("Support@Example.com",))
    offered = harness.last_notification("alice")
    assert offered["state"] == "Invited"
    interaction = harness.interaction(offered["id"])
    assert interaction.email.subject == "Help"
    assert interaction.mailbox == "support@example.com"


async def test_one_ingest_per_mailbox_with_its_recipients(served: Wired) -> None:
    rcpts = [
        "a@sales.example.com",
        "support@example.com",
        "b@SALES.example.com",
        "vip@sales.example.com",
    ]
    assert await served.client(lambda s: s.sendmail("", rcpts, MAIL)) == {}
    got = {box: env for _, env, box in served.calls}
    assert set(got) == {"sales@example.com", "support@example.com", "vip@example.com"}
    assert got["sales@example.com"].rcpt_tos == ("a@sales.example.com", "b@SALES.example.com")
    assert got["support@example.com"].mail_from == ""  # the null return path


async def test_unknown_recipient_gets_550(served: Wired) -> None:
    def send(s: smtplib.SMTP) -> Any:
        s.mail("bob@example.org")
        return s.rcpt("nobody@elsewhere.example")

    code, text = await served.client(send)
    assert code == 550 and text.startswith(b"5.1.1")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        await served.client(lambda s: s.sendmail("b@example.org", ["x@nowhere.example"], MAIL))
    assert info.value.recipients["x@nowhere.example"][0] == 550
    assert served.calls == []


async def test_a_refusal_never_echoes_control_bytes(served: Wired) -> None:
    """RFC 5321 §4.2: reply text is TAB and printable ASCII. The 550 used to repeat a NUL or
    ESC from the client's address raw (found by fuzzing)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        await reader.readline()  # greeting
        writer.write(b"HELO client.test\r\nMAIL FROM:<b@example.org>\r\n")
        writer.write(b"RCPT TO:<x\x00y\x1b\x7f@nowhere.test>\r\n")
        await writer.drain()
        replies = [await reader.readline() for _ in range(3)]
    finally:
        writer.close()
    refusal = replies[-1]
    assert refusal.startswith(b"550 5.1.1 ") and refusal.endswith(b"\r\n"), replies
    assert all(32 <= byte < 127 or byte == 9 for byte in refusal[:-2]), refusal
    assert b"x\\x00y\\x1b\\x7f@nowhere.test" in refusal
    assert served.calls == []


async def test_oversize_gets_552_with_and_without_size(served: Wired) -> None:
    big = MAIL + (b"y" * 998 + b"\r\n") * (LIMIT // 1000 + 5)

    def with_size(s: smtplib.SMTP) -> Any:
        assert s.has_extn("size") and int(s.esmtp_features["size"]) == LIMIT
        return s.mail("bob@example.org", [f"SIZE={len(big)}"])

    code, text = await served.client(with_size)
    assert code == 552 and text.startswith(b"5.3.4")

    def without_size(s: smtplib.SMTP) -> Any:
        assert s.mail("bob@example.org")[0] == 250
        assert s.rcpt("support@example.com")[0] == 250
        return s.data(big)  # the reply after the data is returned, not raised

    code, text = await served.client(without_size)
    assert code == 552 and text.startswith(b"5.3.4")
    assert served.calls == []
    # The session and the server survive: the next mail is accepted.
    assert await served.client(lambda s: s.sendmail("b@x.org", ["support@example.com"], MAIL)) == {}


async def test_smtputf8_and_idn_recipients_accepted(served: Wired) -> None:
    def send(s: smtplib.SMTP) -> Any:
        assert s.has_extn("smtputf8") and s.has_extn("8bitmime")
        return s.sendmail(
            "jörg@bücher.de", ["kunde@bücher.de"], MAIL, mail_options=["SMTPUTF8", "BODY=8BITMIME"]
        )

    assert await served.client(send) == {}
    assert served.calls[0][2] == "books@example.com"
    assert served.calls[0][1].mail_from == "jörg@bücher.de"
    # The same domain written as A-labels maps to the same mailbox.
    assert RecipientMap(RECIPIENTS).lookup("x@XN--BCHER-KVA.de") == "books@example.com"


async def test_refusals_and_failures_of_ingest_get_smtp_codes() -> None:
    outcome: list[BaseException] = []

    def ingest(raw: bytes, envelope: Envelope, mailbox: str) -> object:
        raise outcome[0]

    receiver, calls = await wire(ingest)
    served = Wired(receiver, calls)

    async def code_for(error: BaseException) -> tuple[int, bytes]:
        outcome[:] = [error]

        def send(s: smtplib.SMTP) -> Any:
            try:
                s.sendmail("bob@example.org", ["support@example.com"], MAIL)
            except smtplib.SMTPDataError as exc:
                return exc.smtp_code, exc.smtp_error
            raise AssertionError("accepted")

        result: tuple[int, bytes] = await served.client(send)
        return result

    try:
        code, text = await code_for(MessageRefused("not a mail\r\nat all"))
        assert (code, text) == (554, b"5.6.0 not a mail at all")
        code, text = await code_for(MessageRefused("too big", kind="too_large"))
        assert (code, text) == (552, b"5.3.4 too big")
        code, text = await code_for(RuntimeError("database is locked"))
        assert code == 451 and text.startswith(b"4.3.0")
        assert b"locked" not in text  # internals are logged, not told to strangers
    finally:
        await receiver.stop()


HOSTILE: list[bytes] = [
    b"",
    b"no headers at all\r\n",
    b"Subject: only a header\r\n",
    b"\x00\x01\x02\xff\xfe binary\r\n\r\n\x00\x00",
    b"Subject: \xe9t\xe9 \xff\r\nFrom: \xc3\x28@example.org\r\n\r\nbody\r\n",
    b"Subject: =?utf-8?b?!!!?= =?x-unknown?q?abc?= =?utf-8?q?=ZZ?=\r\n\r\nx\r\n",
    b'From: <<<@@@>>>, "unterminated <a@b\r\nTo: ,,,;;;\r\nCc: :;\r\n\r\nx\r\n',
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
    b"Content-Type: text/plain\r\n\r\nno end",
    b"Content-Type: multipart/mixed\r\n\r\n--\r\n--\r\n",
    b"Content-Type: text/plain; charset=x-does-not-exist\r\n\r\n\xe9\xe9\r\n",
    b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename*=bogus''%ZZ%\r\n\r\n!!!not base64***\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=\r\n=\r\n",
    b"Message-ID: <>\r\nIn-Reply-To: <<<>>>\r\nReferences: " + b"<a@b> " * 300 + b"\r\n\r\nx\r\n",
    b"Date: yesterday at noon\r\n\r\nx\r\n",
    b"X-Long: " + b"a" * 990 + b"\r\n\r\nx\r\n",
    b"".join(b"X-H%d: v\r\n" % i for i in range(3000)) + b"\r\nx\r\n",
    (b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n') * 60 + b"x\r\n",
    b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n",
    b"Auto-Submitted: auto-replied\r\nPrecedence: bulk\r\nFrom: <>\r\n\r\nauto\r\n",
    b"Subject: lone\rCR and lone\nLF\r\n\r\nbody\rwith\ncontrol\x1b[31m\r\n",
]


async def test_hostile_messages_get_proper_codes_and_crash_nothing(
    served: Wired, harness: Harness
) -> None:
    def send_all(s: smtplib.SMTP) -> list[int]:
        codes: list[int] = []
        for raw in HOSTILE:
            s.mail("bob@example.org")
            s.rcpt("support@example.com")
            try:
                code, _ = s.data(raw)
            except smtplib.SMTPDataError as exc:
                code = exc.smtp_code
                s.rset()
            codes.append(code)
        return codes

    codes = await served.client(send_all)
    # Everything stored (raw kept; problems noted), or refused with a permanent SMTP code.
    assert all(c == 250 or 500 <= c < 600 for c in codes), codes
    # 250 = stored, 554 5.6.0 = ingestion refused it (not a mail); both went through ingest.
    assert codes.count(250) + codes.count(554) == len(served.calls)
    assert codes.count(250) >= len(HOSTILE) - 5
    # Protocol-level garbage on a raw socket: answered, the server stays up.
    replies = await asyncio.to_thread(raw_session, served.port)
    assert replies[0].startswith(b"220")
    assert all(r[:1] in (b"2", b"5") for r in replies[1:]), replies
    assert await served.client(lambda s: s.sendmail("b@x.org", ["support@example.com"], MAIL)) == {}


def raw_session(port: int) -> list[bytes]:
    commands = [
        b"EHLO x\r\n",
        b"MAIL FROM:<a@b> SIZE=abc\r\n",
        b"RCPT TO:<support@example.com>\r\n",  # before MAIL: refused
        b"\xff\xfe\x00garbage\r\n",
        b"X" * 2000 + b"\r\n",
        b"MAIL FROM:<unterminated\r\n",
        b"RCPT TO:<nobody@elsewhere.example>\r\n",
        b"DATA\r\n",  # no recipient accepted: refused
        b"NOOP\r\n",
        b"QUIT\r\n",
    ]
    replies: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        f = sock.makefile("rb")

        def reply() -> bytes:
            lines = [f.readline()]
            while lines[-1][3:4] == b"-":
                lines.append(f.readline())
            return lines[-1]

        replies.append(reply())
        for command in commands:
            sock.sendall(command)
            replies.append(reply())
    return replies


async def test_maildir_poller_ingests_then_moves_to_cur(tmp_path: Path, harness: Harness) -> None:
    folder = tmp_path / "inbox"
    md = mailbox.Maildir(folder, create=True)
    keys = [md.add(MAIL.replace(b"in-1", b"in-%d" % i)) for i in range(3)]
    failing = {keys[1]}
    calls: list[Call] = []

    def ingest(raw: bytes, envelope: Envelope, box: str) -> object:
        calls.append((raw, envelope, box))
        if failing and b"in-1@" in raw:
            raise RuntimeError("store unavailable")
        if b"refuse-me" in raw:
            raise MessageRefused("not a mail")
        return harness.ingest(raw, envelope=envelope, mailbox=box)

    poller = MaildirPoller(folder, ingest, "support@example.com", interval=0.05)
    assert await poller.poll_once() == 2
    assert sorted(p.name.split(":")[0] for p in (folder / "cur").iterdir()) == sorted(
        k for k in keys if k not in failing
    )
    assert [p.name for p in (folder / "new").iterdir()] == [keys[1]]  # kept for the next poll
    assert all(name.endswith(":2,S") for name in (p.name for p in (folder / "cur").iterdir()))

    failing.clear()
    md.add(b"Subject: refuse-me\r\n\r\nx\r\n")
    await poller.start()
    try:
        for _ in range(500):
            if not list((folder / "new").iterdir()):
                break
            await asyncio.sleep(0.01)
    finally:
        await poller.stop()
    assert list((folder / "new").iterdir()) == []
    names = sorted(p.name for p in (folder / "cur").iterdir())
    assert sum(n.endswith(":2,T") for n in names) == 1  # refused: set aside, flagged trashed
    assert sum(n.endswith(":2,S") for n in names) == 3
    assert {c[2] for c in calls} == {"support@example.com"}
    assert len(harness.store._all()) == 3


CORPUS = sorted((Path(__file__).resolve().parents[1] / "ingest" / "corpus").glob("*.eml"))


async def test_the_hostile_mime_corpus_over_smtp_crashes_nothing(
    served: Wired, harness: Harness
) -> None:
    """Every file of the ingestion corpus, delivered over SMTP: each is stored (250, problems
    noted) or refused with a permanent code — 554 for input that is not a mail (empty,
    whitespace, no header), 500 for a line over SMTP's 1,000 octets (RFC 5321 §4.5.3.1.6) —
    and the receiver still takes ordinary mail afterwards."""
    assert len(CORPUS) >= 40

    def send_all(s: smtplib.SMTP) -> dict[str, int]:
        codes: dict[str, int] = {}
        for path in CORPUS:
            s.mail("customer@example.org")
            s.rcpt("support@example.com")
            try:
                code, _ = s.data(path.read_bytes())
            except smtplib.SMTPDataError as exc:
                code = exc.smtp_code
                s.rset()
            codes[path.name] = code
        return codes

    codes = await served.client(send_all)
    odd = {name: code for name, code in codes.items() if code != 250 and not 500 <= code < 600}
    assert not odd, odd
    stored = [name for name, code in codes.items() if code == 250]
    assert len(stored) >= len(CORPUS) - 5, codes
    assert await served.client(lambda s: s.sendmail("b@x.org", ["support@example.com"], MAIL)) == {}
