"""secrets show, edit, mv and cp through the real CLI, on both stores (issue 10)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from keystead.config import load_config
from keystead.errors import EXIT_CODES
from keystead.stores import open_store
from tests.conftest import Workspace

VALUE = "s3cret-value"


@pytest.fixture
def vault(ws: Workspace) -> Workspace:
    ws.cli("secrets", "set", "DB_PASSWORD", input=VALUE)
    return ws


def test_show_is_metadata_only(vault: Workspace) -> None:
    out = vault.cli("secrets", "show", "DB_PASSWORD")
    assert VALUE not in out.stdout and "local:main" in out.stdout and f"{len(VALUE)} bytes" in out.stdout
    doc = json.loads(vault.cli("secrets", "show", "DB_PASSWORD", "--json").stdout)
    assert doc["size"] == len(VALUE) and doc["name"] == "DB_PASSWORD"
    assert [(s["key"], s["name"], s["provider"], s["version"]) for s in doc["slots"]] == [
        ("local:main", "main", "local", "1")]
    assert set(doc) == {"name", "vault", "created_at", "size", "slots"}
    assert VALUE not in json.dumps(doc)
    missing = vault.run("secrets", "show", "NOPE")
    assert missing.returncode == EXIT_CODES["NotFoundError"]


def editor(tmp_path: Path, body: str) -> dict[str, str]:
    """An $EDITOR script that logs the file, its mode and its folder's, then runs ``body``."""
    log = tmp_path / "editor.log"
    script = tmp_path / "editor.sh"
    script.write_text("#!/bin/sh\n"
                      f'echo "$1 $(stat -c %a "$1") $(stat -c %a "$(dirname "$1")")" >> {log}\n'
                      f"{body}\n")
    script.chmod(0o755)
    return {"EDITOR": str(script), "VISUAL": ""}


def edited_file(tmp_path: Path) -> tuple[Path, str, str]:
    path, mode, folder_mode = (tmp_path / "editor.log").read_text().split()
    return Path(path), mode, folder_mode


def envelope_bytes(ws: Workspace) -> dict:
    """Every envelope as stored (a SQLite file also changes with the audit anchor: compare envelopes)."""
    config = load_config(ws.config)
    with open_store(config.store_url) as store:
        return {e.name: e for e in store.iter_envelopes()}


def test_edit_writes_back_a_change_from_a_private_file_that_then_goes(vault: Workspace, tmp_path: Path) -> None:
    result = vault.run("secrets", "edit", "DB_PASSWORD", env=editor(tmp_path, 'printf new-value > "$1"'))
    assert result.returncode == 0, result.stderr
    path, mode, folder_mode = edited_file(tmp_path)
    assert (mode, folder_mode) == ("600", "700")
    if os.path.isdir("/dev/shm"):
        assert str(path).startswith("/dev/shm/")
    assert not path.exists() and not path.parent.exists()
    assert vault.cli("secrets", "get", "DB_PASSWORD").stdout == "new-value"
    assert vault.cli("audit", "verify").exit_code == 0


@pytest.mark.parametrize("body,code,words", [
    ("true", 0, b"no change"),                                   # unchanged: nothing written
    ('printf x > "$1"; exit 3', EXIT_CODES["KeysteadError"], b"exited with 3"),
    ('printf x > "$1"; kill -INT $PPID; sleep 0.2', EXIT_CODES["Interrupted"], b"discarded"),  # Ctrl-C
    ('printf x > "$1"; kill -TERM $PPID; sleep 0.2', EXIT_CODES["Interrupted"], b"discarded"),
])
def test_edit_leaves_the_value_and_no_file_on_every_other_end(vault: Workspace, tmp_path: Path,
                                                             body, code, words) -> None:
    before = envelope_bytes(vault)
    result = vault.run("secrets", "edit", "DB_PASSWORD", env=editor(tmp_path, body))
    assert result.returncode == code and words in result.stderr, result.stderr
    path, _, _ = edited_file(tmp_path)
    assert not path.exists() and not path.parent.exists()
    assert envelope_bytes(vault) == before
    assert vault.cli("secrets", "get", "DB_PASSWORD").stdout == VALUE


def test_edit_bad_input(vault: Workspace) -> None:
    before = envelope_bytes(vault)
    nope = vault.run("secrets", "edit", "DB_PASSWORD", env={"EDITOR": "no-such-editor-keystead", "VISUAL": ""})
    assert nope.returncode == EXIT_CODES["InputError"] and b"not found" in nope.stderr
    assert vault.run("secrets", "edit", "NOPE", env={"EDITOR": "true"}).returncode == EXIT_CODES["NotFoundError"]
    assert envelope_bytes(vault) == before


def test_mv_and_cp_seal_under_the_new_name(vault: Workspace) -> None:
    vault.cli("secrets", "cp", "DB_PASSWORD", "DB_PASSWORD_OLD")
    assert vault.cli("secrets", "get", "DB_PASSWORD_OLD").stdout == VALUE
    vault.cli("secrets", "mv", "DB_PASSWORD", "DATABASE_PASSWORD")
    assert vault.cli("secrets", "list").stdout.split() == ["DATABASE_PASSWORD", "DB_PASSWORD_OLD"]
    assert vault.cli("secrets", "get", "DATABASE_PASSWORD").stdout == VALUE
    show = json.loads(vault.cli("secrets", "show", "DATABASE_PASSWORD", "--json").stdout)
    assert show["name"] == "DATABASE_PASSWORD"
    actions = [json.loads(line)["action"] for line in (vault.root / ".keystead" / "audit.log").read_text().splitlines()]
    assert "secrets.cp" in actions and "secrets.mv" in actions


@pytest.mark.parametrize("args,code", [
    (("secrets", "mv", "NOPE", "X"), "NotFoundError"),
    (("secrets", "cp", "DB_PASSWORD", "DB_PASSWORD"), "InputError"),
    (("secrets", "mv", "DB_PASSWORD", "../x"), "InputError"),
    (("secrets", "cp", "DB_PASSWORD", "TAKEN"), "InputError"),
])
def test_mv_cp_bad_input_changes_nothing(vault: Workspace, args, code) -> None:
    vault.cli("secrets", "set", "TAKEN", input="t")
    snapshot = vault.snapshot()
    result = vault.run(*args)
    assert result.returncode == EXIT_CODES[code], result.stderr
    assert len(result.stderr.decode().strip().splitlines()) == 1
    assert vault.snapshot() == snapshot
