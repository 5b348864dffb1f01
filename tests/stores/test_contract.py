"""The Store contract (keystead/stores/base.py), run against every store."""

from __future__ import annotations

import itertools

import pytest

from keystead.errors import ConfigError, FormatError, InputError, KeysteadError, NotFoundError, StoreError
from keystead.stores import DAMAGED, DirStore, SlotUpdate, SqliteStore, Store, open_store, redact_url

from .conftest import open_kind

KEY = "local:main"


def test_is_a_store(store):
    assert isinstance(store, Store)
    assert store.url.startswith(("dir:", "sqlite:///", "postgresql"))


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
    n = 1000 if isinstance(store, DirStore) else 5000  # the dir store is fsync-bound: keep the suite fast
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
    for bad in ["vault", "file:///x", "sqlite://x.db", "mysql://db", "dir:", "postgresql+asyncpg://db/v",
                "postgresql://app:hunter2@db"]:
        with pytest.raises(ConfigError, match=r"dir:PATH|psycopg 3|names no database") as exc:
            open_store(bad, base=tmp_path)
        assert "hunter2" not in str(exc.value)
    assert list(tmp_path.iterdir()) == []


# -- name order is byte order -------------------------------------------------

MIXED = ["Zeta", "alpha", "Alpha_2", "a.b", "a-b", "a_b", "A9", "_x", "a", "B", "b0", "Z", "9z", "0"]
BYTE_ORDER = sorted(MIXED, key=str.encode)
# Cursors that land between such names (and on them, and before and after all of them).
CURSORS = ["", "0", "5", "A", "Alpha", "Alpha_2", "Y", "[", "_", "_x", "a", "a,", "a-", "a-c", "a/", "a_a", "b", "zz"]


def test_byte_order_is_not_case_folding():
    assert BYTE_ORDER[:4] == ["0", "9z", "A9", "Alpha_2"] and BYTE_ORDER.index("_x") < BYTE_ORDER.index("a")


def _mixed_vault(store, make_env) -> None:
    store.put_many(make_env(n, slots=[(KEY, "1"), ("local:other", "1")]) for n in reversed(MIXED))


def test_names_and_iter_envelopes_are_in_byte_order(store, make_env):
    _mixed_vault(store, make_env)
    assert store.names() == BYTE_ORDER
    assert [e.name for e in store.iter_envelopes(batch=3)] == BYTE_ORDER
    for after in CURSORS:
        expected = [n for n in BYTE_ORDER if n.encode() > after.encode()]
        assert [e.name for e in store.iter_envelopes(after=after, batch=2)] == expected, after


def test_slots_behind_cursors_in_byte_order(store, make_env):
    _mixed_vault(store, make_env)
    for after in CURSORS:
        for until in [None, *CURSORS]:
            expected = [n for n in BYTE_ORDER
                        if n.encode() > after.encode() and (until is None or n.encode() <= until.encode())]
            got = [r.secret for r in store.slots_behind(KEY, "2", after=after, until=until)]
            assert got == expected, (after, until)
    seen, after = [], ""
    while rows := store.slots_behind(KEY, "2", after=after, limit=3):
        seen += [r.secret for r in rows]
        after = rows[-1].secret
    assert seen == BYTE_ORDER


def test_split_points_in_byte_order_cover_every_slot_once(store, make_env):
    _mixed_vault(store, make_env)
    for parts in (2, 3, 5, 14, 30):
        points = store.split_points(KEY, parts)
        assert points == sorted(set(points), key=str.encode) and len(points) < parts
        bounds = ["", *points, None]
        lanes = [[r.secret for r in store.slots_behind(KEY, "2", after=lo, until=hi, limit=100)]
                 for lo, hi in itertools.pairwise(bounds)]
        assert [n for lane in lanes for n in lane] == BYTE_ORDER, parts


# -- damaged envelopes ----------------------------------------------------------

