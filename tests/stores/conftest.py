"""Fixtures for the vault store tests: envelopes built from random bytes, no crypto."""

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


def open_kind(kind: str, root) -> Store:
    if kind == "dir":
        return DirStore(root / "vault")
    return SqliteStore(root / "vault.db")


@pytest.fixture(params=["dir", "sqlite"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def store(kind, tmp_path) -> Iterator[Store]:
    s = open_kind(kind, tmp_path)
    yield s
    s.close()
