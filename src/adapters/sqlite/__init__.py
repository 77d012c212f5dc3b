"""The embedded default storage: SQLite store + outbox, and a file attachment store."""

from .attachments import AttachmentTooLarge, FileAttachmentStore
from .migrations import LATEST_VERSION, MIGRATIONS, Migration, SchemaTooNew, migrate
from .store import SqliteStore, SqliteUnitOfWork

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "AttachmentTooLarge",
    "FileAttachmentStore",
    "Migration",
    "SchemaTooNew",
    "SqliteStore",
    "SqliteUnitOfWork",
    "migrate",
]
