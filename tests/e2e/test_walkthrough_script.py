"""The README's walkthrough, pasted into a script and run with bash against a real
``interactions serve`` process, and what that server logs meanwhile.

The server gets its ports from ``INTERACTIONS_HTTP_PORT`` and ``INTERACTIONS_SMTP_LISTEN_PORT``
only, and the script runs with the same variables: ``send-test-mail`` and
``examples/watch_notifications.py`` find the server through the settings, as the README says.
The watcher runs beside the script and prints what it is pushed; then it stops on SIGINT,
quietly. Its failures (a server that is not there, a wrong password) are one line each.

The server's log is checked in both formats: text, a line per operation, mail in and mail out
at INFO (and no library chatter); ``--log-format json``, every line one JSON object with the
same facts as members.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

import httpx
import pytest

from adapters.server.agents import add_agent
from adapters.server.node import derive_node_id
from ports import free_port

ROOT = Path(__file__).resolve().parents[2]
WATCHER = ROOT / "examples" / "watch_notifications.py"
PASSWORD = "alice-walkthrough-pw"


def walkthrough_script() -> str:
    """The README's walkthrough block, with alice's password filled in."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Two-minute walkthrough") :]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None
    script = block.group(1)
    placeholder = "PW='<alice password from the banner>'"
    assert placeholder in script
    assert "alias " not in script  # an alias is not expanded in a script
    return script.replace(placeholder, f"PW='{PASSWORD}'")


@dataclass
class Server:
    folder: Path  # the server's working directory (data in var/, as make serve has it)
    env: dict[str, str]  # INTERACTIONS_* that configure it (and reach it)
    http_port: int
    process: subprocess.Popen[bytes]
    log: Path
    log_format: str

    def lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()


def start_server(folder: Path, *args: str, extra_env: dict[str, str] | None = None) -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    agents = folder / "agents.json"
    add_agent(agents, "alice", PASSWORD, mailboxes=["support@example.com"], capacity=10)
    http_port = free_port()
    env = {
        "INTERACTIONS_HTTP_PORT": str(http_port),
        "INTERACTIONS_SMTP_LISTEN_PORT": str(free_port()),
        "INTERACTIONS_AGENTS_FILE": str(agents),
        **(extra_env or {}),
    }
    log = folder / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "adapters.server.cli", "serve", *args],
        cwd=folder,
        stdout=(folder / "banner.txt").open("wb"),
        stderr=log.open("wb"),
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            r = httpx.get(f"http://127.0.0.1:{http_port}/api/v2/me", auth=("alice", PASSWORD))
            if r.status_code == 200:
                fmt = "json" if "json" in args or "json" in env.values() else "text"
                return Server(folder, env, http_port, process, log, fmt)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError("the server did not start:\n" + log.read_text())


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


