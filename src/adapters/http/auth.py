"""HTTP authentication as GWS does it: Basic credentials, then a session cookie; optional CSRF.

* A request with a valid session cookie (``JSESSIONID``) is that session's agent.
* Otherwise ``Authorization: Basic`` is checked against the agent directory (argon2, run off
  the event loop); success opens a session and sets the cookie. Verified credentials are cached
  for a few minutes (by their SHA-256), so clients that send Basic on every request do not pay
  argon2 every time.
* Failed logins are limited (``LoginLimiter``) per client address and name, with exponential
  back-off, and per client address across all names (a budget per window); over a limit: 429
  with ``Retry-After``. The client address is the peer, or, when the peer is a trusted proxy,
  what its ``X-Forwarded-For`` says (``client_address``).
* At most a few password verifications run at once (``VerificationSlots``); one more gets 503
  with ``Retry-After``, so logins never spend more than that many cores.
* CSRF (optional, GWS ``enableCsrfProtection``): every GET answers ``X-CSRF-HEADER:
  X-CSRF-TOKEN`` and ``X-CSRF-TOKEN: <token>``; a state-changing request must send that header
  with the session's token, else 403 "Missing or invalid Csrf token".
* Sessions and the limiter's counts live in a storage (``sessions.py``): this process's memory
  by default; the server keeps them in its database, so that every process behind a load
  balancer shares them (a cookie made by one is valid on all, a logout ends it on all, failures
  on one count on all). The verification slots and the credential cache stay per process: they
  ration and save this process's CPU.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from interactions_core.errors import Unavailable

from ..eventlog import event
from .sessions import (
    LoginLimits,
    LoginState,
    MemoryLoginLimits,
    MemorySessions,
    SessionLimits,
    SessionStore,
    session_key,
)

_T = TypeVar("_T")
_log = logging.getLogger(__name__)

SESSION_COOKIE = "JSESSIONID"
CSRF_HEADER = "X-CSRF-TOKEN"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AuthError(Exception):
    def __init__(
        self, status: int, description: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.headers = dict(headers or {})


@dataclass
class AuthResult:
    agent_id: str
    session_id: str
    new_session: bool
    csrf_token: str


# --- the client address ---------------------------------------------------------------------


def parse_trusted_proxies(entries: Iterable[str | Network]) -> tuple[Network, ...]:
    """Addresses or CIDR networks (``10.0.0.7``, ``10.0.0.0/8``, ``::1``); ``ValueError`` names
    the first entry that is neither."""
    networks: list[Network] = []
    for entry in entries:
        if isinstance(entry, ipaddress.IPv4Network | ipaddress.IPv6Network):
            networks.append(entry)
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(networks)


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as a peer or an ``X-Forwarded-For`` entry gives it (``1.2.3.4``,
    ``1.2.3.4:5678``, ``::1``, ``[::1]:5678``), or None."""
    value = value.strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _is_trusted(value: str | None, trusted: Sequence[Network]) -> bool:
    if not value or not trusted:
        return False
    ip = _ip(value)
    return ip is not None and any(ip in network for network in trusted)


def client_address(
    peer: str | None, headers: Mapping[str, str], trusted: Sequence[Network]
) -> str | None:
    """The client a request comes from: the peer, unless the peer is a trusted proxy; then the
    right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy (each proxy appends
    the address it saw; what is left of it the client could have written). All entries trusted:
    the left-most. An entry that is not an IP address, or no header: the peer.

    ``headers`` has lower-case names; several ``X-Forwarded-For`` lines are one comma-separated
    list. The same rule as uvicorn's ``ProxyHeadersMiddleware``, so applying it to an address
    uvicorn already rewrote changes nothing.
    """
    if not _is_trusted(peer, trusted):
        return peer
    forwarded = [e.strip() for e in headers.get("x-forwarded-for", "").split(",")]
    forwarded = [e for e in forwarded if e]
    if not forwarded:
        return peer
    chosen = next((e for e in reversed(forwarded) if not _is_trusted(e, trusted)), forwarded[0])
    ip = _ip(chosen)
    return str(ip) if ip is not None else peer


