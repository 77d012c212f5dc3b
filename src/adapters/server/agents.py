"""The agent directory: a JSON file of agents with argon2 password hashes.

Format::

    {"agents": [{"id": "alice", "name": "Alice", "password_hash": "$argon2id$...",
                 "skills": ["billing"], "mailboxes": ["support@example.com"],
                 "addresses": ["alice@example.com"], "capacity": 5}]}

The file is re-read when it changes (checked at most once a second), so ``interactions agents
add`` takes effect without a restart. Writes are atomic (temp file + fsync + rename).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from interactions_core.addresses import validate_address
from interactions_core.ports import Agent, AgentDirectory

_HASHER = PasswordHasher()


class AgentRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@-]+$")
    name: str = ""
    password_hash: str
    skills: list[str] = Field(default_factory=list)
    mailboxes: list[str] = Field(default_factory=list)
    addresses: list[str] = Field(default_factory=list)
    capacity: int = Field(5, ge=1, le=1000)

    def to_agent(self) -> Agent:
        return Agent(
            id=self.id,
            name=self.name,
            skills=frozenset(self.skills),
            mailboxes=tuple(self.mailboxes),
            addresses=tuple(self.addresses),
            capacity=self.capacity,
        )


class AgentsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agents: list[AgentRecord] = Field(default_factory=list)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


class AgentDirectoryError(Exception):
    pass


class PasswordDirectory(AgentDirectory, Protocol):
    """An agent directory that also checks passwords (what the HTTP API's login needs)."""

    def verify(self, agent_id: str, password: str) -> bool:
        """True for the agent's password. Constant work whether or not the agent exists."""
        ...


class FileAgentDirectory:
    """``AgentDirectory`` port over a JSON file, plus password verification."""

    def __init__(self, path: Path | None, records: Iterable[AgentRecord] = ()) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._records: dict[str, AgentRecord] = {r.id: r for r in records}
        self._agents: dict[str, Agent] = {r.id: r.to_agent() for r in self._records.values()}
        self._mtime: float | None = None
        self._checked = 0.0
        if path is not None:
            self._reload(force=True)

    def _reload(self, force: bool = False) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < 1.0:
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            if force:
                raise AgentDirectoryError(f"agents file {self.path} does not exist") from None
            return
        if not force and mtime == self._mtime:
            return
        parsed = load_agents_file(self.path)
        with self._lock:
            self._records = {r.id: r for r in parsed.agents}
            self._agents = {r.id: r.to_agent() for r in parsed.agents}
            self._mtime = mtime

    def get(self, agent_id: str) -> Agent | None:
        self._reload()
        return self._agents.get(agent_id)

    def agents(self) -> Iterable[Agent]:
        self._reload()
        return list(self._agents.values())

    def verify(self, agent_id: str, password: str) -> bool:
        """Check a password; constant work whether or not the agent exists."""
        self._reload()
        record = self._records.get(agent_id)
        target = record.password_hash if record else _DUMMY_HASH
        try:
            ok = _HASHER.verify(target, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return ok and record is not None


_DUMMY_HASH = _HASHER.hash("not a password of anyone")


def load_agents_file(path: Path) -> AgentsFile:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return AgentsFile.model_validate(data)
    except (OSError, ValueError) as exc:
        detail = str(exc)
        if isinstance(exc, ValidationError):
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
        raise AgentDirectoryError(f"agents file {path}: {detail}") from None


def add_agent(
    path: Path,
    agent_id: str,
    password: str,
    *,
    name: str = "",
    skills: Iterable[str] = (),
    mailboxes: Iterable[str] = (),
    addresses: Iterable[str] = (),
    capacity: int = 5,
) -> AgentRecord:
    """Add or replace an agent in the file (created if missing), atomically."""
    existing = load_agents_file(path) if path.exists() else AgentsFile()
    for address in (*mailboxes, *addresses):
        validate_address(address, field="mailbox")
    record = AgentRecord(
        id=agent_id,
        name=name,
        password_hash=hash_password(password),
        skills=sorted(set(skills)),
        mailboxes=list(mailboxes),
        addresses=list(addresses),
        capacity=capacity,
    )
    agents = [r for r in existing.agents if r.id != agent_id] + [record]
    write_atomically(path, AgentsFile(agents=agents).model_dump_json(indent=2) + "\n")
    return record


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".agents-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
