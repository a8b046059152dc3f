"""Settings layering: defaults < config file < DEVSTREAM_* environment < flags."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devstream.config import Settings, default_db_path, load_settings
from devstream.errors import ConfigError


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('db = "/from/file.db"\npool_size = 3\nembed_model = "file-model"\n')
    return path


def test_defaults_use_the_user_data_dir(tmp_path: Path) -> None:
    settings = load_settings(environ={}, config_file=Path(os.devnull))
    assert settings == Settings()
    assert settings.database_url == f"sqlite+aiosqlite:///{default_db_path().resolve()}"
    assert settings.ollama_url is None


def test_each_layer_overrides_the_one_below(config_file: Path) -> None:
    environ = {"DEVSTREAM_POOL_SIZE": "4", "DEVSTREAM_OLLAMA_URL": "http://127.0.0.1:1"}
    settings = load_settings({"pool_size": 9, "db": None}, environ=environ, config_file=config_file)
    assert settings.db == "/from/file.db"  # a None flag falls through
    assert settings.embed_model == "file-model"
    assert settings.ollama_url == "http://127.0.0.1:1"
    assert settings.pool_size == 9


def test_config_file_found_through_the_environment(config_file: Path) -> None:
    settings = load_settings(environ={"DEVSTREAM_CONFIG": str(config_file)})
    assert settings.pool_size == 3


def test_a_config_file_named_but_missing_is_an_error_and_devnull_names_none(
    tmp_path: Path,
) -> None:
    """A mistyped DEVSTREAM_CONFIG would otherwise leave every setting at its default."""
    missing = tmp_path / "confg.toml"
    with pytest.raises(ConfigError, match=f"config file {missing} does not exist"):
        load_settings(environ={"DEVSTREAM_CONFIG": str(missing)})
    with pytest.raises(ConfigError, match=f"config file {missing} does not exist"):
        load_settings(environ={}, config_file=missing)
    assert load_settings(environ={"DEVSTREAM_CONFIG": os.devnull}) == Settings()


def test_empty_ollama_url_means_offline(tmp_path: Path) -> None:
    settings = load_settings(environ={"DEVSTREAM_OLLAMA_URL": ""}, config_file=Path(os.devnull))
    assert settings.ollama_url is None


def test_database_urls_and_paths(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://localhost/devstream"
    assert Settings(db=url).database_url == url
    assert Settings(db=url).sqlite_path is None
    on_disk = Settings(db=str(tmp_path / "a.db"))
    assert on_disk.sqlite_path == (tmp_path / "a.db").resolve()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+asyncpg://me:s3cr:et@db.example/x",
            "postgresql+asyncpg://me:***@db.example/x",
        ),
        ("postgresql+asyncpg://me:@/x?host=/run/pg", "postgresql+asyncpg://me:***@/x?host=/run/pg"),
        ("postgresql+asyncpg://me@db/x", "postgresql+asyncpg://me@db/x"),
        (
            "postgresql+asyncpg://db/x?password=no&ssl=1",
            "postgresql+asyncpg://db/x?password=***&ssl=1",
        ),
    ],
)
def test_a_database_password_is_never_shown(url: str, shown: str) -> None:
    assert Settings(db=url).shown_database == shown


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pool_size = 'lots'", "pool_size must be a number, got 'lots'"),
        ("pool_size = true", "pool_size must be a number, got True"),
        ("colour = 'blue'", "unknown setting 'colour'"),
        ("pool_size = 0", "pool_size must be >= 1"),
        ("busy_timeout_ms = -1", "busy_timeout_ms must be >= 0"),
        # SQLite would take it for no wait at all.
        ("busy_timeout_ms = 2147483648", "busy_timeout_ms must be <= 2147483647"),
        ("pool_timeout_s = 0", "pool_timeout_s must be a finite number > 0"),
        ("embed_deadline_s = nan", "embed_deadline_s must be a finite number > 0, got nan"),
        ("ollama_timeout_s = inf", "ollama_timeout_s must be a finite number > 0, got inf"),
        ("pool_size = ", "cannot read config file"),
        # Else taken for a server that is down: retried, waited on, then "cannot reach".
        ("ollama_url = 'not a url'", "ollama_url must be an http.s. URL"),
        ("ollama_url = 'localhost:11434'", "ollama_url must be an http.s. URL"),
        ("ollama_url = 'http://[::1'", "ollama_url must be an http.s. URL"),
        ("ollama_url = 'http://host:port'", "ollama_url must be an http.s. URL"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={}, config_file=path)


def test_an_empty_db_flag_names_no_store_rather_than_the_default(tmp_path: Path) -> None:
    """As `--db "$UNSET"` passes it: it must not fall back to the user's default store."""
    for flags, environ in [({"db": ""}, {}), ({}, {"DEVSTREAM_DB": ""})]:
        with pytest.raises(ConfigError, match=r"--db \(or DEVSTREAM_DB\) names no store"):
            load_settings(flags, environ=environ, config_file=Path(os.devnull))
