"""Settings, layered: defaults < config file < DEVSTREAM_* environment < explicit flags.

The store is the one named by a flag, the environment or the config file; failing those,
the project's: the nearest `.devstream/` folder at or above the working directory, found
as git finds a repository (`devstream init --project` makes one); failing that, the
user's default file. A project's store wins over a config file's: it is the more specific.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from devstream.errors import ConfigError, NotInitialised, StorageError
from devstream.vocabulary import EMBED_DIMENSION, EMBED_MODEL

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

APP_NAME = "devstream"
ENV_PREFIX = "DEVSTREAM_"
CONFIG_ENV = "DEVSTREAM_CONFIG"
PROJECT_DIR = ".devstream"  # a project's store: PROJECT_DIR/PROJECT_DB
PROJECT_DB = "devstream.db"


def default_db_path() -> Path:
    """The embedded database every command uses unless told otherwise."""
    return platformdirs.user_data_path(APP_NAME) / "devstream.db"


def project_db(start: Path) -> Path | None:
    """The store of the project `start` lies in: in the nearest `.devstream/` at or above."""
    for folder in (start, *start.parents):
        if (folder / PROJECT_DIR).is_dir():
            return folder / PROJECT_DIR / PROJECT_DB
    return None


def default_config_path() -> Path:
    return platformdirs.user_config_path(APP_NAME) / "config.toml"


_AT_LEAST = {
    "busy_timeout_ms": 0,
    "pool_size": 1,
    "embed_dimension": 1,
    "max_memory_chars": 1,
    "capture_max_chars": 100,
}
_POSITIVE = ("pool_timeout_s", "ollama_timeout_s", "embed_deadline_s")
# SQLite keeps busy_timeout in a C int: past it, the pragma silently sets no wait at all.
_AT_MOST = {"busy_timeout_ms": 2**31 - 1}


@dataclass(frozen=True)
class Settings:
    """Everything a DevStream instance needs to open its store and embedder."""

    db: str = ""
    ollama_url: str | None = None
    embed_model: str = EMBED_MODEL
    embed_dimension: int = EMBED_DIMENSION
    ollama_timeout_s: float = 30.0
    embed_deadline_s: float = 30.0  # one action's embedding, retries included
    max_memory_chars: int = 100_000
    busy_timeout_ms: int = 5000
    pool_size: int = 5
    pool_timeout_s: float = 30.0
    # What hooks keep: code, errors, output (comma-separated), or none.
    capture: str = "code,errors,output"
    capture_max_chars: int = 4_000  # of one captured memory

    def __post_init__(self) -> None:
        for name, minimum in _AT_LEAST.items():
            if getattr(self, name) < minimum:
                raise ConfigError(f"{name} must be >= {minimum}, got {getattr(self, name)}")
        for name, maximum in _AT_MOST.items():
            if getattr(self, name) > maximum:
                raise ConfigError(f"{name} must be <= {maximum}, got {getattr(self, name)}")
        for name in _POSITIVE:
            if not 0 < getattr(self, name) < math.inf:  # NaN fails this too
                raise ConfigError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        if self.ollama_url is not None and not _http_url(self.ollama_url):
            # Else it would pass for a server that is down, retried and waited on.
            raise ConfigError(
                f"ollama_url must be an http(s) URL such as http://localhost:11434, "
                f"got {self.ollama_url!r}"
            )

    @property
    def database_url(self) -> str:
        """A SQLAlchemy async URL: `db` as given when it is a URL, else a SQLite file."""
        if "://" in self.db:
            return self.db
        path = Path(self.db).expanduser() if self.db else default_db_path()
        return f"sqlite+aiosqlite:///{path.resolve()}"

    @property
    def shown_database(self) -> str:
        """`database_url` with its password masked: what messages, `doctor` and logs show."""
        masked = _PASSWORD.sub(r"\1:***@", self.database_url)
        return _QUERY_PASSWORD.sub(r"\1***", masked)

    @property
    def sqlite_path(self) -> Path | None:
        """The database file when the store is SQLite on disk, else None."""
        url = self.database_url
        prefix = "sqlite+aiosqlite:///"
        return Path(url.removeprefix(prefix)) if url.startswith(prefix) else None

    def check_store_exists(self) -> None:
        """Refuse a SQLite store whose file does not exist, before opening it would create
        an empty one (a mistyped path would then look like a store with nothing in it)."""
        path = self.sqlite_path
        if path is not None and not store_file_exists(path):
            raise NotInitialised(
                f"no DevStream store at {path}",
                hint=(
                    "run `devstream init` to create it, or check --db, DEVSTREAM_DB and the "
                    "config file"
                ),
            )


def store_file_exists(path: Path) -> bool:
    """Whether a SQLite store's file exists; a path no file can have (a name too long for
    the file system, say) is a typed error, not a traceback."""
    try:
        return path.exists()
    except OSError as exc:
        raise StorageError(f"cannot use {path} as a database: {exc.strerror or exc}") from exc


def _http_url(text: str) -> bool:
    try:
        url = urllib.parse.urlsplit(text)
        url.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.hostname)


# The password of a URL's user: scheme://user:PASSWORD@host
_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*")
_FIELDS = {field.name: field for field in dataclasses.fields(Settings)}


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Merge every layer; `None` flags mean "not given" and fall through. `cwd` is where
    the project's store is looked for (default: the working directory)."""
    environ = os.environ if environ is None else environ
    named = {
        name: environ[ENV_PREFIX + name.upper()]
        for name in _FIELDS
        if ENV_PREFIX + name.upper() in environ
    }
    named.update({name: value for name, value in (flags or {}).items() if value is not None})
    if named.get("db") == "":  # as `--db "$UNSET"` passes it: no store, not the default one
        raise ConfigError(
            f"--db (or {ENV_PREFIX}DB) names no store: give a file or URL, or leave it out"
        )
    project = None if named.get("db") else project_db(cwd or Path.cwd())
    layers: list[Mapping[str, Any]] = [
        _read_config_file(config_file or _config_path(environ)),
        {} if project is None else {"db": str(project)},
        named,
    ]
    merged: dict[str, Any] = {}
    for layer in layers:
        for name, value in layer.items():
            merged[name] = _coerce(name, value)
    return Settings(**merged)


def _config_path(environ: Mapping[str, str]) -> Path | None:
    """The config file named by the environment; None: the default one."""
    explicit = environ.get(CONFIG_ENV)
    return Path(explicit).expanduser() if explicit else None


def _read_config_file(named: Path | None) -> dict[str, Any]:
    """The settings of the config file: the default one may be missing, a file named
    explicitly must exist (a mistyped name would otherwise go unnoticed); os.devnull
    names none."""
    path = named or default_config_path()
    if named is None and not path.is_file():
        return {}
    if not path.exists():
        raise ConfigError(
            f"config file {path} does not exist; point {CONFIG_ENV} at a file, "
            f"or at {os.devnull} for none"
        )
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc


def _coerce(name: str, value: Any) -> Any:
    field = _FIELDS.get(name)
    if field is None:
        raise ConfigError(f"unknown setting {name!r}; known: {', '.join(sorted(_FIELDS))}")
    kind = {"int": int, "float": float}.get(str(field.type))
    if kind is None:
        return None if value == "" and name == "ollama_url" else str(value)
    if isinstance(value, bool):
        raise ConfigError(f"setting {name} must be a number, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name} must be a number, got {value!r}") from exc
