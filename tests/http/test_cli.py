"""The ``interactions`` command: agents add, diagram, send-test-mail, configuration errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from adapters.server.agents import FileAgentDirectory
from adapters.server.cli import main
from interactions_core.diagram import render_page
from ports import free_port


def test_agents_add_writes_a_hash_and_the_directory_verifies_it(tmp_path: Path) -> None:
    path = tmp_path / "agents.json"
    args = ["agents", "add", "alice", "--file", str(path), "--password", "s3cret"]
    args += ["--mailbox", "support@example.com", "--skill", "billing", "--capacity", "3"]
    assert main(args) == 0
    text = path.read_text()
    assert "s3cret" not in text and "$argon2" in text
    assert path.stat().st_mode & 0o777 == 0o600
    directory = FileAgentDirectory(path)
    alice = directory.get("alice")
    assert alice is not None and alice.capacity == 3 and alice.skills == frozenset({"billing"})
    assert directory.verify("alice", "s3cret")
    assert not directory.verify("alice", "wrong") and not directory.verify("nobody", "s3cret")
    # Replacing keeps one record per agent.
    assert main(["agents", "add", "alice", "--file", str(path), "--password", "new"]) == 0
    assert len(json.loads(path.read_text())["agents"]) == 1


def test_agents_add_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agents.json"
    bad = ["agents", "add", "alice", "--file", str(path), "--password", "x", "--mailbox", "nope"]
    assert main(bad) == 2
    assert "not a valid" in capsys.readouterr().err
    assert main(["agents", "add", "al ice", "--file", str(path), "--password", "x"]) == 2


def test_diagram_writes_the_lifecycle_page(tmp_path: Path) -> None:
    target = tmp_path / "lifecycle.md"
    assert main(["diagram", str(target)]) == 0
    assert target.read_text() == render_page()


def test_serve_refuses_an_invalid_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"http_port": "eighty", "data_dir": str(tmp_path)}))
    assert main(["serve", "--config", str(config)]) == 2
    assert "http_port" in capsys.readouterr().err


def test_send_test_mail_delivers_over_smtp() -> None:
    received: list[Any] = []

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    port = free_port()
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        assert main(["send-test-mail", "--port", str(port), "--subject", "Hi"]) == 0
    finally:
        controller.stop()
    (envelope,) = received
    assert envelope.rcpt_tos == ["support@example.com", "colleague@example.org"]
    assert b"Subject: Hi" in envelope.content
