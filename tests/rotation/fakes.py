"""Named fakes for faults that cannot be caused for real in a test without root.

Each wraps a *real* store or key and changes exactly one behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from keystead.errors import DecryptError, ProviderUnavailable, StoreError
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

    def __init__(self, key: Key, corrupt: set[str] = frozenset()) -> None:
        self._key = key
        self.ref = key.ref
        self.provider = key.provider
        self.corrupt = corrupt

    def rewrap_many(self, vault, items):
        out = self._key.rewrap_many(vault, items)
        return [
            Wrapped(w.version, bytes(len(w.blob))) if isinstance(w, Wrapped) and secret in self.corrupt else w
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

    def rotate(self, *, now, token):
        return self._key.rotate(now=now, token=token)

    def disable(self, version):
        return self._key.disable(version)

    def retire(self, version):
        return self._key.retire(version)

    def restore(self, version):
        return self._key.restore(version)


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


class FlakyKey(CorruptingKey):
    """A real key whose ``rewrap_many`` raises ``ProviderUnavailable`` for its first ``fail`` batches
    that hold a secret named in ``secrets`` (a throttled cloud: raised for the whole batch)."""

    def __init__(self, key: Key, secrets: set[str], *, fail: int = 1) -> None:
        super().__init__(key, set())
        self.secrets = secrets
        self.fail = fail

    def rewrap_many(self, vault, items):
        if self.fail and any(secret in self.secrets for secret, _v, _b in items):
            self.fail -= 1
            raise ProviderUnavailable("ThrottlingException: rate exceeded (after retries)", op="rewrap",
                                      key=self.ref, code="ThrottlingException")
        return self._key.rewrap_many(vault, items)


class FailingKey(CorruptingKey):
    """A real key for which every rewrapped item is a decryption failure (a key that opens nothing)."""

    def rewrap_many(self, vault, items):
        return [DecryptError() for _ in items]


class ExplodingKey(CorruptingKey):
    """A real key whose rewrap raises a bug (not a keystead error) on its first batch."""

    def rewrap_many(self, vault, items):
        raise ZeroDivisionError("a bug in a provider; its message quotes S000001's value: value-000001")


class MovingKey(CorruptingKey):
    """A real key that rotates once behind the engine's back in the middle of a batch (an alias moved,
    a cloud's own schedule): the second half of that batch lands on the newer version."""

    def __init__(self, key: Key, *, at_batch: int = 2) -> None:
        super().__init__(key, set())
        self.at_batch = at_batch
        self.batches = 0

    def rewrap_many(self, vault, items):
        self.batches += 1
        if self.batches != self.at_batch or len(items) < 2:
            return self._key.rewrap_many(vault, items)
        half = len(items) // 2
        first = self._key.rewrap_many(vault, items[:half])
        from datetime import datetime

        self._key.rotate(now=datetime.now(UTC), token="moved-behind-the-engine")
        return first + self._key.rewrap_many(vault, items[half:])


class RecordingWrapper:
    """A picklable ``wrap_key`` (a metrics wrapper, say) that notes, per process, that a key it
    wrapped rewrapped a batch: a file named by the pid in ``folder``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def __call__(self, key: Key) -> Key:
        return _Recorded(key, self.folder)


class _Recorded(CorruptingKey):
    def __init__(self, key: Key, folder: str) -> None:
        super().__init__(key)
        self.folder = folder

    def rewrap_many(self, vault, items):
        import os
        from pathlib import Path

        (Path(self.folder) / str(os.getpid())).touch()
        return self._key.rewrap_many(vault, items)
