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
  touches a payload; ``swap`` compare-and-swaps whole envelopes (re-seal, slots
  added or removed); ``version_counts`` says how many slots each version of a
  key still holds.

Name order is byte order: ``names``, ``iter_envelopes``, the cursors of
``slots_behind`` (``after``, ``until``) and ``split_points`` all order
secrets by the UTF-8 bytes of their name (``sorted(names, key=str.encode)``:
``"A9" < "Alpha_2" < "Zeta" < "_x" < "a-b" < "a.b" < "a_b" < "alpha"``),
never by a locale's collation. Rotation's cursors, lanes and backup lookups
in the state database compare names the same way.

Damaged envelopes (a 0-byte or truncated file, bad JSON, an unknown format
version, a file renamed to another secret's name, a database row without
slots) never stop rotation: ``slots_behind`` returns each one as
``SlotRow(name, DAMAGED, b"")`` in its name-order place (it may hold a slot
of the key; the engine records it as unreadable), ``version_counts`` counts
them under :data:`DAMAGED` (so no version looks unused while one is
unreadable), ``replace_slots`` leaves them alone, and ``iter_envelopes``
reports them to ``on_damaged`` when given one (else it raises, so an export
never silently leaves out half a vault).

Stores are named by URL: ``dir:PATH``, ``sqlite:///PATH`` and
``postgresql://USER@HOST/DATABASE``. See :func:`keystead.stores.open_store`. A store's
``url`` and ``repr`` never show a password (:func:`keystead.stores.redact_url`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, Self, runtime_checkable

from keystead.envelope import Envelope
from keystead.errors import FormatError, KeysteadError

DAMAGED = "?"
"""The version reported for an envelope that cannot be decoded. Never a real
version label (labels are non-empty ``[A-Za-z0-9_.:/-]``)."""

OnDamaged = Callable[[str, KeysteadError], None]
"""``on_damaged(name, error)``: told about each damaged envelope that ``iter_envelopes`` skips."""


def envelopes_of(rows: Iterable[Sequence[Any]], slots: Mapping[str, Sequence[Any]],
                 build: Callable[[str, Sequence[Any], Sequence[Any]], Envelope],
                 on_damaged: OnDamaged | None) -> Iterator[Envelope]:
    """One page of a row store's ``iter_envelopes``: each ``(name, *columns)`` row built with its
    slot rows; a damaged one (FormatError) goes to ``on_damaged`` and is skipped, or raises without it."""
    for name, *row in rows:
        try:
            env = build(name, row, slots.get(name, ()))
        except FormatError as exc:
            if on_damaged is None:
                raise
            on_damaged(name, exc)
            continue
        yield env


def redact_url(url: str) -> str:
    """``url`` without its password, for messages and reprs.

    ``postgresql+psycopg://app:s3cr%40t@db/vault`` -> ``postgresql+psycopg://app:***@db/vault``;
    a ``password=`` query parameter is masked too. The password is taken to end at
    the last ``@`` before the query, so an unencoded ``@`` or ``/`` in it still does
    not leak (at worst more than the password is masked). A URL without a password
    comes back unchanged.
    """
    scheme, sep, rest = url.partition("://")
    if sep:
        cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
        at = rest.rfind("@", 0, cut)
        if at >= 0 and ":" in rest[:at]:
            rest = f"{rest[:at].split(':', 1)[0]}:***{rest[at:]}"
        url = f"{scheme}{sep}{rest}"
    return _PASSWORD_PARAM.sub(r"\1***", url)


_PASSWORD_PARAM = re.compile(r"(?i)([?&]password=)[^&#]*")


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

    def iter_envelopes(
        self, *, after: str = "", batch: int = 1000, on_damaged: OnDamaged | None = None
    ) -> Iterator[Envelope]:
        """Envelopes named after ``after``, in byte order. A damaged one goes to
        ``on_damaged`` and is skipped; without ``on_damaged`` it raises FormatError."""
        ...

    def slots_behind(
        self, key: str, version: str, *, after: str = "", until: str | None = None, limit: int = 1000
    ) -> list[SlotRow]:
        """Up to ``limit`` slots of ``key`` not at ``version``, of secrets named after
        ``after`` up to and including ``until``, in byte order; a damaged envelope in
        that range is one ``SlotRow(name, DAMAGED, b"")`` (it counts toward ``limit``)."""
        ...

    def replace_slots(self, key: str, updates: Sequence[SlotUpdate]) -> int:
        """Compare-and-swap each slot; return how many were swapped (damaged envelopes: not)."""
        ...

    def swap(self, pairs: Sequence[tuple[Envelope, Envelope]]) -> set[str]:
        """Compare-and-swap whole envelopes: replace each ``old`` by ``new`` (same name) only if
        the store still holds exactly ``old``; return the names swapped. sqlite, postgres: one
        transaction; dir: atomic per file, under the folder's lock. For re-seals and slot
        changes, which must never overwrite a secret set meanwhile."""
        ...

    def version_counts(self, key: str) -> dict[str, int]:
        """Slots of ``key`` per version, plus damaged envelopes under ``DAMAGED``."""
        ...

    def split_points(self, key: str, parts: int) -> list[str]:
        """Up to ``parts - 1`` names, ascending in byte order, cutting the key's slots
        into ranges of about equal size (a range is after one point up to the next)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    # Optional (a Protocol cannot mark a method optional, so it is named here):
    # a store in a database also keeps the audit log's anchor, the latest
    # (seq, hash) of its chain (keystead.audit.AuditAnchor):
    #     def read_audit_anchor(self) -> tuple[int, str] | None: ...
    #     def write_audit_anchor(self, seq: int, digest: str) -> None: ...
    # SqliteStore has them; DirStore does not (each git clone keeps its own log), nor does
    # PostgresStore (each machine's log is its own file: one shared anchor would contradict them).
