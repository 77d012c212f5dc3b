"""Server configuration with pydantic-settings: environment variables and an optional file.

Every setting can be given as ``INTERACTIONS_<NAME>`` (nested with ``__``, e.g.
``INTERACTIONS_RELAY__HOST``) or in a JSON or TOML file named by ``--config`` or
``INTERACTIONS_CONFIG``. The environment wins over the file. Invalid configuration fails at start
with a message that names the setting.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from interactions_core.addresses import validate_address
from interactions_core.errors import InvalidAddress

from .database import PostgresUrl, parse_database
from .node import derive_node_id

_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


class RelaySettings(BaseModel):
    """The outbound SMTP relay. Without one, mail is written to the Maildir outbox."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = Field(None, repr=False)  # never in the settings' repr
    timeout_seconds: float = Field(30.0, gt=0)
    connections: int = Field(4, ge=1, le=64)


class CometdSettingsModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_ms: int = Field(25_000, ge=1_000, le=120_000)
    interval_ms: int = Field(0, ge=0, le=60_000)
    max_interval_ms: int = Field(10_000, ge=1_000, le=600_000)
    max_queue: int = Field(1_000, ge=10, le=1_000_000)
    # Long-polling requests read off the socket, below ASGI (adapters.cometd.http11; everything
    # else on a connection is uvicorn's as before); false: every request through uvicorn.
    fast_long_polling: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="INTERACTIONS_",
        env_nested_delimiter="__",
        extra="forbid",
        # A rejected value is never echoed in an error: ``database`` may hold a password.
        hide_input_in_errors=True,
    )

    data_dir: Path = Path("var")
    # A path (SQLite; default: <data_dir>/interactions.sqlite3) or a postgresql:// URL
    # (PostgreSQL for the store and the attachments); a URL shows its password as ***.
    database: Annotated[Path | PostgresUrl | None, BeforeValidator(parse_database)] = None
    # PostgreSQL only (docs/storage.md, sizing): the store's connection pool per process (the
    # attachment store adds min(4, this)), the longest a statement may run (0: no limit), the
    # name the connections carry in pg_stat_activity, and how long a connection attempt waits.
    database_pool_size: int = Field(10, ge=1, le=1000)
    database_statement_timeout_ms: int = Field(30_000, ge=0, le=24 * 3_600_000)
    database_application_name: str = Field("interactions", min_length=1, max_length=63)
    database_connect_timeout_seconds: float = Field(10.0, gt=0, le=3600)
    # Several processes on one PostgreSQL (docs/deployment.md): how often a follower tries the
    # leader lock and the leader checks it holds it; the failover time is about this.
    leader_check_interval_seconds: float = Field(1.0, gt=0, le=60)
    # How long a mail one process took from the outbox stays its own (PostgreSQL): when that
    # process dies, another sends the mail after this. It must outlast one delivery attempt.
    mail_lease_seconds: float = Field(300.0, ge=5, le=86_400)
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    sqlite_cache_size: int = Field(256, ge=0, le=1_000_000)  # rows kept by version; 0 = off
    attachments_dir: Path | None = None  # default: <data_dir>/attachments
    max_attachment_bytes: int = Field(25 * 1024 * 1024, ge=1024)

    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    # This process's name in a cluster: in every log line and in GET /health. Empty (the
    # default): ``<host>-<http_port>`` (``node.derive_node_id``), stable across restarts.
    node_id: str = Field("", max_length=63)
    # How serve writes its log: "text" (one line per record) or "json" (one object per line,
    # for log shippers); ``--log-format`` overrides it.
    log_format: Literal["text", "json"] = "text"
    csrf: bool = False
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    # Failed logins (docs/http.md, Authentication): per (client address, name), this many are
    # free, then a back-off from login_backoff_seconds doubling to login_backoff_max_seconds;
    # per client address, login_address_max_failures (default 6 x login_max_failures) in
    # login_window_seconds; login_max_concurrent_verifications argon2 checks at once.
    login_max_failures: int = Field(5, ge=1)
    login_window_seconds: float = Field(900.0, gt=0)
    login_backoff_seconds: float = Field(5.0, gt=0)
    login_backoff_max_seconds: float = Field(300.0, gt=0)
    login_address_max_failures: int | None = Field(None, ge=1)
    login_max_concurrent_verifications: int = Field(4, ge=1, le=1024)
    # Where HTTP sessions and the login limits live (docs/http.md): "database" shares them
    # through the store's database (every process on it sees them; they survive a restart),
    # "memory" keeps them in this process (a restart logs every agent out). "auto": the
    # database, with PostgreSQL (several processes) and SQLite (read on the event loop).
    http_sessions: Literal["auto", "memory", "database"] = "auto"
    # Proxies whose X-Forwarded-For is believed (addresses or CIDRs); none: the header is ignored.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    smtp_listen_host: str = "127.0.0.1"
    smtp_listen_port: int = Field(2525, ge=0, le=65535)
    smtp_max_message_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    # Mailbox address -> the queue its mail waits in.
    mailboxes: dict[str, str] = Field(default_factory=lambda: {"support@example.com": "Support"})
    # "@domain" -> the mailbox that receives mail for any other address of that domain.
    catch_all: dict[str, str] = Field(default_factory=dict)
    relay: RelaySettings | None = None
    maildir: Path | None = None  # default: <data_dir>/outbox
    message_id_domain: str = "interactions.localhost"

    agents_file: Path | None = None  # None: demo agents
    queue_skills: dict[str, str] = Field(default_factory=dict)
    shared_workbins: dict[str, list[str]] = Field(default_factory=dict)
    offer_timeout_seconds: float = Field(60.0, gt=0)
    # Published notifications are kept this long for CometD clients to catch up after a
    # restart or an outage (docs/cometd.md, replay); older ones are purged.
    notification_retention_seconds: float = Field(300.0, ge=0, le=7 * 86_400)
    cometd: CometdSettingsModel = Field(default_factory=CometdSettingsModel)

    @field_validator("mailboxes")
    @classmethod
    def _valid_mailboxes(cls, value: dict[str, str]) -> dict[str, str]:
        for address in value:
            try:
                validate_address(address, field="mailboxes")
            except InvalidAddress as exc:
                raise ValueError(exc.description) from None
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _valid_trusted_proxies(cls, value: Any) -> list[str]:
        """A list, or (from the environment) a JSON list or comma/space-separated entries."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError:
                    raise ValueError("not a valid JSON list") from None
            else:
                value = text.replace(",", " ").split()
        if not isinstance(value, list | tuple):
            raise ValueError("a list of IP addresses or networks (CIDR) is expected")
        networks = []
        for entry in value:
            try:
                if not isinstance(entry, str):
                    raise ValueError
                networks.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (CIDR)") from None
        return networks

    @field_validator("attachments_dir")
    @classmethod
    def _attachments_dir_is_for_sqlite(
        cls, value: Path | None, info: ValidationInfo
    ) -> Path | None:
        """Files are where SQLite keeps attachments; with PostgreSQL they are in the database,
        so a directory given then would be silently unused."""
        if value is not None and isinstance(info.data.get("database"), PostgresUrl):
            raise ValueError(
                "with a PostgreSQL database the attachments are stored in it: remove"
                " attachments_dir (interactions migrate --from sqlite:PATH --attachments DIR"
                " moves existing files)"
            )
        return value

    @field_validator("node_id")
    @classmethod
    def _plain_node_id(cls, value: str) -> str:
        """One token an operator can grep for in logs and a proxy's status page."""
        value = value.strip()
        if value and not _NODE_ID.fullmatch(value):
            raise ValueError("letters, digits and . _ : - only, starting with a letter or a digit")
        return value

    @field_validator("database_application_name")
    @classmethod
    def _printable_application_name(cls, value: str) -> str:
        """PostgreSQL keeps printable ASCII only (anything else becomes ``?``), and the name is
        what operators look connections up by (``pg_stat_activity``)."""
        if not all(" " <= c <= "~" for c in value):
            raise ValueError("printable ASCII characters only")
        return value

    @field_validator("login_backoff_max_seconds")
    @classmethod
    def _backoff_cap_above_start(cls, value: float, info: ValidationInfo) -> float:
        start = info.data.get("login_backoff_seconds")
        if start is not None and value < start:
            raise ValueError(f"must not be less than login_backoff_seconds ({start})")
        return value

    @model_validator(mode="after")
    def _derived_node_id(self) -> Settings:
        """No ``node_id`` given: ``<host>-<http_port>``. Written past pydantic's bookkeeping,
        so the derived value does not count as set: ``load_settings`` merges only what was
        given, and a port given later derives its own id."""
        if not self.node_id:
            self.__dict__["node_id"] = derive_node_id(self.http_port)
        return self

    @model_validator(mode="after")
    def _lease_outlasts_a_delivery(self) -> Settings:
        """A lease shorter than one attempt would let a second process send a mail that the
        first is still handing over."""
        relay = self.relay
        if relay is not None and self.mail_lease_seconds < 2 * relay.timeout_seconds:
            raise ValueError(
                f"mail_lease_seconds ({self.mail_lease_seconds:g}) must be at least twice "
                f"relay.timeout_seconds ({relay.timeout_seconds:g})"
            )
        return self

    @model_validator(mode="after")
    def _catch_all_targets_are_mailboxes(self) -> Settings:
        known = {m.casefold() for m in self.mailboxes}
        for domain, mailbox in self.catch_all.items():
            if not domain.startswith("@") or "." not in domain or " " in domain:
                raise ValueError(f"catch_all: {domain!r} is not an '@domain' entry")
            if mailbox.casefold() not in known:
                raise ValueError(f"catch_all: {mailbox!r} is not one of the mailboxes")
        return self

    @property
    def database_url(self) -> PostgresUrl | None:
        """The PostgreSQL database, or None: SQLite (``database_path``)."""
        return self.database if isinstance(self.database, PostgresUrl) else None

    @property
    def database_path(self) -> Path:
        """The SQLite file. Only for SQLite: with PostgreSQL there is none (ValueError)."""
        if isinstance(self.database, PostgresUrl):
            raise ValueError("the database is PostgreSQL, not a SQLite file")
        return self.database or self.data_dir / "interactions.sqlite3"

    @property
    def attachments_path(self) -> Path:
        return self.attachments_dir or self.data_dir / "attachments"

    @property
    def maildir_path(self) -> Path:
        return self.maildir or self.data_dir / "outbox"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings


