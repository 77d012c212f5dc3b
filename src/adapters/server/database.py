"""Which database the server uses, from the ``database`` setting, and opening it.

``database`` is either a filesystem path (SQLite; nothing given:
``<data_dir>/interactions.sqlite3``) or a ``postgresql://`` (or ``postgres://``) URL, which
selects PostgreSQL for the store and the attachments alike. A URL may carry a password, so it
is held by ``PostgresUrl``, which never shows it: its ``repr`` and ``str`` (and so the
settings' ``repr``, the banner, log lines and error messages) write ``***`` in its place; only
``secret()`` gives the URL to the driver.

Opening is here, not in the composition root, because ``interactions serve`` and
``interactions migrate`` open the same database the same way, and both must turn a database
that cannot be reached into one clear line (``CannotOpenDatabase``) instead of a traceback.
The PostgreSQL adapter is imported only when a URL is configured: psycopg is an optional extra.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from ..sqlite import SchemaTooNew
from ..sqlite import migrations as sqlite_migrations

if TYPE_CHECKING:
    from interactions_core.ports import AttachmentStore, Clock, Store

    from .settings import Settings

SCHEMES: Final = ("postgresql", "postgres")
DEFAULT_PORT: Final = 5432
_SCHEME_LIKE: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SECRET_PARAMS: Final = frozenset(
    {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
)
_REDACTED: Final = "***"
INSTALL_HINT: Final = "pip install 'interactions-core[postgres]'"


class PostgresUrl:
    """A validated PostgreSQL connection URL whose password never shows.

    ``postgresql://[user[:password]@]host[:port][,host[:port]...]/dbname[?param=value...]``:
    several hosts are libpq's fail-over list (with ``target_session_attrs=read-write``, the
    client finds the primary after a fail-over; docs/storage.md, high availability); the host
    may be empty when a ``host=`` parameter names a Unix socket directory. The query is passed
    to libpq as it is (``sslmode=require``...).
    """

    __slots__ = ("_url", "dbname", "hosts", "user")

    def __init__(self, url: str) -> None:
        """Parse and check ``url``; ``ValueError`` messages never contain the password."""
        text = url.strip()
        try:
            parts = urlsplit(text)
        except ValueError:
            raise ValueError("not a valid URL: postgresql://user:password@host:port/db") from None
        if parts.scheme.lower() not in SCHEMES:
            raise ValueError(f"{parts.scheme}:// is not a PostgreSQL URL (postgresql://...)")
        if parts.fragment:
            raise ValueError("a PostgreSQL URL has no #fragment")
        userinfo, at, hostlist = parts.netloc.rpartition("@")
        user = unquote(userinfo.partition(":")[0]) if at else ""
        query = parse_qsl(parts.query, keep_blank_values=True)
        params = dict(query)
        known = _libpq_keywords()
        unknown = sorted({k[:40] for k, _ in query if known and k not in known})
        if unknown:
            raise ValueError(
                f"unknown connection parameter {', '.join(map(repr, unknown))} (libpq's are"
                " e.g. sslmode, target_session_attrs, connect_timeout)"
            )
        hosts: list[tuple[str, int]] = []
        for entry in hostlist.split(",") if hostlist else []:
            hosts.append(_host_port(entry))
        if not hosts and not params.get("host"):
            raise ValueError("the URL names no host: postgresql://user:password@host:port/db")
        if not hosts:  # a Unix socket directory (host=...), libpq's default port
            hosts.append((params["host"], int(params.get("port") or DEFAULT_PORT)))
        dbname = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
        if not dbname:
            raise ValueError("the URL names no database: postgresql://user:password@host:port/db")
        if "/" in dbname:
            raise ValueError("the URL's path must be the database name alone (/db)")
        self._url = text
        self.user = user
        self.hosts = tuple(hosts)
        self.dbname = dbname

    def secret(self) -> str:
        """The URL as given, password included: for the driver, never for a person."""
        return self._url

    @property
    def where(self) -> str:
        """``host:port/db`` (every host, for a fail-over list): what messages name."""
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)
        return f"{hosts}/{self.dbname}"

    @property
    def redacted(self) -> str:
        """The URL with ``***`` for its password (in the user part and in the parameters)."""
        parts = urlsplit(self._url)
        userinfo, at, hostlist = parts.netloc.rpartition("@")
        if at:
            name, colon, _ = userinfo.partition(":")
            netloc = f"{name}{':' + _REDACTED if colon else ''}@{hostlist}"
        else:
            netloc = hostlist
        query = parse_qsl(parts.query, keep_blank_values=True)
        if any(k in _SECRET_PARAMS for k, _ in query):
            shown = urlencode(
                [(k, _REDACTED if k in _SECRET_PARAMS else v) for k, v in query],
                safe="*/",
            )
        else:
            shown = parts.query
        return parts._replace(netloc=netloc, query=shown).geturl()

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"PostgresUrl({self.redacted!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PostgresUrl) and other._url == self._url

    def __hash__(self) -> int:
        return hash(self._url)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Validated from a string (or kept as it is); dumped as itself, or in JSON redacted,
        like ``SecretStr``: a dump of the settings never writes the password."""

        def validate(value: Any) -> PostgresUrl:
            if isinstance(value, PostgresUrl):
                return value
            if isinstance(value, str):
                return PostgresUrl(value)
            raise ValueError("a postgresql:// URL is expected")

        return core_schema.no_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda v: v.redacted, when_used="json"
            ),
        )


