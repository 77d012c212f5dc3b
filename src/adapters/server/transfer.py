"""Moving an installation from SQLite to PostgreSQL (``interactions migrate --from sqlite:PATH``).

What moves: every interaction, as its stored document with its version (so a client's
knowledge of versions and every reference between interactions stay true), in the order it
was stored (``by_message_id`` answers the first *stored* match); the outbox's pending mail
with its delivery bookkeeping (attempts, next attempt, last error) and its unpublished
notifications, in seq order; and every blob of the attachments directory. What does not: mail
already sent or failed (the delivery record stays in the SQLite file), published
notifications (kept there only for CometD clients catching up: a client that reconnects to the
new database re-reads its state), the schema history.

How, and why so:

* **The SQLite database is only read**: opened ``mode=ro``, in one read transaction, decoded
  by the SQLite adapter's own functions (``adapters.sqlite.store``), so what is written is
  exactly what the SQLite store would have returned. The source is left as it was: it stays a
  complete fallback until the new installation is trusted.
* **The snapshot is taken before the blobs are copied**, and the blobs before anything is
  loaded. A blob is put before the commit that refers to it and never deleted by the core, so
  every blob the snapshot refers to is copied, and once the interactions are visible in
  PostgreSQL their attachments are too. (A server still running on the SQLite file would go on
  writing after the snapshot: stop it first.)
* **The target must hold no interaction.** It is checked before the (long) blob copy, and
  ``PostgresStore.load`` checks it again in its own transaction, which loads everything or
  nothing. Blobs are content-addressed, so copying them again after a failure is harmless.
* A blob file whose bytes do not hash to its name is refused (naming the file): moving it
  would store it under another name and lose it. A blob an interaction refers to but the
  directory lacks was already missing in SQLite; it is counted and reported, not invented.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from interactions_core.model import Interaction
from interactions_core.ports import MailEntry, Notification, OutgoingMail

from ..sqlite import LATEST_VERSION
from ..sqlite.migrations import current_version
from ..sqlite.store import _load as decode_interaction
from ..sqlite.store import _notifications as decode_notifications
from .database import (
    SETTING,
    PostgresOptions,
    PostgresUrl,
    attachment_limit,
    open_failures,
    postgres_adapter,
    unreachable,
)
from .settings import Settings

_BLOB_NAME: Final = re.compile(r"[0-9a-f]{64}")
_INTERACTIONS: Final = "SELECT pos, id, data FROM interactions ORDER BY pos"
# Pending: not yet published. ``status`` mirrors ``published_us`` since version 3, and before
# it published notifications were deleted: the one test valid for every schema version.
_NOTIFICATIONS: Final = (
    "SELECT seq, agent_id, topic, payload FROM outbox"
    " WHERE kind = 'notification' AND status = 'pending' ORDER BY seq"
)
_REFERS: Final = (
    "SELECT 1 FROM interactions WHERE json_array_length(data, '$.email.attachments') > 0"
    " OR json_extract(data, '$.raw_id') IS NOT NULL"
    " UNION ALL SELECT 1 FROM outbox WHERE kind = 'mail' AND status = 'pending'"
    " AND json_array_length(payload, '$.attachments') > 0 LIMIT 1"
)
_MAIL: Final = (
    "SELECT seq, payload, queued_at, attempts, next_attempt_at, last_error FROM outbox"
    " WHERE kind = 'mail' AND status = 'pending' ORDER BY seq"
)


class TransferError(Exception):
    """The move cannot be done as asked; the message says why and what to do."""


@dataclass
class TransferReport:
    """What was moved, and what the source lacked."""

    source: Path
    attachments_dir: Path
    target: str
    interactions: int = 0
    mail: int = 0
    notifications: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    missing_blobs: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"moved from SQLite {self.source} (attachments {self.attachments_dir})"
            f" to {self.target}:",
            f"  interactions           {self.interactions:,} (versions kept)",
            f"  pending mail           {self.mail:,}",
            f"  pending notifications  {self.notifications:,}",
            f"  attachment blobs       {self.blobs:,} ({self.blob_bytes:,} bytes)",
        ]
        if self.missing_blobs:
            shown = ", ".join(self.missing_blobs[:5])
            more = f" and {len(self.missing_blobs) - 5} more" if len(self.missing_blobs) > 5 else ""
            out.append(
                f"  warning: {len(self.missing_blobs)} blob(s) referred to but already missing"
                f" from {self.attachments_dir}: {shown}{more}"
            )
        return out


# --------------------------------------------------------------------------- the source


class SqliteSource:
    """A SQLite installation, read only, in one read transaction (a consistent snapshot)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise TransferError(f"--from sqlite:{path}: no such file")
        uri = "file:" + quote(str(path.resolve())) + "?mode=ro"
        try:
            self.conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise TransferError(f"--from sqlite:{path}: cannot read it: {exc}") from None
        try:
            self.conn.execute("BEGIN")  # the snapshot starts at the first read, just below
            version = current_version(self.conn)
            if version == 0:
                raise TransferError(
                    f"--from sqlite:{path}: not an interactions database (no schema)"
                )
            if version > LATEST_VERSION:
                raise TransferError(
                    f"--from sqlite:{path}: schema version {version} is newer than this"
                    f" version's {LATEST_VERSION}: run the newer version's migrate"
                )
        except sqlite3.Error as exc:
            self.conn.close()
            raise TransferError(f"--from sqlite:{path}: cannot read it: {exc}") from None
        except BaseException:
            self.conn.close()
            raise
        self.path = path
        self.version = version

    def count(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM interactions").fetchone()
        return int(row[0])

    def refers_to_blobs(self) -> bool:
        """Whether any interaction has an attachment or a kept raw message, or any pending
        mail an attachment (asked of SQLite's JSON functions, without decoding)."""
        row = self.conn.execute(_REFERS).fetchone()
        return row is not None

    def interactions(self) -> Iterator[Interaction]:
        """Every interaction, as stored, in the order it was stored. A document that does not
        decode stops the move, naming its row: it would not load in SQLite either."""
        for pos, iid, data in self.conn.execute(_INTERACTIONS):
            try:
                yield decode_interaction(data)
            except ValueError as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise TransferError(
                    f"--from sqlite:{self.path}: interaction {iid!r} (row {pos}) cannot be"
                    f" read: {first}; nothing was loaded"
                ) from None

    def notifications(self) -> list[Notification]:
        """The notifications not yet published, in seq order, each with its seq."""
        return decode_notifications(self.conn.execute(_NOTIFICATIONS))

    def mail(self) -> list[MailEntry]:
        """The mail not yet sent (nor failed), with its bookkeeping, in seq order (decoded as
        ``SqliteStore.pending_mail`` does, whatever its due time)."""
        return [
            MailEntry(
                seq=seq,
                mail=OutgoingMail.model_validate_json(payload),
                queued_at=datetime.fromisoformat(queued_at),
                attempts=attempts,
                next_attempt_at=datetime.fromisoformat(next_attempt_at),
                last_error=last_error,
            )
            for seq, payload, queued_at, attempts, next_attempt_at, last_error in self.conn.execute(
                _MAIL
            )
        ]

    def close(self) -> None:
        try:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")
        finally:
            self.conn.close()


def blob_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """``(content id, file)`` for every blob of a ``FileAttachmentStore`` directory
    (``<2 hex>/<64 hex>``; its temporary files and anything else are not blobs)."""
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        for file in sorted(folder.iterdir()):
            name = file.name
            if _BLOB_NAME.fullmatch(name) and folder.name == name[:2] and file.is_file():
                yield name, file


def referenced_blobs(interaction: Interaction) -> Iterator[str]:
    """The blobs an interaction's document refers to: its attachments' and its raw message."""
    for attachment in interaction.email.attachments:
        yield attachment.blob
    if interaction.raw_id:
        yield interaction.raw_id


# --------------------------------------------------------------------------- the move


def default_attachments_dir(source: Path) -> Path:
    """Where ``interactions serve`` keeps a SQLite installation's attachments by default:
    ``attachments/`` beside the database file (``<data_dir>/attachments``)."""
    return source.parent / "attachments"


def move_sqlite_to_postgres(
    settings: Settings,
    source_path: Path,
    attachments_dir: Path | None = None,
    *,
    progress: Callable[[str], None] = lambda _: None,
) -> TransferReport:
    """Move the SQLite installation at ``source_path`` (attachments in ``attachments_dir``,
    default ``<dir of source_path>/attachments``) into the configured PostgreSQL database,
    which is migrated first and must hold no interaction. Raises ``TransferError`` for what
    cannot be moved and ``CannotOpenDatabase`` when PostgreSQL cannot be used."""
    url = settings.database_url
    if url is None:
        raise TransferError(
            f"--from moves an installation into PostgreSQL, but {SETTING} is the SQLite file"
            f" {settings.database_path}: set it to postgresql://user:password@host:port/db"
        )
    directory = (
        attachments_dir if attachments_dir is not None else default_attachments_dir(source_path)
    )
    if attachments_dir is not None and not attachments_dir.is_dir():
        raise TransferError(f"--attachments {attachments_dir}: no such directory")
    source = SqliteSource(source_path)
    try:
        return _move(settings, url, source, directory, progress)
    except sqlite3.Error as exc:
        raise TransferError(f"--from sqlite:{source_path}: cannot read it: {exc}") from None
    finally:
        source.close()


def _move(
    settings: Settings,
    url: PostgresUrl,
    source: SqliteSource,
    directory: Path,
    progress: Callable[[str], None],
) -> TransferReport:
    total = source.count()  # the snapshot's first read: everything below reads the same one
    if not directory.is_dir() and source.refers_to_blobs():
        raise TransferError(
            f"the interactions refer to attachments, and there is no attachments directory"
            f" {directory}: give it with --attachments DIR"
        )
    blobs = list(blob_files(directory)) if directory.is_dir() else []
    largest = max((file.stat().st_size for _, file in blobs), default=0)
    progress(
        f"reading SQLite {source.path} (schema version {source.version}): {total:,}"
        f" interactions, {len(blobs):,} attachment blobs in {directory}"
    )
    postgres = postgres_adapter()
    options = PostgresOptions.of(settings)
    report = TransferReport(source.path, directory, url.redacted)
    try:
        store = postgres.PostgresStore(
            url.secret(),
            pool_size=1,
            statement_timeout_ms=0,  # one long COPY: no statement limit
            application_name=options.application_name,
            connect_timeout_s=options.connect_timeout_s,
            migrate=True,
        )
    except open_failures(postgres) as exc:
        raise unreachable(url, exc) from None
    try:
        # Loading nothing is load's own emptiness check, in its transaction: refused here,
        # before the long copy of the blobs, as it would be after it.
        _load(store, (), [], [])
        try:
            attachments = postgres.PostgresAttachmentStore(
                url.secret(),
                # Moving what is stored is no upload: a blob over today's limit still moves.
                max_size=max(attachment_limit(settings), largest, 1),
                pool_size=1,
                application_name=options.application_name,
                connect_timeout_s=options.connect_timeout_s,
            )
        except open_failures(postgres) as exc:
            raise unreachable(url, exc) from None
        try:
            copied = _copy_blobs(blobs, attachments, report, progress)
        finally:
            attachments.close()
        referenced: set[str] = set()

        def documents() -> Iterator[Interaction]:
            for n, interaction in enumerate(source.interactions(), 1):
                referenced.update(referenced_blobs(interaction))
                yield interaction
                if n % 100_000 == 0:
                    progress(f"  {n:,} of {total:,} interactions")

        mail = source.mail()
        for entry in mail:
            referenced.update(a.blob for a in entry.mail.attachments)
        notifications = source.notifications()
        progress(
            f"loading {total:,} interactions, {len(mail):,} pending mail and"
            f" {len(notifications):,} pending notifications into {url.redacted}"
        )
        report.interactions = _load(store, documents(), mail, notifications)
        report.mail = len(mail)
        report.notifications = len(notifications)
        report.missing_blobs = sorted(referenced - copied)
        if report.interactions != total:
            raise TransferError(
                f"loaded {report.interactions:,} interactions of {total:,}: the database"
                " changed while it was read"
            )
        return report
    finally:
        store.close()


def _load(
    store: Any,
    interactions: Iterable[Interaction],
    mail: list[MailEntry],
    notifications: list[Notification],
) -> int:
    """``PostgresStore.load``; its refusal (a database that is not empty, rows that
    contradict each other) as ``TransferError``, naming the setting and the database."""
    try:
        return int(store.load(interactions, mail=mail, notifications=notifications))
    except ValueError as exc:
        raise TransferError(
            f"{SETTING} {store.where}: {exc}; moving an installation needs an empty database:"
            " create a new one (or drop and re-create this one)"
        ) from None


def _copy_blobs(
    blobs: list[tuple[str, Path]],
    attachments: Any,
    report: TransferReport,
    progress: Callable[[str], None],
) -> set[str]:
    """Put every blob file; each must hash to its own name (else it is damaged)."""
    copied: set[str] = set()
    for n, (name, file) in enumerate(blobs, 1):
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise TransferError(f"attachment file {file}: {exc.strerror}") from None
        stored = attachments.put(data)
        if stored != name:
            raise TransferError(
                f"attachment file {file}: its bytes do not match its name (their sha-256 is"
                f" {stored}): it is damaged; restore it from a backup or remove it, then run"
                " again (nothing but blobs was written)"
            )
        copied.add(name)
        report.blobs += 1
        report.blob_bytes += len(data)
        if n % 1000 == 0:
            progress(f"  {n:,} of {len(blobs):,} blobs")
    return copied


__all__ = [
    "SqliteSource",
    "TransferError",
    "TransferReport",
    "default_attachments_dir",
    "move_sqlite_to_postgres",
]
