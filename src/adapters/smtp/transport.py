"""Outbound SMTP with ``aiosmtplib``: a bounded pool of reused connections to one relay.

* ``RelayConfig`` (frozen): host, port, ``security`` = ``"starttls"`` (default, port 587,
  STARTTLS required) | ``"tls"`` (implicit TLS, port 465) | ``"none"`` (plain, e.g. a local
  relay on port 25), AUTH user/password, timeouts, pool size.
* Connections are kept open and reused: after a failed transaction the envelope is reset with
  ``RSET``; a connection idle longer than ``idle_check`` seconds is probed with ``NOOP``; one
  found dropped before anything was handed over is replaced and the mail tried again at once.
* At most ``pool_size`` connections, each carrying one transaction at a time.

Errors map onto the core's two kinds (``docs/smtp.md``):

* ``TransientMailError``: connection refused or lost, TLS failures, timeouts, any 4xx, every
  recipient refused with at least one 4xx among them, and any refusal of the *session*
  (greeting, EHLO, STARTTLS, AUTH, and 530/535/538 "authentication or STARTTLS required" at
  any step - even 5xx: that is the configuration's fault, not the mail's, and retrying until
  ``max_age`` lets an operator fix it without losing mail).
* ``PermanentMailError``: 5xx to MAIL FROM or DATA, every recipient refused with 5xx, a
  message that can't be built (``MimeError``), a mail that needs SMTPUTF8 (non-ASCII local
  part) when the relay does not offer it.
* Partial refusal (some recipients accepted): the mail is delivered to the accepted ones and
  the call succeeds; the refused ones come back in ``DeliveryReport.refused``. Sending again
  would duplicate the mail for everyone who got it, so it is reported, never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Literal

import aiosmtplib
from aiosmtplib.errors import (
    SMTPDataError,
    SMTPException,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from interactions_core.ports import (
    AttachmentStore,
    OutgoingMail,
    PermanentMailError,
    TransientMailError,
)

from .base import DeliveryReport
from .mime import BuiltMessage, MimeError, build_message

log = logging.getLogger(__name__)

Security = Literal["starttls", "tls", "none"]
_DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "tls": 465, "none": 25}


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Where and how to hand mail over. ``port`` None = 587 / 465 / 25 by ``security``."""

    host: str
    port: int | None = None
    security: Security = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    connect_timeout: float = 10.0
    transaction_timeout: float = 120.0  # one mail, MAIL FROM to the reply after the data
    pool_size: int = 4  # parallel connections
    validate_certs: bool = True
    cert_bundle: str | None = None  # CA file for a relay with a private CA
    tls_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    local_hostname: str | None = None  # EHLO name; None = this host's FQDN
    idle_check: float = 30.0  # NOOP a connection idle longer than this before reusing it

    def __post_init__(self) -> None:
        if self.security not in _DEFAULT_PORTS:
            raise ValueError(f"security must be one of {sorted(_DEFAULT_PORTS)}")
        if self.pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else _DEFAULT_PORTS[self.security]


class _Connection:
    __slots__ = ("last_used", "smtp")

    def __init__(self, smtp: aiosmtplib.SMTP) -> None:
        self.smtp = smtp
        self.last_used = time.monotonic()


# 530 (authentication / STARTTLS required), 535 and 538 (RFC 4954) say the session is not
# set up as the relay wants: a configuration problem, retried like a 4xx.
_SESSION_CODES = frozenset({530, 535, 538})


def _code_error(code: int, text: str, what: str) -> Exception:
    reason = f"{what}: {code} {text}".strip()
    if 400 <= code < 500 or code in _SESSION_CODES:
        return TransientMailError(reason)
    return PermanentMailError(reason)


class _Stale(Exception):
    """A reused connection turned out dropped before anything was handed over."""