class ConfigurationError(Exception):
    """Raised at start for an invalid configuration; the message names each bad setting."""


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"config file {path}: {exc.strerror}") from None
    try:
        if path.suffix == ".toml":
            return tomllib.loads(raw.decode("utf-8"))
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"config file {path}: the top level must be an object")
    return data


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """File values, overridden by the environment, overridden by ``overrides``."""
    file_path = config_file or (
        Path(os.environ["INTERACTIONS_CONFIG"]) if os.environ.get("INTERACTIONS_CONFIG") else None
    )
    from_file = read_config_file(file_path) if file_path else {}
    try:
        env_only = Settings()  # the environment on its own (validated)
        merged = {**from_file, **env_only.model_dump(exclude_unset=True), **overrides}
        return Settings(**merged)
    except ValidationError as exc:
        problems = []
        for e in exc.errors(include_url=False):
            name = ".".join(str(p) for p in e["loc"]) or "settings"
            env = "INTERACTIONS_" + "__".join(str(p) for p in e["loc"]).upper()
            problems.append(f"  {name} (env {env}): {e['msg']}")
        raise ConfigurationError("invalid configuration:\n" + "\n".join(problems)) from None


def reachable_host(listen_host: str) -> str:
    """The address a client on this machine connects to for a server listening on
    ``listen_host``: a wildcard (every interface) is reached on loopback."""
    host = listen_host.strip().strip("[]")
    if host in ("", "0.0.0.0", "*"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def local_http_url(settings: Settings, path: str = "") -> str:
    """The URL of the HTTP API (and CometD) for a client on this machine, ``path`` appended
    (``local_http_url(settings, "/api/v2/notifications")``)."""
    host = reachable_host(settings.http_host)
    if ":" in host:  # IPv6: in brackets (RFC 3986 §3.2.2)
        host = f"[{host}]"
    return f"http://{host}:{settings.http_port}{path}"
