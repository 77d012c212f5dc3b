"""The in-memory ports against their contracts (the store's is in tests/store).

``RecordingTransport`` keeps the ``OutgoingMail`` objects it is given; ``delivered`` renders
them with the SMTP adapter's MIME builder, so the contract reads what a relay would have got
from exactly what the transport recorded.
"""

from __future__ import annotations

from adapters.smtp.mime import build_message
from interactions_core.memory import InMemoryAttachmentStore, RecordingNotifier, RecordingTransport
from interactions_core.ports import AttachmentStore, MailTransport, Notifier
from interactions_core.testing.contracts import (
    AttachmentStoreContract,
    DeliveredMail,
    MailTransportContract,
    NotifierContract,
    Observed,
)


class TestInMemoryAttachmentStore(AttachmentStoreContract):
    def make_attachment_store(self, max_size: int) -> AttachmentStore:
        return InMemoryAttachmentStore(max_size=max_size)


class TestRecordingNotifier(NotifierContract):
    def make_notifier(self) -> Notifier:
        self.recording = RecordingNotifier()
        self.since: dict[str, int] = {}
        return self.recording

    def subscribe(self, agent_id: str) -> None:
        self.since[agent_id] = len(self.recording.published)

    def received(self, agent_id: str, count: int) -> list[Observed]:
        start = self.since[agent_id]
        return [
            Observed(n.topic, n.to_wire())
            for n in self.recording.published[start:]
            if n.agent_id == agent_id
        ]


class TestRecordingTransport(MailTransportContract):
    def make_transport(self, attachments: AttachmentStore) -> MailTransport:
        self.recording = RecordingTransport()
        return self.recording

    def make_unreachable_transport(self, attachments: AttachmentStore) -> MailTransport:
        unreachable = RecordingTransport()
        unreachable.fail_next.append(ConnectionRefusedError("connection refused"))
        return unreachable

    def delivered(self) -> list[DeliveredMail]:
        if not hasattr(self, "recording"):
            return []
        return [
            DeliveredMail.parse(build_message(m, self.attachments).data, m.envelope_recipients)
            for m in self.recording.sent
        ]
