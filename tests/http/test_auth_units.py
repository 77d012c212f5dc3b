"""Authentication units: Basic parsing, sessions vs credentials, disposition headers; the
client address, the failed-login limiter and the verification slots (issue 12)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from argon2 import PasswordHasher
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

import adapters.server.agents as agents_module
from adapters.http.app import content_disposition
from adapters.http.auth import (
    AuthError,
    HttpAuth,
    LoginLimiter,
    Network,
    VerificationSlots,
    client_address,
    limit_key,
    parse_basic,
    parse_trusted_proxies,
)
from adapters.server.agents import AgentRecord, FileAgentDirectory, hash_password


def header(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_parse_basic() -> None:
    assert parse_basic(header("alice", "p:w")["authorization"]) == ("alice", "p:w")
    assert parse_basic("Bearer x") is None
    assert parse_basic("Basic !!!") is None
    assert parse_basic("Basic " + base64.b64encode(b"nocolon").decode()) is None
    assert parse_basic("Basic " + base64.b64encode(b"\xff\xfe:x").decode()) is None


async def test_credentials_for_another_agent_beat_the_session_cookie() -> None:
    auth = HttpAuth(lambda agent, password: password == agent + "-pw")
    alice = await auth.authenticate(header("alice", "alice-pw"), {}, "1.2.3.4")
    cookies = {"JSESSIONID": alice.session_id}
    assert (await auth.authenticate({}, cookies, None)).agent_id == "alice"
    bob = await auth.authenticate(header("bob", "bob-pw"), cookies, None)
    assert bob.agent_id == "bob" and bob.new_session
    with pytest.raises(AuthError) as refused:
        await auth.authenticate(header("bob", "wrong"), cookies, None)
    assert refused.value.status == 401


async def test_a_client_ignoring_cookies_costs_a_bounded_number_of_sessions() -> None:
    """Basic on every request, cookie ignored: each request opens a session, but an agent
    holds at most ``max_sessions_per_agent`` (least recently used dropped), the table at most
    ``max_sessions``, and expired ones are swept (issue 12, item 8: the soak's growth)."""
    clock = [1000.0]
    auth = HttpAuth(
        lambda agent, password: password == "pw",
        max_sessions=10,
        max_sessions_per_agent=3,
        session_ttl=60.0,
        clock=lambda: clock[0],
    )
    first = await auth.authenticate(header("alice", "pw"), {}, "1.2.3.4")
    for _ in range(50):
        await auth.authenticate(header("alice", "pw"), {}, "1.2.3.4")
    assert auth.session_count == 3
    with pytest.raises(AuthError):  # the least recently used went first
        await auth.authenticate({}, {"JSESSIONID": first.session_id}, None)

    kept = await auth.authenticate(header("bob", "pw"), {}, None)
    for n in range(20):
        await auth.authenticate(header(f"agent{n}", "pw"), {}, None)
        clock[0] += 1.0
        # A session in use is the most recently used: it survives a full table.
        await auth.authenticate({}, {"JSESSIONID": kept.session_id}, None)
    assert auth.session_count == 10

    clock[0] += 61.0  # all expired: swept when the next session opens
    await auth.authenticate(header("carol", "pw"), {}, None)
    assert auth.session_count == 1


async def test_a_handshake_checks_credentials_without_opening_a_session() -> None:
    auth = HttpAuth(lambda agent, password: password == "pw")
    result = await auth.authenticate(header("alice", "pw"), {}, None, open_session=False)
    assert (result.agent_id, result.session_id, auth.session_count) == ("alice", "", 0)
    with pytest.raises(AuthError):
        await auth.authenticate(header("alice", "no"), {}, None, open_session=False)


async def test_csrf_check() -> None:
    auth = HttpAuth(lambda agent, password: True, csrf=True)
    first = await auth.authenticate(header("alice", "x"), {}, None)
    with pytest.raises(AuthError, match="Csrf"):
        auth.check_csrf("POST", {}, first)  # a brand-new session cannot know its token yet
    again = await auth.authenticate({}, {"JSESSIONID": first.session_id}, None)
    auth.check_csrf("GET", {}, again)
    auth.check_csrf("POST", {"x-csrf-token": first.csrf_token}, again)
    with pytest.raises(AuthError):
        auth.check_csrf("DELETE", {"x-csrf-token": "nope"}, again)


@pytest.mark.parametrize(
    ("name", "fallback"),
    [
        ('a"b.txt', 'filename="a_b.txt"'),
        ("x\r\nSet-Cookie: y.txt", 'filename="x__Set-Cookie: y.txt"'),
        ("日本.pdf", 'filename="__.pdf"'),
    ],
)
def test_content_disposition_never_breaks_the_header(name: str, fallback: str) -> None:
    value = content_disposition(name)
    assert fallback in value and "\r" not in value and "\n" not in value


def test_invalid_configuration_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.server.settings import ConfigurationError, load_settings

    monkeypatch.setenv("INTERACTIONS_HTTP_PORT", "eighty")
    with pytest.raises(ConfigurationError, match=r"http_port \(env INTERACTIONS_HTTP_PORT\)"):
        load_settings()
    monkeypatch.delenv("INTERACTIONS_HTTP_PORT")
    with pytest.raises(ConfigurationError, match="mailboxes"):
        load_settings(mailboxes={"not an address": "Q"})
    with pytest.raises(ConfigurationError, match="catch_all"):
        load_settings(catch_all={"@example.com": "nobody@example.com"})
    monkeypatch.setenv("INTERACTIONS_RELAY__HOST", "smtp.example.com")
    assert load_settings().relay is not None


def test_every_domain_error_kind_has_its_status() -> None:
    from adapters.http.app import from_domain
    from interactions_core.errors import (
        ConcurrencyConflict,
        InteractionNotFound,
        InvalidRequest,
        OperationNotAllowed,
        TooLarge,
        Unavailable,
    )

    cases = [
        (InvalidRequest("bad"), 400),
        (InteractionNotFound("X"), 404),
        (OperationNotAllowed("Send", "Invited", ["Accept"]), 409),
        (ConcurrencyConflict("X", 1, 2), 409),
        (TooLarge("big"), 413),
        (Unavailable("busy"), 503),
    ]
    for exc, status in cases:
        response = from_domain(exc)
        assert response.status_code == status
        assert response.body.startswith(b'{"status":"error","errorDescription":')


# --- issue 12: the client address, the limiter, the verification slots -----------------------

PROXY = "10.0.0.1"


def nets(*entries: str) -> tuple[Network, ...]:
    return parse_trusted_proxies(entries)


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        # An untrusted peer: whatever it claims is ignored.
        ("127.0.0.1", "203.0.113.9", (), "127.0.0.1"),
        ("198.51.100.1", "203.0.113.9", ("10.0.0.0/8",), "198.51.100.1"),
        # A trusted proxy: the right-most entry that is not a proxy; the left is client-written.
        (PROXY, "203.0.113.9", ("10.0.0.0/8",), "203.0.113.9"),
        (PROXY, "6.6.6.6, 203.0.113.9", ("10.0.0.0/8",), "203.0.113.9"),
        (PROXY, "6.6.6.6, 203.0.113.9, 10.2.2.2", ("10.0.0.0/8",), "203.0.113.9"),
        (PROXY, "10.3.3.3, 10.2.2.2", ("10.0.0.0/8",), "10.3.3.3"),  # all proxies: left-most
        (PROXY, "203.0.113.9:4711", (PROXY,), "203.0.113.9"),
        (PROXY, "[2001:db8::7]:4711", (PROXY,), "2001:db8::7"),
        ("::1", "2001:db8::7", ("::1",), "2001:db8::7"),
        (PROXY, "", (PROXY,), PROXY),
        (PROXY, None, (PROXY,), PROXY),
        (PROXY, "6.6.6.6, garbage", (PROXY,), PROXY),  # not an address: the proxy itself
        ("testclient", "203.0.113.9", (PROXY,), "testclient"),
        (None, "203.0.113.9", (PROXY,), None),
    ],
)
def test_client_address(
    peer: str | None, forwarded: str | None, trusted: tuple[str, ...], expected: str | None
) -> None:
    headers = {} if forwarded is None else {"x-forwarded-for": forwarded}
    assert client_address(peer, headers, nets(*trusted)) == expected


