"""Leader election on the advisory lock (``adapters.postgres.leader``), on a real PostgreSQL.

* In one process: two and three ``LeaderLock``s on one database elect exactly one leader; the
  leader stopped, another takes over; its backend terminated (``pg_terminate_backend``), it is
  deposed (``on_deposed``) and another is elected; callbacks run on the lock's own thread, and
  one that raises is logged without ending the election; an unreachable database is one
  warning when it starts and one when it ends.
* In real processes (``leader_node.py``): two, then three nodes, the leader SIGKILLed in turn.
  Each time another node is elected; the nodes' claimed leadership intervals never overlap, and
  ``pg_locks``, sampled all along, never shows two holders and shows them in the order the
  nodes announced. The failover times (kill to the new leader's ``elected`` line) are printed,
  never asserted on: the assertions are on counts and order, with generous guard times.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.postgres import LeaderLock
from adapters.postgres.leader import LEADER_LOCK_KEY, leader_settings
from pgcluster import PostgresCluster

from .helpers import Admin, backends, terminate, unique_name, wait_for

NODE = Path(__file__).with_name("leader_node.py")
SRC = Path(__file__).resolve().parents[2] / "src"
LOGGER = "adapters.postgres.leader"
GUARD = 20.0  # seconds: a guard against hanging, never a timing assumption

_HOLDERS = (
    "SELECT l.pid, a.application_name FROM pg_locks l"
    " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.classid::bigint = %s AND l.objid::bigint = %s"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def holders(conn: Admin, key: int = LEADER_LOCK_KEY) -> list[tuple[int, str | None]]:
    """The sessions holding the leader lock, as PostgreSQL sees them: (pid, application name)."""
    rows = conn.execute(_HOLDERS, ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)).fetchall()
    return [(int(pid), name) for pid, name in rows]


# ----------------------------------------------------------------------- in one process


class Node:
    """A ``LeaderLock`` with recording callbacks."""

    def __init__(
        self,
        dsn: str,
        name: str,
        interval: float,
        *,
        elected: Callable[[], None] | None = None,
        deposed: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.events: list[tuple[str, str]] = []  # (event, thread name)
        self._elected = elected
        self._deposed = deposed
        self.lock = LeaderLock(
            dsn,
            application_name=name,
            check_interval_s=interval,
            connect_timeout_s=5.0,
            node_id=name,
            on_elected=self.on_elected,
            on_deposed=self.on_deposed,
        )

    @property
    def backend_name(self) -> str:
        return f"{self.name}-leader"

    def on_elected(self) -> None:
        self.events.append(("elected", threading.current_thread().name))
        if self._elected:
            self._elected()

    def on_deposed(self) -> None:
        self.events.append(("deposed", threading.current_thread().name))
        if self._deposed:
            self._deposed()

    def count(self, event: str) -> int:
        return sum(1 for e, _ in self.events if e == event)


@pytest.fixture
def make_node(postgres_dsn: str) -> Iterator[Callable[..., Node]]:
    """Nodes on the test's database, every one stopped at the end whatever happened."""
    made: list[Node] = []

    def make(interval: float = 0.2, **callbacks: Callable[[], None]) -> Node:
        node = Node(postgres_dsn, unique_name("ll"), interval, **callbacks)
        made.append(node)
        return node

    try:
        yield make
    finally:
        for node in made:
            node.lock.stop()


def settled(nodes: list[Node]) -> bool:
    """Every node has tried the lock at least once and knows its role."""
    return all(
        n.lock.status().role != "unknown" and n.lock.status().last_check is not None for n in nodes
    )


def the_leader(nodes: list[Node], admin: Admin) -> Node:
    """Waits until the nodes settled; asserts exactly one leads, in its view and PostgreSQL's."""
    # ``is_leader`` turns true just before ``on_elected`` runs: wait for the callback too.
    wait_for(
        lambda: (
            settled(nodes)
            and any(n.lock.is_leader and n.count("elected") > n.count("deposed") for n in nodes)
        ),
        GUARD,
    )
    leaders = [n for n in nodes if n.lock.is_leader]
    assert len(leaders) == 1, [n.lock.status() for n in nodes]
    assert [name for _, name in holders(admin)] == [leaders[0].backend_name]
    return leaders[0]


