"""The two provider interfaces: what a key does, and how it is managed.

A *key* is one entry of keystead.toml, named by a reference whose form picks
its provider (``local:NAME``, ``age1...``, later ``arn:aws:kms:...`` and
``projects/.../cryptoKeys/...``). Every provider implements both halves:

- :class:`KeyOps` -- wrap a data key, unwrap it, rewrap it under the primary
  version (server-side where the cloud offers it, so the data key never
  leaves the KMS); ``rewrap_many`` is the batch form rotation uses, with one
  result per item.
- :class:`KeyAdmin` -- describe the key (versions and their states, primary,
  last rotation, how it rotates), rotate it (idempotent per token), and the
  two-phase retirement of an old version: ``disable`` (reversible),
  ``retire`` (final where the provider is; a cloud keeps a deletion window),
  ``restore`` (undo either while the provider still can).

A *version label* (``Wrapped.version``, a slot's ``version``) is an opaque,
non-empty string chosen by the provider and compared only for equality:
local, the KEK version number; AWS, the backing key id and its key material;
GCP, the CryptoKeyVersion id. Rotation finds the slots that are behind by
comparing labels with the primary's, nothing else.

:class:`Key` is the template every provider fills: its public methods check
the data key's length and the label, and translate provider errors once
(``_error``); the provider implements the private steps ``_wrap``,
``_unwrap`` and, where the cloud has a server-side re-encrypt, ``_rewrap``.
Caching, rate limiting and metrics wrap a key behind the same interface
(``Vault.open(..., wrap_key=...)``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol, TypeVar, runtime_checkable

from keystead.envelope import Context
from keystead.errors import DecryptError, KeysteadError, ProviderError

DEK_LEN = 32
"""Every data key is 32 bytes (AES-256)."""

_In = TypeVar("_In")
_Out = TypeVar("_Out")

SlotItem = tuple[str, str, bytes]
"""``(secret, version, wrapped)``: one slot to rewrap (a ``keystead.stores.SlotRow``)."""


class RotationKind(enum.StrEnum):
    """How a key gets a new version."""

    IN_PLACE = "in-place"
    """keystead calls ``rotate`` and the key gets a new version (local, GCP, AWS on demand)."""
    SCHEDULED = "scheduled"
    """The cloud rotates on its own schedule (AWS automatic rotation, GCP rotation_period):
    keystead never plans a rotation, it only catches up the slots left behind."""
    SUCCESSOR = "successor"
    """A new key replaces the old one (CloudHSM-backed, asymmetric and imported AWS keys):
    ``rotate`` creates it and moves the alias."""
    NONE = "none"
    """The key does not rotate (age recipients): to change it, declare a new one and re-seal."""


class VersionState(enum.StrEnum):
    ENABLED = "enabled"
    """Wraps (if primary) and unwraps."""
    SUPERSEDED = "superseded"
    """Still unwraps but can never be retired on its own (AWS in-place key material)."""
    DISABLED = "disabled"
    """Unwraps nothing until restored; keystead's first, reversible step of retirement."""
    PENDING_DELETION = "pending-deletion"
    """Scheduled for deletion by the provider; restorable until the window ends."""
    RETIRED = "retired"
    """Gone for good: nothing it wrapped can be opened."""


ENABLED = VersionState.ENABLED
RETIRED = VersionState.RETIRED
RESTORABLE = frozenset({VersionState.DISABLED, VersionState.PENDING_DELETION})


class Wrapped(NamedTuple):
    """A data key wrapped by one key version (a named tuple: rotation makes one per slot)."""

    version: str
    blob: bytes

    def __repr__(self) -> str:  # the wrapped bytes never show in a repr or a traceback
        return f"Wrapped(version={self.version!r}, blob=<{len(self.blob)} bytes>)"


RewrapResult = Wrapped | DecryptError
"""One item of ``rewrap_many``: the new wrapped key (with its own version), or why that slot failed."""


@dataclass(frozen=True, slots=True)
class KeyVersion:
    id: str
    created_at: datetime
    state: VersionState


