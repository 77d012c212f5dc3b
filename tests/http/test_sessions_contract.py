"""The session and login-limit storages (``adapters.http.sessions``) against one contract: in
memory, SQLite and PostgreSQL pass the same tests.

``SessionStorageContract`` is subclassed per backend; ``make()`` opens a storage and ``peer()``
a second handle on the same data, as another server process would have it (in memory: the same
objects; SQLite: a second store on the file; PostgreSQL: a second store, with its own pool, on
the database). Time is a number handed in (wall-clock seconds), so nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.http.auth import AuthError, HttpAuth, LoginLimiter
from adapters.http.sessions import (
    LoginLimits,
    MemoryLoginLimits,
    MemorySessions,
    SessionLimits,
    SessionStore,
    session_key,
)
from adapters.sqlite import SqliteStore
from adapters.sqlite.sessions import SqliteLoginLimits, SqliteSessions

T0 = 1_750_000_000.0  # a wall-clock time: the storages compare what they are given
LIMITS = SessionLimits(ttl=100.0, max_sessions=1000, max_per_agent=32, touch_interval=0.0)


@dataclass
class Storage:
    sessions: SessionStore
    limits: LoginLimits
    rows: Callable[[], list[tuple[Any, ...]]]  # what the sessions table holds, as stored


def key(n: int | str) -> bytes:
    return session_key(f"session-{n}")


class SessionStorageContract:
    """Every storage passes these. Subclasses define ``make`` and ``peer``."""

    def make(self) -> Storage:
        raise NotImplementedError

    def peer(self) -> Storage:
        """Another handle on the data of ``make()``'s storage (another process)."""
        raise NotImplementedError

    # --- sessions ---------------------------------------------------------------------

    def test_an_open_session_is_found_and_an_unknown_one_is_not(self) -> None:
        s = self.make().sessions
        s.open(key(1), "alice", "csrf-1", T0, LIMITS)
        found = s.get(key(1), T0 + 1, LIMITS)
        assert found is not None
        assert (found.agent_id, found.csrf_token) == ("alice", "csrf-1")
        assert found.expires == pytest.approx(T0 + 1 + LIMITS.ttl)
        assert s.get(key(2), T0 + 1, LIMITS) is None
        assert s.count() == 1

    def test_a_session_expires_ttl_after_its_last_use(self) -> None:
        s = self.make().sessions
        s.open(key(1), "alice", "c", T0, LIMITS)
        s.open(key(2), "alice", "c", T0, LIMITS)
        assert s.get(key(1), T0 + 90, LIMITS) is not None  # used: slides
        assert s.get(key(1), T0 + 180, LIMITS) is not None
        assert s.get(key(2), T0 + 100, LIMITS) is None  # unused for the ttl: gone
        assert s.get(key(1), T0 + 280, LIMITS) is None

    def test_a_use_is_recorded_at_least_every_touch_interval(self) -> None:
        limits = SessionLimits(ttl=100.0, max_sessions=10, max_per_agent=10, touch_interval=30)
        s = self.make().sessions
        s.open(key(1), "alice", "c", T0, limits)
        for step in range(1, 10):  # a request every 40 s: each records its use
            assert s.get(key(1), T0 + 40 * step, limits) is not None
        # Requests every 10 s: some are not recorded, but never more than 30 s of them.
        now = T0 + 360
        for _ in range(20):
            now += 10
            assert s.get(key(1), now, limits) is not None
        assert s.get(key(1), now + 100 - 30, limits) is not None

    def test_an_ended_session_is_gone_and_ending_twice_is_harmless(self) -> None:
        s = self.make().sessions
        s.open(key(1), "alice", "c", T0, LIMITS)
        s.end(key(1))
        s.end(key(1))
        s.end(key(99))
        assert s.get(key(1), T0 + 1, LIMITS) is None
        assert s.count() == 0

    def test_an_agent_keeps_its_most_recently_used_sessions(self) -> None:
        limits = SessionLimits(ttl=1000.0, max_sessions=100, max_per_agent=3)
        s = self.make().sessions
        for n in range(3):
            s.open(key(n), "alice", "c", T0 + n, limits)
        assert s.get(key(0), T0 + 10, limits) is not None  # used: the most recent now
        s.open(key(3), "alice", "c", T0 + 11, limits)  # full: the least recent (1) goes
        s.open(key("bob"), "bob", "c", T0 + 12, limits)  # another agent: its own bound
        kept = {n for n in range(4) if s.get(key(n), T0 + 20, limits) is not None}
        assert kept == {0, 2, 3}
        assert s.get(key("bob"), T0 + 20, limits) is not None
        assert s.count() == 4

    def test_the_table_keeps_its_most_recently_used_sessions(self) -> None:
        limits = SessionLimits(ttl=1000.0, max_sessions=4, max_per_agent=10)
        s = self.make().sessions
        s.open(key("kept"), "keeper", "c", T0, limits)
        for n in range(10):
            s.open(key(n), f"agent{n}", "c", T0 + 1 + 2 * n, limits)
            # A session in use is the most recently used: it survives a full table.
            assert s.get(key("kept"), T0 + 2 + 2 * n, limits) is not None
        assert s.count() == 4
        alive = {n for n in range(10) if s.get(key(n), T0 + 30, limits) is not None}
        assert alive == {7, 8, 9}

    def test_a_sweep_deletes_expired_sessions_longest_unused_first_and_bounded(self) -> None:
        s = self.make().sessions
        for n in range(10):
            s.open(key(n), "alice", "c", T0 + n, LIMITS)
        s.open(key("new"), "bob", "c", T0 + 50, LIMITS)
        assert s.sweep(T0 + 100.5, LIMITS, 100) == 1  # only 0 has expired
        assert s.sweep(T0 + 120, LIMITS, 4) == 4  # 1..9 have: at most 4 go
        assert s.count() == 6
        assert s.get(key(5), T0 + 104, LIMITS) is not None  # not expired then: still there
        assert s.sweep(T0 + 200, LIMITS, 100) == 5  # 6..9 and "new"; 5 was used at 104
        assert s.count() == 1 and s.get(key(5), T0 + 200, LIMITS) is not None

    def test_another_process_sees_a_session_and_its_end_at_once(self) -> None:
        a, b = self.make().sessions, self.peer().sessions
        a.open(key(1), "alice", "csrf", T0, LIMITS)
        found = b.get(key(1), T0 + 1, LIMITS)
        assert found is not None and found.csrf_token == "csrf"
        b.end(key(1))
        assert a.get(key(1), T0 + 2, LIMITS) is None  # the very next lookup

    def test_a_use_in_one_process_slides_the_session_for_all(self) -> None:
        a, b = self.make().sessions, self.peer().sessions
        a.open(key(1), "alice", "c", T0, LIMITS)
        assert b.get(key(1), T0 + 90, LIMITS) is not None
        assert a.get(key(1), T0 + 150, LIMITS) is not None

    def test_session_ids_are_stored_hashed(self) -> None:
        """Through HttpAuth: what the storage holds is the SHA-256 of the cookie, never it."""
        storage = self.make()
        auth = HttpAuth(lambda a, p: True, sessions=storage.sessions, clock=lambda: T0)
        result = asyncio.run(auth.authenticate(basic("alice", "pw"), {}, "192.0.2.1"))
        stored = repr(storage.rows())
        assert result.session_id not in stored
        assert session_key(result.session_id) in {row[0] for row in storage.rows()}

    # --- login limits -----------------------------------------------------------------

    def limiter(self, storage: LoginLimits | None = None, **rules: Any) -> LoginLimiter:
        return LoginLimiter(storage=storage if storage is not None else self.make().limits, **rules)

    def test_back_off_doubles_per_address_and_name(self) -> None:
        limiter = self.limiter(max_failures=5, window=900, backoff=5, backoff_max=60)
        now = T0
        for _ in range(4):
            fail(limiter, "A", "alice", now)
            assert refused(limiter, "A", "alice", now) == 0
        waits = []
        for _ in range(6):
            fail(limiter, "A", "alice", now)
            wait = refused(limiter, "A", "alice", now)
            assert refused(limiter, "A", "alice", now + wait - 0.5) > 0
            waits.append(wait)
            now += wait
        assert waits == [5, 10, 20, 40, 60, 60]
        assert refused(limiter, "B", "alice", now) == 0
        assert refused(limiter, "A", "bob", now) == 0
        limiter.begin("A", "alice", now)
        limiter.finish("A", "alice", now, True)  # a success ends it
        fail(limiter, "A", "alice", now)
        assert refused(limiter, "A", "alice", now) == 0

    def test_a_pair_is_forgotten_after_a_quiet_window(self) -> None:
        limiter = self.limiter(max_failures=2, window=100, backoff=5, backoff_max=60)
        fail(limiter, "A", "alice", T0)
        fail(limiter, "A", "alice", T0)
        assert refused(limiter, "A", "alice", T0 + 4) == 1
        assert refused(limiter, "A", "alice", T0 + 5) == 0
        fail(limiter, "A", "alice", T0 + 5)
        assert refused(limiter, "A", "alice", T0 + 14) == 1
        fail(limiter, "A", "alice", T0 + 115)
        assert refused(limiter, "A", "alice", T0 + 115) == 0

    def test_the_budget_per_address_spans_names(self) -> None:
        limiter = self.limiter(max_failures=5, window=600, address_max_failures=30)
        for i in range(30):
            assert refused(limiter, "A", f"name{i}", T0 + 10 + i) == 0
            fail(limiter, "A", f"name{i}", T0 + 10 + i)
        assert refused(limiter, "A", "name30", T0 + 100) == 510
        assert refused(limiter, "A", "alice", T0 + 100) == 510
        assert refused(limiter, "B", "alice", T0 + 100) == 0
        assert refused(limiter, "A", "alice", T0 + 610) == 0

    def test_verifications_in_flight_count_until_they_end(self) -> None:
        limiter = self.limiter(max_failures=3, address_max_failures=4)
        for _ in range(3):
            limiter.begin("A", "alice", T0)
        assert refused(limiter, "A", "alice", T0) == 1
        limiter.begin("A", "bob", T0)
        assert refused(limiter, "A", "carol", T0) == 1
        for _ in range(3):
            limiter.finish("A", "alice", T0, False)
        limiter.finish("A", "bob", T0, True)
        assert refused(limiter, "A", "alice", T0) == 5
        assert refused(limiter, "A", "carol", T0) == 0

    def test_a_verification_that_never_finishes_stops_counting_when_its_lease_ends(
        self,
    ) -> None:
        """A process that died mid-verification never calls ``finish``."""
        limiter = self.limiter(max_failures=1, address_max_failures=1, in_flight_lease=60)
        limiter.begin("A", "alice", T0)  # and then the process is gone
        assert refused(limiter, "A", "alice", T0 + 59) == 1
        assert refused(limiter, "A", "bob", T0 + 59) == 1  # the address's budget too
        assert refused(limiter, "A", "alice", T0 + 60) == 0

    def test_failures_in_one_process_count_in_another(self) -> None:
        a = self.limiter(max_failures=5, backoff=300, backoff_max=600)
        b = self.limiter(self.peer().limits, max_failures=5, backoff=300, backoff_max=600)
        for n in range(5):
            fail(a if n % 2 else b, "A", "alice", T0 + n)
        assert refused(a, "A", "alice", T0 + 5) == 299
        assert refused(b, "A", "alice", T0 + 5) == 299

    def test_concurrent_logins_in_two_processes_never_overshoot(self) -> None:
        """Twelve verifications begun at once, half through each handle: exactly as many are
        admitted as the pair has free failures; the rest are refused, none slips through."""
        a = self.limiter(max_failures=3)
        b = self.limiter(self.peer().limits, max_failures=3)
        barrier = threading.Barrier(12)

        def attempt(n: int) -> bool:
            barrier.wait(30)
            try:
                (a if n % 2 else b).begin("A", "alice", T0)
            except AuthError:
                return False
            return True

        with ThreadPoolExecutor(12) as pool:
            admitted = sum(pool.map(attempt, range(12)))
        assert admitted == 3
        for _ in range(admitted):
            a.finish("A", "alice", T0, False)
        assert refused(b, "A", "alice", T0) == 5  # three failures: in back-off on both
        assert refused(a, "A", "alice", T0) == 5

    def test_a_refusal_stores_nothing(self) -> None:
        limits = self.make().limits
        limiter = self.limiter(limits, max_failures=1, backoff=10, backoff_max=10)
        fail(limiter, "A", "alice", T0)
        for n in range(5):
            assert refused(limiter, "A", "alice", T0 + n) == 10 - n  # the same back-off
        # Had a refusal left a verification in flight, the pair would still be refused.
        assert refused(limiter, "A", "alice", T0 + 10) == 0

    def test_any_name_a_client_sends_is_counted(self) -> None:
        limiter = self.limiter(max_failures=1)
        long_name = "x" * 3000 + "\u00e9\U0001f600"
        fail(limiter, "A", long_name, T0)
        assert refused(limiter, "A", long_name, T0) == 5
        assert refused(limiter, "A", long_name[:-1], T0) == 0

    def test_a_sweep_deletes_stale_entries_only_and_is_bounded(self) -> None:
        limits = self.make().limits
        limiter = self.limiter(limits, max_failures=5, window=100)
        for n in range(6):
            fail(limiter, f"192.0.2.{n}", "alice", T0)
        limiter.begin("198.51.100.1", "bob", T0 + 50)  # in flight: not stale
        fail(limiter, "198.51.100.2", "carol", T0 + 50)  # failed later: not stale yet
        # 6 stale pairs and 6 stale addresses: at most 4 of each per sweep.
        assert limits.sweep(T0 + 101, 4) == 8
        assert limits.sweep(T0 + 101, 4) == 4
        assert limits.sweep(T0 + 101, 4) == 0
        # What was kept still counts.
        for _ in range(4):
            fail(limiter, "198.51.100.2", "carol", T0 + 102)
        assert refused(limiter, "198.51.100.2", "carol", T0 + 102) == 5

    # --- through HttpAuth ---------------------------------------------------------------

    def auth(self, storage: Storage, clock: Callable[[], float], **options: Any) -> HttpAuth:
        return HttpAuth(
            lambda agent, password: password == agent + "-pw",
            sessions=storage.sessions,
            login_limits=storage.limits,
            clock=clock,
            **options,
        )

    async def test_two_processes_share_cookies_csrf_logout_and_failures(self) -> None:
        now = [T0]
        a = self.auth(self.make(), lambda: now[0], csrf=True, backoff=300, backoff_max=600)
        b = self.auth(self.peer(), lambda: now[0], csrf=True, backoff=300, backoff_max=600)
        opened = await a.authenticate(basic("alice", "alice-pw"), {}, "192.0.2.7")
        cookie = {"JSESSIONID": opened.session_id}
        now[0] += 1
        on_b = await b.authenticate({}, cookie, "192.0.2.7")
        assert (on_b.agent_id, on_b.new_session) == ("alice", False)
        b.check_csrf("POST", {"x-csrf-token": opened.csrf_token}, on_b)  # A's token, on B
        with pytest.raises(AuthError, match="Csrf"):
            b.check_csrf("POST", {"x-csrf-token": "forged"}, on_b)
        await b.end_session(opened.session_id)
        with pytest.raises(AuthError) as gone:
            await a.authenticate({}, cookie, "192.0.2.7")
        assert gone.value.status == 401
        statuses = [
            await status(a if n < 3 else b, basic("alice", "guess"), "192.0.2.7") for n in range(5)
        ]
        assert statuses == [401] * 5
        for auth in (a, b):
            with pytest.raises(AuthError) as waiting:
                await auth.authenticate(basic("alice", "alice-pw"), {}, "192.0.2.7")
            assert waiting.value.status == 429
            assert int(waiting.value.headers["Retry-After"]) == 300

    async def test_blocking_storage_is_never_called_on_the_event_loop(self) -> None:
        storage = self.make()
        loop_thread = threading.get_ident()
        calls: list[tuple[str, int]] = []
        spied = Storage(Spy(storage.sessions, calls), Spy(storage.limits, calls), storage.rows)
        auth = self.auth(spied, lambda: T0)
        opened = await auth.authenticate(basic("alice", "alice-pw"), {}, "192.0.2.7")
        await auth.authenticate({}, {"JSESSIONID": opened.session_id}, "192.0.2.7")
        assert await status(auth, basic("bob", "guess"), "192.0.2.7") == 401
        await auth.end_session(opened.session_id)
        names = {name for name, _ in calls}
        assert {"open", "get", "end", "update"} <= names
        if storage.sessions.blocking:
            assert [name for name, thread in calls if thread == loop_thread] == []