@functools.cache
def _libpq_keywords() -> frozenset[str]:
    """The parameters libpq knows (a URL with another one is refused when it connects, with a
    message that may quote the URL): empty when the driver is not installed, and then not
    checked here."""
    try:
        from psycopg import pq
    except ImportError:
        return frozenset()
    return frozenset(o.keyword.decode() for o in pq.Conninfo.get_defaults())


def _host_port(entry: str) -> tuple[str, int]:
    """One ``host[:port]`` of the URL's host list (``[v6]:port`` in brackets)."""
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("an IPv6 host is written in brackets: [::1]:5432")
        port_text = rest[1:]
    else:
        host, _, port_text = entry.partition(":")
    host = unquote(host)
    if not host:
        raise ValueError("an empty host in the URL's host list")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text[:10]!r} of host {host[:100]!r} is not 1-65535")
    return host, int(port_text)


def parse_database(value: Any) -> Path | PostgresUrl | None:
    """The ``database`` setting: nothing (the default SQLite file), a path, or a URL."""
    if value is None or isinstance(value, Path | PostgresUrl):
        return value
    if not isinstance(value, str):
        raise ValueError("a file path (SQLite) or a postgresql:// URL is expected")
    text = value.strip()
    if not text:
        return None
    scheme = _SCHEME_LIKE.match(text)
    if scheme is not None:
        if scheme.group(1).lower() in SCHEMES:
            return PostgresUrl(text)
        raise ValueError(
            f"{scheme.group(1)}:// is not supported: give a file path (SQLite) or a"
            " postgresql://user:password@host:port/db URL"
        )
    if text == ":memory:" or text.startswith("file:"):
        raise ValueError("a file path is expected (the server's SQLite database is a file)")
    return Path(text)


# --------------------------------------------------------------------------- opening


class CannotOpenDatabase(Exception):
    """The configured database could not be opened at start: unreachable, refusing us, not a
    database, or of a newer schema. The message is one line naming the setting, its
    environment variable and where the database is (never a password)."""


SETTING: Final = "database (env INTERACTIONS_DATABASE)"


def postgres_adapter() -> Any:
    """``adapters.postgres``, or a clear error when its driver is not installed."""
    try:
        import adapters.postgres as postgres
    except ImportError as exc:
        raise CannotOpenDatabase(
            f"{SETTING}: a PostgreSQL URL needs the PostgreSQL driver ({exc}): {INSTALL_HINT}"
        ) from None
    return postgres


def unreachable(url: PostgresUrl, exc: BaseException) -> CannotOpenDatabase:
    """The one line for a PostgreSQL database that could not be opened: where it is (from the
    URL, password-free) and why (``DatabaseUnreachable.cause``, libpq's reason; or the
    refusal's message), with any password that would still be in it replaced."""
    cause = str(getattr(exc, "cause", "") or exc)
    cause = " ".join(cause.split()) or type(exc).__name__
    cause = cause.replace(url.secret(), url.redacted)
    password = _password_of(url)
    if password:
        cause = cause.replace(password, _REDACTED)
    verb = "reach" if type(exc).__name__ == "DatabaseUnreachable" else "use"
    return CannotOpenDatabase(f"{SETTING}: cannot {verb} PostgreSQL at {url.where}: {cause}")


def open_failures(postgres: Any) -> tuple[type[BaseException], ...]:
    """What opening a PostgreSQL database may raise that is the database's or the URL's
    fault, not a bug: unreachable, a schema of another version, a connection string libpq
    refuses (``ValueError``, or psycopg's own error for an unknown parameter)."""
    import psycopg

    return (
        postgres.DatabaseUnreachable,
        postgres.SchemaTooNew,
        postgres.SchemaTooOld,
        ValueError,
        psycopg.Error,
    )


def _password_of(url: PostgresUrl) -> str:
    parts = urlsplit(url.secret())
    userinfo, at, _ = parts.netloc.rpartition("@")
    found = unquote(userinfo.partition(":")[2]) if at else ""
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _SECRET_PARAMS and value:
            found = found or value
    return found