@pytest.mark.parametrize(
    "forwarded",
    ["203.0.113.9", "6.6.6.6, 203.0.113.9", "203.0.113.9, 10.2.2.2", "10.3.3.3, 10.2.2.2"],
)
async def test_client_address_agrees_with_uvicorn_and_is_idempotent(forwarded: str) -> None:
    """Under uvicorn with the same trust, HttpAuth sees uvicorn's rewritten client as the peer
    and must come to the same address as on the raw request."""
    trusted = ["10.0.0.0/8"]
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["client"][0])

    scope: Any = {
        "type": "http",
        "client": (PROXY, 5000),
        "headers": [(b"x-forwarded-for", forwarded.encode())],
    }

    async def nothing(*args: Any) -> Any:
        return {}

    await ProxyHeadersMiddleware(app, trusted_hosts=trusted)(scope, nothing, nothing)
    headers = {"x-forwarded-for": forwarded}
    ours = client_address(PROXY, headers, nets(*trusted))
    assert seen == [ours]
    assert client_address(seen[0], headers, nets(*trusted)) == ours


def test_trusted_proxies_parse_and_name_a_bad_entry() -> None:
    assert [str(n) for n in nets("10.0.0.7", "10.0.0.0/8", "::1")] == [
        "10.0.0.7/32",
        "10.0.0.0/8",
        "::1/128",
    ]
    with pytest.raises(ValueError, match=r"'proxy\.local' is not an IP address"):
        nets("10.0.0.7", "proxy.local")