class Spy:
    """A storage that records which thread each call ran on."""

    def __init__(self, inner: Any, calls: list[tuple[str, int]]) -> None:
        self._inner = inner
        self._calls = calls
        self.blocking = inner.blocking

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        def call(*args: Any) -> Any:
            self._calls.append((name, threading.get_ident()))
            return method(*args)

        return call


def basic(agent: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{agent}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}


async def status(auth: HttpAuth, headers: dict[str, str], client: str) -> int:
    try:
        await auth.authenticate(headers, {}, client)
    except AuthError as exc:
        return exc.status
    return 200


def fail(limiter: LoginLimiter, address: str, name: str, now: float) -> None:
    limiter.begin(address, name, now)
    limiter.finish(address, name, now, False)


def refused(limiter: LoginLimiter, address: str, name: str, now: float) -> int:
    """The Retry-After of a 429, or 0 if the attempt is admitted (and then not tried)."""
    try:
        limiter.begin(address, name, now)
    except AuthError as exc:
        assert exc.status == 429
        return int(exc.headers["Retry-After"])
    limiter.finish(address, name, now, None)
    return 0


# --- the backends -------------------------------------------------------------------------


class TestMemoryStorage(SessionStorageContract):
    def make(self) -> Storage:
        sessions, limits = MemorySessions(), MemoryLoginLimits()
        self.shared = Storage(sessions, limits, lambda: [(k,) for k in sessions._sessions])
        return self.shared

    def peer(self) -> Storage:
        return self.shared