@dataclass(frozen=True)
class PostgresOptions:
    """The ``database_*`` settings, as the PostgreSQL adapter's keyword arguments take them."""

    pool_size: int
    statement_timeout_ms: int
    application_name: str
    connect_timeout_s: float
    mail_lease_s: float = 300.0

    @classmethod
    def of(cls, settings: Settings) -> PostgresOptions:
        return cls(
            pool_size=settings.database_pool_size,
            statement_timeout_ms=settings.database_statement_timeout_ms,
            application_name=settings.database_application_name,
            connect_timeout_s=settings.database_connect_timeout_seconds,
            mail_lease_s=settings.mail_lease_seconds,
        )

    @property
    def attachment_pool_size(self) -> int:
        """The attachment store's own pool: up to 4 connections, never more than the store's
        (attachments are put at ingestion and uploads, read when mail is sent)."""
        return min(4, self.pool_size)


def attachment_limit(settings: Settings) -> int:
    """The attachment store's limit: an upload's, or a whole inbound message's (its raw bytes
    are kept as an attachment too), whichever is larger."""
    return max(settings.max_attachment_bytes, settings.smtp_max_message_bytes)


def open_store(settings: Settings, clock: Clock) -> Store:
    """The configured store, migrated to the latest schema (``CannotOpenDatabase`` if it
    cannot be opened)."""
    url = settings.database_url
    if url is None:
        from ..sqlite import SqliteStore

        path = settings.database_path
        try:
            return SqliteStore(
                path,
                synchronous=settings.sqlite_synchronous,
                clock=clock,
                cache_size=settings.sqlite_cache_size,
            )
        except (sqlite3.Error, OSError, SchemaTooNew) as exc:
            raise CannotOpenDatabase(f"{SETTING}: cannot use SQLite file {path}: {exc}") from None
    postgres = postgres_adapter()
    options = PostgresOptions.of(settings)
    try:
        store: Store = postgres.PostgresStore(
            url.secret(),
            clock=clock,
            pool_size=options.pool_size,
            statement_timeout_ms=options.statement_timeout_ms,
            application_name=options.application_name,
            connect_timeout_s=options.connect_timeout_s,
            mail_lease_seconds=options.mail_lease_s,
            migrate=True,
        )
    except open_failures(postgres) as exc:
        raise unreachable(url, exc) from None
    return store


def open_attachments(settings: Settings, *, max_size: int) -> AttachmentStore:
    """The configured attachment store: files beside SQLite, or the PostgreSQL database."""
    url = settings.database_url
    if url is None:
        from ..sqlite import FileAttachmentStore

        return FileAttachmentStore(settings.attachments_path, max_size=max_size)
    postgres = postgres_adapter()
    options = PostgresOptions.of(settings)
    try:
        attachments: AttachmentStore = postgres.PostgresAttachmentStore(
            url.secret(),
            max_size=max_size,
            pool_size=options.attachment_pool_size,
            application_name=options.application_name,
            connect_timeout_s=options.connect_timeout_s,
        )
    except open_failures(postgres) as exc:
        raise unreachable(url, exc) from None
    return attachments


def describe(settings: Settings) -> str:
    """What the banner and ``interactions migrate`` say the database is (no password)."""
    url = settings.database_url
    if url is None:
        return str(settings.database_path)
    return f"{url.redacted}  (PostgreSQL, pool {settings.database_pool_size})"


@dataclass(frozen=True)
class MigrationReport:
    """What ``run_migrations`` did: the schema version before and after, what was applied."""

    database: str
    before: int
    after: int
    applied: list[int]

    def __str__(self) -> str:
        if not self.applied:
            return f"database {self.database}: schema version {self.after}, up to date"
        applied = ", ".join(str(v) for v in self.applied)
        return (
            f"database {self.database}: schema version {self.before} -> {self.after}"
            f" (applied {applied})"
        )


def run_migrations(settings: Settings) -> MigrationReport:
    """Bring the configured database's schema to the latest version, and nothing else: what
    ``serve`` does at start, on its own, for an operator who upgrades the schema before
    starting the new version (or checks that there is nothing to do)."""
    url = settings.database_url
    if url is None:
        path = settings.database_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
            try:
                before = sqlite_migrations.current_version(conn)
                applied = sqlite_migrations.migrate(conn)
                after = sqlite_migrations.current_version(conn)
            finally:
                conn.close()
        except (sqlite3.Error, OSError, SchemaTooNew) as exc:
            raise CannotOpenDatabase(f"{SETTING}: cannot use SQLite file {path}: {exc}") from None
        return MigrationReport(str(path), before, after, applied)
    postgres = postgres_adapter()
    timeout = settings.database_connect_timeout_seconds
    try:
        before = int(postgres.schema_version(url.secret(), connect_timeout_s=timeout))
        applied = [int(v) for v in postgres.migrate(url.secret(), connect_timeout_s=timeout)]
        after = int(postgres.schema_version(url.secret(), connect_timeout_s=timeout))
    except open_failures(postgres) as exc:
        raise unreachable(url, exc) from None
    return MigrationReport(url.redacted, before, after, applied)
