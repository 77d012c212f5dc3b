"""PostgreSQL storage: the store + outbox (``PostgresStore``) and an attachment store
(``PostgresAttachmentStore``) on psycopg 3 with a connection pool, for installations where
several processes share one database. Install with ``interactions-core[postgres]``.

Modules: ``store`` (units of work), ``outbox`` (the outbox reader; why seqs are in commit
order; mail claims), ``migrations`` (the versioned schema), ``connection`` (the pool, timeouts
and what failures become), ``attachments`` (why chunked ``bytea``), ``bulk`` (importing an
installation), ``rows`` (the row encoding).
"""

from .attachments import AttachmentTooLarge, PostgresAttachmentStore
from .connection import DatabaseUnreachable
from .leader import LeaderLock
from .migrations import (
    LATEST_VERSION,
    MIGRATIONS,
    Migration,
    SchemaTooNew,
    SchemaTooOld,
    migrate,
    schema_version,
)
from .store import PostgresStore, PostgresUnitOfWork

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "AttachmentTooLarge",
    "DatabaseUnreachable",
    "LeaderLock",
    "Migration",
    "PostgresAttachmentStore",
    "PostgresStore",
    "PostgresUnitOfWork",
    "SchemaTooNew",
    "SchemaTooOld",
    "migrate",
    "schema_version",
]