def shown_setting(conn: psycopg.Connection[Any], name: str) -> Any:
    """``SHOW name`` in effect on ``conn`` (``name`` is one of the test's literals)."""
    row = conn.execute(f"SHOW {name}").fetchone()
    if row is None:
        raise AssertionError(f"SHOW {name} returned no row")
    return row[0]


@pytest.mark.parametrize("count", [2, 3])
def test_one_leader_and_stopping_it_hands_over(
    make_node: Callable[..., Node], admin: Admin, count: int
) -> None:
    nodes = [make_node() for _ in range(count)]
    for n in nodes:
        n.lock.start()
    leader = the_leader(nodes, admin)
    assert leader.count("elected") == 1
    assert all(n.count("elected") == 0 for n in nodes if n is not leader)

    leader.lock.stop()
    assert leader.events[-1][0] == "deposed"  # it stepped down before unlocking
    assert not leader.lock.is_leader
    assert leader.backend_name not in [name for _, name in holders(admin)]  # released at once
    rest = [n for n in nodes if n is not leader]
    successor = the_leader(rest, admin)
    assert successor.count("elected") == 1
    leader.lock.stop()  # idempotent
    assert leader.count("deposed") == 1


@pytest.mark.parametrize("count", [2, 3])
def test_terminated_backend_deposes_the_leader_and_another_is_elected(
    make_node: Callable[..., Node], admin: Admin, count: int
) -> None:
    nodes = [make_node() for _ in range(count)]
    for n in nodes:
        n.lock.start()
    leader = the_leader(nodes, admin)

    assert terminate(admin, leader.backend_name) == 1
    wait_for(lambda: leader.count("deposed") == 1, GUARD)
    rest = [n for n in nodes if n is not leader]
    wait_for(lambda: any(n.lock.is_leader for n in rest), GUARD)
    # The deposed one rejoins as a follower (it sits out a round, so a follower wins).
    wait_for(lambda: leader.lock.status().role == "follower", GUARD)
    successor = the_leader(nodes, admin)
    assert successor is not leader
    assert leader.count("elected") == 1 and not leader.lock.is_leader

    # Callbacks ran on each lock's own thread, never the caller's.
    for n in nodes:
        threads = {thread for _, thread in n.events}
        assert len(threads) <= 1 and threading.current_thread().name not in threads
        assert all(t.startswith("leader-lock-") for t in threads)


def test_a_failing_callback_is_logged_and_the_election_goes_on(
    make_node: Callable[..., Node], admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    def fail() -> None:
        raise RuntimeError("callback bug")

    caplog.set_level(logging.INFO, logger=LOGGER)
    node = make_node(elected=fail, deposed=fail)
    node.lock.start()
    wait_for(lambda: node.count("elected") == 1, GUARD)
    assert the_leader([node], admin) is node  # still the leader, still checking
    terminate(admin, node.backend_name)

    # Deposed (its callback raised too), then elected again: alone, it gets the lock back.
    def errors() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]

    wait_for(lambda: node.count("elected") == 2 and len(errors()) == 3, GUARD)
    assert node.count("deposed") == 1
    assert [r.exc_info is not None for r in errors()] == [True, True, True]
    assert ["on_elected" in r.getMessage() for r in errors()] == [True, False, True]


