"""The PostgreSQL store under the real service, against raw psycopg (bench_sqlite.py's method).

On a throwaway local cluster (``tests/pgcluster.py``: PostgreSQL's server binaries, a
temporary directory, ``fsync=off``), one run measures, with a small and a large number of
stored interactions (default 1,000 and 1,000,000):

* ``Accept`` and ``Send``: the full unit of work through ``InteractionService`` +
  ``PostgresStore`` (load, lifecycle, change, notification, mail for Send, commit);
* ``store only``: the adapter without the service (get, update, one notification, commit);
* ``raw``: the store's own statements with no library around them, on one psycopg connection,
  with the JSON prepared beforehand: the ``SELECT`` of the row (autocommit, as the store reads),
  then ``BEGIN``, the versioned full-row ``UPDATE``, ``pg_advisory_xact_lock`` (the outbox
  lock), the outbox ``INSERT`` (two for Send), ``COMMIT``.

For each: operations per second, p50 and p99 latency, the client's CPU per operation
(``time.process_time``) and **the PostgreSQL server's CPU per operation**: utime + stime from
``/proc/<pid>/stat`` of the backend processes serving the measured connections (found with
``pg_backend_pid()`` for the raw connection, by ``application_name`` for the store's pool),
read before and after each measurement.

The large population is loaded with ``PostgresStore.load`` (``COPY``, what
``interactions migrate --from sqlite:PATH`` uses), so the run also times moving that many
interactions; the measured interactions are created through the service on top of them.
Figures go to stdout and to the "## PostgreSQL store" section of docs/performance.md (only that
section is rewritten; it is placed after the SQLite one the first time).

Run: ``.venv/bin/python benchmarks/store/bench_postgres.py [--ops 2000] [--large 1000000]``
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from adapters.postgres import PostgresStore
from adapters.postgres.outbox import INSERT_MAIL, INSERT_NOTIFICATION, OUTBOX_LOCK_KEY
from adapters.postgres.rows import encode_json
from interactions_core.ids import SystemClock
from interactions_core.model import Address, EmailContent, Interaction
from interactions_core.operations import parse_operation
from interactions_core.ports import Agent, Notification
from interactions_core.service import InteractionService
from interactions_core.testing import (
    InMemoryAgentDirectory,
    InMemoryAttachmentStore,
    SequentialIds,
    inbound_email,
)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from pgcluster import PostgresCluster  # noqa: E402 - tests/ is put on the path just above

PERFORMANCE_MD = ROOT / "docs" / "performance.md"
SECTION = "## PostgreSQL store"
AFTER = "## SQLite store"
AGENT = Agent(id="bench", mailboxes=("support@example.com",))
STORE_APP = "bench-store"
TICK = os.sysconf("SC_CLK_TCK")

# The store's statements (adapters/postgres/store.py), for the raw baseline.
_GET = "SELECT data FROM interactions WHERE id = %s"
_UPDATE = (
    "UPDATE interactions SET version = %s, state = %s, owner = %s, offer_agent = %s,"
    " current_queue = %s, workbin = %s, mailbox = %s, message_id = %s, received_at = %s,"
    " data = %s WHERE id = %s AND version = %s"
)


@dataclass
class Result:
    name: str
    stored: int
    samples: list[float]  # seconds per operation
    wall: float
    client_cpu: float  # seconds of this process's CPU, over the measurement
    server_cpu: float  # seconds of the serving backends' CPU, over the measurement
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ops(self) -> float:
        return len(self.samples) / self.wall

    def pct(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6

    def per_op(self, seconds: float) -> float:
        return seconds / len(self.samples) * 1e6


def backend_cpu(pids: list[int]) -> dict[int, float]:
    """utime + stime of each of these processes, in seconds (fields 14 and 15 of
    /proc/<pid>/stat); a process already gone is left out."""
    found: dict[int, float] = {}
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
        found[pid] = (int(fields[11]) + int(fields[12])) / TICK
    return found


def timed(
    name: str,
    stored: int,
    items: list[str],
    op: Callable[[str], object],
    pids: Callable[[], list[int]],
) -> Result:
    samples: list[float] = []
    clock = time.perf_counter
    before, client0 = backend_cpu(pids()), time.process_time()
    start = clock()
    for item in items:
        t0 = clock()
        op(item)
        samples.append(clock() - t0)
    wall = clock() - start
    client = time.process_time() - client0
    after = backend_cpu(pids())
    # A backend the pool opened meanwhile counts from zero (its start-up included).
    server = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
    return Result(name, stored, samples, wall, client, server)


# --------------------------------------------------------------------------- population


def template() -> Interaction:
    base = datetime(2025, 1, 1, tzinfo=UTC)
    return Interaction(
        id="@@ID@@",
        version=3,
        state="Completed",
        mailbox="support@example.com",
        email=EmailContent(
            from_=Address(addr="customer@example.org", name="A Customer"),
            to=(Address(addr="support@example.com"),),
            subject="Question about my order @@ID@@",
            text="Hello,\n\nmy order has not arrived yet. Could you check?\n\nThanks\n" * 3,
            message_id="<@@ID@@@customer.example>",
        ),
        contact_id="customer@example.org",
        current_queue="Done",
        in_queues=("Inbound", "Done"),
        out_queues=("Inbound",),
        received_at=base,
        last_agent="agent0",
    )


def past(count: int) -> Iterator[Interaction]:
    """``count`` past interactions (5 % still owned, 5 % in a workbin), as bench_sqlite's."""
    base = template()
    email = base.email
    for n in range(count):
        iid = f"P{n:012d}"
        owner = f"agent{n % 500}" if n % 20 == 0 else None
        workbin = f"agent:agent{n % 500}/Personal" if n % 20 == 1 else None
        yield base.model_copy(
            update={
                "id": iid,
                "state": "Accepted" if owner else "InWorkbin" if workbin else "Completed",
                "owner": owner,
                "workbin": workbin,
                "received_at": base.received_at + timedelta(seconds=n),
                "email": email.model_copy(
                    update={
                        "subject": f"Question about my order {iid}",
                        "message_id": f"<{iid}@customer.example>",
                    }
                ),
            }
        )


