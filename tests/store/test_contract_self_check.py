"""The store contract catches broken stores: run on purpose-built faulty ones, it fails.

Each faulty store is the in-memory one with one contract broken. The contract runs on it in a
separate pytest process (as a user's test module would); its JUnit report says which tests
failed, and those must include the ones written for that fault.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

FAULTY_STORES = textwrap.dedent(
    '''
    from interactions_core.memory import InMemoryStore, ManualClock
    from interactions_core.ports import Store
    from interactions_core.testing.contracts import StoreContract


    class SeqlessStore(InMemoryStore):
        """Returns pending notifications without their seq (the Notification default, 0)."""

        def pending_notifications(self, after_seq=0, limit=500):
            found = super().pending_notifications(after_seq, limit)
            return [n.model_copy(update={"seq": 0}) for n in found]


    class CloseOnceStore(InMemoryStore):
        """close() is not idempotent."""

        closed = False

        def close(self):
            if self.closed:
                raise RuntimeError("already closed")
            self.closed = True


    class TestSeqless(StoreContract):
        def make_store(self, clock: ManualClock) -> Store:
            return SeqlessStore(clock)


    class TestCloseOnce(StoreContract):
        def make_store(self, clock: ManualClock) -> Store:
            return CloseOnceStore(clock)

        def close_store(self, store: Store) -> None:
            """Teardown tolerates it, so only the close tests report the fault."""
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


def test_the_contract_fails_a_store_that_drops_seqs_or_closes_once(tmp_path: Path) -> None:
    results = outcomes(tmp_path, FAULTY_STORES)
    seq_tests = [
        "test_every_pending_notification_carries_its_own_seq",
        "test_a_drain_reading_on_after_the_last_seq_ends",
    ]
    close_tests = [
        "test_close_is_idempotent",
        "test_close_of_a_store_never_used_is_idempotent",
        "test_close_after_a_rolled_back_unit_of_work",
    ]
    for name in seq_tests:
        assert results[f"TestSeqless::{name}"] == "failed", name
    for name in close_tests:
        assert results[f"TestCloseOnce::{name}"] == "failed", name
        assert results[f"TestSeqless::{name}"] == "passed", name
    # Each fault fails only what depends on it: the rest of the contract still passes.
    control = "test_add_stores_at_version_1_and_get_returns_it_equal"
    assert results[f"TestSeqless::{control}"] == results[f"TestCloseOnce::{control}"] == "passed"
    assert all(
        outcome == "passed"
        for name, outcome in results.items()
        if name.startswith("TestCloseOnce::") and name.split("::")[1] not in close_tests
    )
