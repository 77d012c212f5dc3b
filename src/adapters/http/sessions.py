"""Where HTTP sessions and the failed-login limits are kept: the two storage protocols
``HttpAuth`` uses, and their in-memory implementations (its default).

Why storage is separate from the rules: several ``interactions serve`` processes behind a load
balancer must agree on who is logged in and on who has been guessing passwords. ``HttpAuth``
and ``LoginLimiter`` (``auth.py``) keep the rules (the TTL, the bounds, the back-off
arithmetic); a storage keeps the state, and the same rules run on every storage:

* in memory (``MemorySessions``, ``MemoryLoginLimits``): one process, nothing survives a
  restart; the default, and what every caller of ``HttpAuth(...)`` got before;
* SQLite (``adapters.sqlite.sessions``): one process normally, surviving a restart;
* PostgreSQL (``adapters.postgres.sessions``): shared by every process on the database.

Rules every storage follows (``tests/http/test_sessions_contract.py`` holds them):

* **Session ids arrive hashed** (``session_key``: SHA-256 of the cookie value), so a storage
  never holds a usable cookie: a dump of the database hands out no live session.
* **Time is the caller's** (``now``, wall-clock seconds from ``HttpAuth``'s injectable clock,
  passed into every call): a monotonic clock means nothing to another process.
* A session's expiry is its last recorded use plus the TTL; the bounds drop the sessions used
  least recently first. A SQL storage records a use at most every ``touch_interval`` seconds
  (one write per session per minute instead of one per request), so a session may expire up
  to that much earlier than exactly ``ttl`` after its last use.
* ``LoginLimits.update`` is one atomic read-modify-write of one (address, name) pair and its
  address, so two processes checking a limit at once cannot both slip under it.
* Whether calls block (``blocking``): blocking ones are run by ``HttpAuth`` on a worker
  thread, never on the event loop.
"""

from __future__ import annotations

import bisect
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

__all__ = [
    "AddressState",
    "LoginLimits",
    "LoginState",
    "MemoryLoginLimits",
    "MemorySessions",
    "PairState",
    "Session",
    "SessionLimits",
    "SessionStore",
    "session_key",
]


def session_key(session_id: str) -> bytes:
    """What a storage keys a session by: the SHA-256 of the cookie value (32 bytes).

    The cookie is 256 random bits, so a plain hash is enough (nothing to brute-force), and
    what a storage holds cannot be sent back as a cookie."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).digest()


# --- sessions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """The session rules ``HttpAuth`` hands to its storage with every call (so the storage
    needs no configuration of its own, and every process applies its own settings)."""

    ttl: float
    max_sessions: int
    max_per_agent: int
    touch_interval: float = 0.0

    def __post_init__(self) -> None:
        if not self.ttl > 0:
            raise ValueError(f"session ttl must be > 0 seconds, not {self.ttl!r}")
        if self.max_sessions < 1 or self.max_per_agent < 1:
            raise ValueError("max_sessions and max_sessions_per_agent must be >= 1")
        if not 0 <= self.touch_interval < self.ttl:
            raise ValueError(
                f"session touch interval must be >= 0 and below the ttl ({self.ttl:g} s),"
                f" not {self.touch_interval!r}"
            )


@dataclass(frozen=True, slots=True)
class Session:
    agent_id: str
    csrf_token: str
    expires: float


class SessionStore(Protocol):
    """Open sessions, keyed by ``session_key`` (never the cookie itself)."""

    @property
    def blocking(self) -> bool:
        """True when calls may block (a database): ``HttpAuth`` then runs them on a thread."""
        ...

    def open(
        self, key: bytes, agent_id: str, csrf_token: str, now: float, limits: SessionLimits
    ) -> None:
        """Store a new session, then drop the agent's least recently used ones beyond
        ``max_per_agent`` and everyone's beyond ``max_sessions`` (never the new one)."""
        ...

    def get(self, key: bytes, now: float, limits: SessionLimits) -> Session | None:
        """The session if it exists and has not expired, its use recorded (sliding TTL);
        None otherwise. Always the stored truth: a session ended anywhere is None here."""
        ...

    def end(self, key: bytes) -> None:
        """Forget a session (logout); nothing if there is none."""
        ...

    def sweep(self, now: float, limits: SessionLimits, limit: int) -> int:
        """Delete at most ``limit`` expired sessions, longest unused first; how many."""
        ...

    def count(self) -> int:
        """Sessions held, expired ones not yet swept included (tests and metrics)."""
        ...


