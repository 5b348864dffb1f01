"""Fixtures for the vault store tests: envelopes built from random bytes, no crypto.

``kind`` runs a test on each store: dir, sqlite, and postgres (a schema of
its own on 127.0.0.1:5432, the ``pg_schema_url`` fixture of tests/conftest.py: skipped
with the reason when the server is unreachable, failed under KEYSTEAD_REQUIRE_PG=1).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from keystead.envelope import Envelope, Slot
from keystead.stores import DirStore, SqliteStore, Store

MakeEnv = Callable[..., Envelope]


@pytest.fixture
def make_env() -> MakeEnv:
    """``make_env(name, slots=[(key, version), ...])`` -> an Envelope with random payload bytes."""

    def make(name: str, slots=(("local:main", "1"),), *, vault: str = "default") -> Envelope:
        return Envelope(
            vault=vault,
            name=name,
            created_at=1_795_000_000,
            nonce=os.urandom(12),
            ciphertext=os.urandom(40),
            slots=tuple(
                Slot(key, key.split(":")[0] if key.startswith("local:") else "aws", version, 1_795_000_000,
                     os.urandom(48))
                for key, version in slots
            ),
        )

    return make


class Kind(str):
    """A store kind ("dir", "sqlite", "postgres"); a postgres one carries its database's URL."""

    url: str = ""


def open_kind(kind: str, root) -> Store:
    if kind == "dir":
        return DirStore(root / "vault")
    if kind == "postgres":
        from keystead.stores.postgres import PostgresStore

        assert isinstance(kind, Kind) and kind.url
        return PostgresStore(kind.url)
    return SqliteStore(root / "vault.db")


@pytest.fixture(params=["dir", "sqlite", pytest.param("postgres", marks=pytest.mark.pg)])
def kind(request) -> str:
    k = Kind(request.param)
    if k == "postgres":
        k.url = request.getfixturevalue("pg_schema_url")
    return k


@pytest.fixture
def store(kind, tmp_path) -> Iterator[Store]:
    s = open_kind(kind, tmp_path)
    yield s
    s.close()
