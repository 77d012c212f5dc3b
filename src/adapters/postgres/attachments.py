"""Content-addressed attachment bytes in PostgreSQL: ``bytea`` rows of at most 1 MiB each.

The id is the SHA-256 hex digest of the bytes, the same content address ``FileAttachmentStore``
gives, so documents moved from SQLite keep naming their blobs. ``attachments`` holds one row per
blob (its size: an empty blob is a row with no chunk); ``attachment_chunks`` its bytes, in order.

Why chunked ``bytea`` and not one ``bytea`` value or a large object: measured on PostgreSQL 15
(``tests/postgres/measure_attachments.py``: random bytes, best of 3; server memory = the peak
growth of the serving backend's private memory during the call; two runs, both given):

                               put (ms)         get (ms)        server MiB (25 MB)
    layout                     1 MB   25 MB     1 MB   25 MB    put    get
    one bytea value            11-13  252-282   5      75-114   95     48
    large object, 1 MiB calls  19-21  274-299   8      125-128  5      3
    bytea rows of 1 MiB (this) 9-10   121-126   3-4    34-49    3      2

The test cluster runs with ``fsync=off``: the disk flush, the same for every layout, is left
out. At 1 MB every layout stays within +4 MiB of server memory. One ``bytea`` value is detoasted
and copied whole on the server: about four times its size to store it and twice to read it, per
concurrent request (a handful of 25 MB uploads at once is gigabytes). A large object streams,
but through ``lo_put``/``lo_get`` on 2 KiB pages, the slowest here, and it lives outside the
row: deleting the row leaves it behind unless ``lo_unlink`` is called, ``pg_dump`` and
permissions treat it apart, orphans need ``vacuumlo``. Chunked ``bytea`` bounds the server's
memory by the chunk as a large object does, is the fastest of the three (the chunks go in one
pipelined ``executemany`` and come back streamed row by row), and stays ordinary rows:
transactional, deleted with ``ON DELETE CASCADE``, dumped and replicated like everything else.
Chunks keep PostgreSQL's default storage (TOAST compression): ``pglz`` gives up on
incompressible data (images, archives) after its first KiB, and shrinks text-like attachments.

Semantics are ``FileAttachmentStore``'s: ``put`` is idempotent (the same bytes again store
nothing new; two concurrent puts of the same bytes agree, the second waits for the first's row),
returns once committed, and refuses data over ``max_size`` (``AttachmentTooLarge``, a
``TooLarge``) before touching the database; ``get`` of an unknown or malformed id (anything but
64 lowercase hex digits) is ``KeyError``; ``delete`` removes the blob and is a no-op for such an
id. Nothing else ever deletes: the core never calls ``delete`` (docs/storage.md, "Blobs are
kept").
"""

from __future__ import annotations

import hashlib
import re
from types import TracebackType
from typing import Final, Self

from interactions_core.errors import TooLarge

from .connection import Connection, Database, connect, connection_settings
from .migrations import apply_migrations, check_version

__all__ = ["CHUNK_SIZE", "AttachmentTooLarge", "PostgresAttachmentStore"]

CHUNK_SIZE: Final = 1024 * 1024
_CONTENT_ID: Final = re.compile(r"[0-9a-f]{64}")

_INSERT_BLOB: Final = (
    "INSERT INTO attachments (content_id, size) VALUES (%s, %s) ON CONFLICT (content_id) DO NOTHING"
)
_INSERT_CHUNK: Final = "INSERT INTO attachment_chunks (content_id, n, data) VALUES (%s, %s, %b)"
_GET: Final = (
    "SELECT a.size, c.data FROM attachments AS a"
    " LEFT JOIN attachment_chunks AS c ON c.content_id = a.content_id"
    " WHERE a.content_id = %s ORDER BY c.n"
)
_DELETE: Final = "DELETE FROM attachments WHERE content_id = %s"