def limit_key(address: str) -> str:
    """What failures are counted by: the address; an IPv6 address by its /64 (one host usually
    has a whole /64), an IPv4-mapped IPv6 address as the IPv4 one."""
    ip = _ip(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip) if ip is not None else address


# --- the failed-login limiter ---------------------------------------------------------------


def _too_many(retry_after: float) -> AuthError:
    seconds = max(1, math.ceil(retry_after))
    return AuthError(429, "Too many failed logins; try again later", {"Retry-After": str(seconds)})


class LoginLimiter:
    """Failed logins, per (client address, name) and per client address.

    * (address, name): the first ``max_failures`` failures are free (typos); each further one
      blocks that pair for ``backoff`` seconds, doubling up to ``backoff_max``. Once in back-off,
      one verification at a time. A pair is forgotten ``window`` seconds after its last failure
      (or the end of its back-off, if later), and at once on a success.
    * address: at most ``address_max_failures`` failures (default ``6 * max_failures``) in the
      last ``window`` seconds, whatever the names; then every login from it waits.

    Verifications in flight count as failures until they end, so concurrent requests cannot
    overshoot a limit. ``begin`` raises the 429; each ``begin`` is matched by one ``finish``.
    An in-flight verification is a lease of ``in_flight_lease`` seconds: one whose process
    died before ``finish`` stops counting when its lease ends.

    The rules are here; the state is in ``storage`` (``sessions.LoginLimits``: in memory by
    default, or in the database, shared by every process on it). Each ``begin`` and
    ``finish`` is one atomic ``storage.update``, so two processes cannot both slip under a
    limit. ``now`` is wall-clock time (every process must read the same clock). ``begin`` and
    ``finish`` block when the storage does (``storage.blocking``).
    """

    def __init__(
        self,
        *,
        max_failures: int = 5,
        window: float = 900.0,
        backoff: float = 5.0,
        backoff_max: float = 300.0,
        address_max_failures: int | None = None,
        in_flight_lease: float = 60.0,
        storage: LoginLimits | None = None,
    ) -> None:
        if max_failures < 1:
            raise ValueError(f"max_failures must be >= 1, not {max_failures!r}")
        if not (window > 0 and backoff > 0 and in_flight_lease > 0):
            raise ValueError("window, backoff and in_flight_lease must be > 0 seconds")
        if address_max_failures is not None and address_max_failures < 1:
            raise ValueError(f"address_max_failures must be >= 1, not {address_max_failures!r}")
        self.max_failures = max_failures
        self.window = window
        self.backoff = backoff
        self.backoff_max = max(backoff_max, backoff)
        self.address_max_failures = address_max_failures or 6 * max_failures
        self.in_flight_lease = in_flight_lease
        self.storage: LoginLimits = storage if storage is not None else MemoryLoginLimits()

    def begin(self, address: str, name: str, now: float) -> None:
        """Admit one verification for ``name`` from ``address``, or raise ``AuthError`` 429."""
        self.storage.update(limit_key(address), name, now, lambda s: self._begin(s, now))

    def finish(self, address: str, name: str, now: float, ok: bool | None) -> None:
        """End what ``begin`` admitted: ``True`` succeeded, ``False`` failed, ``None`` was not
        tried (no slot free)."""
        self.storage.update(limit_key(address), name, now, lambda s: self._finish(s, now, ok))

    def _begin(self, state: LoginState, now: float) -> None:
        state.drop_expired_leases(now)
        pair, entry = state.pair, state.address
        if not pair.in_flight and now >= pair.expires:
            pair.failures, pair.blocked_until, pair.expires = 0, 0.0, 0.0
        if now < pair.blocked_until:
            raise _too_many(pair.blocked_until - now)
        if pair.in_flight and pair.failures + len(pair.in_flight) >= self.max_failures:
            raise _too_many(1)
        times = entry.failures
        horizon = now - self.window
        while times and times[0] <= horizon:
            times.pop(0)
        over = len(times) + len(entry.in_flight) - self.address_max_failures
        if over >= 0:
            # The oldest failures have to leave the window first.
            raise _too_many(times[over] + self.window - now if over < len(times) else 1)
        lease = now + self.in_flight_lease
        pair.in_flight.append(lease)
        entry.in_flight.append(lease)

    def _finish(self, state: LoginState, now: float, ok: bool | None) -> None:
        pair, entry = state.pair, state.address
        state.end_one_lease(pair.in_flight)
        state.end_one_lease(entry.in_flight)
        if ok is True:
            pair.failures, pair.blocked_until = 0, 0.0
        elif ok is False:
            pair.failures += 1
            excess = pair.failures - self.max_failures
            if excess >= 0:
                delay = min(self.backoff * 2.0 ** min(excess, 64), self.backoff_max)
                pair.blocked_until = now + delay
            pair.expires = max(now, pair.blocked_until) + self.window
            state.add_failure(entry.failures, now, self.address_max_failures)
            entry.expires = max(entry.expires, now + self.window)


