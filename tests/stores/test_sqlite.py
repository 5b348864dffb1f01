"""SqliteStore: schema, one transaction per batch, locked, corrupt and full databases."""

from __future__ import annotations

import sqlite3
import stat
import time

import pytest

from keystead.errors import InputError, StoreError
from keystead.stores import SlotUpdate, SqliteStore

KEY = "local:main"


@pytest.fixture
def db(tmp_path):
    return tmp_path / "vault.db"


@pytest.fixture
def vault(db):
    s = SqliteStore(db)
    yield s
    s.close()


def _named(env, name):
    return type(env)(env.vault, name, env.created_at, env.nonce, env.ciphertext, env.slots)


def test_schema_and_pragmas(vault, db):
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    raw = sqlite3.connect(db)
    try:
        tables = {n for (n,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"meta", "secrets", "slots"}
        assert raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        raw.close()
    assert vault._conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL


def test_put_many_is_one_transaction(vault, make_env):
    vault.put(make_env("KEEP"))
    envs = [make_env(f"S{i:05d}") for i in range(5000)]
    envs[2500] = _named(envs[2500], "../escape")
    with pytest.raises(InputError):
        vault.put_many(envs)
    assert vault.names() == ["KEEP"]
    assert vault.version_counts(KEY) == {"1": 1}
    del envs[2500]
    assert vault.put_many(envs) == 4999
    assert vault.count() == 5000


def test_put_many_same_name_twice_keeps_the_last(vault, make_env):
    first = make_env("A", slots=[(KEY, "1"), ("local:b", "1")])
    last = make_env("A", slots=[(KEY, "2")])
    vault.put_many([first, last])
    assert vault.get("A") == last


def test_not_a_database(db):
    db.write_bytes(b"this is not an sqlite database, just text " * 200)
    with pytest.raises(StoreError, match=f"{db} is not a keystead vault: file is not a database"):
        SqliteStore(db)


def test_foreign_database_is_refused(db):
    raw = sqlite3.connect(db)
    raw.execute("CREATE TABLE invoices(id INTEGER)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="not a keystead vault"):
        SqliteStore(db)


def test_newer_schema_is_refused(vault, db):
    vault.close()
    raw = sqlite3.connect(db)
    raw.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="schema version 2; this keystead reads version 1"):
        SqliteStore(db)


def test_locked_database(db, make_env):
    with SqliteStore(db) as s:
        s.put(make_env("A"))
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        other.execute("DELETE FROM secrets")
        with SqliteStore(db, busy_timeout=0.1) as s:
            assert s.names() == ["A"]  # WAL: readers are not blocked
            started = time.monotonic()
            with pytest.raises(StoreError, match=f"vault database {db} is locked by another process"):
                s.put(make_env("B"))
            assert time.monotonic() - started < 3
            with pytest.raises(StoreError, match="locked"):
                s.replace_slots(KEY, [SlotUpdate("A", "1", "2", 2, b"w")])
        other.execute("ROLLBACK")
    finally:
        other.close()
    with SqliteStore(db) as s:
        assert s.names() == ["A"]
        assert s.get("A").slot(KEY).version == "1"


def test_disk_full_rolls_back(vault, make_env):
    old = make_env("OLD")
    vault.put(old)
    pages = vault._conn.execute("PRAGMA page_count").fetchone()[0]
    vault._conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # fault injection: a tiny disk
    with pytest.raises(StoreError, match="disk full writing"):
        vault.put_many(make_env(f"N{i:04d}") for i in range(2000))
    assert vault.names() == ["OLD"]
    assert vault.get("OLD") == old
    vault._conn.execute("PRAGMA max_page_count = 1073741823")
    vault.put(make_env("AFTER"))  # the store is usable again
    assert vault.names() == ["AFTER", "OLD"]


def test_replace_slots_is_one_transaction(vault, make_env):
    vault.put_many(make_env(f"S{i:03d}") for i in range(300))
    pages = vault._conn.execute("PRAGMA page_count").fetchone()[0]
    vault._conn.execute(f"PRAGMA max_page_count = {pages}")
    updates = [SlotUpdate(f"S{i:03d}", "1", "2", 2, bytes(4000)) for i in range(300)]  # rows grow
    with pytest.raises(StoreError, match="disk full"):
        vault.replace_slots(KEY, updates)
    assert vault.version_counts(KEY) == {"1": 300}


def test_closed_store(vault):
    vault.close()
    vault.close()
    with pytest.raises(StoreError, match="is closed"):
        vault.names()


def test_missing_folder_is_created(tmp_path, make_env):
    with SqliteStore(tmp_path / "a" / "b" / "v.db") as s:
        s.put(make_env("A"))
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700


def test_cannot_open(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create vault database"):
        SqliteStore(tmp_path / "file" / "v.db")