def test_limit_key_groups_an_ipv6_host_by_its_64() -> None:
    assert limit_key("2001:db8:1:2:aaaa::1") == limit_key("2001:db8:1:2:bbbb::2")
    assert limit_key("2001:db8:1:2::1") != limit_key("2001:db8:1:3::1")
    assert limit_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert limit_key("testclient") == "testclient"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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


def test_limiter_backs_off_exponentially_per_address_and_name() -> None:
    limiter = LoginLimiter(max_failures=5, window=900, backoff=5, backoff_max=60)
    now = 0.0
    for _ in range(4):
        fail(limiter, "A", "alice", now)
        assert refused(limiter, "A", "alice", now) == 0  # typos are free
    waits = []
    for _ in range(6):
        fail(limiter, "A", "alice", now)
        wait = refused(limiter, "A", "alice", now)
        assert refused(limiter, "A", "alice", now + wait - 0.5) > 0
        waits.append(wait)
        now += wait
    assert waits == [5, 10, 20, 40, 60, 60]
    # The same name from another address, another name from the same address: not affected.
    assert refused(limiter, "B", "alice", now) == 0
    assert refused(limiter, "A", "bob", now) == 0
    # A success ends the back-off at once.
    limiter.begin("A", "alice", now)
    limiter.finish("A", "alice", now, True)
    fail(limiter, "A", "alice", now)
    assert refused(limiter, "A", "alice", now) == 0


def test_limiter_forgets_a_pair_after_a_quiet_window() -> None:
    limiter = LoginLimiter(max_failures=2, window=100, backoff=5, backoff_max=60)
    fail(limiter, "A", "alice", 0)
    fail(limiter, "A", "alice", 0)
    assert refused(limiter, "A", "alice", 4) == 1
    assert refused(limiter, "A", "alice", 5) == 0
    fail(limiter, "A", "alice", 5)  # third failure: 10 s
    assert refused(limiter, "A", "alice", 14) == 1
    # Quiet for the window after the back-off ended: free attempts again.
    fail(limiter, "A", "alice", 15 + 100)
    assert refused(limiter, "A", "alice", 15 + 100) == 0


def test_limiter_budget_per_address_across_names() -> None:
    limiter = LoginLimiter(max_failures=5, window=600, address_max_failures=30)
    for i in range(30):
        assert refused(limiter, "A", f"name{i}", 10.0 + i) == 0
        fail(limiter, "A", f"name{i}", 10.0 + i)
    # The 31st name, and any name, from A waits until the oldest failure leaves the window.
    assert refused(limiter, "A", "name30", 100) == 10 + 600 - 100
    assert refused(limiter, "A", "alice", 100) == 510
    assert refused(limiter, "B", "alice", 100) == 0  # another address is not affected
    assert refused(limiter, "A", "alice", 610) == 0  # one failure has left the window
    assert LoginLimiter(max_failures=3).address_max_failures == 18  # default 6 x max_failures


def test_limiter_counts_verifications_in_flight() -> None:
    limiter = LoginLimiter(max_failures=3, address_max_failures=4)
    for _ in range(3):
        limiter.begin("A", "alice", 0)  # three at once for one pair: its free failures
    assert refused(limiter, "A", "alice", 0) == 1
    limiter.begin("A", "bob", 0)
    assert refused(limiter, "A", "carol", 0) == 1  # four in flight fill the address budget
    for _ in range(3):
        limiter.finish("A", "alice", 0, False)
    limiter.finish("A", "bob", 0, True)
    assert refused(limiter, "A", "alice", 0) == 5  # three failures: in back-off now
    assert refused(limiter, "A", "carol", 0) == 0  # bob's success left room


def test_verification_slots() -> None:
    slots = VerificationSlots(2)
    assert slots.try_acquire() and slots.try_acquire()
    assert not slots.try_acquire()
    slots.release()
    assert slots.try_acquire()
    slots.release()
    slots.release()
    assert slots.in_use == 0 and slots.peak == 2