@dataclass(slots=True)
class _Entry:
    agent_id: str
    csrf_token: str
    used: float


class MemorySessions:
    """Sessions in this process's memory, in the order of their last use (the least recently
    used first). The TTL is the same for all, so the least recently used is also the first to
    expire: a sweep walks from the front and stops at the first live one, and a full table
    (or a full agent) loses its front. A client that sends Basic on every request and ignores
    the cookie thus costs at most ``max_per_agent`` entries, not one per request for 8 hours."""

    blocking = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: OrderedDict[bytes, _Entry] = OrderedDict()
        self._per_agent: dict[str, OrderedDict[bytes, None]] = {}

    def open(
        self, key: bytes, agent_id: str, csrf_token: str, now: float, limits: SessionLimits
    ) -> None:
        with self._lock:
            mine = self._per_agent.get(agent_id)
            while mine and len(mine) >= limits.max_per_agent:
                self._drop(next(iter(mine)))
            while len(self._sessions) >= limits.max_sessions:
                self._drop(next(iter(self._sessions)))
            self._sessions[key] = _Entry(agent_id, csrf_token, now)
            self._per_agent.setdefault(agent_id, OrderedDict())[key] = None

    def get(self, key: bytes, now: float, limits: SessionLimits) -> Session | None:
        with self._lock:
            entry = self._sessions.get(key)
            if entry is None or entry.used + limits.ttl <= now:
                return None
            # In memory a use costs nothing to record: always exact.
            entry.used = max(entry.used, now)
            self._sessions.move_to_end(key)
            self._per_agent[entry.agent_id].move_to_end(key)
            return Session(entry.agent_id, entry.csrf_token, entry.used + limits.ttl)

    def end(self, key: bytes) -> None:
        with self._lock:
            self._drop(key)

    def sweep(self, now: float, limits: SessionLimits, limit: int) -> int:
        dropped = 0
        with self._lock:
            while self._sessions and dropped < limit:
                key, entry = next(iter(self._sessions.items()))
                if entry.used + limits.ttl > now:
                    break
                self._drop(key)
                dropped += 1
        return dropped

    def count(self) -> int:
        return len(self._sessions)

    def _drop(self, key: bytes) -> None:
        """Under the lock: forget one session, and its agent when it was the last."""
        entry = self._sessions.pop(key, None)
        if entry is None:
            return
        mine = self._per_agent.get(entry.agent_id)
        if mine is not None:
            mine.pop(key, None)
            if not mine:
                del self._per_agent[entry.agent_id]


# --- the failed-login limits ----------------------------------------------------------------


def _drop_expired(leases: list[float], now: float) -> None:
    leases[:] = [t for t in leases if t > now]


@dataclass(slots=True)
class PairState:
    """One (address, name): failures counted, back-off until, forgotten at ``expires``; the
    verifications in flight as the ends of their leases (a process that dies mid-check leaves a
    lease that ends by itself, never a count stuck for ever)."""

    failures: int = 0
    blocked_until: float = 0.0
    expires: float = 0.0
    in_flight: list[float] = field(default_factory=list)

    def empty(self) -> bool:
        return self.failures == 0 and not self.in_flight

    def stale(self) -> float:
        """From when on the pair holds nothing that counts (a sweep may delete it)."""
        return max([self.expires, *self.in_flight])


