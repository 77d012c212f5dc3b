"""Inbound mail: an SMTP receiver (``aiosmtpd``) and a Maildir poller, both feeding ``ingest``.

``ingest(raw, envelope, mailbox)`` is supplied by the composition root (normally
``service.ingest``); it is synchronous, stores the message durably and returns after the
commit. It runs in a worker thread (``asyncio.to_thread``) so the event loop keeps serving
other sessions meanwhile.

SMTP answers (``docs/smtp.md``):

* RCPT for an address the recipient map does not know: ``550 5.1.1``; too many: ``452 4.5.3``.
* ``SIZE`` is advertised; a ``MAIL FROM ... SIZE=`` over the limit, or DATA that turns out
  bigger (with or without ``SIZE``): ``552 5.3.4``; the data beyond the limit is discarded.
* After DATA, ``ingest`` is called once per distinct mailbox among the accepted recipients,
  and ``250`` is sent only after every call returned, so an acknowledged mail is stored.
  ``MessageRefused`` -> ``554 5.6.0 <reason>`` (``kind="too_large"`` -> ``552 5.3.4``); any
  other exception -> ``451 4.3.0`` (the sender keeps the mail and tries again; a mailbox that
  had already stored it sees the same Message-ID again, which ``service.ingest`` dedupes).
* SMTPUTF8 and 8BITMIME are offered; malformed commands get aiosmtpd's 5xx syntax answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mailbox as mailbox_lib
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from interactions_core.ingest import Envelope, MessageRefused

from ..eventlog import event
from .mime import MimeError, to_a_label

log = logging.getLogger(__name__)

Ingest = Callable[[bytes, Envelope, str], object]

DEFAULT_MAX_MESSAGE_SIZE = 25 * 1024 * 1024
_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"


@dataclass(frozen=True)
class ReceiverConfig:
    """Where to listen and whom to accept mail for.

    ``recipients`` maps an exact address (``support@example.com``) or a whole domain
    (``@example.com``) to the mailbox address the mail is ingested into; an exact address wins
    over its domain. Matching ignores case; IDN domains match in U-label or A-label form.
    """

    host: str = "127.0.0.1"
    port: int = 2525  # 0 = any free port (see ``SmtpReceiver.port``)
    recipients: Mapping[str, str] = field(default_factory=dict)
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_recipients: int = 100
    hostname: str | None = None  # name in the greeting; None = this host's FQDN
    timeout: float = 300.0  # idle seconds before a session is closed
    tls_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    require_starttls: bool = False  # with tls_context: refuse mail before STARTTLS


class RecipientMap:
    """Exact addresses and ``@domain`` wildcards -> mailbox address."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self._exact: dict[str, str] = {}
        self._domains: dict[str, str] = {}
        for key, mailbox in mapping.items():
            if key.startswith("@"):
                self._domains[self._domain(key[1:])] = mailbox
            else:
                normal = self._normal(key)
                if normal is None:
                    raise ValueError(f"recipient map: {key!r} is not an address or @domain")
                self._exact[normal] = mailbox

    @staticmethod
    def _domain(domain: str) -> str:
        try:
            return to_a_label(domain.strip().rstrip(".")).casefold()
        except MimeError:
            return domain.strip().casefold()

    @classmethod
    def _normal(cls, address: str) -> str | None:
        local, at, domain = address.strip().rpartition("@")
        if not at or not local or not domain:
            return None
        return f"{local.casefold()}@{cls._domain(domain)}"

    def lookup(self, address: str) -> str | None:
        normal = self._normal(address)
        if normal is None:
            return None
        found = self._exact.get(normal)
        if found is not None:
            return found
        return self._domains.get(normal.rpartition("@")[2])


def _mail_in(what: str, mail_from: str | None, **fields: Any) -> None:
    """One line per mail received (``mail in``: stored, with its interaction) or refused
    (``mail refused``, with the reason), and per recipient refused (``recipient refused``:
    the mail may still go to the others), at INFO, as ``adapters.eventlog.event`` writes it."""
    sender = "<>" if mail_from in ("", "<>") else mail_from  # None: not given yet
    event(log, logging.INFO, what, {"from": sender, **fields})


# RFC 5321 §4.2: reply text is TAB and printable US-ASCII only.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _one_line(text: str, limit: int = 200) -> str:
    """Client-supplied text made safe to echo in a reply: one line, printable ASCII, escaped."""
    flat = " ".join(text.split())[:limit].encode("ascii", "backslashreplace").decode("ascii")
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", flat)


class _Protocol(SMTP):
    """aiosmtpd's session, with RFC 3463 enhanced codes on its own size refusals, that tells
    its receiver when its connection is gone (``on_lost``), so the receiver forgets it."""

    on_lost: Callable[[SMTP], None] | None = None

    async def push(self, status: Any) -> None:
        if isinstance(status, str) and status.startswith("552 Error"):
            # aiosmtpd's own refusal (SIZE= on MAIL FROM, or the data), before the handler.
            status = _TOO_BIG
            envelope = getattr(self, "envelope", None)
            _mail_in("mail refused", getattr(envelope, "mail_from", None), reason="too large")
        await super().push(status)

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            if self.on_lost is not None:
                self.on_lost(self)


