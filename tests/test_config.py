"""keystead.toml: defaults, profiles, and one clear error per bad field."""

from __future__ import annotations

from pathlib import Path

import pytest

from keystead.config import load_config
from keystead.errors import ConfigError

BASE = """
[vault]
name = "app"
store = "dir:secrets"
default_profile = "dev"

[keys.main]
ref = "local:main"

[keys.team]
ref = "age1ff9zuqqp2pm09vkuc9wkw6c7vrfdggp86eljvn34h08rt704jc0s90sc9l"
rotation_period_days = 30

[profiles.dev]
keys = ["main", "team"]

[profiles.ci]
keys = ["main"]
store = "sqlite:///ci.db"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keystead.toml"
    path.write_text(text)
    return path


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[keys.main]\nref = "local:main"\n'))
    assert cfg.vault_name == "default"
    assert cfg.store_url == f"sqlite:///{tmp_path.resolve()}/.keystead/vault.db"
    assert cfg.state_url == f"sqlite:///{tmp_path.resolve()}/.keystead/state.db"
    assert cfg.key_file == tmp_path.resolve() / ".keystead" / "keys.json"
    assert cfg.keys["main"].rotation_period_days == 90
    assert [k.name for k in cfg.slot_keys] == ["main"]
    assert cfg.rotation.grace_days == 7 and cfg.rotation.interval_minutes == 60


def test_profiles_pick_keys_and_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, BASE)
    dev = load_config(path)
    assert dev.profile == "dev" and [k.name for k in dev.slot_keys] == ["main", "team"]
    assert dev.store_url == f"dir:{tmp_path.resolve()}/secrets"
    ci = load_config(path, profile="ci")
    assert [k.name for k in ci.slot_keys] == ["main"] and ci.store_url.endswith("/ci.db")
    monkeypatch.setenv("KEYSTEAD_PROFILE", "ci")
    assert load_config(path).profile == "ci"


def test_postgres_state_url_is_accepted(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[vault]\nstate = "postgresql://u@127.0.0.1/db"\n'))
    assert cfg.state_url == "postgresql+psycopg://u@127.0.0.1/db"


def test_missing_config_says_how_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keystead init"):
        load_config(tmp_path / "keystead.toml")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[vault\nname = 1", "not valid TOML"),
        ('[vault]\nname = 3\n', "[vault].name: must be str"),
        ('[vault]\nname = "a/b"\n', "invalid vault name"),
        ('[vault]\nstore = "s3://bucket"\n', "is not a store URL"),
        ('[vault]\ncolour = "blue"\n', "unknown field(s) colour"),
        ('[keys.main]\nref = "vault:transit"\n', "[keys.main].ref: unknown key reference"),
        ('[keys.main]\nrotation_period_days = 90\n', "[keys.main].ref: is required"),
        ('[keys.main]\nref = "local:main"\nrotation_period_days = 0\n', "must be 1..2560, got 0"),
        ('[keys.main]\nref = "local:main"\nrotation_period_days = 2561\n', "must be 1..2560, got 2561"),
        ('[keys.main]\nref = "local:main"\n[profiles.p]\nkeys = ["nope"]\n[vault]\ndefault_profile = "p"\n',
         "unknown key(s) nope"),
        ('[rotation]\ngrace_days = -1\n', "[rotation].grace_days: must be 0..365"),
        ('[rotation]\nbatchsize = 10\n', "unknown field(s) batchsize"),
        ('nonsense = 1\n', "top level: unknown field(s) nonsense"),
    ],
)
def test_bad_fields_name_file_field_and_allowed(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_profile_lists_profiles(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown profile 'prod' \(profiles: ci, dev\)"):
        load_config(write(tmp_path, BASE), profile="prod")
