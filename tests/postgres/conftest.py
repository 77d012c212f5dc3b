"""Fixtures of the PostgreSQL tests: the session's cluster (``tests/conftest.py``) gives each
test a fresh database (``postgres_dsn``); ``admin`` is a connection of the test's own to it."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from .helpers import Admin


@pytest.fixture
def admin(postgres_dsn: str) -> Iterator[Admin]:
    """A connection of the test's own to the test's database (autocommit)."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        yield conn
