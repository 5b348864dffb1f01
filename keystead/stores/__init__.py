"""Vault stores: where envelopes live, named by URL.

``open_store`` is the one place a store URL is read::

    dir:PATH              one envelope file per secret in a folder (git-friendly)
    sqlite:///PATH        one SQLite file, PATH relative to the config file's folder
    sqlite:////ABS/PATH   one SQLite file at an absolute path
    postgresql://USER@HOST:PORT/DATABASE   PostgreSQL (also postgresql+psycopg://), see docs/postgresql.md
"""

from __future__ import annotations

from pathlib import Path

from keystead.errors import ConfigError
from keystead.stores.base import DAMAGED, SlotRow, SlotUpdate, Store, redact_url
from keystead.stores.dir import DirStore
from keystead.stores.sqlite import SqliteStore

__all__ = ["DAMAGED", "DirStore", "SlotRow", "SlotUpdate", "SqliteStore", "Store", "open_store", "redact_url"]

_FORMS = "dir:PATH, sqlite:///RELATIVE/PATH, sqlite:////ABSOLUTE/PATH, postgresql://USER@HOST/DATABASE"


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
        from keystead.stores.postgres import PostgresStore  # SQLAlchemy is loaded only for a PostgreSQL vault

        return PostgresStore(url)
    raise ConfigError(f"unknown vault store URL {redact_url(url)!r}; accepted forms: {_FORMS}")


def _resolve(raw: str, base: Path | None, url: str) -> Path:
    if not raw:
        raise ConfigError(f"vault store URL {redact_url(url)!r} has no path; accepted forms: {_FORMS}")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = (base if base is not None else Path.cwd()) / path
    return path