@dataclass(frozen=True, slots=True)
class KeyInfo:
    ref: str
    provider: str
    primary: str
    versions: tuple[KeyVersion, ...]
    last_rotated: datetime | None
    """When the primary became primary; None for a key that does not rotate."""
    rotation: RotationKind
    pending: str | None = None
    """A new version the provider is still making (AWS on-demand rotation is asynchronous,
    GCP asymmetric versions start PENDING_GENERATION): the engine waits for it."""

    @property
    def rotates_in_place(self) -> bool:
        return self.rotation is RotationKind.IN_PLACE

    @property
    def live_versions(self) -> tuple[str, ...]:
        """Versions that unwrap (enabled or superseded), primary included."""
        return tuple(v.id for v in self.versions if v.state in (VersionState.ENABLED, VersionState.SUPERSEDED))

    def version(self, label: str) -> KeyVersion | None:
        for v in self.versions:
            if v.id == label:
                return v
        return None


@runtime_checkable
class KeyOps(Protocol):
    """What a key does."""

    ref: str
    provider: str

    def wrap(self, dek: bytes, context: Context) -> Wrapped: ...

    def unwrap(self, wrapped: Wrapped, context: Context) -> bytes: ...

    def rewrap(self, wrapped: Wrapped, context: Context) -> Wrapped: ...

    def rewrap_many(self, vault: str, items: Sequence[SlotItem]) -> list[RewrapResult]: ...


@runtime_checkable
class KeyAdmin(Protocol):
    """How a key is managed."""

    ref: str

    def describe(self) -> KeyInfo: ...

    def rotate(self, *, now: datetime, token: str) -> KeyInfo: ...

    def disable(self, version: str) -> None: ...

    def retire(self, version: str) -> None: ...

    def restore(self, version: str) -> None: ...


@runtime_checkable
class ManagedKey(KeyOps, KeyAdmin, Protocol):
    """Both halves: what the vault, the engine and every wrapper take."""


