"""The embedded default: with no relay configured, outgoing mail lands in a local Maildir.

Same interface as ``SmtpTransport`` (``AsyncMailTransport``), so the dispatcher, retries and
"mark sent" work exactly as with a relay. Each mail is one file in ``<path>/new/``, written by
the stdlib ``mailbox.Maildir`` into ``tmp/`` and then renamed into ``new/`` (atomic: a reader
never sees half a message), then fsynced with its directory. Open the folder with any mail
client (``mutt -f <path>``) or read it with ``mailbox.Maildir(path)``.

The file holds the bytes a relay would get (with LF line endings, as Maildir readers expect),
plus a ``Return-Path`` line (as a local delivery agent would write). Bcc recipients are in no
header - as in any delivered copy.
"""

from __future__ import annotations

import asyncio
import mailbox
import os
from pathlib import Path

from interactions_core.ports import (
    AttachmentStore,
    OutgoingMail,
    PermanentMailError,
    TransientMailError,
)

from .base import DeliveryReport
from .mime import BuiltMessage, MimeError, build_message


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
        self._maildir = mailbox.Maildir(self.path, factory=None, create=True)

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
        """Write one message atomically; returns its Maildir key (the file is ``new/<key>``)."""
        # Local files use LF line endings, as every Maildir reader expects.
        head = b"Return-Path: <" + built.sender.encode("utf-8") + b">\n"
        data = head + built.data.replace(b"\r\n", b"\n")
        key = self._maildir.add(data)
        if self.fsync:
            self._sync(self.path / "new" / key)
        return key

    @staticmethod
    def _sync(file: Path) -> None:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        dir_fd = os.open(file.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def close(self) -> None:
        """Nothing to release: every mail is a file, complete once ``send`` returned
        (idempotent)."""
        return None
