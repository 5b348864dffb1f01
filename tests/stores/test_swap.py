"""Store.swap: compare-and-swap of whole envelopes (re-seal, slots added or removed), on both stores."""

from __future__ import annotations

import dataclasses

from keystead.stores import Store
from tests.stores.conftest import MakeEnv


def test_swap_replaces_only_what_is_still_as_read(store: Store, make_env: MakeEnv) -> None:
    a, b, c = make_env("A"), make_env("B"), make_env("C")
    store.put_many([a, b, c])
    new_a = make_env("A", slots=(("local:main", "1"), ("local:ci", "1")))
    new_b = make_env("B")
    store.put(make_env("B"))  # B changed meanwhile: its swap must not overwrite it
    changed_b = store.get("B")
    store.delete("C")  # C removed meanwhile: not brought back
    assert store.swap([(a, new_a), (b, new_b), (c, make_env("C"))]) == {"A"}
    assert store.get("A") == new_a
    assert store.get("B") == changed_b
    assert store.names() == ["A", "B"]
    fewer = dataclasses.replace(new_a, slots=new_a.slots[1:])  # a slot taken out, payload untouched
    assert store.swap([(new_a, fewer)]) == {"A"}
    assert store.get("A") == fewer and store.version_counts("local:main") == {"1": 1}
    assert store.swap([]) == set()
