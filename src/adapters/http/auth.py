"""HTTP authentication as GWS does it: Basic credentials, then a session cookie; optional CSRF.

* A request with a valid session cookie (``JSESSIONID``) is that session's agent.
* Otherwise ``Authorization: Basic`` is checked against the agent directory (argon2, run off
  the event loop); success opens a session and sets the cookie. Verified credentials are cached
  for a few minutes (by their SHA-256), so clients that send Basic on every request do not pay
  argon2 every time.
* Failed logins are rate-limited per client address and agent id: after ``max_failures`` in
  ``window`` seconds, 429 with ``Retry-After``.
* CSRF (optional, GWS ``enableCsrfProtection``): every GET answers ``X-CSRF-HEADER:
  X-CSRF-TOKEN`` and ``X-CSRF-TOKEN: <token>``; a state-changing request must send that header
  with the session's token, else 403 "Missing or invalid Csrf token".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import anyio

SESSION_COOKIE = "JSESSIONID"
CSRF_HEADER = "X-CSRF-TOKEN"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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


@dataclass
class _Failures:
    times: deque[float] = field(default_factory=deque)


class HttpAuth:
    def __init__(
        self,
        verify: Callable[[str, str], bool],
        *,
        csrf: bool = False,
        max_failures: int = 5,
        window: float = 60.0,
        session_ttl: float = 8 * 3600,
        credential_cache_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._verify = verify
        self.csrf = csrf
        self._max_failures = max_failures
        self._window = window
        self._session_ttl = session_ttl
        self._cache_ttl = credential_cache_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._verified: dict[bytes, tuple[str, float]] = {}
        self._failures: dict[tuple[str, str], _Failures] = {}

    async def authenticate(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], client: str | None
    ) -> AuthResult:
        """The agent behind a request (headers lower-cased), or ``AuthError`` 401/429."""
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
                    return AuthResult(session.agent_id, session_id, False, session.csrf_token)
        if credentials is None:
            raise AuthError(401, "Authentication required", {"WWW-Authenticate": _CHALLENGE})
        agent_id, password = credentials
        self._check_rate(client or "", agent_id, now)
        if not await self._verified_credentials(agent_id, password, now):
            self._record_failure(client or "", agent_id, now)
            raise AuthError(401, "Invalid credentials", {"WWW-Authenticate": _CHALLENGE})
        return self.open_session(agent_id)

    def open_session(self, agent_id: str) -> AuthResult:
        session_id = secrets.token_urlsafe(32)
        csrf_token = secrets.token_urlsafe(24)
        with self._lock:
            self._sessions[session_id] = Session(
                agent_id, csrf_token, self._clock() + self._session_ttl
            )
            if len(self._sessions) > 100_000:
                self._sweep()
        return AuthResult(agent_id, session_id, True, csrf_token)

    def check_csrf(self, method: str, headers: Mapping[str, str], result: AuthResult) -> None:
        if not self.csrf or method.upper() in SAFE_METHODS:
            return
        given = headers.get(CSRF_HEADER.lower(), "")
        # A session opened by this very request has no token the client could know.
        if result.new_session or not hmac.compare_digest(given, result.csrf_token):
            raise AuthError(403, "Missing or invalid Csrf token")

    def end_session(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    async def _verified_credentials(self, agent_id: str, password: str, now: float) -> bool:
        key = hashlib.sha256(f"{agent_id}\x00{password}".encode()).digest()
        with self._lock:
            cached = self._verified.get(key)
        if cached is not None and cached[1] > now and cached[0] == agent_id:
            return True
        ok = await anyio.to_thread.run_sync(self._verify, agent_id, password)
        if ok:
            with self._lock:
                self._verified[key] = (agent_id, now + self._cache_ttl)
                if len(self._verified) > 10_000:
                    self._verified = {k: v for k, v in self._verified.items() if v[1] > now}
        return bool(ok)

    def _check_rate(self, client: str, agent_id: str, now: float) -> None:
        with self._lock:
            failures = self._failures.get((client, agent_id))
            if failures is None:
                return
            while failures.times and failures.times[0] <= now - self._window:
                failures.times.popleft()
            if len(failures.times) >= self._max_failures:
                retry = int(failures.times[0] + self._window - now) + 1
                raise AuthError(
                    429, "Too many failed logins; try again later", {"Retry-After": str(retry)}
                )

    def _record_failure(self, client: str, agent_id: str, now: float) -> None:
        with self._lock:
            self._failures.setdefault((client, agent_id), _Failures()).times.append(now)
            if len(self._failures) > 100_000:
                horizon = now - self._window
                self._failures = {
                    k: v for k, v in self._failures.items() if v.times and v.times[-1] > horizon
                }

    def _sweep(self) -> None:
        now = self._clock()
        self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}


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
