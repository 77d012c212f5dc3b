"""The agent directory: a JSON file of agents with argon2 password hashes.

Format::

    {"agents": [{"id": "alice", "name": "Alice", "password_hash": "$argon2id$...",
                 "skills": ["billing"], "mailboxes": ["support@example.com"],
                 "addresses": ["alice@example.com"], "capacity": 5}]}

The file is re-read when it changes (checked at most once a second), so ``interactions agents
add`` takes effect without a restart. Writes are atomic (temp file + fsync + rename).

``verify`` takes as long for an unknown name as for a wrong password, without argon2's CPU: an
unknown name waits (sleeps) as long as a recent real verification took.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
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
        """True for the agent's password. As long for an unknown name as for a wrong password."""
        ...


class FileAgentDirectory:
    """``AgentDirectory`` port over a JSON file, plus password verification."""

    def __init__(
        self,
        path: Path | None,
        records: Iterable[AgentRecord] = (),
        *,
        sleep: Callable[[float], None] = time.sleep,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.path = path
        self._sleep = sleep
        self._timer = timer
        self._durations = _Durations()
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
        """Check a password. An unknown name is refused after as long as a real verification
        takes: it sleeps a duration drawn from the recent ones, or, until there are a few,
        verifies against a dummy hash (which measures one)."""
        self._reload()
        record = self._records.get(agent_id)
        if record is not None:
            return self._argon2(record.password_hash, password)
        delay = self._durations.sample()
        if delay is None:
            self._argon2(_DUMMY_HASH, password)
        else:
            self._sleep(delay)
        return False

    def _argon2(self, password_hash: str, password: str) -> bool:
        start = self._timer()
        ok: bool
        try:
            ok = _HASHER.verify(password_hash, password)
        except InvalidHashError:
            return False  # a broken record: nothing was computed, nothing to learn from
        except VerificationError:  # VerifyMismatchError included
            ok = False
        self._durations.add(self._timer() - start)
        return ok


class _Durations:
    """How long the last real argon2 verifications took (a sample to imitate)."""

    SIZE = 32
    MIN_SAMPLES = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recent: deque[float] = deque(maxlen=self.SIZE)
        self._random = random.SystemRandom()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._recent.append(max(0.0, seconds))

    def sample(self) -> float | None:
        """One of the recent durations, or None while there are fewer than ``MIN_SAMPLES``."""
        with self._lock:
            if len(self._recent) < self.MIN_SAMPLES:
                return None
            return self._random.choice(self._recent)


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
