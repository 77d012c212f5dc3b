"""Measure how attachment bytes are best kept in PostgreSQL (the figures in
``adapters/postgres/attachments.py``): one ``bytea`` value, a large object, or ``bytea`` rows of
1 MiB (what ``PostgresAttachmentStore`` does), for 1 MB and 25 MB of random bytes.

Run by hand (it is not a test): ``.venv/bin/python tests/postgres/measure_attachments.py``. It
starts the tests' throwaway cluster (``tests/pgcluster.py``), so the server runs with
``fsync=off``: put times leave out the disk flush, which costs every layout the same.

For each layout and size, best of three: the put time and the get time (a fresh connection
each, so the backend's memory starts clean), and the server's memory: the growth of the
backend's private resident memory (``RssAnon`` in ``/proc/<pid>/status``, sampled every
millisecond during the call), which is what one request costs the server, beyond its shared
buffers. Reading another user's ``/proc`` needs root or the server's user.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).parents[2] / "src")]

from adapters.postgres import PostgresAttachmentStore  # noqa: E402
from adapters.postgres.attachments import CHUNK_SIZE  # noqa: E402
from pgcluster import PostgresCluster  # noqa: E402

SIZES = (1_000_000, 25_000_000)
ROUNDS = 3


def private_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakMemory:
    """The peak growth of a process's private memory while it runs (sampled every ms)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base = private_mib(pid)
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, private_mib(self.pid))
            self._stop.wait(0.001)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, private_mib(self.pid)) - self.base


Conn = psycopg.Connection[tuple[object, ...]]


def put_bytea(conn: Conn, key: str, data: bytes) -> None:
    conn.execute("INSERT INTO whole VALUES (%s, %b)", (key, data))


def get_bytea(conn: Conn, key: str) -> bytes:
    row = conn.execute("SELECT data FROM whole WHERE id = %s", (key,), binary=True).fetchone()
    assert row is not None
    return bytes(row[0])


def put_large_object(conn: Conn, key: str, data: bytes) -> None:
    with conn.transaction():
        row = conn.execute("SELECT lo_from_bytea(0, %b)", (data[:CHUNK_SIZE],)).fetchone()
        assert row is not None
        for offset in range(CHUNK_SIZE, len(data), CHUNK_SIZE):
            conn.execute(
                "SELECT lo_put(%s, %s, %b)", (row[0], offset, data[offset : offset + CHUNK_SIZE])
            )
        conn.execute("INSERT INTO objects VALUES (%s, %s)", (key, row[0]))


def get_large_object(conn: Conn, key: str) -> bytes:
    with conn.transaction():
        row = conn.execute("SELECT oid FROM objects WHERE id = %s", (key,)).fetchone()
        assert row is not None
        parts: list[bytes] = []
        while True:
            part = conn.execute(
                "SELECT lo_get(%s, %s, %s)",
                (row[0], sum(map(len, parts)), CHUNK_SIZE),
                binary=True,
            ).fetchone()
            assert part is not None
            parts.append(bytes(part[0]))
            if len(parts[-1]) < CHUNK_SIZE:
                return b"".join(parts)


def measure(
    dsn: str, size: int, put: Callable[[Conn, bytes], str], get: Callable[[Conn, str], bytes]
) -> tuple[float, float, float, float]:
    best = [float("inf"), float("inf"), 0.0, 0.0]
    for _ in range(ROUNDS):
        data = os.urandom(size)
        with psycopg.connect(dsn, autocommit=True) as conn:
            memory = PeakMemory(conn.info.backend_pid)
            started = time.perf_counter()
            key = put(conn, data)
            put_s = time.perf_counter() - started
            put_mib = memory.stop()
        with psycopg.connect(dsn, autocommit=True) as conn:
            memory = PeakMemory(conn.info.backend_pid)
            started = time.perf_counter()
            got = get(conn, key)
            get_s = time.perf_counter() - started
            get_mib = memory.stop()
        assert got == data
        best = [
            min(best[0], put_s),
            min(best[1], get_s),
            max(best[2], put_mib),
            max(best[3], get_mib),
        ]
    return best[0], best[1], best[2], best[3]


def main() -> None:
    cluster = PostgresCluster().start()
    try:
        dsn = cluster.create_database()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE whole (id text PRIMARY KEY, data bytea NOT NULL)")
            conn.execute("CREATE TABLE objects (id text PRIMARY KEY, oid oid NOT NULL)")
        store = PostgresAttachmentStore(dsn, max_size=max(SIZES), pool_size=1)
        counter = iter(range(10**6))

        def key() -> str:
            return str(next(counter))

        def put_one(conn: Conn, data: bytes) -> str:
            k = key()
            put_bytea(conn, k, data)
            return k

        def put_lo(conn: Conn, data: bytes) -> str:
            k = key()
            put_large_object(conn, k, data)
            return k

        layouts = {
            "one bytea value": (put_one, get_bytea),
            "large object (1 MiB calls)": (put_lo, get_large_object),
        }
        print(f"{'layout':28} {'size':>6} {'put ms':>8} {'get ms':>8} {'server MiB put/get':>20}")
        for size in SIZES:
            for name, (put, get) in layouts.items():
                report(name, size, measure(dsn, size, put, get))
            report("bytea, 1 MiB rows (store)", size, measure_store(store, size))
        store.close()
    finally:
        cluster.stop()


def report(name: str, size: int, figures: tuple[float, float, float, float]) -> None:
    put_s, get_s, put_mib, get_mib = figures
    print(
        f"{name:28} {size / 1e6:5.0f}M {put_s * 1e3:8.1f} {get_s * 1e3:8.1f}"
        f" {put_mib:9.0f} / {get_mib:.0f}"
    )


def measure_store(store: PostgresAttachmentStore, size: int) -> tuple[float, float, float, float]:
    """As ``measure``, through ``PostgresAttachmentStore`` with a pool of one connection (so the
    backend measured is the one serving the call)."""
    best = [float("inf"), float("inf"), 0.0, 0.0]
    for _ in range(ROUNDS):
        data = os.urandom(size)
        with store._db.connection() as conn:
            pid = conn.info.backend_pid
        memory = PeakMemory(pid)
        started = time.perf_counter()
        content_id = store.put(data)
        put_s = time.perf_counter() - started
        put_mib = memory.stop()
        memory = PeakMemory(pid)
        started = time.perf_counter()
        got = store.get(content_id)
        get_s = time.perf_counter() - started
        get_mib = memory.stop()
        assert got == data
        best = [
            min(best[0], put_s),
            min(best[1], get_s),
            max(best[2], put_mib),
            max(best[3], get_mib),
        ]
    return best[0], best[1], best[2], best[3]


if __name__ == "__main__":
    main()
