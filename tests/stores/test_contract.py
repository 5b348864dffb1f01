"""The Store contract (keystead/stores/base.py), run against every store."""

from __future__ import annotations


import pytest

from keystead.errors import ConfigError, InputError, NotFoundError, StoreError
from keystead.stores import DirStore, SlotUpdate, SqliteStore, Store, open_store

from .conftest import open_kind

KEY = "local:main"


def test_is_a_store(store):
    assert isinstance(store, Store)
    assert store.url.startswith(("dir:", "sqlite:///"))


def test_round_trip(store, make_env):
    env = make_env("DB_URL", slots=[(KEY, "3"), ("alias/app", "2024-01-01"), ("local:backup", "1")])
    store.put(env)
    assert store.get("DB_URL") == env
    assert [s.key for s in store.get("DB_URL").slots] == [KEY, "alias/app", "local:backup"]


def test_survives_reopen(kind, tmp_path, make_env):
    env = make_env("A")
    with open_kind(kind, tmp_path) as s:
        s.put(env)
    with open_kind(kind, tmp_path) as s:
        assert s.get("A") == env


def test_put_overwrites(store, make_env):
    store.put(make_env("A", slots=[(KEY, "1"), ("local:other", "1")]))
    newer = make_env("A", slots=[(KEY, "2")])
    store.put(newer)
    assert store.get("A") == newer
    assert store.count() == 1
    assert store.version_counts("local:other") == {}


def test_delete(store, make_env):
    store.put(make_env("A"))
    store.put(make_env("B"))
    store.delete("A")
    assert store.names() == ["B"]
    with pytest.raises(NotFoundError, match="no secret A in vault at"):
        store.get("A")
    with pytest.raises(NotFoundError):
        store.delete("A")


def test_missing_secret(store):
    with pytest.raises(NotFoundError, match="no secret NOPE in vault at"):
        store.get("NOPE")


def test_names_sorted_and_count(store, make_env):
    for name in ["b", "A", "a.b", "Z_9", "a-c", "a"]:
        store.put(make_env(name))
    assert store.names() == sorted(["b", "A", "a.b", "Z_9", "a-c", "a"])
    assert store.count() == 6


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "-x", "a\x00b", "/etc/passwd"])
def test_bad_names_refused_and_nothing_escapes(store, make_env, tmp_path, bad):
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    env = make_env("ok")
    env = type(env)(env.vault, bad, env.created_at, env.nonce, env.ciphertext, env.slots)
    with pytest.raises(InputError):
        store.put(env)
    with pytest.raises(InputError):
        store.put_many([env])
    with pytest.raises(InputError):
        store.get(bad)
    with pytest.raises(InputError):
        store.delete(bad)
    assert store.names() == []
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before
    assert not (tmp_path / "x.json").exists()


def test_put_many_thousands(store, make_env):
    n = 5000 if isinstance(store, SqliteStore) else 1000  # the dir store is fsync-bound: keep the suite fast
    envs = [make_env(f"S{i:05d}") for i in range(n)]
    assert store.put_many(iter(envs)) == n
    assert store.count() == n
    assert store.get("S00321") == envs[321]
    assert store.version_counts(KEY) == {"1": n}


def test_iter_envelopes_streams_in_order(store, make_env):
    envs = {f"N{i:03d}": make_env(f"N{i:03d}", slots=[(KEY, "1"), ("local:b", "2")]) for i in range(53)}
    store.put_many(reversed(list(envs.values())))
    got = list(store.iter_envelopes(batch=7))
    assert [e.name for e in got] == sorted(envs)
    assert got == [envs[n] for n in sorted(envs)]
    assert [e.name for e in store.iter_envelopes(after="N049", batch=2)] == ["N050", "N051", "N052"]
    assert list(store.iter_envelopes(after="N052")) == []


def _vault_for_rotation(store, make_env) -> set[str]:
    """600 secrets: at version 2, at version 1, at version 0, without the key. Returns those behind."""
    behind = set()
    envs = []
    for i in range(600):
        name = f"R{i:04d}"
        kind = i % 4
        if kind == 3:
            envs.append(make_env(name, slots=[("local:other", "1")]))
            continue
        version = {0: "2", 1: "1", 2: "0"}[kind]
        envs.append(make_env(name, slots=[("local:other", "7"), (KEY, version)]))
        if version != "2":
            behind.add(name)
    store.put_many(envs)
    return behind


