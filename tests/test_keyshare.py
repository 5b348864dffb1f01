"""The local key on a teammate's machine: keys export to an age recipient, keys import in a fresh clone (issue 10)."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

from pyrage import x25519

from keystead.errors import EXIT_CODES
from tests.conftest import Workspace


def _identity(folder: Path, name: str) -> tuple[str, Path]:
    ident = x25519.Identity.generate()
    path = folder / f"{name}.age"
    path.write_text(str(ident) + "\n")
    return str(ident.to_public()), path


def _fresh_clone(ws: Workspace, where: Path) -> Workspace:
    """What git gives a teammate: keystead.toml and the dir store, no .keystead/."""
    where.mkdir()
    shutil.copy(ws.config, where / "keystead.toml")
    if (ws.root / "secrets").is_dir():
        shutil.copytree(ws.root / "secrets", where / "secrets")
    return Workspace(where, ws.store)


def test_teammate_imports_the_local_key_and_reads_a_secret(ws: Workspace, tmp_path: Path) -> None:
    ws.cli("secrets", "set", "DB_URL", input="postgres://db")
    ws.cli("keys", "create", "ci")  # a second key: each key travels in its own export
    recipient, ident = _identity(tmp_path, "teammate")
    out = tmp_path / "main.key.age"
    ws.cli("keys", "export", "main", "--to", recipient, "--out", str(out))
    ci_out = ws.cli("keys", "export", "ci", "--to", recipient).stdout_bytes  # standard output: armored
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    raw = out.read_bytes()
    assert raw.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    material = json.loads((ws.root / ".keystead" / "keys.json").read_text())["keys"]["main"]["versions"][0]["material"]
    assert material.encode() not in raw  # never plaintext
    mate = _fresh_clone(ws, tmp_path / "clone")
    if ws.store.startswith("dir:"):
        refused = mate.run("secrets", "get", "DB_URL")
        assert refused.returncode == EXIT_CODES["ProviderError"]
    result = mate.run("keys", "import", str(out), env={"KEYSTEAD_AGE_IDENTITY_FILE": str(ident)})
    assert result.returncode == 0, result.stderr
    assert b"imported local:main" in result.stderr
    from_stdin = mate.run("keys", "import", "-", input=ci_out, env={"KEYSTEAD_AGE_IDENTITY_FILE": str(ident)})
    assert from_stdin.returncode == 0 and b"imported local:ci" in from_stdin.stderr
    keyfile = mate.root / ".keystead" / "keys.json"
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    assert (mate.root / ".keystead" / ".gitignore").is_file()
    if ws.store.startswith("dir:"):
        got = mate.run("secrets", "get", "DB_URL")
        assert got.returncode == 0 and got.stdout == b"postgres://db"
    else:  # a sqlite vault is not in git: the teammate seals their own secrets under the shared key
        assert mate.run("secrets", "set", "X", input=b"x").returncode == 0
        shutil.copy(mate.root / ".keystead" / "vault.db", ws.root / ".keystead" / "vault.db")
        assert ws.cli("secrets", "get", "X").stdout == "x"
    again = mate.run("keys", "import", str(out), env={"KEYSTEAD_AGE_IDENTITY_FILE": str(ident)})
    assert again.returncode == 0 and b"nothing to add" in again.stderr


def test_import_refuses_a_different_key_of_the_same_name_and_strangers(ws: Workspace, tmp_path: Path) -> None:
    recipient, ident = _identity(tmp_path, "me")
    out = tmp_path / "main.age"
    ws.cli("keys", "export", "main", "--to", recipient, "--out", str(out))
    other = Workspace(tmp_path / "other", "dir:secrets")
    other.cli("init", "--dir", str(other.root), "--store", other.store)  # its own, different local:main
    snapshot = other.snapshot()
    env = {"KEYSTEAD_AGE_IDENTITY_FILE": str(ident)}
    clash = other.run("keys", "import", str(out), env=env)
    assert clash.returncode == EXIT_CODES["InputError"] and b"different key local:main" in clash.stderr
    _, stranger = _identity(tmp_path, "stranger")
    wrong = other.run("keys", "import", str(out), env={"KEYSTEAD_AGE_IDENTITY_FILE": str(stranger)})
    assert wrong.returncode == EXIT_CODES["ProviderError"] and b"does not open" in wrong.stderr
    none = other.run("keys", "import", str(out), env={"KEYSTEAD_AGE_IDENTITY_FILE": ""})
    assert none.returncode == EXIT_CODES["ProviderError"] and b"KEYSTEAD_AGE_IDENTITY_FILE" in none.stderr
    junk = tmp_path / "junk"
    junk.write_text("hello")
    bad = other.run("keys", "import", str(junk), env=env)
    assert bad.returncode == EXIT_CODES["FormatError"], bad.stderr
    for result in (clash, wrong, none, bad):
        assert len(result.stderr.decode().strip().splitlines()) == 1
    assert other.snapshot() == snapshot


def test_export_bad_input(ws: Workspace, tmp_path: Path) -> None:
    recipient, _ = _identity(tmp_path, "me")
    existing = tmp_path / "exists"
    existing.write_text("keep")
    snapshot = ws.snapshot()
    cases = [
        (("keys", "export", "main", "--to", "age1notvalid"), "ProviderError"),
        (("keys", "export", "main", "--to", "local:main"), "InputError"),
        (("keys", "export", "nope", "--to", recipient), "NotFoundError"),
        (("keys", "export", "main", "--to", recipient, "--out", str(existing)), "InputError"),
    ]
    for args, code in cases:
        result = ws.run(*args)
        assert result.returncode == EXIT_CODES[code], (args, result.stderr)
        assert len(result.stderr.decode().strip().splitlines()) == 1
    assert existing.read_text() == "keep"
    assert ws.snapshot() == snapshot
