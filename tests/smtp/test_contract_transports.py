"""The SMTP and Maildir transports against the asynchronous mail transport contract.

SMTP: a real ``aiosmtpd`` relay (``conftest.Sink``), read back as it received each message
(envelope included); the unreachable peer is a loopback port nobody listens on. Maildir: the
files in ``new/``, read with the stdlib ``mailbox`` module, with the recipients of each from its
envelope sidecar (``envelope/<key>.json``); the unreachable peer is a Maildir whose folder was
replaced by a file after the transport was made.
"""

from __future__ import annotations

import mailbox
import shutil
from pathlib import Path
from typing import Any

import pytest

from adapters.smtp import MaildirTransport, RelayConfig, SmtpTransport
from adapters.smtp.maildir import read_envelope
from interactions_core.ports import AttachmentStore
from interactions_core.testing.contracts import (
    AsyncMailTransport,
    AsyncMailTransportContract,
    DeliveredMail,
)

from .conftest import Sink, free_port


def relay(port: int, **options: Any) -> RelayConfig:
    settings: dict[str, Any] = {"security": "none", "local_hostname": "client.test"}
    settings.update(options)
    return RelayConfig(host="127.0.0.1", port=port, **settings)


class TestSmtpTransport(AsyncMailTransportContract):
    @pytest.fixture(autouse=True)
    def _relay(self, sink: Sink) -> None:
        self.sink = sink

    async def make_transport(self, attachments: AttachmentStore) -> AsyncMailTransport:
        return SmtpTransport(relay(self.sink.port), attachments)

    async def make_unreachable_transport(self, attachments: AttachmentStore) -> AsyncMailTransport:
        return SmtpTransport(relay(free_port(), connect_timeout=5), attachments)

    def delivered(self) -> list[DeliveredMail]:
        with self.sink.handler.lock:
            received = list(self.sink.received)
        return [DeliveredMail.parse(r.data, r.rcpt_tos) for r in received]


class TestSmtpTransportToARelayWithoutSmtputf8(TestSmtpTransport):
    """The same contract on a relay that offers no SMTPUTF8 (non-ASCII stays encoded)."""

    @pytest.fixture(autouse=True)
    def _relay(self, sink_ascii: Sink) -> None:
        self.sink = sink_ascii


class TestMaildirTransport(AsyncMailTransportContract):
    @property
    def folder(self) -> Path:
        return self.tmp_path / "Maildir"

    async def make_transport(self, attachments: AttachmentStore) -> AsyncMailTransport:
        return MaildirTransport(self.folder, attachments)

    async def make_unreachable_transport(self, attachments: AttachmentStore) -> AsyncMailTransport:
        folder = self.tmp_path / "unwritable"
        transport = MaildirTransport(folder, attachments)
        shutil.rmtree(folder)
        folder.write_bytes(b"")  # a file where the Maildir was: nothing can be written
        return transport

    def delivered(self) -> list[DeliveredMail]:
        if not self.folder.is_dir():
            return []
        box = mailbox.Maildir(self.folder, factory=None, create=False)
        # The envelope sidecar gives each message its recipients, as an SMTP peer's RCPT TO.
        return [
            DeliveredMail.parse(box.get_bytes(key), read_envelope(self.folder, key)["rcpt_to"])
            for key in box.iterkeys()
        ]
