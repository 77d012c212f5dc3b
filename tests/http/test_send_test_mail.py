"""``interactions send-test-mail`` reads the settings ``serve`` reads: the SMTP receiver's
address and port, and the first configured mailbox as the recipient; its options win.

Each mail goes to a real aiosmtpd server on a free port, standing in for the receiver.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from adapters.server.cli import main
from ports import free_port


class Receiver:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []
        self.port = free_port()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    for name in ("INTERACTIONS_CONFIG", "INTERACTIONS_SMTP_LISTEN_PORT", "INTERACTIONS_MAILBOXES"):
        monkeypatch.delenv(name, raising=False)
    handler = Receiver()
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port)
    controller.start()
    yield handler
    controller.stop()


def test_the_port_from_the_environment_and_the_first_mailbox_from_the_config_file(
    receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "settings.json"
    mailboxes = {"billing@example.com": "Billing", "support@example.com": "Support"}
    config.write_text(json.dumps({"mailboxes": mailboxes, "smtp_listen_port": 1}))
    monkeypatch.setenv("INTERACTIONS_CONFIG", str(config))
    monkeypatch.setenv("INTERACTIONS_SMTP_LISTEN_PORT", str(receiver.port))  # beats the file
    assert main(["send-test-mail"]) == 0
    (envelope,) = receiver.envelopes
    assert envelope.rcpt_tos == ["billing@example.com", "colleague@example.org"]
    assert f"to billing@example.com via 127.0.0.1:{receiver.port}" in capsys.readouterr().out


def test_config_option_and_a_wildcard_listen_address(receiver: Receiver, tmp_path: Path) -> None:
    config = tmp_path / "settings.toml"
    config.write_text(
        f'smtp_listen_host = "0.0.0.0"\nsmtp_listen_port = {receiver.port}\n'
        '[mailboxes]\n"sales@example.com" = "Sales"\n'
    )
    assert main(["send-test-mail", "--config", str(config), "--cc", ""]) == 0
    (envelope,) = receiver.envelopes
    assert envelope.rcpt_tos == ["sales@example.com"]  # reached on loopback


def test_the_options_win(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INTERACTIONS_SMTP_LISTEN_PORT", str(free_port()))  # nobody there
    args = ["send-test-mail", "--host", "127.0.0.1", "--port", str(receiver.port)]
    assert main([*args, "--to", "other@example.com", "--cc", ""]) == 0
    (envelope,) = receiver.envelopes
    assert envelope.rcpt_tos == ["other@example.com"]
    # Every target given: the settings are not even read, so a broken one does not matter.
    monkeypatch.setenv("INTERACTIONS_HTTP_PORT", "eighty")
    assert main([*args, "--to", "other@example.com"]) == 0
    capsys.readouterr()


def test_unusable_settings_are_one_line_and_status_2(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INTERACTIONS_SMTP_LISTEN_PORT", "0")
    assert main(["send-test-mail"]) == 2
    assert "smtp_listen_port is 0" in capsys.readouterr().err
    monkeypatch.setenv("INTERACTIONS_SMTP_LISTEN_PORT", "twenty-five")
    assert main(["send-test-mail"]) == 2
    assert "smtp_listen_port (env INTERACTIONS_SMTP_LISTEN_PORT)" in capsys.readouterr().err
    monkeypatch.setenv("INTERACTIONS_SMTP_LISTEN_PORT", str(receiver.port))
    monkeypatch.setenv("INTERACTIONS_MAILBOXES", "{}")
    assert main(["send-test-mail"]) == 2
    assert "no mailbox is configured" in capsys.readouterr().err
    assert receiver.envelopes == []


def test_a_receiver_that_is_not_running_is_status_1(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("INTERACTIONS_SMTP_LISTEN_PORT", str(port))
    assert main(["send-test-mail"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"interactions: could not deliver to 127.0.0.1:{port}:")
    assert err.count("\n") == 1