class TestSqliteStorage(SessionStorageContract):
    @pytest.fixture(autouse=True)
    def _file(self, tmp_path: Path) -> Iterator[None]:
        self.path = tmp_path / "interactions.sqlite3"
        self.stores: list[SqliteStore] = []
        yield
        for store in self.stores:
            store.close()

    def open(self) -> Storage:
        store = SqliteStore(self.path)
        self.stores.append(store)

        def rows() -> list[tuple[Any, ...]]:
            conn = sqlite3.connect(self.path)
            try:
                return conn.execute("SELECT * FROM http_sessions").fetchall()
            finally:
                conn.close()

        return Storage(SqliteSessions(store), SqliteLoginLimits(store), rows)

    def make(self) -> Storage:
        return self.open()

    def peer(self) -> Storage:
        return self.open()


class TestPostgresStorage(SessionStorageContract):
    @pytest.fixture(autouse=True)
    def _database(self, postgres_dsn: str) -> Iterator[None]:
        self.dsn = postgres_dsn
        self.stores: list[Any] = []
        yield
        for store in self.stores:
            store.close()

    def open(self) -> Storage:
        from adapters.postgres import PostgresStore
        from adapters.postgres.sessions import PostgresLoginLimits, PostgresSessions

        store = PostgresStore(self.dsn, pool_size=4)
        self.stores.append(store)

        def rows() -> list[tuple[Any, ...]]:
            with store.connection() as conn:
                found = conn.execute("SELECT * FROM http_sessions").fetchall()
            return [(bytes(r[0]), *r[1:]) for r in found]

        return Storage(PostgresSessions.of(store), PostgresLoginLimits.of(store), rows)

    def make(self) -> Storage:
        return self.open()

    def peer(self) -> Storage:
        return self.open()
