"""The vault under bad input: tampered, truncated, renamed and foreign envelopes; age slots."""

from __future__ import annotations

import json
import shutil
from datetime import UTC
from pathlib import Path

import pytest
from pyrage import x25519

from keystead.config import load_config
from keystead.errors import EXIT_CODES, DecryptError
from keystead.vault import Vault
from tests.conftest import Workspace


@pytest.fixture
def dir_ws(tmp_path: Path) -> Workspace:
    w = Workspace(tmp_path, "dir:secrets")
    w.cli("init", "--dir", str(tmp_path), "--store", w.store)
    w.cli("secrets", "set", "A", input="alpha")
    w.cli("secrets", "set", "B", input="bravo")
    return w


def _file(ws: Workspace, name: str) -> Path:
    return ws.root / "secrets" / f"{name}.json"


def test_truncated_envelope_is_a_format_error_and_others_still_open(dir_ws: Workspace) -> None:
    data = _file(dir_ws, "A").read_bytes()
    _file(dir_ws, "A").write_bytes(data[: len(data) // 2])
    result = dir_ws.run("secrets", "get", "A")
    assert result.returncode == EXIT_CODES["FormatError"]
    assert b"A.json" in result.stderr and b"Traceback" not in result.stderr
    assert dir_ws.run("secrets", "get", "B").stdout == b"bravo"


def test_flipped_ciphertext_byte_says_the_envelope_failed_authentication(dir_ws: Workspace) -> None:
    doc = json.loads(_file(dir_ws, "A").read_text())
    ct = bytearray(__import__("base64").b64decode(doc["ciphertext"]))
    ct[0] ^= 1
    doc["ciphertext"] = __import__("base64").b64encode(bytes(ct)).decode()
    _file(dir_ws, "A").write_text(json.dumps(doc))
    result = dir_ws.run("secrets", "get", "A")
    assert result.returncode == EXIT_CODES["ProviderError"]
    # Not a key problem: the slot opened, the payload did not. Nothing about the ciphertext is said.
    assert result.stderr.decode().strip() == (
        "keystead: error: secret 'A': the envelope failed authentication "
        "(its payload was altered or corrupted); restore it from a backup or remove it")


def test_envelope_renamed_to_another_secret_does_not_open(dir_ws: Workspace) -> None:
    shutil.copy(_file(dir_ws, "A"), _file(dir_ws, "C"))
    copied = dir_ws.run("secrets", "get", "C")
    assert copied.returncode == EXIT_CODES["FormatError"] and b"holds secret 'A', not 'C'" in copied.stderr
    doc = json.loads(_file(dir_ws, "A").read_text())
    doc["name"] = "B"  # even with its name member edited to match
    _file(dir_ws, "B").write_text(json.dumps(doc))
    assert dir_ws.run("secrets", "get", "B").returncode == EXIT_CODES["ProviderError"]


def test_unknown_format_version(dir_ws: Workspace) -> None:
    doc = json.loads(_file(dir_ws, "A").read_text())
    doc["keystead"] = 7
    _file(dir_ws, "A").write_text(json.dumps(doc))
    result = dir_ws.run("secrets", "get", "A")
    assert result.returncode == EXIT_CODES["FormatError"] and b"format version 7 is not supported" in result.stderr


def test_wrong_key_cannot_open(dir_ws: Workspace, tmp_path: Path) -> None:
    other = Workspace(tmp_path / "other", "dir:secrets")
    other.cli("init", "--dir", str(other.root), "--store", other.store)
    shutil.copy(other.root / ".keystead" / "keys.json", dir_ws.root / ".keystead" / "keys.json")
    result = dir_ws.run("secrets", "get", "A")
    assert result.returncode == EXIT_CODES["ProviderError"] and b"cannot decrypt" in result.stderr


def test_vault_api_unchanged_after_failed_reads(dir_ws: Workspace) -> None:
    before = dir_ws.snapshot()
    with Vault.open(load_config(dir_ws.config)) as vault:
        with pytest.raises(DecryptError):
            vault.open_envelope("C", vault.store.get("A"))
        assert vault.get("A") == b"alpha"
    assert dir_ws.snapshot() == before


def test_sqlite_tampered_row_fails(tmp_path: Path) -> None:
    import sqlite3

    ws = Workspace(tmp_path, "sqlite:///.keystead/vault.db")
    ws.cli("init", "--dir", str(tmp_path), "--store", ws.store)
    ws.cli("secrets", "set", "A", input="alpha")
    db = sqlite3.connect(tmp_path / ".keystead" / "vault.db")
    db.execute("UPDATE secrets SET ciphertext = zeroblob(length(ciphertext))")
    db.commit()
    db.close()
    assert ws.run("secrets", "get", "A").returncode == EXIT_CODES["ProviderError"]


def test_hybrid_age_slot_opens_offline_without_the_local_key(tmp_path: Path) -> None:
    ident = x25519.Identity.generate()
    ident_file = tmp_path / "dev.age"
    ident_file.write_text(str(ident) + "\n")
    ws = Workspace(tmp_path / "vault", "dir:secrets")
    ws.cli("init", "--dir", str(ws.root), "--store", ws.store, "--age-recipient", str(ident.to_public()))
    ws.cli("secrets", "set", "DB", input="pw")
    slots = json.loads((ws.root / "secrets" / "DB.json").read_text())["slots"]
    assert [s["provider"] for s in slots] == ["local", "age"]
    (ws.root / ".keystead" / "keys.json").unlink()  # a developer laptop: no local key file
    denied = ws.run("secrets", "get", "DB")
    assert denied.returncode == EXIT_CODES["ProviderError"]
    got = ws.run("secrets", "get", "DB", env={"KEYSTEAD_AGE_IDENTITY_FILE": str(ident_file)})
    assert got.returncode == 0 and got.stdout == b"pw"


def test_a_renamed_vault_says_which_name_the_envelope_was_sealed_under(dir_ws: Workspace) -> None:
    text = dir_ws.config.read_text()
    dir_ws.config.write_text(text.replace('name = "default"', 'name = "renamed"'))
    result = dir_ws.run("secrets", "get", "A")
    assert result.returncode == EXIT_CODES["ProviderError"]
    err = result.stderr.decode()
    assert "sealed in vault 'default'" in err and "'renamed'" in err and "[vault].name" in err


def test_a_key_file_made_unreadable_after_open_is_named_not_hidden(dir_ws: Workspace) -> None:
    import os
    from datetime import datetime

    config = load_config(dir_ws.config)
    with Vault.open(config) as long_lived, Vault.open(config) as other:
        other.keys["main"].rotate(now=datetime.now(UTC), token="t")
        other.set("A", b"resealed")  # now under version 2, which long_lived has not loaded
        os.chmod(config.key_file, 0o644)
        with pytest.raises(Exception) as info:
            long_lived.get("A")  # loading version 2 meets the unsafe key file
    assert "chmod 600" in str(info.value) and not isinstance(info.value, DecryptError)


def test_the_same_unsafe_key_file_is_the_same_exit_code_for_get_and_set(dir_ws: Workspace) -> None:
    import os

    os.chmod(load_config(dir_ws.config).key_file, 0o644)
    got = dir_ws.run("secrets", "get", "A")
    put = dir_ws.run("secrets", "set", "C", input=b"x")
    assert got.returncode == put.returncode == EXIT_CODES["ProviderError"]
    assert b"chmod 600" in got.stderr and b"chmod 600" in put.stderr


def test_an_export_stopped_early_is_still_audited(dir_ws: Workspace) -> None:
    config = load_config(dir_ws.config)
    with Vault.open(config) as vault:
        before = len(list(vault.audit.records()))
        for _name, _value in vault.export():
            break
        records = list(vault.audit.records())[before:]
    assert [(r["action"], r["result"], r["details"]["count"]) for r in records] == [("secrets.export", "stopped", 1)]