class AttachmentTooLarge(TooLarge, ValueError):
    """Over the size limit (a ``ValueError`` too, like the other stores' refusal)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"attachment of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class PostgresAttachmentStore:
    """The ``AttachmentStore`` port in PostgreSQL, content-addressed by SHA-256."""

    def __init__(
        self,
        dsn: str,
        *,
        max_size: int,
        pool_size: int = 4,
        application_name: str = "interactions",
        connect_timeout_s: float = 10.0,
        migrate: bool = True,
    ) -> None:
        """Connect to the database at ``dsn`` (its tables are the store's schema: with
        ``migrate``, migrated as ``PostgresStore`` does; without, it must be current).

        Raises ``DatabaseUnreachable`` when the database cannot be reached. No statement
        timeout: a large blob may take a while on a slow link, and nothing waits behind it.
        """
        if max_size <= 0:
            raise ValueError("max_size must be positive")
        self.max_size = max_size
        settings = connection_settings(
            dsn,
            application_name=application_name,
            statement_timeout_ms=None,
            connect_timeout_s=connect_timeout_s,
        )
        self._db = Database(
            dsn,
            settings,
            pool_size=pool_size,
            connect_timeout_s=connect_timeout_s,
            statement_timeout_ms=None,
            name=f"{application_name}-attachments",
        )
        with connect(dsn, settings) as conn:
            if migrate:
                apply_migrations(conn)
            else:
                check_version(conn)
        self._db.open()

    def put(self, data: bytes) -> str:
        if len(data) > self.max_size:
            raise AttachmentTooLarge(len(data), self.max_size)
        content_id = hashlib.sha256(data).hexdigest()
        view = memoryview(data)  # chunks sent without copying the bytes
        with self._db.transaction() as conn:
            # The row first: when it exists (or a concurrent put of the same bytes committed
            # it meanwhile: the insert waits for that one) the bytes are stored already.
            if conn.execute(_INSERT_BLOB, (content_id, len(data))).rowcount == 1:
                with conn.cursor() as cur:
                    cur.executemany(
                        _INSERT_CHUNK,
                        [
                            (content_id, n, view[offset : offset + CHUNK_SIZE])
                            for n, offset in enumerate(range(0, len(data), CHUNK_SIZE))
                        ],
                    )
        return content_id

    def get(self, content_id: str) -> bytes:
        if not _CONTENT_ID.fullmatch(content_id):
            raise KeyError(content_id)

        def read(conn: Connection) -> tuple[int, list[bytes]] | None:
            size: int | None = None
            parts: list[bytes] = []
            with conn.cursor(binary=True) as cur:
                # Row by row: the client never holds the whole result as well as the chunks.
                for blob_size, chunk in cur.stream(_GET, (content_id,)):
                    size = int(blob_size)
                    if chunk is not None:
                        parts.append(bytes(chunk))
            return None if size is None else (size, parts)

        found = self._db.retryable(read)
        if found is None:
            raise KeyError(content_id)
        size, parts = found
        data = b"".join(parts)
        if len(data) != size:  # one statement is one snapshot: never, unless tampered with
            raise KeyError(content_id)
        return data

    def delete(self, content_id: str) -> None:
        """Remove the blob (its chunks go with it): idempotent; a malformed id is unknown."""
        if not _CONTENT_ID.fullmatch(content_id):
            return

        def remove(conn: Connection) -> None:
            conn.execute(_DELETE, (content_id,))

        self._db.retryable(remove)

    def __contains__(self, content_id: object) -> bool:
        if not isinstance(content_id, str) or not _CONTENT_ID.fullmatch(content_id):
            return False
        row = self._db.retryable(
            lambda c: c.execute(
                "SELECT 1 FROM attachments WHERE content_id = %s", (content_id,)
            ).fetchone()
        )
        return row is not None

    def close(self) -> None:
        """Close the connections (idempotent). Every ``put`` that returned had committed, so
        closing loses nothing stored."""
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
