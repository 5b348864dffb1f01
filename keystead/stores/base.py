"""The vault store interface: where envelopes live.

A store knows envelopes and slots, never a key or a cipher. Two families of
calls:

- whole envelopes, for the CLI: ``get``, ``put``, ``put_many`` (one
  transaction), ``delete``, ``names``, ``iter_envelopes`` (streamed in name
  order, never the whole vault in memory);
- slots, for rotation: ``slots_behind`` pages through the slots of one key
  not at a given version, in secret-name order after a cursor;
  ``replace_slots`` swaps wrapped keys in one atomic batch, each only if the
  slot is still at the version it was read at (compare-and-swap), and never
  touches a payload; ``version_counts`` says how many slots each version of a
  key still holds.

Stores are named by URL: ``dir:PATH`` and ``sqlite:///PATH`` (later
``postgresql://...``). See :func:`keystead.stores.open_store`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from keystead.envelope import Envelope


@dataclass(frozen=True, slots=True)
class SlotRow:
    """One slot of one key, as rotation reads it."""

    secret: str
    version: str
    wrapped: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SlotUpdate:
    """Replace ``secret``'s slot for the key, if it is still at ``old_version``."""

    secret: str
    old_version: str
    version: str
    wrapped_at: int
    wrapped: bytes = field(repr=False)


@runtime_checkable
class Store(Protocol):
    url: str

    def get(self, name: str) -> Envelope: ...

    def put(self, envelope: Envelope) -> None: ...

    def put_many(self, envelopes: Iterable[Envelope]) -> int: ...

    def delete(self, name: str) -> None: ...

    def names(self) -> list[str]: ...

    def count(self) -> int: ...

    def iter_envelopes(self, *, after: str = "", batch: int = 1000) -> Iterator[Envelope]: ...

    def slots_behind(self, key: str, version: str, *, after: str = "", limit: int = 1000) -> list[SlotRow]: ...

    def replace_slots(self, key: str, updates: Sequence[SlotUpdate]) -> int: ...

    def version_counts(self, key: str) -> dict[str, int]: ...

    def close(self) -> None: ...
