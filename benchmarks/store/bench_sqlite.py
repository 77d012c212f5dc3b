"""Issue 4's benchmark: the SQLite store under the real service, against raw ``sqlite3``.

One run measures, with 1,000 and with 1,000,000 stored interactions:

* ``Accept`` and ``Send``: the full unit of work through ``InteractionService`` + ``SqliteStore``
  (load, lifecycle, change, notification, mail for Send, commit);
* ``store only``: the adapter without the service (get, update, one notification, commit);
* ``raw``: the same statements with no library around them: ``BEGIN IMMEDIATE``, the SELECT of
  the row, the versioned UPDATE, the outbox INSERT(s), ``COMMIT``, with JSON prepared beforehand.

The 1,000,000 rows are generated directly through the schema with one ``executemany`` in one
transaction (building them through the service would take far too long); the interactions
measured are then created through the service on top of them. Figures go to stdout and to the
"## SQLite store" section of docs/performance.md (only that section is rewritten).

Also measured: putting attachments as files (``FileAttachmentStore``) against BLOBs in SQLite,
the measurement docs/storage.md cites for the choice of files.

Run: ``.venv/bin/python benchmarks/store/bench_sqlite.py [--ops 2000] [--large 1000000]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from adapters.sqlite import FileAttachmentStore, SqliteStore
from adapters.sqlite.store import row_values
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
PERFORMANCE_MD = ROOT / "docs" / "performance.md"
SECTION = "## SQLite store"
AGENT = Agent(id="bench", mailboxes=("support@example.com",))


@dataclass
class Result:
    name: str
    stored: int
    samples: list[float]  # seconds per operation
    wall: float

    @property
    def ops(self) -> float:
        return len(self.samples) / self.wall

    def pct(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


def timed(name: str, stored: int, items: list[str], op: Callable[[str], object]) -> Result:
    samples: list[float] = []
    clock = time.perf_counter
    start = clock()
    for item in items:
        t0 = clock()
        op(item)
        samples.append(clock() - t0)
    return Result(name, stored, samples, clock() - start)


# --------------------------------------------------------------------------- population


def populate(path: Path, count: int) -> float:
    """``count`` past interactions straight into the schema; returns the seconds it took."""
    SqliteStore(path).close()  # creates and migrates the schema
    base = datetime(2025, 1, 1, tzinfo=UTC)
    template = Interaction(
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
    doc = template.model_dump_json()
    columns = row_values(template)

    def rows() -> Iterator[tuple[object, ...]]:
        for n in range(count):
            iid = f"P{n:012d}"
            owner = f"agent{n % 500}" if n % 20 == 0 else None  # 5 % still owned
            workbin = f"agent:agent{n % 500}/Personal" if n % 20 == 1 else None
            state = "Accepted" if owner else "InWorkbin" if workbin else "Completed"
            yield (
                iid,
                3,
                state,
                owner,
                None,
                columns[4],
                workbin,
                columns[6],
                f"<{iid}@customer.example>",
                columns[8] + n * 1_000_000,
                doc.replace("@@ID@@", iid),
            )

    conn = sqlite3.connect(path, isolation_level=None)
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO interactions (id, version, state, owner, offer_agent, current_queue,"
        " workbin, mailbox, message_id, received_us, data)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows(),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("ANALYZE")
    conn.close()
    return time.perf_counter() - started


# --------------------------------------------------------------------------- the runs


def run_size(workdir: Path, stored: int, ops: int) -> list[Result]:
    path = workdir / f"bench-{stored}.sqlite3"
    seconds = populate(path, stored)
    size_mb = path.stat().st_size / 1e6
    print(f"  {stored:>9,} rows generated in {seconds:.1f} s ({size_mb:,.0f} MB)", flush=True)

    store = SqliteStore(path)
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
                message_id=f"<bench-{stored}-{k}-{len(ids)}@customer.example>",
            )
            i = service.receive(email, mailbox="support@example.com")
            service.offer(i.id, AGENT.id)
            ids.append(i.id)
        return ids

    accept, reply, send = (
        parse_operation({"operationName": name}) for name in ("Accept", "Reply", "Send")
    )
    lib_ids, raw_ids, store_ids = offered(ops), offered(ops), offered(ops)
    results = []

    # Raw sqlite3: the same statements, JSON prepared beforehand.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA foreign_keys = ON")
    # The store checkpoints the WAL on a thread of its own (adapters.sqlite.checkpoint), not in
    # a commit: the same here, or the raw commits would pay for checkpoints the library's skip.
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    sample = store.pending_notifications(limit=1)[0]
    payload = json.dumps(sample.to_wire(), separators=(",", ":"))
    mail_payload = '{"interaction_id":"x","mailbox":"support@example.com"' + " " * 900 + "}"
    now = datetime.now(UTC).isoformat()

    def raw(iid: str, mail: bool) -> None:
        conn.execute("BEGIN IMMEDIATE")
        version, data = conn.execute(
            "SELECT version, data FROM interactions WHERE id = ?", (iid,)
        ).fetchone()
        cur = conn.execute(
            "UPDATE interactions SET version = version + 1, state = ?, owner = ?,"
            " offer_agent = NULL, data = ? WHERE id = ? AND version = ?",
            ("Accepted", AGENT.id, data, iid, version),
        )
        assert cur.rowcount == 1
        conn.execute(
            "INSERT INTO outbox (kind, agent_id, topic, payload, queued_at)"
            " VALUES ('notification', ?, '/me/interactions', ?, ?)",
            (AGENT.id, payload, now),
        )
        if mail:
            conn.execute(
                "INSERT INTO outbox (kind, interaction_id, payload, queued_at, next_attempt_at,"
                " due_us) VALUES ('mail', ?, ?, ?, ?, 0)",
                (iid, mail_payload, now, now),
            )
        conn.execute("COMMIT")

    def store_only(iid: str) -> None:
        with store.unit_of_work() as uow:
            i = uow.interactions.get(iid)
            assert i is not None
            uow.interactions.update(i.model_copy(update={"state": "Accepted", "offer": None}))
            uow.outbox.add_notification(Notification(agent_id=AGENT.id, payload=sample.payload))
            uow.commit()

    results.append(timed("Accept: raw sqlite3", stored, raw_ids, lambda i: raw(i, False)))
    results.append(timed("Accept: store only", stored, store_ids, store_only))
    results.append(
        timed(
            "Accept: service + store",
            stored,
            lib_ids,
            lambda i: service.execute("bench", i, accept),
        )
    )
    drafts = [service.execute("bench", i, reply).reply_interaction_id or "" for i in lib_ids]
    results.append(timed("Send: raw sqlite3", stored, raw_ids, lambda i: raw(i, True)))
    results.append(
        timed("Send: service + store", stored, drafts, lambda i: service.execute("bench", i, send))
    )
    conn.close()
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return results


# --------------------------------------------------------------------------- attachments


def bench_attachments(workdir: Path) -> list[tuple[str, str, float, float]]:
    """(size, backend, ms per put, ms per get) for files vs BLOBs (NORMAL and FULL)."""
    out = []
    for label, size, count in (
        ("10 KB", 10_000, 200),
        ("1 MB", 1_000_000, 30),
        ("10 MB", 10_000_000, 6),
    ):
        blobs = [os.urandom(size) for _ in range(count)]
        files = FileAttachmentStore(workdir / f"att-{size}")
        t0 = time.perf_counter()
        ids = [files.put(b) for b in blobs]
        put = (time.perf_counter() - t0) / count
        t0 = time.perf_counter()
        for cid in ids:
            files.get(cid)
        get = (time.perf_counter() - t0) / count
        out.append((label, "files (fsync file + dir)", put * 1e3, get * 1e3))
        for sync in ("NORMAL", "FULL"):
            db = workdir / f"blobs-{size}-{sync}.sqlite3"
            conn = sqlite3.connect(db, isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {sync}")
            conn.execute("CREATE TABLE attachments (id TEXT PRIMARY KEY, data BLOB NOT NULL)")
            t0 = time.perf_counter()
            for cid, b in zip(ids, blobs, strict=True):
                conn.execute("BEGIN IMMEDIATE")  # the write lock every operation needs
                conn.execute("INSERT OR IGNORE INTO attachments VALUES (?, ?)", (cid, b))
                conn.execute("COMMIT")
            put = (time.perf_counter() - t0) / count
            t0 = time.perf_counter()
            for cid in ids:
                conn.execute("SELECT data FROM attachments WHERE id = ?", (cid,)).fetchone()
            get = (time.perf_counter() - t0) / count
            conn.close()
            out.append((label, f"SQLite BLOB, synchronous={sync}", put * 1e3, get * 1e3))
    return out


# --------------------------------------------------------------------------- report


def report(
    results: list[Result],
    small: int,
    large: int,
    attachments: list[tuple[str, str, float, float]],
    ops: int,
) -> str:
    by = {(r.name, r.stored): r for r in results}
    lines = [
        SECTION,
        "",
        f"Measured by `benchmarks/store/bench_sqlite.py` on {datetime.now(UTC):%Y-%m-%d}"
        f" (Python {platform.python_version()}, SQLite {sqlite3.sqlite_version},"
        f" {platform.machine()}, {os.cpu_count()} CPUs), WAL, `synchronous=NORMAL`,"
        f" {ops:,} operations per measurement, one thread. The {large:,} stored interactions are"
        " generated straight into the schema with one `executemany` (not through the service);"
        " the measured interactions are created through the service on top of them.",
        "",
        "| operation | stored | ops/s | p50 µs | p99 µs |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.stored:,} | {r.ops:,.0f} | {r.pct(0.5):,.0f} | {r.pct(0.99):,.0f} |"
        )
    lines += ["", "Ratios (targets: library >= 0.5x raw; p50 at 1M <= 1.5x p50 at 1k):", ""]
    lines += ["| ratio | value | target |", "|---|---:|---|"]
    for stored in (small, large):
        for name, target in (
            ("Accept: service + store", ">= 0.5x"),
            ("Send: service + store", ">= 0.5x"),
            ("Accept: store only", "(adapter alone)"),
        ):
            raw = by[(name.split(":")[0] + ": raw sqlite3", stored)]
            ratio = by[(name, stored)].ops / raw.ops
            lines.append(f"| {name} / raw, ops/s, {stored:,} stored | {ratio:.2f}x | {target} |")
    for name in ("Accept: service + store", "Send: service + store", "Accept: raw sqlite3"):
        ratio = by[(name, large)].pct(0.5) / by[(name, small)].pct(0.5)
        lines.append(f"| {name}: p50 at {large:,} / p50 at {small:,} | {ratio:.2f}x | <= 1.5x |")
    lines += [
        "",
        "Attachments: files (`FileAttachmentStore`) against BLOBs in SQLite (mean per call):",
        "",
        "| size | backend | put ms | get ms |",
        "|---|---|---:|---:|",
    ]
    for size, backend, put, get in attachments:
        lines.append(f"| {size} | {backend} | {put:.2f} | {get:.2f} |")
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    PERFORMANCE_MD.parent.mkdir(parents=True, exist_ok=True)
    current = PERFORMANCE_MD.read_text(encoding="utf-8") if PERFORMANCE_MD.exists() else ""
    if not current:
        current = "# Performance\n\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    PERFORMANCE_MD.write_text(updated.rstrip("\n") + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/")
    parser.add_argument("--dir", type=Path, default=None, help="working directory (a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        workdir = Path(tmp)
        results: list[Result] = []
        for stored in (args.small, args.large):
            print(f"with {stored:,} stored interactions:", flush=True)
            results += run_size(workdir, stored, args.ops)
        print("attachments: files vs BLOBs", flush=True)
        attachments = bench_attachments(workdir)
    text = report(results, args.small, args.large, attachments, args.ops)
    print()
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"written to {PERFORMANCE_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
