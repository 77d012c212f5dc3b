"""The ``database`` setting selects the backend; the ``database_*`` settings are validated; a
password in the URL shows nowhere (repr, str, JSON dump, error messages). No server needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.server.database import PostgresUrl, describe
from adapters.server.settings import ConfigurationError, Settings, load_settings

SECRET = "pa55-w0rd-xyz"
URL = f"postgresql://app:{SECRET}@db.example.com:6543/interactions"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INTERACTIONS_DATABASE", "INTERACTIONS_CONFIG", "INTERACTIONS_ATTACHMENTS_DIR"):
        monkeypatch.delenv(name, raising=False)


def refused(**settings: object) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(**settings)
    return str(caught.value)


def test_nothing_or_a_path_is_sqlite(tmp_path: Path) -> None:
    default = load_settings(data_dir=tmp_path)
    assert default.database_url is None
    assert default.database_path == tmp_path / "interactions.sqlite3"
    assert load_settings(database=str(tmp_path / "x.db")).database_path == tmp_path / "x.db"
    assert load_settings(data_dir=tmp_path, database="").database_path == default.database_path


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "PostgreSQL"])
def test_a_url_is_postgresql(scheme: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERACTIONS_DATABASE", URL.replace("postgresql", scheme, 1))
    settings = load_settings()
    url = settings.database_url
    assert url is not None
    assert url.where == "db.example.com:6543/interactions"
    assert url.user == "app" and url.dbname == "interactions"
    assert SECRET in url.secret()
    with pytest.raises(ValueError, match="PostgreSQL, not a SQLite file"):
        _ = settings.database_path


def test_the_config_file_selects_postgresql_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "config.toml"
    toml.write_text(f'database = "{URL}"\ndatabase_pool_size = 3\n')
    settings = load_settings(toml)
    assert settings.database_url == PostgresUrl(URL) and settings.database_pool_size == 3
    monkeypatch.setenv("INTERACTIONS_DATABASE", str(tmp_path / "local.sqlite3"))
    assert load_settings(toml).database_path == tmp_path / "local.sqlite3"


def test_the_password_shows_nowhere(tmp_path: Path) -> None:
    url = URL + f"?sslmode=require&password={SECRET}"
    settings = load_settings(database=url)
    shown = [
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        json.dumps(settings.model_dump(mode="json")),
        str(settings.database_url),
        repr(settings.database_url),
        describe(settings),
    ]
    for text in shown:
        assert SECRET not in text, text
    assert "postgresql://app:***@db.example.com:6543/interactions?sslmode=require&password=***" in (
        describe(settings)
    )
    # A bad value never comes back in an error, through load_settings or Settings itself.
    bad = f"postgresql://app:{SECRET}@db.example.com:99999/interactions"
    assert SECRET not in refused(database=bad)
    with pytest.raises(Exception) as caught:
        Settings(database=bad)
    assert SECRET not in str(caught.value)
    assert SECRET not in refused(database=f"mysql://app:{SECRET}@h/db")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("mysql://h/db", "mysql:// is not supported"),
        ("postgresql://u:p@h:99999/db", "port '99999' of host 'h' is not 1-65535"),
        ("postgresql://u:p@h:port/db", "is not 1-65535"),
        ("postgresql://u:p@h:5432", "names no database"),
        ("postgresql://u:p@h:5432/", "names no database"),
        ("postgresql://u:p@/db", "names no host"),
        ("postgresql://u:p@h/db/extra", "database name alone"),
        ("postgresql://u:p@[::1/db", "not a valid URL"),
        ("postgresql://u:p@[::1]x/db", "in brackets"),
        ("postgresql://u:p@h/db?sslmode=require&bogus=1", "unknown connection parameter 'bogus'"),
        (":memory:", "a file path is expected"),
    ],
)
def test_bad_databases_are_refused_naming_the_setting(value: str, problem: str) -> None:
    message = refused(database=value)
    assert "database (env INTERACTIONS_DATABASE)" in message
    assert problem in message


def test_fail_over_and_socket_urls() -> None:
    url = PostgresUrl("postgresql://u@h1:5432,[::1]:5433/db?target_session_attrs=read-write")
    assert url.hosts == (("h1", 5432), ("::1", 5433))
    assert url.where == "h1:5432,[::1]:5433/db"
    socket = PostgresUrl("postgresql:///db?host=/var/run/postgresql")
    assert socket.where == "/var/run/postgresql:5432/db"


def test_database_settings_defaults_and_bounds() -> None:
    settings = load_settings(database=URL)
    assert settings.database_pool_size == 10
    assert settings.database_statement_timeout_ms == 30_000
    assert settings.database_application_name == "interactions"
    assert settings.database_connect_timeout_seconds == 10
    for name, value, env in (
        ("database_pool_size", 0, "INTERACTIONS_DATABASE_POOL_SIZE"),
        ("database_statement_timeout_ms", -1, "INTERACTIONS_DATABASE_STATEMENT_TIMEOUT_MS"),
        ("database_application_name", "", "INTERACTIONS_DATABASE_APPLICATION_NAME"),
        ("database_application_name", "x" * 64, "INTERACTIONS_DATABASE_APPLICATION_NAME"),
        ("database_application_name", "caf\u00e9", "INTERACTIONS_DATABASE_APPLICATION_NAME"),
        ("database_connect_timeout_seconds", 0, "INTERACTIONS_DATABASE_CONNECT_TIMEOUT_SECONDS"),
    ):
        assert f"{name} (env {env})" in refused(database=URL, **{name: value}), (name, value)


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERACTIONS_DATABASE", URL)
    monkeypatch.setenv("INTERACTIONS_DATABASE_POOL_SIZE", "4")
    monkeypatch.setenv("INTERACTIONS_DATABASE_CONNECT_TIMEOUT_SECONDS", "2.5")
    settings = load_settings()
    assert settings.database_pool_size == 4
    assert settings.database_connect_timeout_seconds == 2.5
    monkeypatch.setenv("INTERACTIONS_DATABASE_POOL_SIZE", "many")
    assert "database_pool_size (env INTERACTIONS_DATABASE_POOL_SIZE)" in refused()


def test_attachments_dir_is_refused_with_postgresql(tmp_path: Path) -> None:
    message = refused(database=URL, attachments_dir=str(tmp_path))
    assert "attachments_dir (env INTERACTIONS_ATTACHMENTS_DIR)" in message
    assert "stored in it" in message
    assert load_settings(attachments_dir=str(tmp_path)).attachments_path == tmp_path
