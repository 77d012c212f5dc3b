"""Fixtures every test directory may use: a throwaway PostgreSQL cluster (``pgcluster.py``),
started once per test run on first use and stopped at its end, whatever happened."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgcluster import PostgresCluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_dsn(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database for one test, dropped after it."""
    dsn = postgres_cluster.create_database()
    try:
        yield dsn
    finally:
        postgres_cluster.drop_database(dsn)