@dataclass(slots=True)
class AddressState:
    """One address: the times of its last failures (oldest first, at most its budget), when
    the last of them leaves the window (``expires``), and its verifications in flight."""

    failures: list[float] = field(default_factory=list)
    expires: float = 0.0
    in_flight: list[float] = field(default_factory=list)

    def empty(self) -> bool:
        return not self.failures and not self.in_flight

    def stale(self) -> float:
        return max([self.expires, *self.in_flight])


@dataclass(slots=True)
class LoginState:
    """What one ``LoginLimits.update`` reads and writes back: a pair and its address."""

    pair: PairState
    address: AddressState

    def drop_expired_leases(self, now: float) -> None:
        _drop_expired(self.pair.in_flight, now)
        _drop_expired(self.address.in_flight, now)

    @staticmethod
    def end_one_lease(leases: list[float]) -> None:
        """A verification ended: its lease goes (the oldest one: leases are not named, and
        only their number counts)."""
        if leases:
            leases.remove(min(leases))

    @staticmethod
    def add_failure(times: list[float], at: float, keep: int) -> None:
        """Record a failure at ``at``, in time order (clocks of two processes may differ a
        little), keeping the last ``keep``."""
        bisect.insort(times, at)
        del times[: max(0, len(times) - keep)]


class LoginLimits(Protocol):
    """The limiter's state per (address, name) and per address."""

    @property
    def blocking(self) -> bool: ...

    def update(self, address: str, name: str, now: float, change: Callable[[LoginState], T]) -> T:
        """Run ``change`` on the current state of (address, name) and of the address, then
        store what it left (an empty pair or address is deleted), as one atomic step: no other
        update of that address runs in between, in any process. If ``change`` raises, nothing
        is stored and the exception propagates. ``now`` is the caller's time."""
        ...

    def sweep(self, now: float, limit: int) -> int:
        """Delete at most ``limit`` pairs and ``limit`` addresses that hold nothing that
        counts any more (past ``stale()``); how many."""
        ...


_Stateful = PairState | AddressState


class MemoryLoginLimits:
    """The limiter's state in this process's memory, under one lock. Entries are kept in the
    order they last changed, so the stale ones gather at the front, where a sweep starts; past
    ``sweep_above`` entries every stale one is dropped at once (an attack cannot grow it)."""

    blocking = False

    def __init__(self, *, sweep_above: int = 200_000) -> None:
        self._lock = threading.Lock()
        self._pairs: OrderedDict[tuple[str, str], PairState] = OrderedDict()
        self._addresses: OrderedDict[str, AddressState] = OrderedDict()
        self._sweep_above = sweep_above

    def update(self, address: str, name: str, now: float, change: Callable[[LoginState], T]) -> T:
        with self._lock:
            pair = self._pairs.get((address, name)) or PairState()
            entry = self._addresses.get(address) or AddressState()
            result = change(LoginState(pair, entry))
            _keep(self._pairs, (address, name), pair)
            _keep(self._addresses, address, entry)
            if len(self._pairs) + len(self._addresses) > self._sweep_above:
                _drop_stale(self._pairs, now, None)
                _drop_stale(self._addresses, now, None)
            return result

    def sweep(self, now: float, limit: int) -> int:
        with self._lock:
            return _drop_stale(self._pairs, now, limit) + _drop_stale(self._addresses, now, limit)


def _keep(table: OrderedDict[Any, Any], key: object, state: _Stateful) -> None:
    """Under the lock: store a changed state at the back, or forget an empty one."""
    if state.empty():
        table.pop(key, None)
    else:
        table[key] = state
        table.move_to_end(key)


def _drop_stale(table: OrderedDict[Any, Any], now: float, limit: int | None) -> int:
    """Under the lock: the stale entries from the front, up to ``limit``; None: all of them,
    wherever they are (the full pass, only past ``sweep_above``)."""
    if limit is None:
        stale = [k for k, s in table.items() if s.stale() <= now]
    else:
        stale = []
        for k, s in table.items():
            if len(stale) >= limit or s.stale() > now:
                break
            stale.append(k)
    for k in stale:
        del table[k]
    return len(stale)
