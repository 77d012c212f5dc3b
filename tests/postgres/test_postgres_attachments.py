"""What only the PostgreSQL attachment store has: the content address it shares with the file
store, blobs in 1 MiB rows, puts from two stores at once, the size limit checked first."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from adapters.postgres import AttachmentTooLarge, PostgresAttachmentStore
from adapters.postgres.attachments import CHUNK_SIZE
from adapters.sqlite import FileAttachmentStore
from interactions_core.errors import TooLarge

from .helpers import Admin


def test_the_content_address_is_the_file_stores(postgres_dsn: str, tmp_path: Path) -> None:
    """Documents moved from SQLite name their blobs by the same ids."""
    files = FileAttachmentStore(tmp_path / "files", fsync=False)
    with_store = PostgresAttachmentStore(postgres_dsn, max_size=4 * CHUNK_SIZE)
    try:
        for data in (b"", b"x", os.urandom(CHUNK_SIZE + 1), "Grüße".encode()):
            assert with_store.put(data) == files.put(data)
    finally:
        with_store.close()


def test_a_blob_is_kept_in_rows_of_one_mib(postgres_dsn: str, admin: Admin) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 12_345)
    with PostgresAttachmentStore(postgres_dsn, max_size=4 * CHUNK_SIZE) as store:
        content_id = store.put(data)
        assert store.get(content_id) == data
        rows = admin.execute(
            "SELECT n, length(data) FROM attachment_chunks WHERE content_id = %s ORDER BY n",
            (content_id,),
        ).fetchall()
        assert rows == [(0, CHUNK_SIZE), (1, CHUNK_SIZE), (2, CHUNK_SIZE), (3, 12_345)]
        assert content_id in store and "0" * 64 not in store and "../x" not in store
        store.delete(content_id)
        remaining = admin.execute("SELECT count(*) FROM attachment_chunks").fetchone()
        assert remaining == (0,)  # the chunks went with it
        with pytest.raises(KeyError):
            store.get(content_id)


def test_two_stores_putting_the_same_big_blob_at_once_store_it_once(
    postgres_dsn: str, admin: Admin
) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 1)
    stores = [PostgresAttachmentStore(postgres_dsn, max_size=len(data)) for _ in range(3)]
    start = threading.Barrier(len(stores))
    ids: list[str] = []
    errors: list[BaseException] = []

    def put(store: PostgresAttachmentStore) -> None:
        start.wait()
        try:
            ids.append(store.put(data))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(ids)) == 1
    for store in stores:
        assert store.get(ids[0]) == data
        store.close()
    assert admin.execute("SELECT count(*) FROM attachments").fetchone() == (1,)
    assert admin.execute("SELECT count(*) FROM attachment_chunks").fetchone() == (3,)


def test_over_the_limit_is_refused_before_anything_is_sent(postgres_dsn: str, admin: Admin) -> None:
    with PostgresAttachmentStore(postgres_dsn, max_size=10) as store:
        with pytest.raises(AttachmentTooLarge) as caught:
            store.put(b"x" * 11)
        assert isinstance(caught.value, TooLarge) and isinstance(caught.value, ValueError)
        assert (caught.value.size, caught.value.limit) == (11, 10)
    assert admin.execute("SELECT count(*) FROM attachments").fetchone() == (0,)
    with pytest.raises(ValueError, match="max_size"):
        PostgresAttachmentStore(postgres_dsn, max_size=0)