def populate(dsn: str, count: int) -> float:
    """``count`` past interactions through ``PostgresStore.load``; the seconds it took."""
    store = PostgresStore(dsn, statement_timeout_ms=0, pool_size=1)
    try:
        started = time.perf_counter()
        loaded = store.load(past(count))
        seconds = time.perf_counter() - started
        assert loaded == count
        with store.connection() as conn:
            conn.execute("VACUUM ANALYZE interactions")
    finally:
        store.close()
    return seconds


def database_size(dsn: str) -> float:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return float(row[0]) / 1e6 if row else 0.0


# --------------------------------------------------------------------------- the runs


def run_size(cluster: PostgresCluster, stored: int, ops: int) -> tuple[list[Result], float]:
    dsn = cluster.create_database()
    try:
        seconds = populate(dsn, stored)
        print(
            f"  {stored:>9,} interactions loaded with PostgresStore.load in {seconds:.1f} s"
            f" ({stored / seconds:,.0f}/s; database {database_size(dsn):,.0f} MB)",
            flush=True,
        )
        return measure(dsn, stored, ops), seconds
    finally:
        cluster.drop_database(dsn)


def measure(dsn: str, stored: int, ops: int) -> list[Result]:
    store = PostgresStore(dsn, application_name=STORE_APP)
    service = InteractionService(
        store,
        InMemoryAgentDirectory([AGENT]),
        InMemoryAttachmentStore(),
        SystemClock(),
        SequentialIds(prefix=f"B{stored}-"),
    )

    def offered(n: int) -> list[str]:
        ids: list[str] = []
        for k in range(n):
            email = inbound_email(
                sender="Customer <customer@example.org>",
                to="support@example.com",
                subject=f"Bench {k}",
                text="Hello,\n\nmy order has not arrived yet. Could you check?\n\nThanks\n" * 3,
                message_id=f"<bench-{stored}-{k}-{len(ids)}-{time.time_ns()}@customer.example>",
            )
            i = service.receive(email, mailbox="support@example.com")
            service.offer(i.id, AGENT.id)
            ids.append(i.id)
        return ids

    accept, reply, send = (
        parse_operation({"operationName": name}) for name in ("Accept", "Reply", "Send")
    )
    lib_ids, raw_ids, store_ids = offered(ops), offered(ops), offered(ops)
    sample = store.pending_notifications(limit=1)[0]
    payload = encode_json(sample.to_wire())
    mail_payload = '{"interaction_id":"x","mailbox":"support@example.com"' + " " * 900 + "}"

    conn = psycopg.connect(dsn, autocommit=True, application_name="bench-raw")
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET statement_timeout = 30000")
    (raw_pid,) = conn.execute("SELECT pg_backend_pid()").fetchone() or (0,)

    def store_pids() -> list[int]:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (STORE_APP,)
        ).fetchall()
        return [int(pid) for (pid,) in rows]

    def raw_pids() -> list[int]:
        return [int(raw_pid)]

    # Every value of the row as it is after the operation, prepared beforehand (the indexed
    # columns as stored, so that the UPDATE changes what the store's changes): only the SQL
    # is timed.
    prepared: dict[str, list[object]] = {}
    for iid in raw_ids:
        found = conn.execute(
            "SELECT version, current_queue, mailbox, message_id, received_at FROM interactions"
            " WHERE id = %s",
            (iid,),
        ).fetchone()
        assert found is not None
        prepared[iid] = list(found)

    def raw(iid: str, mail: bool) -> None:
        row = conn.execute(_GET, (iid,)).fetchone()
        assert row is not None
        version, queue, mailbox, message_id, received_at = prepared[iid]
        now = datetime.now(UTC)
        conn.execute("BEGIN")
        cur = conn.execute(
            _UPDATE,
            (
                int(str(version)) + 1,
                "Accepted",
                AGENT.id,
                None,
                queue,
                None,
                mailbox,
                message_id,
                received_at,
                row[0],
                iid,
                version,
            ),
        )
        assert cur.rowcount == 1
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (OUTBOX_LOCK_KEY,))
        conn.execute(INSERT_NOTIFICATION, (AGENT.id, "/me/interactions", payload, now))
        if mail:
            conn.execute(INSERT_MAIL, (iid, mail_payload, now, now))
        conn.execute("COMMIT")
        prepared[iid][0] = int(str(version)) + 1

    def store_only(iid: str) -> None:
        with store.unit_of_work() as uow:
            i = uow.interactions.get(iid)
            assert i is not None
            uow.interactions.update(i.model_copy(update={"state": "Accepted", "offer": None}))
            uow.outbox.add_notification(Notification(agent_id=AGENT.id, payload=sample.payload))
            uow.commit()

    results = [
        timed("Accept: raw psycopg", stored, raw_ids, lambda i: raw(i, False), raw_pids),
        timed("Accept: store only", stored, store_ids, store_only, store_pids),
        timed(
            "Accept: service + store",
            stored,
            lib_ids,
            lambda i: service.execute("bench", i, accept),
            store_pids,
        ),
    ]
    drafts = [service.execute("bench", i, reply).reply_interaction_id or "" for i in lib_ids]
    results.append(timed("Send: raw psycopg", stored, raw_ids, lambda i: raw(i, True), raw_pids))
    results.append(
        timed(
            "Send: service + store",
            stored,
            drafts,
            lambda i: service.execute("bench", i, send),
            store_pids,
        )
    )
    conn.close()
    store.close()
    return results


