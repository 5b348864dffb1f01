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


def test_every_store_the_config_names_is_listed_base_first(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE + '\n[profiles.prod]\nstore = "sqlite:///prod.db"\n'
                            '[profiles.again]\nstore = "dir:secrets"\n'), profile="ci")
    assert cfg.stores == ("dir:" + str(tmp_path / "secrets"), "sqlite:///" + str(tmp_path / "ci.db"),
                          "sqlite:///" + str(tmp_path / "prod.db"))
    assert cfg.store_url == "sqlite:///" + str(tmp_path / "ci.db")


def test_local_keys_are_exclusive_cloud_keys_are_not_unless_said(tmp_path: Path) -> None:
    text = BASE + '\n[keys.cloud]\nref = "arn:aws:kms:eu-west-1:123456789012:key/k1"\n' \
                  '[keys.owned]\nref = "arn:aws:kms:eu-west-1:123456789012:key/k2"\nexclusive = true\n'
    cfg = load_config(write(tmp_path, text))
    assert cfg.keys["main"].exclusive and not cfg.keys["cloud"].exclusive and cfg.keys["owned"].exclusive
    assert cfg.keys["cloud"].provider == "aws"


def test_provider_options_are_validated_per_provider(tmp_path: Path) -> None:
    text = BASE + '\n[providers.aws]\nregion = "eu-west-1"\naccount = "123456789012"\n' \
                  '[keys.app]\nref = "alias/app"\nreplica_regions = ["eu-central-1"]\npurpose = "encrypt"\n'
    cfg = load_config(write(tmp_path, text))
    assert cfg.keys["app"].options == {"replica_regions": ["eu-central-1"], "purpose": "encrypt"}
    assert cfg.keys["app"].ref == "arn:aws:kms:eu-west-1:123456789012:alias/app"  # canonical at load
    assert cfg.providers["aws"] == {"region": "eu-west-1", "account": "123456789012"}


@pytest.mark.parametrize("extra, message", [
    ('[keys.app]\nref = "alias/app"\nregoin = "x"\n', "unknown field(s) regoin"),
    ('[keys.app]\nref = "alias/app"\npurpose = "decrypt"\n', "purpose: must be one of 'encrypt', 'sign'"),
    ('[keys.app]\nref = "alias/app"\nreplica_regions = "eu-west-2"\n', "must be a list of strings"),
    ('[keys.x]\nref = "local:x"\nregion = "eu-west-1"\n', "unknown field(s) region"),
    ('[keys.x]\nref = "local:x"\nexclusive = "yes"\n', "exclusive: must be bool"),
    ('[providers.aws]\nregon = "x"\n', "[providers.aws]: unknown field(s) regon"),
    ('[providers.azure]\nx = 1\n', "[providers]: unknown field(s) azure"),
    ('[keys.again]\nref = "local:main"\n', "names the same key as [keys.main]"),
])
def test_bad_provider_options_are_one_clear_error(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, BASE + "\n" + extra))
    assert message in str(info.value)


def test_a_store_password_never_shows_in_the_config_repr(tmp_path: Path) -> None:
    text = BASE.replace('store = "dir:secrets"', 'store = "postgresql://app:hunter2@db/vault"\n'
                        'state = "postgresql://app:hunter2@db/state"')
    cfg = load_config(write(tmp_path, text))
    assert "hunter2" in cfg.store_url and "hunter2" not in repr(cfg)
