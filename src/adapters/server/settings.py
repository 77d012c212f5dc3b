"""Server configuration with pydantic-settings: environment variables and an optional file.

Every setting can be given as ``INTERACTIONS_<NAME>`` (nested with ``__``, e.g.
``INTERACTIONS_RELAY__HOST``) or in a JSON or TOML file named by ``--config`` or
``INTERACTIONS_CONFIG``. The environment wins over the file. Invalid configuration fails at start
with a message that names the setting.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from interactions_core.addresses import validate_address
from interactions_core.errors import InvalidAddress


class RelaySettings(BaseModel):
    """The outbound SMTP relay. Without one, mail is written to the Maildir outbox."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = None
    timeout_seconds: float = Field(30.0, gt=0)
    connections: int = Field(4, ge=1, le=64)


class CometdSettingsModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_ms: int = Field(25_000, ge=1_000, le=120_000)
    interval_ms: int = Field(0, ge=0, le=60_000)
    max_interval_ms: int = Field(10_000, ge=1_000, le=600_000)
    max_queue: int = Field(1_000, ge=10, le=1_000_000)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="INTERACTIONS_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = Path("var")
    database: Path | None = None  # default: <data_dir>/interactions.sqlite3
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    sqlite_cache_size: int = Field(256, ge=0, le=1_000_000)  # rows kept by version; 0 = off
    attachments_dir: Path | None = None  # default: <data_dir>/attachments
    max_attachment_bytes: int = Field(25 * 1024 * 1024, ge=1024)

    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    csrf: bool = False
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    login_max_failures: int = Field(5, ge=1)
    login_window_seconds: float = Field(60.0, gt=0)

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
    def database_path(self) -> Path:
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
