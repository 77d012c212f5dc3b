"""The PostgreSQL store and attachment store against the shipped contract suites.

Each test gets a store nobody used before: a new, empty schema (the store's DSN names it as
its ``search_path``), migrated from nothing by the store under test, in a database made once
per module on the session's throwaway cluster. A schema isolates a store completely (every
table, index and sequence it creates or reads is resolved through the search path), and it is
made in milliseconds, where ``CREATE DATABASE`` took ~0.3 s here: for the ~130 contract tests
that is the difference between seconds and most of a minute. The other PostgreSQL tests use a
fresh database each (``postgres_dsn``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.postgres import PostgresAttachmentStore, PostgresStore
from interactions_core.ports import AttachmentStore, Store
from interactions_core.testing import ManualClock
from interactions_core.testing.contracts import AttachmentStoreContract, StoreContract
from pgcluster import PostgresCluster

from .helpers import new_schema


@pytest.fixture(scope="module")
def contract_database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """One database for the module's tests; each test makes its own schemas in it."""
    dsn = postgres_cluster.create_database()
    try:
        yield dsn
    finally:
        postgres_cluster.drop_database(dsn)


class TestPostgresStore(StoreContract):
    @pytest.fixture(autouse=True)
    def _schema(self, contract_database: str) -> None:
        self.dsn = new_schema(contract_database)

    def make_store(self, clock: ManualClock) -> Store:
        return PostgresStore(self.dsn, clock=clock)


class TestPostgresStoreMigratedBefore(StoreContract):
    """On a schema another process migrated (the store opened with ``migrate=False``), with a
    pool of two connections, so the contract's concurrent tests also queue for connections."""

    @pytest.fixture(autouse=True)
    def _schema(self, contract_database: str) -> None:
        self.dsn = new_schema(contract_database)

    def make_store(self, clock: ManualClock) -> Store:
        PostgresStore(self.dsn, clock=clock).close()
        return PostgresStore(self.dsn, clock=clock, migrate=False, pool_size=2)


class TestPostgresAttachmentStore(AttachmentStoreContract):
    """Each store its own schema: two stores of one test share nothing."""

    @pytest.fixture(autouse=True)
    def _database(self, contract_database: str) -> None:
        self.database = contract_database

    def make_attachment_store(self, max_size: int) -> AttachmentStore:
        return PostgresAttachmentStore(new_schema(self.database), max_size=max_size)
