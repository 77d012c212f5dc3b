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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio

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
class Session:
    agent_id: str
    csrf_token: str
    expires: float


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


@dataclass
class _Pair:
    failures: int = 0
    blocked_until: float = 0.0
    expires: float = 0.0
    pending: int = 0


@dataclass
class _Address:
    times: deque[float] = field(default_factory=deque)
    pending: int = 0


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
    """

    def __init__(
        self,
        *,
        max_failures: int = 5,
        window: float = 900.0,
        backoff: float = 5.0,
        backoff_max: float = 300.0,
        address_max_failures: int | None = None,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.backoff = backoff
        self.backoff_max = max(backoff_max, backoff)
        self.address_max_failures = address_max_failures or 6 * max_failures
        self._lock = threading.Lock()
        self._pairs: dict[tuple[str, str], _Pair] = {}
        self._addresses: dict[str, _Address] = {}

    def begin(self, address: str, name: str, now: float) -> None:
        """Admit one verification for ``name`` from ``address``, or raise ``AuthError`` 429."""
        key = limit_key(address)
        with self._lock:
            pair = self._pairs.get((key, name))
            if pair is not None and pair.pending == 0 and now >= pair.expires:
                pair = self._pairs[(key, name)] = _Pair()
            if pair is not None:
                if now < pair.blocked_until:
                    raise _too_many(pair.blocked_until - now)
                if pair.pending and pair.failures + pair.pending >= self.max_failures:
                    raise _too_many(1)
            entry = self._addresses.get(key)
            if entry is not None:
                times = entry.times
                while times and times[0] <= now - self.window:
                    times.popleft()
                over = len(times) + entry.pending - self.address_max_failures
                if over >= 0:
                    # The oldest failures have to leave the window first.
                    raise _too_many(times[over] + self.window - now if over < len(times) else 1)
            if pair is None:
                pair = self._pairs[(key, name)] = _Pair()
            if entry is None:
                entry = self._addresses[key] = _Address()
            pair.pending += 1
            entry.pending += 1

    def finish(self, address: str, name: str, now: float, ok: bool | None) -> None:
        """End what ``begin`` admitted: ``True`` succeeded, ``False`` failed, ``None`` was not
        tried (no slot free)."""
        key = limit_key(address)
        with self._lock:
            pair = self._pairs.get((key, name))
            entry = self._addresses.get(key)
            if pair is not None:
                pair.pending = max(0, pair.pending - 1)
            if entry is not None:
                entry.pending = max(0, entry.pending - 1)
            if ok is True and pair is not None:
                pair.failures, pair.blocked_until = 0, 0.0
            elif ok is False:
                if pair is None:
                    pair = self._pairs[(key, name)] = _Pair()
                if entry is None:
                    entry = self._addresses[key] = _Address()
                pair.failures += 1
                excess = pair.failures - self.max_failures
                if excess >= 0:
                    delay = min(self.backoff * 2.0 ** min(excess, 64), self.backoff_max)
                    pair.blocked_until = now + delay
                pair.expires = max(now, pair.blocked_until) + self.window
                entry.times.append(now)
                while len(entry.times) > self.address_max_failures:
                    entry.times.popleft()
            if pair is not None and pair.failures == 0 and pair.pending == 0:
                self._pairs.pop((key, name), None)
            if entry is not None and not entry.times and entry.pending == 0:
                self._addresses.pop(key, None)
            if len(self._pairs) + len(self._addresses) > 200_000:
                self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._pairs = {k: p for k, p in self._pairs.items() if p.pending or now < p.expires}
        horizon = now - self.window
        self._addresses = {
            k: a
            for k, a in self._addresses.items()
            if a.pending or (a.times and a.times[-1] > horizon)
        }


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


class HttpAuth:
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
        credential_cache_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._verify = verify
        self.csrf = csrf
        self.limiter = LoginLimiter(
            max_failures=max_failures,
            window=window,
            backoff=backoff,
            backoff_max=backoff_max,
            address_max_failures=address_max_failures,
        )
        self.slots = VerificationSlots(max_concurrent_verifications)
        self.trusted_proxies = parse_trusted_proxies(trusted_proxies)
        self._session_ttl = session_ttl
        self._cache_ttl = credential_cache_ttl
        self._clock = clock
        self._lock = threading.Lock()
        # Sessions in the order of their last use (the LRU end last). The TTL is the same for
        # all, so the least recently used is also the first to expire: expired ones are swept
        # from the front, and a full table (or a full agent) loses its least recently used
        # session. A client that sends Basic on every request and ignores the cookie thus
        # costs at most ``max_sessions_per_agent`` entries, not one per request for 8 hours.
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._per_agent: dict[str, OrderedDict[str, None]] = {}
        self._max_sessions = max(1, max_sessions)
        self._max_per_agent = max(1, max_sessions_per_agent)
        self._verified: dict[bytes, tuple[str, float]] = {}

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
        now = self._clock()
        credentials = parse_basic(headers.get("authorization"))
        session_id = cookies.get(SESSION_COOKIE)
        if session_id:
            with self._lock:
                session = self._sessions.get(session_id)
                # Credentials for another agent than the session's win: a shared cookie jar
                # must never act as the wrong agent.
                if (
                    session is not None
                    and session.expires > now
                    and (credentials is None or credentials[0] == session.agent_id)
                ):
                    session.expires = now + self._session_ttl
                    self._sessions.move_to_end(session_id)
                    self._per_agent[session.agent_id].move_to_end(session_id)
                    return AuthResult(session.agent_id, session_id, False, session.csrf_token)
        if credentials is None:
            raise AuthError(401, "Authentication required", {"WWW-Authenticate": _CHALLENGE})
        agent_id, password = credentials
        address = self.client_address(client, headers) or ""
        self.limiter.begin(address, agent_id, now)
        if not await self._verified_credentials(address, agent_id, password, now):
            raise AuthError(401, "Invalid credentials", {"WWW-Authenticate": _CHALLENGE})
        if not open_session:
            return AuthResult(agent_id, "", False, "")
        return self.open_session(agent_id)

    def open_session(self, agent_id: str) -> AuthResult:
        session_id = secrets.token_urlsafe(32)
        csrf_token = secrets.token_urlsafe(24)
        with self._lock:
            now = self._clock()
            self._sweep(now)
            mine = self._per_agent.setdefault(agent_id, OrderedDict())
            while len(mine) >= self._max_per_agent:
                self._drop(next(iter(mine)))
            while len(self._sessions) >= self._max_sessions:
                self._drop(next(iter(self._sessions)))
            self._sessions[session_id] = Session(agent_id, csrf_token, now + self._session_ttl)
            self._per_agent.setdefault(agent_id, OrderedDict())[session_id] = None
        return AuthResult(agent_id, session_id, True, csrf_token)

    @property
    def session_count(self) -> int:
        """Sessions held (expired ones not yet swept included): for tests and metrics."""
        return len(self._sessions)

    def check_csrf(self, method: str, headers: Mapping[str, str], result: AuthResult) -> None:
        if not self.csrf or method.upper() in SAFE_METHODS:
            return
        given = headers.get(CSRF_HEADER.lower(), "")
        # A session opened by this very request has no token the client could know.
        if result.new_session or not hmac.compare_digest(given, result.csrf_token):
            raise AuthError(403, "Missing or invalid Csrf token")

    def end_session(self, session_id: str) -> None:
        with self._lock:
            self._drop(session_id)

    def _drop(self, session_id: str) -> None:
        """Under the lock: forget one session, and its agent when it was the last."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        mine = self._per_agent.get(session.agent_id)
        if mine is not None:
            mine.pop(session_id, None)
            if not mine:
                del self._per_agent[session.agent_id]

    async def _verified_credentials(
        self, address: str, agent_id: str, password: str, now: float
    ) -> bool:
        """After ``limiter.begin``: the answer, with the matching ``limiter.finish`` done."""
        key = hashlib.sha256(f"{agent_id}\x00{password}".encode()).digest()
        with self._lock:
            cached = self._verified.get(key)
        if cached is not None and cached[1] > now and cached[0] == agent_id:
            self.limiter.finish(address, agent_id, now, True)
            return True
        if not self.slots.try_acquire():
            self.limiter.finish(address, agent_id, now, None)
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
                self.limiter.finish(address, agent_id, self._clock(), ok)

        try:
            ok = await anyio.to_thread.run_sync(run)
        finally:
            if ticket.abandon():
                self.slots.release()
                self.limiter.finish(address, agent_id, self._clock(), None)
        if ok:
            with self._lock:
                self._verified[key] = (agent_id, now + self._cache_ttl)
                if len(self._verified) > 10_000:
                    self._verified = {k: v for k, v in self._verified.items() if v[1] > now}
        return ok

    def _sweep(self, now: float) -> None:
        """Under the lock: drop the expired sessions, all at the front (see ``__init__``)."""
        while self._sessions:
            first = next(iter(self._sessions.values()))
            if first.expires > now:
                return
            self._drop(next(iter(self._sessions)))


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
