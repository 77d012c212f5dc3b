"""The file attachment store against the attachment store contract."""

from __future__ import annotations

import tempfile

from adapters.sqlite import FileAttachmentStore
from interactions_core.ports import AttachmentStore
from interactions_core.testing.contracts import AttachmentStoreContract


class TestFileAttachmentStore(AttachmentStoreContract):
    def make_attachment_store(self, max_size: int) -> AttachmentStore:
        return FileAttachmentStore(tempfile.mkdtemp(dir=self.tmp_path), max_size=max_size)


class TestFileAttachmentStoreBesideADatabase(AttachmentStoreContract):
    """As the server makes it: next to the database file, without fsync (same semantics)."""

    def make_attachment_store(self, max_size: int) -> AttachmentStore:
        database = tempfile.mkdtemp(dir=self.tmp_path) + "/interactions.sqlite3"
        return FileAttachmentStore.beside(database, max_size=max_size, fsync=False)
