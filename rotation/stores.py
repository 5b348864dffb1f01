"""Every vault store the config names, for the engine: the rotation maintains them all.

A key's slots may sit in the base store and in any profile's own store (they
share the key file and the state database). The engine rewraps every store,
counts versions across all of them, and retires a version only when none
holds it; a store that cannot be opened stops retirement, never rewrap of
the others.

Stores are named in the state database by an opaque id (a hash of the URL),
never by the URL: a URL may hold a password.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from keystead.errors import KeysteadError
from keystead.stores import Store, open_store
from keystead.stores.base import DAMAGED

if TYPE_CHECKING:
    from keystead.vault import Vault

LEGACY = ""
"""The store id of rows written before stores had ids: the store that rotation ran on."""


def store_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def redacted(url: str) -> str:
    from keystead.stores import redact_url

    return redact_url(url)


def behind(counts: Mapping[str, int], version: str | None) -> int:
    """How many slots in ``counts`` (version label -> slots) are not at ``version``.

    Damaged envelopes (:data:`~keystead.stores.base.DAMAGED`) count as behind:
    nothing may conclude they are up to date.
    """
    return sum(c for v, c in counts.items() if v != version)


@dataclass
class Proof:
    """What every store says about one key: the slots per version, summed, and what could not be read."""

    counts: dict[str, int] = field(default_factory=dict)
    per_store: dict[str, dict[str, int]] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    """store id -> why it could not be opened or counted."""

    @property
    def damaged(self) -> int:
        return self.counts.get(DAMAGED, 0)

    def holding(self, version: str) -> int:
        return self.counts.get(version, 0)


class StoreSet:
    """The stores of one open vault's config, opened on first use; the vault's own store is reused."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        config = vault.config
        urls = list(config.stores) or [config.store_url]
        if config.store_url not in urls:
            urls.insert(0, config.store_url)
        self.urls = {store_id(u): u for u in urls}
        self.active = store_id(config.store_url)
        self._open: dict[str, Store] = {}
        self.errors: dict[str, str] = {}

    def ids(self) -> list[str]:
        return list(self.urls)

    def resolve(self, sid: str) -> str:
        return self.active if sid == LEGACY else sid

    def label(self, sid: str) -> str:
        """The store's URL for a message, password removed."""
        sid = self.resolve(sid)
        return redacted(self.urls[sid]) if sid in self.urls else f"store {sid}"

    def get(self, sid: str) -> Store:
        """The store ``sid``; a KeysteadError (StoreError, ConfigError) if it cannot be opened."""
        sid = self.resolve(sid)
        if sid == self.active:
            return self.vault.store  # the vault's own (a test may have wrapped it)
        if sid not in self._open:
            if sid not in self.urls:
                raise KeyError(sid)
            self._open[sid] = open_store(self.urls[sid], base=self.vault.config.root)
        return self._open[sid]

    def reachable(self) -> Iterator[tuple[str, Store]]:
        """Each store that opens; those that do not are noted in :attr:`errors` and skipped."""
        for sid in self.urls:
            try:
                store = self.get(sid)
            except KeysteadError as exc:
                self.errors[sid] = str(exc)
                continue
            self.errors.pop(sid, None)
            yield sid, store

    def prove(self, ref: str) -> Proof:
        """Slots of ``ref`` per version in every store (the proof retirement needs)."""
        proof = Proof()
        for sid in self.urls:
            try:
                counts = self.get(sid).version_counts(ref)
            except KeysteadError as exc:
                proof.unreachable[sid] = str(exc)
                continue
            proof.per_store[sid] = dict(counts)
            for v, c in counts.items():
                proof.counts[v] = proof.counts.get(v, 0) + c
        return proof

    def close(self) -> None:
        for store in self._open.values():
            store.close()
        self._open.clear()