class _Handler:
    def __init__(self, config: ReceiverConfig, ingest: Ingest) -> None:
        self.config = config
        self.ingest = ingest
        self.map = RecipientMap(config.recipients)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.map.lookup(address) is None:
            _mail_in("recipient refused", envelope.mail_from, rcpt=address, reason="unknown")
            return f"550 5.1.1 <{_one_line(address, 100)}>: recipient unknown"
        if len(envelope.rcpt_tos) >= self.config.max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        raw = envelope.original_content  # bytes exactly as received (decode_data=False)
        if raw is None:
            return "554 5.6.0 No message data"
        if len(raw) > self.config.max_message_size:
            _mail_in("mail refused", envelope.mail_from, size=len(raw), reason="too large")
            return _TOO_BIG
        by_mailbox: dict[str, list[str]] = {}
        for rcpt in envelope.rcpt_tos:
            mailbox = self.map.lookup(rcpt)
            if mailbox is not None:
                by_mailbox.setdefault(mailbox, []).append(rcpt)
        if not by_mailbox:
            return "554 5.5.1 No valid recipients"
        # aiosmtpd keeps the null return path as "<>"; the core's Envelope spells it "".
        mail_from = "" if envelope.mail_from in (None, "", "<>") else envelope.mail_from
        refusals: list[MessageRefused] = []
        temporary = False
        for mailbox, rcpts in by_mailbox.items():
            env = Envelope(mail_from=mail_from, rcpt_tos=tuple(rcpts))
            try:
                stored = await asyncio.to_thread(self.ingest, bytes(raw), env, mailbox)
            except MessageRefused as exc:
                refusals.append(exc)
                reason = exc.description
                _mail_in("mail refused", mail_from, mailbox=mailbox, size=len(raw), reason=reason)
            except Exception:
                temporary = True
                log.exception("ingesting a message for %s failed", mailbox)
            else:
                _mail_in(
                    "mail in",
                    mail_from,
                    mailbox=mailbox,
                    interaction=getattr(stored, "interaction_id", None),
                    message_id=getattr(stored, "message_id", None),
                    duplicate=True if getattr(stored, "duplicate", False) else None,
                    size=len(raw),
                )
        if temporary:
            return "451 4.3.0 Temporary failure storing the message, try again later"
        if refusals and len(refusals) == len(by_mailbox):
            first = refusals[0]
            if first.kind == "too_large":
                return f"552 5.3.4 {_one_line(first.description)}"
            return f"554 5.6.0 {_one_line(first.description)}"
        if refusals:
            log.warning(
                "message stored for some mailboxes, refused for others: %s",
                "; ".join(r.description for r in refusals),
            )
        return "250 2.0.0 OK: message stored"


class SmtpReceiver:
    """An SMTP server on the running event loop; ``start`` / ``stop``."""

    def __init__(self, config: ReceiverConfig, ingest: Ingest) -> None:
        self.config = config
        self.handler = _Handler(config, ingest)
        self._server: asyncio.base_events.Server | None = None
        # The sessions connected now (closed at stop); each leaves when its connection is lost,
        # so the set holds open connections only, never every session since start.
        self._sessions: set[SMTP] = set()

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the receiver is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def _session(self) -> SMTP:
        c = self.config
        protocol = _Protocol(
            self.handler,
            data_size_limit=c.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=c.hostname,
            timeout=c.timeout,
            tls_context=c.tls_context,
            require_starttls=c.require_starttls and c.tls_context is not None,
            loop=asyncio.get_running_loop(),
        )
        protocol.on_lost = self._sessions.discard
        self._sessions.add(protocol)
        return protocol

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the receiver is already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._session, host=self.config.host, port=self.config.port
        )
        log.info("SMTP receiver listening on %s:%d", self.config.host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for session in list(self._sessions):
            transport = session.transport
            if transport is not None:
                transport.close()
        self._sessions.clear()
        await server.wait_closed()


# --------------------------------------------------------------------------- Maildir poller


class MaildirPoller:
    """Ingests mail that lands in a Maildir (for mailboxes not delivered to us by SMTP).

    Every ``interval`` seconds, each file in ``new/`` is read and ingested into ``mailbox``;
    only after ``ingest`` returned is it moved to ``cur/`` (flag ``S``). A ``MessageRefused``
    moves it to ``cur/`` flagged ``T`` (trashed, left for a person to look at); any other
    error leaves it in ``new/`` for the next poll. A crash between the commit and the move
    ingests it again on restart; ``service.ingest`` dedupes on Message-ID.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        ingest: Ingest,
        mailbox: str,
        *,
        interval: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.ingest = ingest
        self.mailbox = mailbox
        self.interval = interval
        mailbox_lib.Maildir(self.path, create=True)  # new/, cur/, tmp/
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="maildir-poller")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stop.set()
        await self._task
        self._task = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.poll_once()
            except Exception:
                log.exception("polling Maildir %s failed", self.path)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    def _new(self) -> list[str]:
        names = [n for n in os.listdir(self.path / "new") if not n.startswith(".")]
        return sorted(names)

    async def poll_once(self) -> int:
        """Ingest what is in ``new/`` now; returns how many messages were ingested."""
        done = 0
        for name in await asyncio.to_thread(self._new):
            source = self.path / "new" / name
            try:
                raw = await asyncio.to_thread(source.read_bytes)
            except FileNotFoundError:  # taken by another reader meanwhile
                continue
            envelope = Envelope()
            try:
                await asyncio.to_thread(self.ingest, raw, envelope, self.mailbox)
            except MessageRefused as exc:
                log.warning("Maildir message %s refused: %s", name, exc.description)
                await asyncio.to_thread(self._move, name, "T")
                continue
            except Exception:
                log.exception("ingesting Maildir message %s failed; next poll retries", name)
                continue
            await asyncio.to_thread(self._move, name, "S")
            done += 1
        return done

    def _move(self, name: str, flag: str) -> None:
        base = name.split(":", 1)[0]
        os.rename(self.path / "new" / name, self.path / "cur" / f"{base}:2,{flag}")
