"""Vault stores: where envelopes live, named by URL.

``open_store`` is the one place a store URL is read::

    dir:PATH              one envelope file per secret in a folder (git-friendly)
    sqlite:///PATH        one SQLite file, PATH relative to the config file's folder
    sqlite:////ABS/PATH   one SQLite file at an absolute path
    postgresql://...      (arrives with the scale-out issue)
"""

from __future__ import annotations

from pathlib import Path

from keystead.errors import ConfigError, StoreError
from keystead.stores.base import SlotRow, SlotUpdate, Store
from keystead.stores.dir import DirStore
from keystead.stores.sqlite import SqliteStore

__all__ = ["DirStore", "SlotRow", "SlotUpdate", "SqliteStore", "Store", "open_store"]

_FORMS = "dir:PATH, sqlite:///RELATIVE/PATH, sqlite:////ABSOLUTE/PATH"


def open_store(url: str, *, base: Path | None = None) -> Store:
    """Open the vault store named by ``url``; relative paths are resolved against ``base``.

    ``base`` is the folder of the config file that names the store (the
    current folder when None).
    """
    if url.startswith("dir:"):
        return DirStore(_resolve(url[len("dir:") :], base, url))
    if url.startswith("sqlite:///"):
        return SqliteStore(_resolve(url[len("sqlite:///") :], base, url))
    if url.startswith(("postgresql:", "postgresql+", "postgres:")):
        raise StoreError(f"vault store {_redact(url)}: PostgreSQL vault store arrives with the scale-out issue")
    raise ConfigError(f"unknown vault store URL {_redact(url)!r}; accepted forms: {_FORMS}")


def _resolve(raw: str, base: Path | None, url: str) -> Path:
    if not raw:
        raise ConfigError(f"vault store URL {url!r} has no path; accepted forms: {_FORMS}")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = (base if base is not None else Path.cwd()) / path
    return path


def _redact(url: str) -> str:
    """The URL without a password (``scheme://user:secret@host`` -> ``scheme://user:***@host``)."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