async def test_a_correct_password_after_the_back_off_is_accepted() -> None:
    """Issue 12.3: failures for alice (someone else's, from her address) delay her for the
    back-off only; then her correct password gets in. Before: 429 for the whole window."""
    clock = Clock()
    auth = HttpAuth(lambda agent, password: password == agent + "-pw", clock=clock)
    for _ in range(5):
        with pytest.raises(AuthError) as failed:
            await auth.authenticate(header("alice", "guess"), {}, "203.0.113.9")
        assert failed.value.status == 401
    with pytest.raises(AuthError) as waiting:
        await auth.authenticate(header("alice", "alice-pw"), {}, "203.0.113.9")
    assert waiting.value.status == 429 and waiting.value.headers["Retry-After"] == "5"
    # From an address that has not failed, never refused; from hers, after the back-off.
    assert (await auth.authenticate(header("alice", "alice-pw"), {}, "198.51.100.4")).agent_id
    clock.now += 5
    assert (await auth.authenticate(header("alice", "alice-pw"), {}, "203.0.113.9")).agent_id


async def test_failures_for_other_names_do_not_refuse_a_correct_password() -> None:
    auth = HttpAuth(lambda agent, password: password == agent + "-pw", clock=Clock())
    for i in range(29):  # under the address budget (30)
        with pytest.raises(AuthError):
            await auth.authenticate(header(f"user{i}", "guess"), {}, "203.0.113.9")
    assert (await auth.authenticate(header("alice", "alice-pw"), {}, "203.0.113.9")).agent_id
    with pytest.raises(AuthError) as sprayed:
        await auth.authenticate(header("user99", "guess"), {}, "203.0.113.9")
    assert sprayed.value.status == 401
    with pytest.raises(AuthError) as over:  # 30 failures: the budget is spent
        await auth.authenticate(header("bob", "bob-pw"), {}, "203.0.113.9")
    assert over.value.status == 429


class Gate:
    """A verify that blocks until opened, counting calls and how many run at once."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.lock = threading.Lock()
        self.calls = 0
        self.running = 0
        self.peak = 0

    def __call__(self, agent: str, password: str) -> bool:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.opened.wait(30)
        with self.lock:
            self.running -= 1
        return password == agent + "-pw"


async def outcome(auth: HttpAuth, agent: str, password: str, address: str) -> int:
    try:
        await auth.authenticate(header(agent, password), {}, address)
    except AuthError as exc:
        return exc.status
    return 200


async def until(condition: Callable[[], bool]) -> None:
    """Wait for a condition another thread brings about (the bound only guards a hang)."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), 30)


async def test_concurrent_verifications_are_capped() -> None:
    gate = Gate()
    auth = HttpAuth(gate, max_concurrent_verifications=4)
    tasks = [
        asyncio.create_task(outcome(auth, "alice", "guess", f"203.0.113.{i}")) for i in range(10)
    ]

    async def six_done() -> None:
        while sum(t.done() for t in tasks) < 6:
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(six_done(), 30)
        assert sorted(t.result() for t in tasks if t.done()) == [503] * 6
        assert auth.slots.in_use == 4
        await until(lambda: gate.running == 4)  # the four admitted are all verifying
    finally:
        gate.opened.set()
    assert sorted(await asyncio.gather(*tasks)) == [401] * 4 + [503] * 6
    assert gate.calls == 4 and gate.peak == 4  # never more argon2 at once than the slots
    assert auth.slots.in_use == 0
    # A 503 is not a failure: the addresses turned away can log in at once.
    assert await outcome(auth, "alice", "alice-pw", "203.0.113.9") == 200


async def test_a_login_cancelled_during_argon2_still_counts_and_frees_its_slot() -> None:
    gate = Gate()
    auth = HttpAuth(gate, max_failures=1, max_concurrent_verifications=1)
    task = asyncio.create_task(outcome(auth, "alice", "guess", "203.0.113.9"))
    await until(lambda: gate.calls == 1)
    task.cancel()
    gate.opened.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await until(lambda: auth.slots.in_use == 0)  # freed when the thread is done, not before
    # The verification ran to its end and its failure was recorded: alice backs off.
    assert await outcome(auth, "alice", "alice-pw", "203.0.113.9") == 429


