"""The shipped contracts catch broken implementations: run on faulty ones, they fail.

Each faulty implementation is an in-memory one with one contract broken. Its contract runs in
a separate pytest process, as a user's test module would; the JUnit report says which tests
failed, and those must include the ones written for that fault, and nothing unrelated.
(The store contract's own check is in tests/store/test_contract_self_check.py.)
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

FAULTY = textwrap.dedent(
    '''
    import hashlib

    from adapters.smtp.mime import build_message
    from interactions_core.memory import (
        InMemoryAttachmentStore,
        RecordingNotifier,
        RecordingTransport,
    )
    from interactions_core.testing.contracts import (
        AttachmentStoreContract,
        DeliveredMail,
        MailTransportContract,
        NotifierContract,
        Observed,
    )


    class LineEndingStore(InMemoryAttachmentStore):
        """Normalises CRLF to LF on the way in."""

        def put(self, data):
            return super().put(data.replace(b"\\r\\n", b"\\n"))


    class PathStore(InMemoryAttachmentStore):
        """Refuses a malformed id with ValueError instead of KeyError."""

        def get(self, content_id):
            if "/" in content_id:
                raise ValueError("not an id")
            return super().get(content_id)


    class TestLineEnding(AttachmentStoreContract):
        def make_attachment_store(self, max_size):
            return LineEndingStore(max_size=max_size)


    class TestPath(AttachmentStoreContract):
        def make_attachment_store(self, max_size):
            return PathStore(max_size=max_size)


    class TestBroadcast(NotifierContract):
        """Every subscriber sees every agent's notifications."""

        def make_notifier(self):
            self.recording = RecordingNotifier()
            return self.recording

        def subscribe(self, agent_id):
            pass

        def received(self, agent_id, count):
            return [Observed(n.topic, n.to_wire()) for n in self.recording.published]


    class RenderingTransport(MailTransportContract):
        def make_transport(self, attachments):
            self.recording = RecordingTransport()
            return self.recording

        def make_unreachable_transport(self, attachments):
            unreachable = RecordingTransport()
            unreachable.fail_next.append(ConnectionRefusedError("refused"))
            return unreachable

        def render(self, mail):
            return build_message(mail, self.attachments).data

        def delivered(self):
            sent = getattr(self, "recording", RecordingTransport()).sent
            return [DeliveredMail.parse(self.render(m), m.envelope_recipients) for m in sent]


    class TestNewMessageIdOnEachSend(RenderingTransport):
        def render(self, mail):
            self.sends = getattr(self, "sends", 0) + 1
            digest = hashlib.sha1(mail.message_id.encode()).hexdigest()
            fresh = mail.model_copy(update={"message_id": f"<{digest}.{self.sends}@x.example>"})
            return build_message(fresh, self.attachments).data


    class TestBccInTheHeader(RenderingTransport):
        def render(self, mail):
            data = build_message(mail, self.attachments).data
            bcc = ", ".join(a.addr for a in mail.bcc)
            return (f"Bcc: {bcc}\\r\\n".encode() + data) if bcc else data
    '''
)


def outcomes(tmp_path: Path, source: str) -> dict[str, str]:
    """Run ``source`` as a test module; ``{"TestClass::test_name": "passed" | "failed"}``."""
    (tmp_path / "test_faulty.py").write_text(source)
    report = tmp_path / "report.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}"],
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
        check=False,
    )
    results: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        failed = case.find("failure") is not None or case.find("error") is not None
        results[name] = "failed" if failed else "passed"
    return results


def failed(results: dict[str, str], cls: str) -> set[str]:
    return {
        name.split("::", 1)[1]
        for name, outcome in results.items()
        if name.startswith(f"{cls}::") and outcome == "failed"
    }


def test_the_contracts_fail_faulty_implementations_on_their_fault(tmp_path: Path) -> None:
    results = outcomes(tmp_path, FAULTY)
    assert {"test_bytes_round_trip_exactly", "test_different_bytes_give_different_ids"} <= failed(
        results, "TestLineEnding"
    )
    assert "test_empty_bytes_are_stored_like_any_other" not in failed(results, "TestLineEnding")
    assert failed(results, "TestPath") == {
        "test_an_unknown_id_raises_key_error[../../etc/passwd]",
        "test_an_unknown_id_raises_key_error[/etc/passwd]",
        "test_an_unknown_id_raises_key_error[a/b]",
    }
    broadcast = failed(results, "TestBroadcast")
    assert "test_notifications_for_one_agent_never_reach_another" in broadcast
    assert "test_close_of_a_notifier_never_used" not in broadcast
    new_ids = failed(results, "TestNewMessageIdOnEachSend")
    assert {"test_a_retry_is_the_same_message", "test_headers_arrive_as_composed"} <= new_ids
    assert failed(results, "TestBccInTheHeader") == {
        "test_bcc_is_delivered_but_in_no_header",
        "test_a_mail_only_to_bcc_recipients_is_delivered",
    }
    # The faults are caught, and the rest of each contract ran: many tests passed.
    assert sum(outcome == "passed" for outcome in results.values()) > 40