class VerificationSlots:
    """A global cap on password verifications at once (each costs a core for argon2's time):
    ``try_acquire`` never waits; ``peak`` is the most ever held together."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self.in_use = 0
        self.peak = 0

    def try_acquire(self) -> bool:
        with self._lock:
            if self.in_use >= self.limit:
                return False
            self.in_use += 1
            self.peak = max(self.peak, self.in_use)
            return True

    def release(self) -> None:
        with self._lock:
            self.in_use = max(0, self.in_use - 1)


class _Ticket:
    """Who cleans up after a verification: the worker thread once it starts, or the caller if
    it gave up (cancelled) before the thread began."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = "waiting"

    def start(self) -> bool:
        with self._lock:
            if self._state != "waiting":
                return False
            self._state = "running"
            return True

    def abandon(self) -> bool:
        with self._lock:
            if self._state != "waiting":
                return False
            self._state = "abandoned"
            return True


BUSY = "Too many logins in progress; try again shortly"


SWEEP_INTERVAL = 2.0
"""Seconds between two sweeps of expired sessions and stale limiter entries (per process)."""
SWEEP_LIMIT = 1000
"""At most this many rows per table per sweep: a sweep's cost is bounded whatever piled up."""

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


class HttpAuth:
    """Authentication of the HTTP API and the CometD handshake (see the module docstring).

    Sessions and the login limits are kept by ``sessions`` (``sessions.SessionStore``) and
    ``login_limits`` (``sessions.LoginLimits``): in this process's memory unless given, or in
    the database, so that every server process on it shares them. Calls to a storage that
    blocks run on a worker thread. A storage that is unavailable (the database is down) makes
    the request a 503 with ``Retry-After``, never a 500 and never a wrong 401.

    ``clock``: wall-clock seconds (``time.time``; injectable for tests). It must be the same
    clock in every process sharing a storage: a monotonic clock is per process.
    """

    def __init__(
        self,
        verify: Callable[[str, str], bool],
        *,
        csrf: bool = False,
        max_failures: int = 5,
        window: float = 900.0,
        backoff: float = 5.0,
        backoff_max: float = 300.0,
        address_max_failures: int | None = None,
        max_concurrent_verifications: int = 4,
        trusted_proxies: Iterable[str | Network] = (),
        session_ttl: float = 8 * 3600,
        max_sessions: int = 100_000,
        max_sessions_per_agent: int = 32,
        session_touch_interval: float | None = None,
        credential_cache_ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
        sessions: SessionStore | None = None,
        login_limits: LoginLimits | None = None,
    ) -> None:
        """``session_touch_interval``: how stale a session's recorded last use may get before
        a request records it again (default: a minute, at most 1 % of the TTL); an in-memory
        storage records every use anyway."""
        if max_concurrent_verifications < 1:
            raise ValueError("max_concurrent_verifications must be >= 1")
        self._verify = verify
        self.csrf = csrf
        self.limiter = LoginLimiter(
            max_failures=max_failures,
            window=window,
            backoff=backoff,
            backoff_max=backoff_max,
            address_max_failures=address_max_failures,
            storage=login_limits,
        )
        self.slots = VerificationSlots(max_concurrent_verifications)
        self.trusted_proxies = parse_trusted_proxies(trusted_proxies)
        if session_touch_interval is None:
            session_touch_interval = min(60.0, session_ttl / 100)
        self.session_limits = SessionLimits(
            ttl=session_ttl,
            max_sessions=max(1, max_sessions),
            max_per_agent=max(1, max_sessions_per_agent),
            touch_interval=session_touch_interval,
        )
        self.sessions: SessionStore = sessions if sessions is not None else MemorySessions()
        self._cache_ttl = credential_cache_ttl
        self._clock = clock
        self._lock = threading.Lock()
        # Verified credentials (by their SHA-256): per process, as the CPU they save is.
        self._verified: dict[bytes, tuple[str, float]] = {}
        self._next_sweep = -math.inf

    def client_address(self, peer: str | None, headers: Mapping[str, str]) -> str | None:
        return client_address(peer, headers, self.trusted_proxies)

    async def authenticate(
        self,
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        client: str | None,
        *,
        open_session: bool = True,
    ) -> AuthResult:
        """The agent behind a request (headers lower-cased; ``client`` the peer's address), or
        ``AuthError`` 401/429/503.

        ``open_session=False`` (the CometD handshake, which has no cookie to set): Basic
        credentials are checked but no session is opened; the result's ``session_id`` is "".
        """
        try:
            return await self._authenticate(headers, cookies, client, open_session)
        except Unavailable as exc:
            raise _unavailable(exc) from exc

    async def _authenticate(
        self,
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        client: str | None,
        open_session: bool,
    ) -> AuthResult:
        now = self._clock()
        credentials = parse_basic(headers.get("authorization"))
        session_id = cookies.get(SESSION_COOKIE)
        # A value that cannot be one of ours is not looked up (no database round trip).
        if session_id and _SESSION_ID.fullmatch(session_id):
            session = await self._sessions(
                self.sessions.get, session_key(session_id), now, self.session_limits
            )
            # Credentials for another agent than the session's win: a shared cookie jar
            # must never act as the wrong agent.
            if session is not None and (credentials is None or credentials[0] == session.agent_id):
                return AuthResult(session.agent_id, session_id, False, session.csrf_token)
        if credentials is None:
            raise AuthError(401, "Authentication required", {"WWW-Authenticate": _CHALLENGE})
        agent_id, password = credentials
        address = self.client_address(client, headers) or ""
        try:
            await self._limits(self.limiter.begin, address, agent_id, now)
        except AuthError as exc:
            if exc.status == 429:
                _log_refused(agent_id, address, "too many failed logins")
            raise
        if not await self._verified_credentials(address, agent_id, password, now):
            _log_refused(agent_id, address, "invalid credentials")
            raise AuthError(401, "Invalid credentials", {"WWW-Authenticate": _CHALLENGE})
        if not open_session:
            return AuthResult(agent_id, "", False, "")
        return await self.open_session(agent_id)

    async def open_session(self, agent_id: str) -> AuthResult:
        """A new session for ``agent_id`` (already authenticated); ``Unavailable`` when its
        storage is."""
        session_id = secrets.token_urlsafe(32)
        csrf_token = secrets.token_urlsafe(24)

        def store() -> None:
            now = self._clock()
            self.sessions.open(
                session_key(session_id), agent_id, csrf_token, now, self.session_limits
            )
            self._sweep_if_due(now)

        await self._sessions(store)
        return AuthResult(agent_id, session_id, True, csrf_token)

    @property
    def session_count(self) -> int:
        """Sessions held (expired ones not yet swept included): for tests and metrics. Asks
        the storage, so it blocks when the storage does."""
        return self.sessions.count()

    def check_csrf(self, method: str, headers: Mapping[str, str], result: AuthResult) -> None:
        if not self.csrf or method.upper() in SAFE_METHODS:
            return
        given = headers.get(CSRF_HEADER.lower(), "")
        # A session opened by this very request has no token the client could know.
        if result.new_session or not hmac.compare_digest(given, result.csrf_token):
            raise AuthError(403, "Missing or invalid Csrf token")

    async def end_session(self, session_id: str) -> None:
        """Logout: the session is gone from the storage when this returns, so the very next
        request with its cookie is refused by every process. ``Unavailable`` when the storage
        is (the caller answers 503: the session may still be open)."""
        if session_id:
            await self._sessions(self.sessions.end, session_key(session_id))

    async def _sessions(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)``, on a worker thread when the session storage blocks."""
        if not self.sessions.blocking:
            return fn(*args)
        return await anyio.to_thread.run_sync(fn, *args)

    async def _limits(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)``, on a worker thread when the limiter's storage blocks."""
        if not self.limiter.storage.blocking:
            return fn(*args)
        return await anyio.to_thread.run_sync(fn, *args)

    def _sweep_if_due(self, now: float) -> None:
        """At most every ``SWEEP_INTERVAL`` seconds (per process), at most ``SWEEP_LIMIT``
        rows per table: expired sessions and stale limiter entries. Called where a storage
        call already runs (opening a session, ending a verification), on its thread."""
        with self._lock:
            if now < self._next_sweep:
                return
            self._next_sweep = now + SWEEP_INTERVAL
        try:
            self.sessions.sweep(now, self.session_limits, SWEEP_LIMIT)
            self.limiter.storage.sweep(now, SWEEP_LIMIT)
        except Unavailable as exc:
            # Housekeeping: the request it rides on must not fail for it (the next one
            # sweeps again).
            _log.warning("sweeping sessions and login limits failed: %s", exc.description)

    async def _verified_credentials(
        self, address: str, agent_id: str, password: str, now: float
    ) -> bool:
        """After ``limiter.begin``: the answer, with the matching ``limiter.finish`` done."""
        key = hashlib.sha256(f"{agent_id}\x00{password}".encode()).digest()
        with self._lock:
            cached = self._verified.get(key)
        if cached is not None and cached[1] > now and cached[0] == agent_id:
            await self._limits(self.limiter.finish, address, agent_id, now, True)
            return True
        if not self.slots.try_acquire():
            await self._limits(self.limiter.finish, address, agent_id, now, None)
            raise AuthError(503, BUSY, {"Retry-After": "1"})
        ticket = _Ticket()

        def run() -> bool:
            # On the worker thread: the outcome is recorded even if the request is cancelled
            # meanwhile, and the slot is held exactly as long as the CPU is used.
            if not ticket.start():
                return False
            ok: bool | None = None
            try:
                ok = bool(self._verify(agent_id, password))
                return ok
            finally:
                self.slots.release()
                finished = self._clock()
                self.limiter.finish(address, agent_id, finished, ok)
                # Failures are what fill the limiter's tables: sweep where they grow.
                self._sweep_if_due(finished)

        try:
            ok = await anyio.to_thread.run_sync(run)
        finally:
            if ticket.abandon():
                # Cancelled before the thread began: nothing was tried. Shielded, so the
                # storage call (on a thread, if it blocks) completes despite the cancellation.
                self.slots.release()
                with anyio.CancelScope(shield=True):
                    await self._limits(self.limiter.finish, address, agent_id, self._clock(), None)
        if ok:
            with self._lock:
                self._verified[key] = (agent_id, now + self._cache_ttl)
                if len(self._verified) > 10_000:
                    self._verified = {k: v for k, v in self._verified.items() if v[1] > now}
        return ok


def _log_refused(agent_id: str, address: str, reason: str) -> None:
    """One WARNING line per refused login, for the operator (a guesser shows as a run of
    them), as ``adapters.eventlog.event`` writes it: the name is the client's input, quoted
    when it is not a plain token, so a newline in it cannot forge a line; never the password."""
    fields = {"agent": agent_id[:64], "address": address or "-", "reason": reason}
    event(_log, logging.WARNING, "login refused", fields)


def _unavailable(exc: Unavailable) -> AuthError:
    """The storage of sessions or limits is down: 503, and the client may simply retry (its
    session, if any, is not lost; a 401 would make it log in again for nothing)."""
    return AuthError(503, exc.description, {"Retry-After": "1"})


_CHALLENGE = 'Basic realm="interactions", charset="UTF-8"'


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``Authorization: Basic base64(id:password)`` (RFC 7617), or None."""
    if not header or len(header) > 4096:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    agent_id, sep, password = decoded.partition(":")
    if not sep or not agent_id:
        return None
    return agent_id, password