class Key:
    """Base for providers: one object is both halves for one reference.

    Public methods are the template; a provider implements ``_wrap``,
    ``_unwrap``, ``describe`` and, if it rotates, ``_rotate`` (and the
    retirement steps). ``rewrap`` defaults to unwrap + wrap, the data key in
    memory for the call only; a cloud with a server-side re-encrypt
    overrides ``_rewrap``. ``rewrap_many`` defaults to a loop; a provider
    overrides it for speed or concurrency, keeping its contract: one result
    per item, in order; only a decryption failure is per item; anything
    else (a transient outage: :class:`~keystead.errors.ProviderUnavailable`)
    is raised for the whole batch.
    """

    ref: str
    provider: str

    # -- what the key does (template) --------------------------------------------
    def wrap(self, dek: bytes, context: Context) -> Wrapped:
        if len(dek) != DEK_LEN:
            raise ProviderError(f"a data key is {DEK_LEN} bytes, got {len(dek)}", op="wrap", key=self.ref)
        return self._checked(self._step("wrap", self._wrap, dek, context), "wrap")

    def unwrap(self, wrapped: Wrapped, context: Context) -> bytes:
        dek = self._step("unwrap", self._unwrap, wrapped, context)
        if len(dek) != DEK_LEN:
            raise DecryptError()
        return dek

    def rewrap(self, wrapped: Wrapped, context: Context) -> Wrapped:
        return self._checked(self._step("rewrap", self._rewrap, wrapped, context), "rewrap")

    def _step(self, op: str, step: Callable[[_In, Context], _Out], value: _In, context: Context) -> _Out:
        """One provider step, its errors translated once. A plain try/except, not ``_translated``:
        this runs once per slot in verification and sealing, where a context manager is measurable."""
        try:
            return step(value, context)
        except KeysteadError:
            raise
        except Exception as exc:
            raise self._mapped(op, exc) from exc

    def rewrap_many(self, vault: str, items: Sequence[SlotItem]) -> list[RewrapResult]:
        """Rewrap a batch of slots of ``vault`` to the primary version, one result per item."""
        out: list[RewrapResult] = []
        for secret, version, blob in items:
            try:
                out.append(self.rewrap(Wrapped(version, blob), Context(vault, secret)))
            except DecryptError as exc:
                out.append(exc)
        return out

    # -- how the key is managed ---------------------------------------------------
    def describe(self) -> KeyInfo:
        raise NotImplementedError

    def rotate(self, *, now: datetime, token: str) -> KeyInfo:
        """Make a new primary version, once per ``token``: a second call with the same token
        (a resume after a crash between the provider's calls) adopts what the first made."""
        if self.describe().rotation is RotationKind.NONE:
            raise ProviderError(f"{self.ref} does not rotate", op="rotate", key=self.ref)
        with self._translated("rotate"):
            return self._rotate(now=now, token=token)

    def disable(self, version: str) -> None:
        raise ProviderError(f"{self.provider} keys have no versions to disable", op="disable", key=self.ref)

    def retire(self, version: str) -> None:
        raise ProviderError(f"{self.provider} keys have no versions to retire", op="retire", key=self.ref)

    def restore(self, version: str) -> None:
        raise ProviderError(f"{self.provider} keys have no versions to restore", op="restore", key=self.ref)

    # -- the steps a provider fills -------------------------------------------------
    def _wrap(self, dek: bytes, context: Context) -> Wrapped:
        raise NotImplementedError

    def _unwrap(self, wrapped: Wrapped, context: Context) -> bytes:
        raise NotImplementedError

    def _rewrap(self, wrapped: Wrapped, context: Context) -> Wrapped:
        return self._wrap(self.unwrap(wrapped, context), context)

    def _rotate(self, *, now: datetime, token: str) -> KeyInfo:
        raise NotImplementedError

    def _error(self, op: str, exc: Exception) -> KeysteadError | None:
        """The keystead error for an SDK exception (None: not the provider's, let it through)."""
        return None

    # -- shared ----------------------------------------------------------------------
    @contextmanager
    def _translated(self, op: str) -> Iterator[None]:
        try:
            yield
        except KeysteadError:
            raise
        except Exception as exc:
            raise self._mapped(op, exc) from exc

    def _mapped(self, op: str, exc: Exception) -> KeysteadError:
        """``exc`` as the provider's keystead error; an exception the provider does not map is re-raised."""
        mapped = self._error(op, exc)
        if mapped is None:
            raise exc
        return mapped

    def _checked(self, wrapped: Wrapped, op: str) -> Wrapped:
        if not wrapped.version:
            raise ProviderError(f"{self.ref}: the provider gave no version label", op=op, key=self.ref)
        return wrapped

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ref!r})"


class RequestGate(Protocol):
    """What a key calls around each request it sends to its provider, when a wrapper asks it to
    (``key.gate_requests(gate)``, where the provider offers it: AWS does, per HTTP attempt): the
    wrapper (a rate limit, metrics) sees the requests themselves, retries included, not just the
    calls of :class:`KeyOps`."""

    def sending(self) -> None:
        """A request is about to be sent (a retry too); may block (a rate limit)."""

    def answered(self, *, throttled: bool) -> None:
        """An attempt ended; ``throttled``: the provider refused it for its rate (the SDK may retry)."""

    def finished(self) -> None:
        """The call is over (answered, or its retries ran out): no retry of it follows."""


KeyWrapper = Callable[[ManagedKey], ManagedKey]
"""What ``Vault.open(..., wrap_key=...)`` takes: caching, rate limiting, metrics."""


def identity(key: ManagedKey) -> ManagedKey:
    return key


class Chain:
    """Several key wrappers as one ``wrap_key``, applied in order (the first wraps the provider's key,
    the last is outermost): e.g. ``Chain(RateLimit(...), metrics)``. Picklable when its members are
    (rotation lanes receive it); ``divided(n)`` divides each member that can (a rate limit)."""

    def __init__(self, *wrappers: KeyWrapper) -> None:
        self.wrappers = wrappers

    def __call__(self, key: ManagedKey) -> ManagedKey:
        for wrapper in self.wrappers:
            key = wrapper(key)
        return key

    def divided(self, n: int) -> Chain:
        return Chain(*(w.divided(n) if callable(getattr(w, "divided", None)) else w  # type: ignore[attr-defined]
                       for w in self.wrappers))
