"""The two provider interfaces: what a key does, and how it is managed.

A *key* is one entry of keystead.toml, named by a reference whose form picks
its provider (``local:NAME``, ``age1...``, later ``arn:aws:kms:...`` and
``projects/.../cryptoKeys/...``). Every provider implements both halves:

- :class:`KeyOps` -- wrap a data key, unwrap it, rewrap it under the primary
  version (server-side where the cloud offers it, so the data key never
  leaves the KMS); ``rewrap_many`` is the batch form rotation uses.
- :class:`KeyAdmin` -- describe the key (versions, primary, last rotation),
  rotate it (a new primary version), retire an old version.

Caching, rate limiting and metrics wrap a key behind the same interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from keystead.envelope import Context
from keystead.errors import ProviderError

ENABLED = "enabled"
RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class Wrapped:
    """A data key wrapped by one key version."""

    version: str
    blob: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeyVersion:
    id: str
    created_at: datetime
    state: str  # ENABLED or RETIRED


@dataclass(frozen=True, slots=True)
class KeyInfo:
    ref: str
    provider: str
    primary: str
    versions: tuple[KeyVersion, ...]
    last_rotated: datetime
    rotates_in_place: bool

    @property
    def live_versions(self) -> tuple[str, ...]:
        return tuple(v.id for v in self.versions if v.state == ENABLED)


@runtime_checkable
class KeyOps(Protocol):
    ref: str
    provider: str

    def wrap(self, dek: bytes, context: Context) -> Wrapped: ...

    def unwrap(self, wrapped: Wrapped, context: Context) -> bytes: ...

    def rewrap(self, wrapped: Wrapped, context: Context) -> Wrapped: ...

    def rewrap_many(
        self, vault: str, items: Sequence[tuple[str, str, bytes]]
    ) -> tuple[str, list[bytes | ProviderError]]: ...


@runtime_checkable
class KeyAdmin(Protocol):
    ref: str

    def describe(self) -> KeyInfo: ...

    def rotate(self, *, now: datetime) -> KeyInfo: ...

    def retire(self, version: str) -> None: ...


class Key:
    """Base for providers: one object is both halves for one reference.

    Subclasses implement ``wrap``, ``unwrap``, ``describe``, ``rotate`` and
    ``retire``; ``rewrap`` defaults to unwrap + wrap and ``rewrap_many`` to a
    loop, which cloud providers override (server-side ReEncrypt, concurrency).
    """

    ref: str
    provider: str

    def wrap(self, dek: bytes, context: Context) -> Wrapped:
        raise NotImplementedError

    def unwrap(self, wrapped: Wrapped, context: Context) -> bytes:
        raise NotImplementedError

    def rewrap(self, wrapped: Wrapped, context: Context) -> Wrapped:
        return self.wrap(self.unwrap(wrapped, context), context)

    def rewrap_many(
        self, vault: str, items: Sequence[tuple[str, str, bytes]]
    ) -> tuple[str, list[bytes | ProviderError]]:
        """Rewrap a batch of slots of ``vault`` to the primary version.

        ``items`` are ``(secret, version, wrapped)``; the answer is the version
        wrapped to and, per item in order, the new wrapped bytes or the error
        that item met (one bad slot never stops the batch).
        """
        primary = self.describe().primary
        out: list[bytes | ProviderError] = []
        for secret, version, blob in items:
            try:
                out.append(self.rewrap(Wrapped(version, blob), Context(vault, secret)).blob)
            except ProviderError as exc:
                out.append(exc)
        return primary, out

    def describe(self) -> KeyInfo:
        raise NotImplementedError

    def rotate(self, *, now: datetime) -> KeyInfo:
        raise NotImplementedError

    def retire(self, version: str) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ref!r})"
