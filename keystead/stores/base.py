"""The vault store interface: where envelopes live.

A store knows envelopes and slots, never a key or a cipher. Two families of
calls:

- whole envelopes, for the CLI: ``get``, ``put``, ``put_many`` (one
  transaction), ``delete``, ``names``, ``iter_envelopes`` (streamed in name
  order, never the whole vault in memory);
- slots, for rotation: ``slots_behind`` pages through the slots of one key
  not at a given version, in secret-name order after a cursor (and, for a
  lane of a parallel rewrap, up to and including ``until``); ``split_points`` cuts a
  key's slots into ranges of about equal size;
  ``replace_slots`` swaps wrapped keys in one atomic batch, each only if the
  slot is still at the version it was read at (compare-and-swap), and never
  touches a payload; ``version_counts`` says how many slots each version of a
  key still holds.

Stores are named by URL: ``dir:PATH`` and ``sqlite:///PATH`` (later
``postgresql://...``). See :func:`keystead.stores.open_store`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from keystead.envelope import Envelope


class SlotRow(NamedTuple):
    """One slot of one key, as rotation reads it: ``(secret, version, wrapped)``.

    A named tuple, not a dataclass: rotation makes one per envelope in its
    hot loop, and the tuple is also what ``KeyOps.rewrap_many`` takes.
    """

    secret: str
    version: str
    wrapped: bytes


class SlotUpdate(NamedTuple):
    """Replace ``secret``'s slot for the key, if it is still at ``old_version``
    (and, when ``old_wrapped`` is given, still holds exactly those bytes: a
    secret re-set meanwhile under the same version is left alone)."""

    secret: str
    old_version: str
    version: str
    wrapped_at: int
    wrapped: bytes
    old_wrapped: bytes | None = None


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

    def slots_behind(
        self, key: str, version: str, *, after: str = "", until: str | None = None, limit: int = 1000
    ) -> list[SlotRow]: ...

    def replace_slots(self, key: str, updates: Sequence[SlotUpdate]) -> int: ...

    def version_counts(self, key: str) -> dict[str, int]: ...

    def split_points(self, key: str, parts: int) -> list[str]: ...

    def close(self) -> None: ...

    # Optional (a Protocol cannot mark a method optional, so it is named here):
    # a store in a database also keeps the audit log's anchor, the latest
    # (seq, hash) of its chain (keystead.audit.AuditAnchor):
    #     def read_audit_anchor(self) -> tuple[int, str] | None: ...
    #     def write_audit_anchor(self, seq: int, digest: str) -> None: ...
    # SqliteStore has them; DirStore does not (each git clone keeps its own log).
