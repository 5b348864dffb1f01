"""keystead.toml edited with tomlkit: comments and order kept, validated before the atomic write (issue 10)."""

from __future__ import annotations

import os
import stat
import tomllib

import pytest

from keystead.config import load_config
from keystead.config_edit import add_key, remove_key
from keystead.errors import EXIT_CODES, ConfigError, InputError
from tests.conftest import Workspace


def test_keys_create_twice_keeps_the_file_valid_and_commented(sqlite_ws: Workspace) -> None:
    before = sqlite_ws.config.read_text()
    sqlite_ws.cli("keys", "create", "billing", "--period", "30")
    again = sqlite_ws.cli("keys", "create", "billing", ok=False)
    assert again.exit_code == EXIT_CODES["InputError"] and "already declared" in again.stderr
    text = sqlite_ws.config.read_text()
    assert text.startswith(before.split("[rotation]")[0])  # everything before, comments included, as it was
    assert "# keystead configuration" in text and "[rotation]" in text
    doc = tomllib.loads(text)
    assert doc["keys"]["billing"] == {"ref": "local:billing", "rotation_period_days": 30}
    assert load_config(sqlite_ws.config).keys["billing"].rotation_period_days == 30


def test_dotted_key_name_is_quoted(sqlite_ws: Workspace) -> None:
    sqlite_ws.cli("keys", "create", "team.ci")
    assert '[keys."team.ci"]' in sqlite_ws.config.read_text()
    assert "team.ci" in load_config(sqlite_ws.config).keys


def test_same_edit_twice_changes_nothing_and_keeps_mode(sqlite_ws: Workspace) -> None:
    os.chmod(sqlite_ws.config, 0o644)
    assert add_key(sqlite_ws.config, "ci", "local:ci").changed
    first = sqlite_ws.config.read_bytes()
    assert not add_key(sqlite_ws.config, "ci", "local:ci").changed
    assert sqlite_ws.config.read_bytes() == first
    assert stat.S_IMODE(os.stat(sqlite_ws.config).st_mode) == 0o644


def test_an_edit_that_would_break_the_config_writes_nothing(sqlite_ws: Workspace) -> None:
    before = sqlite_ws.config.read_bytes()
    with pytest.raises(ConfigError, match="names the same key"):
        add_key(sqlite_ws.config, "other", "local:main")
    with pytest.raises(InputError, match="already declared"):
        add_key(sqlite_ws.config, "main", "local:other")
    with pytest.raises(InputError, match="only key"):
        remove_key(sqlite_ws.config, "main")
    assert sqlite_ws.config.read_bytes() == before
    assert not [p for p in sqlite_ws.root.iterdir() if ".tmp-" in p.name]


def test_profile_lists_follow_adds_and_removes(sqlite_ws: Workspace) -> None:
    with open(sqlite_ws.config, "a") as fh:
        fh.write('\n[profiles.dev]\nkeys = ["main"]   # the developers\' keys\n')
    add_key(sqlite_ws.config, "ci", "local:ci", profile="dev")
    sqlite_ws.cli("keys", "create", "ci", ok=False)  # declared already
    doc = tomllib.loads(sqlite_ws.config.read_text())
    assert doc["profiles"]["dev"]["keys"] == ["main", "ci"]
    assert "# the developers' keys" in sqlite_ws.config.read_text()
    remove_key(sqlite_ws.config, "main")
    doc = tomllib.loads(sqlite_ws.config.read_text())
    assert doc["profiles"]["dev"]["keys"] == ["ci"] and "main" not in doc["keys"]
    add_key(sqlite_ws.config, "ops", "local:ops")
    with pytest.raises(InputError, match="only key of profile 'dev'"):
        remove_key(sqlite_ws.config, "ci")