def test_an_unreachable_database_is_one_warning_when_it_starts_and_one_when_it_ends(
    postgres_cluster: PostgresCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    name = "t_" + uuid.uuid4().hex[:16]
    dsn = postgres_cluster.dsn(name)  # no such database yet: every connection is refused
    elected: list[str] = []
    lock = LeaderLock(
        dsn,
        check_interval_s=0.05,
        node_id="n1",
        on_elected=lambda: elected.append("elected"),
        on_deposed=lambda: elected.append("deposed"),
    )
    try:
        lock.start()
        wait_for(lambda: lock.status().error is not None, GUARD)
        time.sleep(0.5)  # about ten more attempts, which must stay quiet
        status = lock.status()
        assert status.role == "unknown" and not lock.is_leader and elected == []
        assert status.error is not None and "does not exist" in status.error
        warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "retrying" in warnings[0].getMessage()
        assert "password" not in warnings[0].getMessage()

        postgres_cluster.create_database(name)
        wait_for(lambda: elected == ["elected"], GUARD)
        warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
        assert len(warnings) == 2 and "reachable again" in warnings[1].getMessage()
        assert elected == ["elected"]
    finally:
        lock.stop()
        postgres_cluster.drop_database(dsn)
    assert elected == ["elected", "deposed"]


def test_status_settings_and_life_cycle(make_node: Callable[..., Node], admin: Admin) -> None:
    node = make_node()
    assert node.lock.status().role == "unknown" and node.lock.status().since is None
    node.lock.start()
    with pytest.raises(RuntimeError):
        node.lock.start()
    assert the_leader([node], admin) is node
    first = node.lock.status()
    assert first.role == "leader" and first.node_id == node.name
    assert first.key == LEADER_LOCK_KEY and first.since is not None
    assert first.last_check is not None
    wait_for(lambda: (node.lock.status().last_check or first.last_check) > first.last_check)
    later = node.lock.status()
    assert later.since == first.since  # checks move last_check, not since
    assert later.to_dict()["role"] == "leader" and later.to_dict()["node_id"] == node.name
    assert backends(admin, node.backend_name)  # the dedicated connection, named "-leader"

    node.lock.stop()
    assert holders(admin) == [] and backends(admin, node.backend_name) == []
    assert node.lock.status().role == "unknown" and node.count("deposed") == 1
    node.lock.stop()
    with pytest.raises(RuntimeError):
        node.lock.start()


def test_the_connection_settings_are_accepted_by_postgresql(postgres_dsn: str) -> None:
    """Client keepalives, and the session's server-side keepalives (``SHOW``: in effect)."""
    settings = leader_settings(
        postgres_dsn, application_name="x-leader", connect_timeout_s=5, check_interval_s=1.0
    )
    assert settings["keepalives"] == 1 and settings["tcp_user_timeout"] == 3000
    assert settings["keepalives_idle"] + settings["keepalives_interval"] * 2 == 3
    with psycopg.connect(postgres_dsn, **settings) as conn:
        shown = {
            name: shown_setting(conn, name)
            for name in (
                "statement_timeout",
                "tcp_keepalives_idle",
                "tcp_keepalives_count",
                "tcp_user_timeout",
                "application_name",
            )
        }
    assert shown == {
        "statement_timeout": "3s",
        "tcp_keepalives_idle": "4",
        "tcp_keepalives_count": "2",
        "tcp_user_timeout": "6000",
        "application_name": "x-leader",
    }


# ---------------------------------------------------------------------- real processes


@dataclass
class Child:
    node: str
    process: subprocess.Popen[str]
    reader: threading.Thread
    stderr: Path

    @property
    def backend_name(self) -> str:
        return f"leader-node-{self.node}-leader"


@dataclass
class Cluster:
    """Child nodes, their event lines (one queue) and a ``pg_locks`` sampler."""

    dsn: str
    tmp: Path
    events: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    children: dict[str, Child] = field(default_factory=dict)
    seen: list[dict[str, Any]] = field(default_factory=list)
    samples: list[list[tuple[int, str | None]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _sampler: threading.Thread | None = None

    def spawn(self) -> Child:
        node = f"n{len(self.children) + 1}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
        stderr = self.tmp / f"{node}.stderr"
        with open(stderr, "wb") as err:
            process = subprocess.Popen(
                [sys.executable, str(NODE), self.dsn, node, "1.0"],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        reader = threading.Thread(target=self._read, args=(process,), daemon=True)
        reader.start()
        child = Child(node, process, reader, stderr)
        self.children[node] = child
        return child

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(line))

    def next_event(self, kind: str) -> dict[str, Any]:
        """The next event line of that kind (every line is kept in ``seen``)."""
        deadline = time.monotonic() + GUARD
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind!r} line within the guard time: {self.logs()}")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(event)
            if event["event"] == kind:
                return event

    def drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.seen.append(self.events.get_nowait())

    def living(self) -> list[Child]:
        return [c for c in self.children.values() if c.process.poll() is None]

    def logs(self) -> str:
        return "; ".join(f"{c.node}: {c.stderr.read_text()[-800:]}" for c in self.children.values())

    def start_sampling(self) -> None:
        def sample() -> None:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self._stop.is_set():
                    self.samples.append(holders(conn))
                    time.sleep(0.005)

        self._sampler = threading.Thread(target=sample, daemon=True)
        self._sampler.start()

    def close(self) -> None:
        self._stop.set()
        for child in self.children.values():
            if child.process.poll() is None:
                child.process.kill()
            child.process.wait(timeout=GUARD)
            child.reader.join(timeout=GUARD)
            if child.process.stdin:
                child.process.stdin.close()
            if child.process.stdout:
                child.process.stdout.close()
        if self._sampler is not None:
            self._sampler.join(timeout=GUARD)


def test_sigkilled_leader_processes_fail_over_one_at_a_time(
    postgres_dsn: str, admin: Admin, tmp_path: Path
) -> None:
    cluster = Cluster(postgres_dsn, tmp_path)
    leaders: list[str] = []  # in election order
    ended: list[float] = []  # when each previous leader was killed
    failovers: list[float] = []
    try:
        cluster.start_sampling()
        for _ in range(2):
            cluster.spawn()
        leaders.append(cluster.next_event("elected")["node"])

        def kill_leader() -> None:
            # Every living node connected (its follower is trying): the failover is the
            # election's, not a child's start-up.
            for child in cluster.living():
                wait_for(functools.partial(backends, admin, child.backend_name), GUARD)
            # A node tries the lock as soon as it has connected, then once a second: killing
            # right now would always fall just after a newcomer's try. A random moment
            # measures the failover, not that phase.
            time.sleep(random.uniform(0.0, 1.0))
            victim = cluster.children[leaders[-1]]
            killed = time.time()
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(timeout=GUARD)
            ended.append(killed)
            event = cluster.next_event("elected")
            assert event["node"] != victim.node
            leaders.append(event["node"])
            failovers.append(event["t"] - killed)

        for _ in range(3):  # two nodes: kill the leader, replace it
            kill_leader()
            cluster.spawn()
        cluster.spawn()  # three nodes
        for _ in range(3):
            kill_leader()
            cluster.spawn()
        for child in cluster.living():
            wait_for(functools.partial(backends, admin, child.backend_name), GUARD)
        # End without a further election: the followers first, then the leader.
        for child in sorted(cluster.living(), key=lambda c: c.node == leaders[-1]):
            child.process.kill()
            child.process.wait(timeout=GUARD)
    finally:
        cluster.close()
    cluster.drain()

    # One election per kill, each a new node, announced in order; nobody was ever deposed
    # (a SIGKILLed leader cannot be: it just disappears).
    elected = [e for e in cluster.seen if e["event"] == "elected"]
    assert [e["node"] for e in elected] == leaders and len(leaders) == 7
    assert all(a != b for a, b in itertools.pairwise(leaders))
    assert not [e for e in cluster.seen if e["event"] == "deposed"]
    # Claimed intervals do not overlap: each leader was elected after the previous one died.
    assert all(e["t"] > killed for e, killed in zip(elected[1:], ended, strict=True))
    # As PostgreSQL saw it: never two holders, and the holders in the same order.
    assert cluster.samples and all(len(s) <= 1 for s in cluster.samples)
    order: list[str] = []
    for sample in cluster.samples:
        for _, name in sample:
            if name is not None and (not order or order[-1] != name):
                order.append(name)
    assert order == [f"leader-node-{n}-leader" for n in leaders]

    print(
        f"\nleader failover after SIGKILL (check_interval_s=1): {len(failovers)} kills, "
        f"median {statistics.median(failovers):.3f} s, max {max(failovers):.3f} s; "
        f"all: {', '.join(f'{f:.3f}' for f in failovers)}"
    )