def damage(store, name: str, how: str) -> None:
    """Break ``name``'s envelope for real: a 0-byte or truncated file (dir), slots deleted by raw SQL (databases)."""
    if type(store).__name__ == "PostgresStore":
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM keystead_vault_slots WHERE secret = %s", (name,))
    elif isinstance(store, DirStore):
        path = store.path / f"{name}.json"
        data = path.read_bytes()
        path.write_bytes(b"" if how == "empty" else data[: len(data) // 2])
    else:
        import sqlite3

        with sqlite3.connect(store.path) as db:
            db.execute("DELETE FROM slots WHERE secret = ?", (name,))


@pytest.fixture
def damaged_vault(store, make_env):
    """20 secrets D00..D19 behind on KEY; D03 (emptied) and D11 (truncated) damaged; D15 on the
    current version. Returns the names behind, damaged ones included."""
    store.put_many(make_env(f"D{i:02d}", slots=[(KEY, "2" if i == 15 else "1")]) for i in range(20))
    damage(store, "D03", "empty")
    damage(store, "D11", "truncated")
    return [f"D{i:02d}" for i in range(20) if i != 15]


def test_slots_behind_returns_damaged_envelopes_in_place(store, damaged_vault):
    rows = store.slots_behind(KEY, "2", limit=1000)
    assert [r.secret for r in rows] == damaged_vault
    assert {r.secret for r in rows if r.version == DAMAGED} == {"D03", "D11"}
    assert all(r.wrapped == b"" for r in rows if r.version == DAMAGED)
    # Damaged envelopes count toward the limit and page like any other row.
    for limit in (1, 3, 4, 7):
        seen, after = [], ""
        while page := store.slots_behind(KEY, "2", after=after, limit=limit):
            assert len(page) <= limit
            seen += [r.secret for r in page]
            after = page[-1].secret
        assert seen == damaged_vault, limit
    assert [r.secret for r in store.slots_behind(KEY, "2", limit=4)] == ["D00", "D01", "D02", "D03"]
    assert [r.secret for r in store.slots_behind(KEY, "2", after="D02", until="D03")] == ["D03"]
    assert [r.secret for r in store.slots_behind(KEY, "2", after="D03", until="D10")] == [
        f"D{i:02d}" for i in range(4, 11)]
    assert store.slots_behind(KEY, "2", after="D11", until="D11") == []


def test_version_counts_count_damaged_envelopes(store, damaged_vault):
    assert store.version_counts(KEY) == {"1": 17, "2": 1, DAMAGED: 2}
    # A damaged envelope may hold any key's slot: no key looks unused while it is unreadable.
    assert store.version_counts("local:none") == {DAMAGED: 2}


def test_iter_envelopes_reports_damaged_or_raises(store, damaged_vault):
    with pytest.raises(FormatError):
        list(store.iter_envelopes())
    told: list[tuple[str, type]] = []
    got = [e.name for e in store.iter_envelopes(batch=4, on_damaged=lambda n, e: told.append((n, type(e))))]
    assert got == [f"D{i:02d}" for i in range(20) if i not in (3, 11)]
    assert [n for n, _ in told] == ["D03", "D11"]
    assert all(issubclass(t, KeysteadError) for _, t in told)


def test_replace_slots_skips_damaged_envelopes(store, damaged_vault):
    rows = store.slots_behind(KEY, "2")
    updates = [SlotUpdate(r.secret, r.version, "2", 5, b"new") for r in rows]
    assert store.replace_slots(KEY, updates) == len(rows) - 2
    assert [r.secret for r in store.slots_behind(KEY, "2")] == ["D03", "D11"]
    assert store.version_counts(KEY) == {"2": 18, DAMAGED: 2}


def test_damaged_envelope_repaired_by_put(store, damaged_vault, make_env):
    store.put(make_env("D03", slots=[(KEY, "2")]))
    store.delete("D11")
    assert store.version_counts(KEY) == {"1": 17, "2": 2}
    assert DAMAGED not in {r.version for r in store.slots_behind(KEY, "2")}


# -- URLs never show a password -------------------------------------------------

@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg://app:hunter2@db:5432/vault", "postgresql+psycopg://app:***@db:5432/vault"),
    ("postgresql://app:hun%40ter%2F2@db/vault", "postgresql://app:***@db/vault"),
    ("postgresql://app:hun@ter/2@db/vault?sslmode=require", "postgresql://app:***@db/vault?sslmode=require"),
    ("postgres://:hunter2@db/vault", "postgres://:***@db/vault"),
    ("postgresql://db/vault?sslmode=require&password=hunter2", "postgresql://db/vault?sslmode=require&password=***"),
    ("postgresql://app@db/vault", "postgresql://app@db/vault"),
    ("sqlite:////tmp/v.db", "sqlite:////tmp/v.db"),
    ("dir:vault", "dir:vault"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown
    assert "hunter2" not in redact_url(url) and "ter%2F2" not in redact_url(url)


def test_repr_and_errors_name_the_url_without_password(store):
    assert repr(store) == f"{type(store).__name__}({store.url!r})"
    with pytest.raises(StoreError) as exc:  # nothing listens on port 1: refused at once
        open_store("postgresql+psycopg://app:hunter2@127.0.0.1:1/vault")
    assert "hunter2" not in str(exc.value) and "'vault' on 127.0.0.1:1" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        open_store("mysql://app:hunter2@db/vault")
    assert "hunter2" not in str(exc.value)
