"""DirStore: files, atomic writes, crashes, disk full."""

from __future__ import annotations

import errno
import os
import stat
import time

import pytest

from keystead.envelope import encode
from keystead.errors import FormatError, InputError, StoreError
from keystead.stores import DirStore
from keystead.stores import dir as dir_store


@pytest.fixture
def vault(tmp_path):
    return DirStore(tmp_path / "vault")


def test_one_file_per_secret_in_canonical_form(vault, make_env):
    env = make_env("DB_URL")
    vault.put(env)
    path = vault.path / "DB_URL.json"
    assert path.read_bytes() == encode(env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(vault.path.stat().st_mode) == 0o700
    assert sorted(os.listdir(vault.path)) == ["DB_URL.json"]  # no temp file left


def test_corrupted_file_names_the_file(vault, make_env):
    vault.put(make_env("A"))
    path = vault.path / "A.json"
    path.write_bytes(path.read_bytes()[:50])  # truncated
    with pytest.raises(FormatError, match=str(path)):
        vault.get("A")
    path.write_bytes(b"\x00\xffgarbage")
    with pytest.raises(FormatError, match=str(path)):
        list(vault.iter_envelopes())


def test_renamed_file_is_refused(vault, make_env):
    vault.put(make_env("A"))
    os.rename(vault.path / "A.json", vault.path / "B.json")
    with pytest.raises(FormatError, match="holds secret 'A', not 'B'"):
        vault.get("B")


def test_other_files_are_not_secrets(vault, make_env):
    vault.put(make_env("A"))
    (vault.path / "README.md").write_text("notes")
    (vault.path / "-notes.json").write_text("{}")
    (vault.path / ".gitattributes").write_text("")
    (vault.path / "sub.json").mkdir()  # a folder named like an envelope still lists, and fails clearly
    assert vault.names() == ["A", "sub"]
    with pytest.raises(StoreError, match=r"sub\.json"):
        vault.get("sub")


def test_stale_temp_files_ignored_then_removed_on_open(tmp_path, make_env):
    vault = DirStore(tmp_path / "vault")
    vault.put(make_env("A"))
    stale = vault.path / ".A.json.tmp-deadbeef"
    fresh = vault.path / ".B.json.tmp-cafef00d"
    stale.write_bytes(b'{"keystead": 1, "na')  # a writer killed mid-write
    fresh.write_bytes(b"{")  # a writer that may still be alive
    old = time.time() - dir_store.STALE_TEMP_SECONDS - 10
    os.utime(stale, (old, old))
    assert vault.names() == ["A"]
    assert [e.name for e in vault.iter_envelopes()] == ["A"]
    DirStore(tmp_path / "vault")
    assert not stale.exists()
    assert fresh.exists()


def test_symlink_out_of_the_folder_is_refused(vault, make_env, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_bytes(encode(make_env("X")))
    os.symlink(outside, vault.path / "X.json")
    with pytest.raises(StoreError, match="outside the vault folder"):
        vault.get("X")
    with pytest.raises(StoreError, match="outside the vault folder"):
        vault.put(make_env("X"))


def test_name_too_long_for_a_file(vault, make_env):
    vault.put(make_env("n" * dir_store.MAX_NAME))
    with pytest.raises(InputError, match="too long for a dir: vault"):
        vault.put(make_env("n" * (dir_store.MAX_NAME + 1)))
    assert vault.get("n" * dir_store.MAX_NAME).name == "n" * dir_store.MAX_NAME


def test_put_many_is_atomic_per_file_not_per_batch(vault, make_env):
    envs = [make_env("A"), make_env("B")]
    bad = make_env("C")
    bad = type(bad)(bad.vault, "../C", bad.created_at, bad.nonce, bad.ciphertext, bad.slots)
    with pytest.raises(InputError):
        vault.put_many([*envs, bad, make_env("D")])
    assert vault.names() == ["A", "B"]  # documented: files written before the failure stay


def _disk_full(monkeypatch, name: str, after: int = 0):
    """Make ``os.<name>`` fail with ENOSPC after ``after`` successful calls (fault injection)."""
    real = getattr(os, name)
    calls = {"n": 0}

    def failing(*args):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args)

    monkeypatch.setattr(dir_store.os, name, failing)


@pytest.mark.parametrize("fault", ["fsync", "write"])
def test_disk_full_leaves_old_content_and_no_temp(vault, make_env, monkeypatch, fault):
    old = make_env("A")
    vault.put(old)
    big = make_env("A", slots=[(f"local:k{i}", "1") for i in range(40)])
    with monkeypatch.context() as m:
        if fault == "write":
            # The first write() lands part of the file, the next one finds the disk full.
            real_write = os.write
            m.setattr(dir_store.os, "write", lambda fd, data: real_write(fd, bytes(data[:100])))
            _disk_full(m, "write", after=1)
        else:
            _disk_full(m, "fsync")
        with pytest.raises(StoreError, match=f"disk full writing {vault.path / 'A.json'}"):
            vault.put(big)
    assert vault.get("A") == old
    assert sorted(os.listdir(vault.path)) == ["A.json"]


def test_unreadable_folder_is_a_store_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="file"):
        DirStore(tmp_path / "file" / "vault")


def test_every_kind_of_undecodable_file_is_damaged_not_fatal(vault, make_env):
    """Renamed, unknown format version, bad JSON, wrong shape: each is one DAMAGED row."""
    from keystead.stores import DAMAGED

    for name in ["A", "B", "C", "D", "E"]:
        vault.put(make_env(name))
    (vault.path / "B.json").write_bytes((vault.path / "E.json").read_bytes())  # renamed / copied over
    data = (vault.path / "C.json").read_bytes()
    (vault.path / "C.json").write_bytes(data.replace(b"\"keystead\": 1", b"\"keystead\": 99", 1))
    (vault.path / "D.json").write_bytes(b"[]")
    rows = vault.slots_behind("local:main", "2")
    assert [(r.secret, r.version) for r in rows] == [
        ("A", "1"), ("B", DAMAGED), ("C", DAMAGED), ("D", DAMAGED), ("E", "1")]
    assert vault.version_counts("local:main") == {"1": 2, DAMAGED: 3}
    told = []
    assert [e.name for e in vault.iter_envelopes(on_damaged=lambda n, e: told.append(n))] == ["A", "E"]
    assert told == ["B", "C", "D"]