def test_slots_behind_pages_every_slot_exactly_once(store, make_env):
    behind = _vault_for_rotation(store, make_env)
    seen: list[str] = []
    after = ""
    while rows := store.slots_behind(KEY, "2", after=after, limit=37):
        assert len(rows) <= 37
        assert all(r.version in ("0", "1") for r in rows)
        seen += [r.secret for r in rows]
        after = rows[-1].secret
    assert seen == sorted(behind)
    row = store.slots_behind(KEY, "2", limit=1)[0]
    assert row.wrapped == store.get(row.secret).slot(KEY).wrapped


def test_replace_slots_compare_and_swap(store, make_env):
    behind = _vault_for_rotation(store, make_env)
    rows = store.slots_behind(KEY, "2", limit=1000)
    assert {r.secret for r in rows} == behind
    # Another writer moves one slot on between the read and the swap.
    moved = rows[5].secret
    store.put(store.get(moved).with_slot(store.get(moved).slot(KEY).__class__(KEY, "local", "9", 5, b"other")))
    before = store.get(rows[0].secret)
    updates = [SlotUpdate(r.secret, r.version, "2", 1_800_000_000, b"new-" + r.secret.encode()) for r in rows]
    updates.append(SlotUpdate("GONE", "1", "2", 1, b"x"))  # deleted secret: skipped
    assert store.replace_slots(KEY, updates) == len(rows) - 1
    assert store.get(moved).slot(KEY).version == "9"
    after = store.get(rows[0].secret)
    slot = after.slot(KEY)
    assert (slot.version, slot.wrapped_at, slot.wrapped, slot.provider) == (
        "2", 1_800_000_000, b"new-" + rows[0].secret.encode(), "local")
    assert (after.nonce, after.ciphertext) == (before.nonce, before.ciphertext)
    assert after.slot("local:other") == before.slot("local:other")
    assert [s.key for s in after.slots] == [s.key for s in before.slots]
    assert store.slots_behind(KEY, "2") == [r for r in store.slots_behind(KEY, "2") if r.secret == moved]
    # Replaying the same batch changes nothing.
    assert store.replace_slots(KEY, updates) == 0
    assert store.replace_slots(KEY, []) == 0


def test_version_counts(store, make_env):
    _vault_for_rotation(store, make_env)
    assert store.version_counts(KEY) == {"2": 150, "1": 150, "0": 150}
    assert store.version_counts("local:other") == {"7": 450, "1": 150}
    assert store.version_counts("local:none") == {}


def test_open_store_urls(tmp_path, make_env):
    cfg = tmp_path / "conf"
    with open_store("dir:vault", base=cfg) as s:
        assert isinstance(s, DirStore) and s.path == cfg / "vault"
    with open_store("sqlite:///data/v.db", base=cfg) as s:
        assert isinstance(s, SqliteStore) and s.path == cfg / "data" / "v.db"
        assert s.url == f"sqlite:///{cfg / 'data' / 'v.db'}"
    absolute = tmp_path / "abs.db"
    with open_store(f"sqlite:///{absolute}", base=cfg) as s:  # sqlite:////tmp/... is absolute
        assert s.path == absolute
        s.put(make_env("A"))
    with open_store(f"dir:{tmp_path / 'absdir'}") as s:
        assert s.path == tmp_path / "absdir"
    assert (tmp_path / "abs.db").exists()


def test_open_store_refuses(tmp_path):
    with pytest.raises(StoreError, match="PostgreSQL vault store arrives with the scale-out issue") as exc:
        open_store("postgresql://app:hunter2@db/vault")
    assert "hunter2" not in str(exc.value)
    for bad in ["vault", "file:///x", "sqlite://x.db", "mysql://db", "dir:"]:
        with pytest.raises(ConfigError, match="dir:PATH"):
            open_store(bad, base=tmp_path)
    assert list(tmp_path.iterdir()) == []
