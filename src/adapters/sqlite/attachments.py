"""Content-addressed attachment files next to the database.

Layout: ``<directory>/<first 2 hex digits>/<sha-256 hex>``. A file is written atomically: to a
temporary file in the same directory, ``fsync``, ``os.replace`` onto its final name, then
``fsync`` of the directory so the rename itself is durable. A reader therefore sees either no
file or the complete bytes; an existing final file is always complete, so storing the same
bytes again is a no-op. Left-over temporary files (a crash mid-write) are removed at start-up.
``delete`` unlinks a file (for a collector that knows nothing refers to it: the core never
deletes; docs/storage.md).

Why files and not BLOBs in the database: docs/storage.md (measured in
benchmarks/store/bench_sqlite.py): a large BLOB is written twice (WAL, then checkpoint) and holds
SQLite's single write lock while it is written, stalling every operation's commit behind it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Final

from interactions_core.errors import TooLarge

DEFAULT_MAX_SIZE: Final = 25 * 1024 * 1024
_CONTENT_ID: Final = re.compile(r"[0-9a-f]{64}")
_TEMP_PREFIX: Final = ".tmp-"


class AttachmentTooLarge(TooLarge, ValueError):
    """Over the size limit (a ``ValueError`` too, like the in-memory store's refusal)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"attachment of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class FileAttachmentStore:
    """The ``AttachmentStore`` port on the filesystem, content-addressed by SHA-256."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        fsync: bool = True,
        stale_temp_age: float = 3600.0,
    ) -> None:
        if max_size <= 0:
            raise ValueError("max_size must be positive")
        self.directory = Path(directory)
        self.max_size = max_size
        self._fsync = fsync
        self.directory.mkdir(parents=True, exist_ok=True)
        self.remove_stale_temp_files(stale_temp_age)

    @classmethod
    def beside(
        cls,
        database: str | os.PathLike[str],
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        fsync: bool = True,
        stale_temp_age: float = 3600.0,
    ) -> FileAttachmentStore:
        """The store for a database file: ``<database>.attachments/`` in the same directory."""
        path = Path(database)
        return cls(
            path.with_name(path.name + ".attachments"),
            max_size=max_size,
            fsync=fsync,
            stale_temp_age=stale_temp_age,
        )

    def path_for(self, content_id: str) -> Path:
        if not _CONTENT_ID.fullmatch(content_id):
            raise KeyError(content_id)
        return self.directory / content_id[:2] / content_id

    def put(self, data: bytes) -> str:
        if len(data) > self.max_size:
            raise AttachmentTooLarge(len(data), self.max_size)
        content_id = hashlib.sha256(data).hexdigest()
        final = self.path_for(content_id)
        if final.exists():
            return content_id
        folder = final.parent
        if not folder.is_dir():
            folder.mkdir(exist_ok=True)
            self._sync_directory(self.directory)
        fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                if self._fsync:
                    os.fsync(out.fileno())
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        self._sync_directory(folder)
        return content_id

    def get(self, content_id: str) -> bytes:
        try:
            return self.path_for(content_id).read_bytes()
        except FileNotFoundError:
            raise KeyError(content_id) from None

    def delete(self, content_id: str) -> None:
        """Unlink the file (and sync its directory): idempotent; a malformed id is unknown."""
        try:
            path = self.path_for(content_id)
        except KeyError:
            return
        try:
            path.unlink()
        except FileNotFoundError:
            return
        self._sync_directory(path.parent)

    def __contains__(self, content_id: object) -> bool:
        if not isinstance(content_id, str):
            return False
        try:
            return self.path_for(content_id).is_file()
        except KeyError:
            return False

    def remove_stale_temp_files(self, older_than: float = 3600.0) -> int:
        """Delete temporary files a crashed writer left behind; returns how many."""
        limit = time.time() - older_than
        removed = 0
        for temp in self.directory.glob(f"*/{_TEMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                if temp.stat().st_mtime <= limit:
                    temp.unlink()
                    removed += 1
        return removed

    def close(self) -> None:
        """Nothing to release: no file stays open between calls (idempotent). Every ``put``
        that returned has written (and, unless ``fsync=False``, synced) its file, so closing
        loses nothing stored."""

    def _sync_directory(self, folder: Path) -> None:
        if not self._fsync:
            return
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