# --------------------------------------------------------------------------- report


def server_version(cluster: PostgresCluster) -> str:
    with psycopg.connect(cluster.dsn()) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


def report(
    results: list[Result],
    small: int,
    large: int,
    loads: dict[int, float],
    ops: int,
    version: str,
) -> str:
    by = {(r.name, r.stored): r for r in results}
    lines = [
        SECTION,
        "",
        f"Measured by `benchmarks/store/bench_postgres.py` on {datetime.now(UTC):%Y-%m-%d}"
        f" (Python {platform.python_version()}, PostgreSQL {version}, psycopg"
        f" {psycopg.__version__}, {platform.machine()}, {os.cpu_count()} CPUs shared by the"
        " client and the server), on the tests' throwaway local cluster (`tests/pgcluster.py`:"
        " TCP on 127.0.0.1, `fsync=off`, `shared_buffers=64MB`, otherwise defaults),"
        f" {ops:,} operations per measurement, one client thread. The {large:,} stored"
        f" interactions are loaded with `PostgresStore.load` (COPY) in {loads[large]:.0f} s"
        f" ({large / loads[large]:,.0f}/s: what `interactions migrate --from sqlite:PATH`"
        " takes for that many); the measured interactions are created through the service on"
        " top of them. Server CPU: utime + stime of the backends serving the measured"
        " connections (`/proc/<pid>/stat`, found by `pg_backend_pid()` and"
        " `application_name`).",
        "",
        "| operation | stored | ops/s | p50 µs | p99 µs | client CPU µs/op | server CPU µs/op |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.stored:,} | {r.ops:,.0f} | {r.pct(0.5):,.0f} | {r.pct(0.99):,.0f}"
            f" | {r.per_op(r.client_cpu):,.0f} | {r.per_op(r.server_cpu):,.0f} |"
        )
    lines += [
        "",
        "Ratios (targets: service + store >= 0.5x raw; p50 at the large size <= 1.2x p50 at the"
        " small):",
        "",
        "| ratio | value | target |",
        "|---|---:|---|",
    ]
    for stored in (small, large):
        for name, target in (
            ("Accept: service + store", ">= 0.5x"),
            ("Send: service + store", ">= 0.5x"),
            ("Accept: store only", "(adapter alone)"),
        ):
            raw = by[(name.split(":")[0] + ": raw psycopg", stored)]
            ratio = by[(name, stored)].ops / raw.ops
            lines.append(f"| {name} / raw, ops/s, {stored:,} stored | {ratio:.2f}x | {target} |")
    for name in (
        "Accept: service + store",
        "Send: service + store",
        "Accept: raw psycopg",
        "Send: raw psycopg",
    ):
        ratio = by[(name, large)].pct(0.5) / by[(name, small)].pct(0.5)
        lines.append(f"| {name}: p50 at {large:,} / p50 at {small:,} | {ratio:.2f}x | <= 1.2x |")
    for name in ("Accept", "Send"):
        lib, raw = by[(f"{name}: service + store", small)], by[(f"{name}: raw psycopg", small)]
        ratio = lib.per_op(lib.server_cpu) / max(raw.per_op(raw.server_cpu), 1e-9)
        lines.append(
            f"| {name}: server CPU per op, service + store / raw, {small:,} stored"
            f" | {ratio:.2f}x | (same SQL: ~1x) |"
        )
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    current = PERFORMANCE_MD.read_text(encoding="utf-8") if PERFORMANCE_MD.exists() else ""
    if not current:
        current = "# Performance\n\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    after = re.compile(rf"^{re.escape(AFTER)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current, count=1)
    elif (found := after.search(current)) is not None:
        updated = current[: found.end()] + text + "\n" + current[found.end() :]
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    PERFORMANCE_MD.write_text(updated.rstrip("\n") + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/")
    args = parser.parse_args()
    cluster = PostgresCluster().start()
    try:
        version = server_version(cluster)
        results: list[Result] = []
        loads: dict[int, float] = {}
        for stored in (args.small, args.large):
            print(f"with {stored:,} stored interactions:", flush=True)
            found, loads[stored] = run_size(cluster, stored, args.ops)
            results += found
    finally:
        cluster.stop()
    text = report(results, args.small, args.large, loads, args.ops, version)
    print()
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"written to {PERFORMANCE_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