@pytest.fixture(params=["text", "json", "json-by-setting"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    fmt = request.param
    if fmt == "json-by-setting":  # INTERACTIONS_LOG_FORMAT, as a systemd unit would set it
        s = start_server(tmp_path / "repo", extra_env={"INTERACTIONS_LOG_FORMAT": "json"})
    else:
        s = start_server(tmp_path / "repo", *(["--log-format", "json"] if fmt == "json" else []))
    # The script calls .venv/bin/interactions, as from the repository's folder.
    venv = Path(sys.prefix)
    assert (venv / "bin" / "interactions").exists(), "run the tests in the project's venv"
    (s.folder / ".venv").symlink_to(venv, target_is_directory=True)
    yield s
    stop(s.process)


def run_watcher(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WATCHER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        # SIGINT as from a terminal's Ctrl-C, whatever the test runner's own disposition.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_the_readme_walkthrough_runs_as_a_script_and_the_server_logs_it(server: Server) -> None:
    script = server.folder / "walkthrough.sh"
    script.write_text(walkthrough_script(), encoding="utf-8")

    watcher = run_watcher("alice", PASSWORD, env=server.env)  # the URL from the settings
    assert watcher.stdout is not None
    assert watcher.stdout.readline().startswith("subscribed as alice")

    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", str(script)],
        cwd=server.folder,
        env={**os.environ, **server.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert '"status":"error"' not in out, out
    assert out.count('{"status":"ok"}') >= 4, out  # Ready, Accept, Send, StopProcessing
    port = server.env["INTERACTIONS_SMTP_LISTEN_PORT"]
    assert f"to support@example.com via 127.0.0.1:{port}" in out

    # The reply, in the Maildir the script listed.
    (reply,) = (server.folder / "var" / "outbox" / "new").iterdir()
    message = message_from_bytes(reply.read_bytes(), policy=policy.default)
    assert message["Subject"] == "Re: Where is my order?"
    assert message["In-Reply-To"] and message["References"]
    assert "It ships today." in message.get_content()

    # The watcher saw the interaction go by; Ctrl-C stops it without a traceback.
    time.sleep(0.5)
    watcher.send_signal(signal.SIGINT)
    watched, errors = watcher.communicate(timeout=15)
    assert watcher.returncode == 0, errors
    assert "Traceback" not in errors, errors
    for state in ("Invited", "Accepted", "ReplyCreated"):
        assert f"/me/interactions {state} " in watched, watched

    check_log(server, reply_id=message["Message-ID"])


def check_log(server: Server, reply_id: str) -> None:
    stop(server.process)  # every line written
    lines = server.lines()
    json_format = server.log_format == "json"
    if json_format:
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        for record in records:
            assert {"time", "level", "node", "logger", "message"} <= record.keys(), record
            assert record["node"] == derive_node_id(server.http_port)
    else:
        records = [text_record(line) for line in lines]
    infos = [r for r in records if r["level"] == "INFO"]
    loggers = {r["logger"] for r in records}
    assert not {"transitions.core", "mail.log"} & loggers, loggers  # no library chatter
    assert not [r for r in records if r["level"] in ("ERROR", "CRITICAL")], lines

    starting = [r for r in infos if r["message"].startswith("starting: ")]
    assert len(starting) == 1 and f"http=127.0.0.1:{server.http_port}" in starting[0]["message"]

    operations = [r for r in infos if r["logger"] == "adapters.eventlog"]
    names = [field(r, "operation") for r in operations]
    assert names == ["Ready", "Accept", "ReplyAll", "Send", "StopProcessing"], names
    assert all(field(r, "agent") == "alice" and field(r, "result") == "ok" for r in operations)
    assert all(float(field(r, "ms")) >= 0 for r in operations)
    assert field(operations[0], "channel") == "email"
    original = field(operations[1], "interaction")
    draft = field(operations[2], "reply")
    assert field(operations[3], "interaction") == draft != original

    (mail_in,) = [r for r in infos if r["message"].startswith("mail in: ")]
    assert field(mail_in, "from") == "customer@example.org"
    assert field(mail_in, "mailbox") == "support@example.com"
    assert field(mail_in, "interaction") == original
    (sent,) = [r for r in infos if r["message"].startswith("mail sent: ")]
    assert field(sent, "message_id") == reply_id
    assert field(sent, "interaction") == draft
    if json_format:  # the structured fields keep their types
        assert isinstance(sent["attempt"], int) and isinstance(operations[0]["ms"], float)


def text_record(line: str) -> dict[str, str]:
    """``LEVEL [node] logger: message`` as the JSON format's members."""
    match = re.fullmatch(r"([A-Z]+) \[([^\]]+)\] ([\w.]+): (.*)", line)
    assert match is not None, line
    level, node, logger, message = match.groups()
    return {"level": level, "node": node, "logger": logger, "message": message}


def field(record: dict[str, object], name: str) -> str:
    """A field of an INFO line: the JSON member, or its ``name=value`` in the text."""
    if name in record:
        return str(record[name])
    message = str(record["message"])
    match = re.search(rf"(?:^|[ :]){re.escape(name)}=(\"(?:[^\"\\]|\\.)*\"|\S+)", message)
    assert match is not None, (name, message)
    value = match.group(1)
    return str(json.loads(value)) if value.startswith('"') else value


def test_the_watcher_answers_a_wrong_password_with_one_line(tmp_path: Path) -> None:
    s = start_server(tmp_path / "repo")
    try:
        watcher = run_watcher("alice", "not-the-password", env=s.env)
        out, errors = watcher.communicate(timeout=30)
    finally:
        stop(s.process)
    assert watcher.returncode == 2
    assert out == ""
    assert errors.count("\n") == 1 and "Traceback" not in errors, errors
    assert errors.startswith(
        f"watch_notifications: http://127.0.0.1:{s.http_port}/api/v2/notifications:"
        " the server refused alice's credentials"
    ), errors
    assert "wrong user name or password?" in errors


def test_the_watcher_answers_a_refused_connection_with_one_line() -> None:
    port = free_port()  # nobody listens there
    watcher = run_watcher("alice", "pw", env={"INTERACTIONS_HTTP_PORT": str(port)})
    out, errors = watcher.communicate(timeout=30)
    assert watcher.returncode == 1
    assert out == ""
    assert errors.count("\n") == 1 and "Traceback" not in errors, errors
    assert errors.startswith(
        f"watch_notifications: cannot connect to http://127.0.0.1:{port}/api/v2/notifications:"
    ), errors
    assert "is `interactions serve` running?" in errors


def test_the_watcher_reads_its_url_from_a_config_file_and_an_explicit_url_wins(
    tmp_path: Path,
) -> None:
    config = tmp_path / "settings.toml"
    configured, given = free_port(), free_port()
    config.write_text(f'http_host = "0.0.0.0"\nhttp_port = {configured}\n')
    watcher = run_watcher("alice", "pw", "--config", str(config))
    _, errors = watcher.communicate(timeout=30)
    # A wildcard listen address is reached on loopback.
    assert f"cannot connect to http://127.0.0.1:{configured}/api/v2/notifications" in errors
    url = f"http://127.0.0.1:{given}/api/v2/notifications"
    watcher = run_watcher("alice", "pw", url, "--config", str(config))
    _, errors = watcher.communicate(timeout=30)
    assert f"cannot connect to {url}:" in errors

    config.write_text('http_port = "eighty"\n')
    watcher = run_watcher("alice", "pw", "--config", str(config))
    _, errors = watcher.communicate(timeout=30)
    assert watcher.returncode == 2 and "http_port" in errors and "Traceback" not in errors
