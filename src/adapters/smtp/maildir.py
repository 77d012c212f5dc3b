"""The embedded default: with no relay configured, outgoing mail lands in a local Maildir.

Same interface as ``SmtpTransport`` (``AsyncMailTransport``), so the dispatcher, retries and
"mark sent" work exactly as with a relay. Each mail is one file in ``<path>/new/``, written
into ``tmp/`` and fsynced, then renamed into ``new/`` (atomic: a reader never sees half a
message), as the Maildir convention has it. Open the folder with any mail client
(``mutt -f <path>``) or read it with ``mailbox.Maildir(path)``.

The file holds the bytes a relay would get (with LF line endings, as Maildir readers expect),
plus a ``Return-Path`` line (as a local delivery agent would write). Bcc recipients are in no
header - as in any delivered copy.

**The envelope** (the sender and every recipient, Bcc included: what a relay would get as
``MAIL FROM`` and ``RCPT TO``) is a sidecar, ``<path>/envelope/<key>.json``, for a consumer that
delivers the mail on (``docs/smtp.md``, "the envelope"). It is written atomically (``tmp/``,
then renamed) before the message is moved into ``new/``: whoever sees a message finds its
envelope. It is not a header: a ``Delivered-To`` per recipient in the one stored copy would
name the Bcc recipients in bytes a consumer might pass on as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import mailbox
import os
import socket
import time
from pathlib import Path
from typing import Any

from interactions_core.ports import (
    AttachmentStore,
    OutgoingMail,
    PermanentMailError,
    TransientMailError,
)

from .base import DeliveryReport
from .mime import BuiltMessage, MimeError, build_message

ENVELOPE_DIR = "envelope"
"""The sidecars' folder, beside ``new/``, ``cur/`` and ``tmp/`` (Maildir readers look only in
those three, so none takes a sidecar for a message)."""
ENVELOPE_VERSION = 1


def envelope_record(built: BuiltMessage) -> dict[str, Any]:
    """The sidecar's content: the SMTP envelope of ``built`` (``docs/smtp.md``)."""
    return {
        "version": ENVELOPE_VERSION,
        "mail_from": built.sender,
        "rcpt_to": list(built.recipients),
        "message_id": built.message_id,
        "smtputf8": built.smtputf8,
    }


def read_envelope(maildir: str | os.PathLike[str], key: str) -> dict[str, Any]:
    """The envelope of the message ``key`` (its file name up to the ``:``, as a reader that
    moved it to ``cur/`` with flags still has it)."""
    path = Path(maildir) / ENVELOPE_DIR / (key.split(":", 1)[0] + ".json")
    found: dict[str, Any] = json.loads(path.read_bytes())
    return found


class MaildirTransport:
    """``AsyncMailTransport`` that delivers into a Maildir (created if absent)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        attachments: AttachmentStore | None = None,
        *,
        fsync: bool = True,
    ) -> None:
        self.path = Path(path)
        self.attachments = attachments
        self.fsync = fsync
        mailbox.Maildir(self.path, factory=None, create=True)  # new/, cur/, tmp/
        (self.path / ENVELOPE_DIR).mkdir(exist_ok=True)
        # Unique names as the stdlib's (and qmail's): time, microseconds, process, counter,
        # host; the counter is this transport's, and the exclusive create catches the rest.
        self._counter = itertools.count(1)
        self._host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")

    @property
    def pool_size(self) -> int:
        return 1  # one writer is plenty: a write takes well under a millisecond

    async def send(self, mail: OutgoingMail) -> DeliveryReport:
        return await asyncio.to_thread(self.deliver, mail)

    def deliver(self, mail: OutgoingMail) -> DeliveryReport:
        """Synchronous delivery (also a ``interactions_core.ports.MailTransport`` ``send``)."""
        try:
            built = build_message(mail, self.attachments)
        except MimeError as exc:
            raise PermanentMailError(f"message refused before sending: {exc}") from exc
        try:
            key = self.write(built)
        except OSError as exc:  # a full disk, a permission, a folder gone: may heal; retry
            raise TransientMailError(f"cannot write to the Maildir {self.path}: {exc}") from exc
        return DeliveryReport(accepted=built.recipients, response=f"maildir {key}")

    def write(self, built: BuiltMessage) -> str:
        """Write one message and its envelope atomically; returns its Maildir key (the files
        are ``new/<key>`` and ``envelope/<key>.json``).

        Order: the message into ``tmp/<key>``; the envelope into ``tmp/<key>.envelope``, then
        renamed to ``envelope/<key>.json``; then the message renamed into ``new/``. A failure
        on the way removes what it wrote; a crash leaves files in ``tmp/`` (which readers
        ignore) and at most an envelope without a message, never a message without one."""
        # Local files use LF line endings, as every Maildir reader expects.
        head = b"Return-Path: <" + built.sender.encode("utf-8") + b">\n"
        data = head + built.data.replace(b"\r\n", b"\n")
        envelope = json.dumps(envelope_record(built), ensure_ascii=False).encode("utf-8")
        tmp = self.path / "tmp"
        key = self._create(tmp, data)
        sidecar = self.path / ENVELOPE_DIR / f"{key}.json"
        written: list[Path] = [tmp / key]
        try:
            self._write_new(tmp / f"{key}.envelope", envelope + b"\n")
            written.append(tmp / f"{key}.envelope")
            (self.path / ENVELOPE_DIR).mkdir(exist_ok=True)  # a cleaned-up folder comes back
            os.rename(tmp / f"{key}.envelope", sidecar)
            written[-1] = sidecar
            self._sync_dir(sidecar.parent)
            os.rename(tmp / key, self.path / "new" / key)
        except BaseException:
            for path in written:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        self._sync_dir(self.path / "new")
        return key

    def _create(self, folder: Path, data: bytes) -> str:
        """A new file with a unique name in ``folder`` holding ``data`` (fsynced); its name."""
        while True:
            now = time.time()
            unique = f"M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(self._counter)}"
            key = f"{int(now)}.{unique}.{self._host}"
            try:
                self._write_new(folder / key, data)
            except FileExistsError:
                continue
            return key

    def _write_new(self, path: Path, data: bytes) -> None:
        # 0o666 less the umask, as the stdlib's mailbox creates its files.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                path.unlink()
            raise

    def _sync_dir(self, folder: Path) -> None:
        if not self.fsync:
            return
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def close(self) -> None:
        """Nothing to release: every mail is a file, complete once ``send`` returned
        (idempotent)."""
        return None