class SmtpTransport:
    """``AsyncMailTransport`` to one relay; safe for concurrent ``send`` calls."""

    def __init__(self, config: RelayConfig, attachments: AttachmentStore | None = None) -> None:
        self.config = config
        self.attachments = attachments
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(config.pool_size)
        self._all: set[_Connection] = set()
        self._closed = False

    @property
    def pool_size(self) -> int:
        return self.config.pool_size

    # ------------------------------------------------------------------ public

    async def send(self, mail: OutgoingMail) -> DeliveryReport:
        """Build and hand over ``mail``; see the module docstring for the error mapping."""
        try:
            if mail.attachments:  # attachment bytes come from disk or SQLite: off the loop
                built = await asyncio.to_thread(build_message, mail, self.attachments)
            else:
                built = build_message(mail, self.attachments)
        except MimeError as exc:
            raise PermanentMailError(f"message refused before sending: {exc}") from exc
        return await self.send_built(built)

    async def send_built(self, built: BuiltMessage) -> DeliveryReport:
        """Hand over an already built message (used by ``send`` and the benchmark)."""
        if self._closed:
            raise TransientMailError("the transport is closed")
        async with self._slots:
            conn = await self._acquire()
            try:
                report = await self._attempt(conn, built)
            except _Stale:
                await self._discard(conn)
                conn = await self._acquire(fresh=True)
                report = await self._attempt(conn, built, retry=False)
            self._release(conn)
            return report

    async def _attempt(
        self, conn: _Connection, built: BuiltMessage, retry: bool = True
    ) -> DeliveryReport:
        try:
            # One deadline per mail rather than a timer per command (aiosmtplib's per-command
            # wait_for costs more CPU than the rest of the client on a fast relay).
            async with asyncio.timeout(self.config.transaction_timeout):
                return await self._transaction(conn, built, retry)
        except TimeoutError as exc:
            conn.smtp.close()  # a reply may still come: the session is out of step
            await self._discard(conn)
            raise TransientMailError(
                f"no answer from the relay within {self.config.transaction_timeout} s"
            ) from exc
        except _Stale:
            raise
        except asyncio.CancelledError:
            # Cancelled mid-command: the session state is unknown, never reuse it.
            await self._discard(conn)
            raise
        except BaseException:
            await self._release_after_error(conn)
            raise

    async def close(self) -> None:
        """QUIT every idle connection; connections in use are closed when released.

        Idempotent. Later sends raise ``TransientMailError`` (the mail stays in the outbox).
        """
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._discard(conn, polite=True)

    # ------------------------------------------------------------------ connections

    def _new_client(self) -> aiosmtplib.SMTP:
        c = self.config
        return aiosmtplib.SMTP(
            hostname=c.host,
            port=c.effective_port,
            username=c.username,
            password=c.password,
            local_hostname=c.local_hostname,
            timeout=c.connect_timeout,  # the session set-up; a mail has its own deadline
            use_tls=c.security == "tls",
            start_tls=c.security == "starttls",
            validate_certs=c.validate_certs,
            cert_bundle=c.cert_bundle if c.tls_context is None else None,
            tls_context=c.tls_context,
        )

    async def _connect(self) -> _Connection:
        smtp = self._new_client()
        try:
            await smtp.connect(timeout=self.config.connect_timeout)
            if smtp.last_ehlo_response is None:  # EHLO now: the extensions decide MAIL options
                await smtp.ehlo(timeout=self.config.connect_timeout)
        except SMTPResponseException as exc:  # greeting, EHLO, STARTTLS or AUTH answered badly
            smtp.close()
            # Transient even for a 5xx: a wrong password or a relay refusing us is a
            # configuration problem, not the mail's; it is retried (up to max_age) so that
            # fixing the configuration loses nothing.
            log.error("relay %s refused the session: %s %s", self.config.host, exc.code, exc)
            raise TransientMailError(
                f"relay refused the session: {exc.code} {exc.message}"
            ) from exc
        except (OSError, SMTPException, ssl.SSLError) as exc:
            smtp.close()
            raise TransientMailError(
                f"can't connect to {self.config.host}:{self.config.effective_port}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        conn = _Connection(smtp)
        self._all.add(conn)
        return conn

    async def _acquire(self, fresh: bool = False) -> _Connection:
        while self._idle and not fresh:
            conn = self._idle.pop()
            if not conn.smtp.is_connected:
                await self._discard(conn)
                continue
            if time.monotonic() - conn.last_used > self.config.idle_check:
                try:
                    await conn.smtp.noop(timeout=self.config.connect_timeout)
                except (OSError, SMTPException):
                    await self._discard(conn)
                    continue
            return conn
        return await self._connect()

    def _release(self, conn: _Connection) -> None:
        conn.last_used = time.monotonic()
        if self._closed or not conn.smtp.is_connected:
            self._all.discard(conn)
            conn.smtp.close()
        else:
            self._idle.append(conn)

    async def _release_after_error(self, conn: _Connection) -> None:
        """Reset the envelope (RSET) so the connection can be reused, or drop it."""
        if conn.smtp.is_connected and not self._closed:
            try:
                await conn.smtp.rset(timeout=self.config.connect_timeout)
            except (OSError, SMTPException):
                await self._discard(conn)
                return
            self._release(conn)
        else:
            await self._discard(conn)

    async def _discard(self, conn: _Connection, polite: bool = False) -> None:
        self._all.discard(conn)
        if polite and conn.smtp.is_connected:
            with contextlib.suppress(OSError, SMTPException):
                await conn.smtp.quit(timeout=self.config.connect_timeout)
        conn.smtp.close()

    # ------------------------------------------------------------------ one mail

    async def _transaction(
        self, conn: _Connection, built: BuiltMessage, retry: bool = True
    ) -> DeliveryReport:
        smtp = conn.smtp
        if built.smtputf8 and not smtp.supports_extension("smtputf8"):
            raise PermanentMailError(
                "the relay does not offer SMTPUTF8, and the mail has an address with a "
                "non-ASCII local part, which has no ASCII form (RFC 6531): "
                + ", ".join(a for a in (built.sender, *built.recipients) if not a.isascii())
            )
        options: list[str] = []
        if smtp.supports_extension("size"):
            options.append(f"SIZE={len(built.data)}")
        if built.smtputf8:
            options.append("SMTPUTF8")
        if built.eight_bit and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        encoding = "utf-8" if built.smtputf8 else "ascii"

        # MAIL and RCPT: nothing is handed over yet, so a dropped reused connection is retried.
        # The commands are written directly: build_message already refused any address that
        # could smuggle a parameter or a command onto the line (the library would re-parse
        # every address with email.utils, a third of this client's CPU per message).
        args = [b"FROM:<" + built.sender.encode(encoding) + b">"]
        args.extend(o.encode("ascii") for o in options)
        try:
            response = await smtp.execute_command(b"MAIL", *args, timeout=None)
        except (SMTPServerDisconnected, ConnectionError) as exc:
            if retry:
                raise _Stale from exc
            raise TransientMailError(f"connection lost: {exc}") from exc
        except (SMTPTimeoutError, OSError, SMTPException) as exc:
            raise TransientMailError(f"MAIL FROM failed: {type(exc).__name__}: {exc}") from exc
        if response.code != 250:
            reason = f"sender <{built.sender}> refused"
            raise _code_error(response.code, response.message, reason)

        accepted: list[str] = []
        refused: dict[str, tuple[int, str]] = {}
        for rcpt in built.recipients:
            try:
                response = await smtp.execute_command(
                    b"RCPT", b"TO:<" + rcpt.encode(encoding) + b">", timeout=None
                )
            except (SMTPTimeoutError, OSError, SMTPException) as exc:
                raise TransientMailError(f"RCPT TO failed: {type(exc).__name__}: {exc}") from exc
            if response.code in (250, 251):
                accepted.append(rcpt)
            else:
                refused[rcpt] = (response.code, response.message)
        if not accepted:
            detail = "; ".join(f"<{r}>: {c} {m}" for r, (c, m) in refused.items())
            if any(400 <= c < 500 or c in _SESSION_CODES for c, _ in refused.values()):
                raise TransientMailError(f"every recipient refused, some temporarily: {detail}")
            raise PermanentMailError(f"every recipient refused: {detail}")

        # DATA: from here a lost connection may hide an accepted mail (see docs/smtp.md).
        try:
            response = await smtp.data(built.data, timeout=None)
        except SMTPDataError as exc:
            raise _code_error(exc.code, exc.message, "message refused") from exc
        except (SMTPTimeoutError, OSError, SMTPException) as exc:
            raise TransientMailError(f"DATA failed: {type(exc).__name__}: {exc}") from exc
        if refused:
            log.warning(
                "%s delivered to %d recipient(s); refused: %s",
                built.message_id,
                len(accepted),
                refused,
            )
        return DeliveryReport(
            accepted=tuple(accepted),
            refused={r: f"{c} {m}" for r, (c, m) in refused.items()},
            response=f"{response.code} {response.message}",
        )