async def test_a_login_cancelled_before_its_thread_starts_frees_its_slot() -> None:
    gate = Gate()
    gate.opened.set()
    auth = HttpAuth(gate, max_failures=1, max_concurrent_verifications=1)
    threads = anyio.to_thread.current_default_thread_limiter()
    total = threads.total_tokens
    threads.total_tokens = 1  # one worker thread, taken by the hog
    hog_released = threading.Event()
    hog = asyncio.create_task(anyio.to_thread.run_sync(hog_released.wait))
    try:
        await until(lambda: threads.borrowed_tokens == 1)
        task = asyncio.create_task(outcome(auth, "alice", "guess", "203.0.113.9"))
        await until(lambda: auth.slots.in_use == 1)  # has its slot, waits for a thread
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        hog_released.set()
        await hog
        threads.total_tokens = total
    assert auth.slots.in_use == 0 and gate.calls == 0
    # Nothing was tried, nothing recorded: neither a failure nor a verification in flight.
    assert await outcome(auth, "alice", "alice-pw", "203.0.113.9") == 200


def test_an_unknown_name_waits_like_argon2_without_computing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            calls.append(str(hash))
            return super().verify(hash, password)

    monkeypatch.setattr(agents_module, "_HASHER", CountingHasher())
    ticks = iter([0.0, 0.2, 1.0, 1.3, 2.0, 2.4, 3.0, 3.5, 4.0, 4.6])
    slept: list[float] = []
    record = AgentRecord(id="alice", password_hash=hash_password("alice-pw"))
    directory = FileAgentDirectory(None, [record], sleep=slept.append, timer=lambda: next(ticks))
    # The first unknown names measure argon2 on the dummy hash.
    assert [directory.verify(f"nobody{i}", "pw") for i in range(4)] == [False] * 4
    assert len(calls) == 4 and slept == []
    # Then an unknown name costs no argon2: it sleeps one of the measured durations.
    assert [directory.verify(f"ghost{i}", "pw") for i in range(20)] == [False] * 20
    assert len(calls) == 4 and len(slept) == 20
    assert {round(s, 6) for s in slept} <= {0.2, 0.3, 0.4, 0.5}
    assert directory.verify("alice", "alice-pw") and len(calls) == 5


def test_login_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from adapters.server.settings import ConfigurationError, load_settings

    defaults = load_settings()
    assert defaults.trusted_proxies == []
    assert (defaults.login_max_failures, defaults.login_backoff_seconds) == (5, 5.0)
    monkeypatch.setenv("INTERACTIONS_TRUSTED_PROXIES", "10.0.0.7, 192.168.0.0/16 ::1")
    assert load_settings().trusted_proxies == ["10.0.0.7/32", "192.168.0.0/16", "::1/128"]
    monkeypatch.setenv("INTERACTIONS_TRUSTED_PROXIES", '["10.0.0.0/8"]')
    assert load_settings().trusted_proxies == ["10.0.0.0/8"]
    monkeypatch.setenv("INTERACTIONS_TRUSTED_PROXIES", "10.0.0.7,proxy.local")
    with pytest.raises(
        ConfigurationError,
        match=r"trusted_proxies \(env INTERACTIONS_TRUSTED_PROXIES\).*'proxy.local' is not an IP",
    ):
        load_settings()
    monkeypatch.delenv("INTERACTIONS_TRUSTED_PROXIES")
    with pytest.raises(ConfigurationError, match="login_backoff_max_seconds"):
        load_settings(login_backoff_seconds=10, login_backoff_max_seconds=5)
    # The old names still configure the limiter (a config file may use them).
    config = tmp_path / "config.toml"
    config.write_text("login_max_failures = 3\nlogin_window_seconds = 60\n")
    old = load_settings(config)
    assert (old.login_max_failures, old.login_window_seconds) == (3, 60.0)


def test_cometd_reads_several_forwarded_lines_as_one_list() -> None:
    """The CometD transports read headers as the HTTP API and uvicorn do: two X-Forwarded-For
    lines are one list (RFC 9110 §5.3), so a login over CometD is counted against the same
    client address as one over HTTP (one limiter budget, not two)."""
    from adapters.cometd.transports import _headers

    scope = {
        "headers": [
            (b"x-forwarded-for", b"198.51.100.9"),  # what the client sent...
            (b"X-Forwarded-For", b"203.0.113.7, 10.0.0.1"),  # ...then a line of the proxies
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
        ]
    }
    headers = _headers(scope)
    assert headers["x-forwarded-for"] == "198.51.100.9, 203.0.113.7, 10.0.0.1"
    assert headers["cookie"] == "a=1; b=2"
    trusted = nets("127.0.0.1", "10.0.0.0/8")
    assert client_address("127.0.0.1", headers, trusted) == "203.0.113.7"
    everything = nets("127.0.0.1", "10.0.0.0/8", "203.0.113.0/24")
    assert client_address("127.0.0.1", headers, everything) == "198.51.100.9"
