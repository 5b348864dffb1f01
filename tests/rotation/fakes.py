"""Named fakes for faults that cannot be caused for real in a test without root.

Each wraps a *real* store or key and changes exactly one behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence

from keystead.errors import ProviderError, StoreError
from keystead.providers.base import Key, Wrapped
from keystead.stores.base import SlotUpdate


class DiskFullStore:
    """A real store whose ``replace_slots`` fails like a full disk from its ``fail_from``-th call on.

    It raises before delegating, as the SQLite store's rolled-back
    transaction leaves nothing written.
    """

    def __init__(self, store, *, fail_from: int) -> None:
        self._store = store
        self.url = store.url
        self.calls = 0
        self.fail_from = fail_from

    def replace_slots(self, key: str, updates: Sequence[SlotUpdate]) -> int:
        self.calls += 1
        if self.calls >= self.fail_from:
            raise StoreError(f"disk full writing {self.url}")
        return self._store.replace_slots(key, updates)

    def __getattr__(self, name: str):
        return getattr(self._store, name)


class CorruptingKey(Key):
    """A real key whose rewrap returns a wrong blob for the secrets named in ``corrupt``."""

    def __init__(self, key: Key, corrupt: set[str]) -> None:
        self._key = key
        self.ref = key.ref
        self.provider = key.provider
        self.corrupt = corrupt

    def rewrap_many(self, vault, items):
        version, out = self._key.rewrap_many(vault, items)
        return version, [
            bytes(len(w)) if isinstance(w, bytes) and secret in self.corrupt else w
            for w, (secret, _v, _b) in zip(out, items, strict=True)
        ]

    def __getattr__(self, name: str):
        return getattr(self._key, name)

    def wrap(self, dek, context):
        return self._key.wrap(dek, context)

    def unwrap(self, wrapped, context):
        return self._key.unwrap(wrapped, context)

    def describe(self):
        return self._key.describe()

    def rotate(self, *, now):
        return self._key.rotate(now=now)

    def retire(self, version):
        return self._key.retire(version)


class RacingKey(CorruptingKey):
    """A real key that calls ``during()`` once, between reading a rewrap batch and its swap:
    a concurrent writer (``secrets set`` from a process that loaded the key earlier)."""

    def __init__(self, key: Key, during) -> None:
        super().__init__(key, set())
        self.during = during

    def rewrap_many(self, vault, items):
        out = self._key.rewrap_many(vault, items)
        if self.during is not None:
            during, self.during = self.during, None
            during()
        return out
