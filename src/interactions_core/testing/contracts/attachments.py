"""``AttachmentStoreContract``: the tests every ``ports.AttachmentStore`` must pass.

Subclass it and implement ``make_attachment_store``::

    class TestS3Attachments(AttachmentStoreContract):
        def make_attachment_store(self, max_size: int) -> AttachmentStore:
            return S3AttachmentStore(bucket, max_size=max_size)

Stores are made inside the test (so the subclass's fixtures are ready) and closed after it.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import pytest

from interactions_core.errors import TooLarge
from interactions_core.ports import AttachmentStore

__all__ = ["AttachmentStoreContract"]

_ID = re.compile(r"[A-Za-z0-9._-]+")

# Bytes a careless store could alter: every byte value, line endings of each kind, a NUL, a
# UTF-8 BOM, invalid UTF-8, trailing whitespace.
_AWKWARD = (
    bytes(range(256))
    + b"\r\n\n\r\x00\xef\xbb\xbf\xff\xfe\x80 \t\r\n"
    + "Grüße ✓ 日本".encode()
    + b"  \n"
)


class AttachmentStoreContract(ABC):
    """Subclass and implement ``make_attachment_store``; every ``test_*`` method then runs."""

    max_size: int = 64 * 1024
    """The limit the contract's stores are made with (``self.store``)."""

    tmp_path: Path

    @abstractmethod
    def make_attachment_store(self, max_size: int) -> AttachmentStore:
        """A new, empty store that refuses data over ``max_size`` bytes with ``TooLarge``.

        ``self.tmp_path`` (pytest's ``tmp_path`` of the test) is set when it is called; a store
        made twice in one test must not share its data (use a new directory or namespace).
        """

    @pytest.fixture(autouse=True)
    def _attachment_contract(self, tmp_path: Path) -> Iterator[None]:
        self.tmp_path = tmp_path
        self._made: list[AttachmentStore] = []
        yield
        for store in self._made:
            store.close()

    def new_store(self, max_size: int | None = None) -> AttachmentStore:
        """A store from ``make_attachment_store`` (``self.max_size`` by default), closed after
        the test."""
        store = self.make_attachment_store(self.max_size if max_size is None else max_size)
        self._made.append(store)
        return store

    @property
    def store(self) -> AttachmentStore:
        """The store under test, made on first use."""
        if not self._made:
            self.new_store()
        return self._made[0]

    # ------------------------------------------------------------------ put / get

    def test_bytes_round_trip_exactly(self) -> None:
        for data in (b"hello", _AWKWARD, b"\x00" * 1000, bytes(range(256)) * 200):
            content_id = self.store.put(data)
            got = self.store.get(content_id)
            assert type(got) is bytes
            assert got == data

    def test_empty_bytes_are_stored_like_any_other(self) -> None:
        content_id = self.store.put(b"")
        assert self.store.get(content_id) == b""
        assert self.store.put(b"") == content_id
        assert content_id != self.store.put(b"\x00")

    def test_the_same_bytes_give_the_same_id(self) -> None:
        first = self.store.put(_AWKWARD)
        again = self.store.put(bytes(bytearray(_AWKWARD)))  # equal bytes, another object
        assert again == first
        assert self.store.get(first) == _AWKWARD

    def test_different_bytes_give_different_ids(self) -> None:
        blobs = [b"a", b"b", b"a\n", b"a\r\n", b"A", b"a" * 2, _AWKWARD, _AWKWARD[:-1]]
        ids = [self.store.put(data) for data in blobs]
        assert len(set(ids)) == len(blobs)
        for content_id, data in zip(ids, blobs, strict=True):
            assert self.store.get(content_id) == data

    def test_ids_are_url_and_file_name_safe(self) -> None:
        for data in (b"", b"x", _AWKWARD):
            content_id = self.store.put(data)
            assert isinstance(content_id, str)
            assert _ID.fullmatch(content_id), f"unsafe content id {content_id!r}"
            assert content_id not in (".", "..")

    @pytest.mark.parametrize(
        "content_id",
        ["", "nope", "0" * 64, "f" * 64, "../../etc/passwd", "/etc/passwd", "a/b", "..", "\x00"],
    )
    def test_an_unknown_id_raises_key_error(self, content_id: str) -> None:
        self.store.put(b"something else")
        with pytest.raises(KeyError):
            self.store.get(content_id)

    def test_an_id_from_another_store_is_unknown(self) -> None:
        content_id = self.new_store().put(b"kept elsewhere")
        with pytest.raises(KeyError):
            self.new_store().get(content_id)

    # ------------------------------------------------------------------ size limit

    def test_data_up_to_the_limit_is_stored(self) -> None:
        store = self.new_store(max_size=1024)
        data = bytes(n % 251 for n in range(1024))
        assert store.get(store.put(data)) == data

    def test_data_over_the_limit_is_refused_with_too_large(self) -> None:
        store = self.new_store(max_size=1024)
        data = bytes(n % 251 for n in range(1025))
        with pytest.raises(TooLarge):
            store.put(data)
        with pytest.raises(TooLarge):
            store.put(b"x" * 10_000)
        # Nothing of it was kept: the same bytes, in a store that takes them, are new there
        # (and the refusing store still works).
        assert store.get(store.put(data[:1024])) == data[:1024]
        roomy = self.new_store(max_size=4096)
        content_id = roomy.put(data)
        with pytest.raises(KeyError):
            store.get(content_id)

    # ------------------------------------------------------------------ delete

    def test_delete_removes_those_bytes_and_no_others(self) -> None:
        kept = [b"a", b"", _AWKWARD, b"a\n"]
        kept_ids = [self.store.put(data) for data in kept]
        gone = self.store.put(b"a\r\n")
        self.store.delete(gone)
        with pytest.raises(KeyError):
            self.store.get(gone)
        for content_id, data in zip(kept_ids, kept, strict=True):
            assert self.store.get(content_id) == data

    def test_delete_is_idempotent(self) -> None:
        content_id = self.store.put(b"once")
        self.store.delete(content_id)
        self.store.delete(content_id)
        with pytest.raises(KeyError):
            self.store.get(content_id)

    @pytest.mark.parametrize(
        "content_id",
        ["", "nope", "0" * 64, "f" * 64, "../../etc/passwd", "/etc/passwd", "a/b", "..", "\x00"],
    )
    def test_deleting_an_unknown_id_is_a_no_op(self, content_id: str) -> None:
        kept = self.store.put(b"something else")
        self.store.delete(content_id)
        assert self.store.get(kept) == b"something else"

    def test_bytes_put_again_after_delete_are_stored_anew(self) -> None:
        content_id = self.store.put(_AWKWARD)
        self.store.delete(content_id)
        assert self.store.put(_AWKWARD) == content_id
        assert self.store.get(content_id) == _AWKWARD

    def test_delete_in_another_store_leaves_this_one_alone(self) -> None:
        content_id = self.store.put(b"kept here")
        other = self.new_store()
        assert other.put(b"kept here") == content_id
        other.delete(content_id)
        assert self.store.get(content_id) == b"kept here"

    # ------------------------------------------------------------------ concurrency, close

    def test_threads_putting_the_same_bytes_agree(self) -> None:
        data = _AWKWARD * 50
        workers = 8
        start = threading.Barrier(workers)
        ids: list[str] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def put() -> None:
            start.wait()
            try:
                content_id = self.store.put(data)
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                return
            with lock:
                ids.append(content_id)

        threads = [threading.Thread(target=put) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(ids) == workers and len(set(ids)) == 1
        assert self.store.get(ids[0]) == data

    def test_close_is_idempotent(self) -> None:
        self.store.put(b"kept")
        self.store.close()
        self.store.close()  # and once more after the test

    def test_close_of_a_store_never_used(self) -> None:
        store = self.new_store()
        store.close()
        store.close()
