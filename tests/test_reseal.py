"""Onboarding and offboarding through the real CLI, on both stores: keys add/remove, secrets reseal (issue 10)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyrage import x25519

from keystead.config import load_config
from keystead.crypto import open_envelope, open_with_dek, unwrap_slot
from keystead.errors import EXIT_CODES, DecryptError
from keystead.providers.age import AgeKey
from keystead.stores import open_store
from tests.conftest import Workspace

SECRETS = {"DB_URL": "postgres://x", "API_TOKEN": "t0k3n", "EMPTY": ""}


def identity(tmp_path: Path, name: str) -> tuple[str, Path]:
    ident = x25519.Identity.generate()
    path = tmp_path / f"{name}.age"
    path.write_text(str(ident) + "\n")
    return str(ident.to_public()), path


def envelopes(ws: Workspace) -> dict:
    config = load_config(ws.config)
    with open_store(config.store_url) as store:
        return {e.name: e for e in store.iter_envelopes()}


def opens_with(ws: Workspace, recipient: str, ident: Path) -> dict[str, bytes]:
    """Every secret the age identity opens by itself (through its own slot only)."""
    key = AgeKey(recipient, identity_file=ident)
    out = {}
    for name, env in envelopes(ws).items():
        if env.slot(recipient) is not None:
            out[name] = open_envelope(env, key)
    return out


@pytest.fixture
def team(ws: Workspace, tmp_path: Path) -> Workspace:
    for name, value in SECRETS.items():
        ws.cli("secrets", "set", name, input=value)
    return ws


def test_onboarding_adds_a_slot_to_every_secret_and_leaves_payloads(team: Workspace, tmp_path: Path) -> None:
    before = envelopes(team)
    alice, alice_id = identity(tmp_path, "alice")
    out = team.cli("keys", "add", alice, "--name", "alice", "--reseal")
    assert "added a slot for alice to 3 secrets" in out.stderr
    assert opens_with(team, alice, alice_id) == {k: v.encode() for k, v in SECRETS.items()}
    after = envelopes(team)
    for name, env in after.items():
        assert (env.nonce, env.ciphertext) == (before[name].nonce, before[name].ciphertext)  # payload untouched
        assert [s.key for s in env.slots] == ["local:main", alice]
    # Run again: nothing changes, the file still reads.
    again = team.cli("keys", "add", alice, "--name", "alice", "--reseal")
    assert "already declared" in again.stderr and "3 had one already" in again.stderr
    assert envelopes(team) == after
    # New secrets get the slot too; the identity alone reads them through the CLI.
    team.cli("secrets", "set", "NEW", input="n")
    got = team.run("secrets", "get", "NEW", env={"KEYSTEAD_AGE_IDENTITY_FILE": str(alice_id)})
    assert got.returncode == 0 and got.stdout == b"n"
    assert team.cli("audit", "verify").exit_code == 0
    actions = [json.loads(line)["action"] for line in (team.root / ".keystead" / "audit.log").read_text().splitlines()]
    assert "keys.add" in actions and "keys.add_slot" in actions


def test_offboarding_remove_with_reseal_locks_out_the_identity_and_its_saved_data_keys(
        team: Workspace, tmp_path: Path) -> None:
    bob, bob_id = identity(tmp_path, "bob")
    team.cli("keys", "add", bob, "--name", "bob", "--reseal")
    assert len(opens_with(team, bob, bob_id)) == 3
    bob_key = AgeKey(bob, identity_file=bob_id)
    kept = {name: unwrap_slot(env, bob_key) for name, env in envelopes(team).items()}  # what bob saved
    out = team.cli("keys", "remove", "bob", "--reseal")
    assert "re-sealed 3 secrets" in out.stderr
    assert "bob" not in load_config(team.config).keys
    after = envelopes(team)
    for name, env in after.items():
        assert env.slot(bob) is None and [s.key for s in env.slots] == ["local:main"]
        with pytest.raises(DecryptError):
            open_with_dek(env, kept[name])
    assert json.loads(team.cli("secrets", "export", "--format", "json").stdout) == SECRETS
    assert not list((team.root / ".keystead").glob("reseal-*.json"))


def test_offboarding_in_two_steps_remove_then_reseal(team: Workspace, tmp_path: Path) -> None:
    carol, carol_id = identity(tmp_path, "carol")
    team.cli("keys", "add", carol, "--name", "carol", "--reseal")
    carol_key = AgeKey(carol, identity_file=carol_id)
    kept = {name: unwrap_slot(env, carol_key) for name, env in envelopes(team).items()}
    removed = team.cli("keys", "remove", "carol")
    assert "secrets reseal --all" in removed.stderr  # says what is still to do
    stripped = envelopes(team)
    assert all(env.slot(carol) is None for env in stripped.values())
    assert all(open_with_dek(env, kept[n]) is not None for n, env in stripped.items())  # old data keys still work
    dry = team.cli("secrets", "reseal", "--all", "--dry-run")
    assert "would re-seal 3 secrets" in dry.stderr and envelopes(team) == stripped
    team.cli("secrets", "reseal", "--all")
    for name, env in envelopes(team).items():
        with pytest.raises(DecryptError):
            open_with_dek(env, kept[name])
    assert json.loads(team.cli("secrets", "export", "--format", "json").stdout) == SECRETS


def test_reseal_named_secrets_only(team: Workspace) -> None:
    before = envelopes(team)
    team.cli("secrets", "reseal", "DB_URL")
    after = envelopes(team)
    assert after["DB_URL"].nonce != before["DB_URL"].nonce
    assert after["API_TOKEN"] == before["API_TOKEN"]
    assert team.cli("secrets", "get", "DB_URL").stdout == SECRETS["DB_URL"]


def test_never_removes_the_last_slot_of_a_secret(team: Workspace, tmp_path: Path) -> None:
    dave, _ = identity(tmp_path, "dave")
    team.cli("keys", "add", dave, "--name", "dave")
    with open(team.config, "a") as fh:
        fh.write('\n[profiles.devs]\nkeys = ["dave"]\n')
    team.cli("--profile", "devs", "secrets", "set", "ONLY_DAVE", input="d")
    team.config.write_text(team.config.read_text().replace('keys = ["dave"]', 'keys = ["dave", "main"]'))
    snapshot = team.snapshot()
    result = team.cli("keys", "remove", "dave", ok=False)
    assert result.exit_code == EXIT_CODES["InputError"]
    assert "only slot of 1 secret (ONLY_DAVE)" in result.stderr and "nothing was changed" in result.stderr
    assert team.snapshot() == snapshot


@pytest.mark.parametrize("args,code,words", [
    (("keys", "add", "nonsense"), "ProviderError", "unknown key reference"),
    (("keys", "add", "age1notvalid"), "ProviderError", "invalid age recipient"),
    (("keys", "add", "local:ci", "--region", "eu-west-1"), "InputError", "--region: not an option of local keys"),
    (("keys", "add", "local:main", "--name", "other"), "ConfigError", "names the same key"),
    (("keys", "add", "local:x", "--name", "main"), "InputError", "already declared"),
    (("keys", "add", "local:ci", "--name", "bad/name"), "InputError", "invalid key name"),
    (("--profile", "nope", "keys", "add", "local:ci"), "ConfigError", "unknown profile"),
    (("keys", "remove", "nope"), "NotFoundError", "no key 'nope'"),
    (("keys", "remove", "main"), "InputError", "only key"),
    (("secrets", "reseal"), "InputError", "give secret names or --all"),
    (("secrets", "reseal", "A", "--all"), "InputError", "not both"),
    (("secrets", "reseal", "NOPE"), "NotFoundError", "no secret NOPE"),
    (("secrets", "reseal", "../x"), "InputError", "invalid secret name"),
])
def test_bad_input_is_one_line_and_changes_nothing(team: Workspace, args, code, words) -> None:
    snapshot = team.snapshot()
    result = team.run(*args)
    err = result.stderr.decode()
    assert result.returncode == EXIT_CODES[code], err
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert team.snapshot() == snapshot


def test_add_to_a_profile_and_aws_options_are_written_generically(sqlite_ws: Workspace) -> None:
    with open(sqlite_ws.config, "a") as fh:
        fh.write('\n[profiles.prod]\nkeys = ["main"]\n')
    sqlite_ws.cli("--profile", "prod", "keys", "add", "local:ci", "--period", "30", "--no-exclusive")
    config = load_config(sqlite_ws.config, profile="prod")
    assert [k.name for k in config.slot_keys] == ["main", "ci"]
    assert config.keys["ci"].rotation_period_days == 30 and config.keys["ci"].exclusive is False
    # A cloud reference is declared with its provider's options (the provider itself arrives separately).
    ref = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    sqlite_ws.cli("keys", "add", ref, "--name", "payments", "--region", "eu-west-1",
                  "--replica-region", "eu-central-1", "--replica-region", "us-east-1", "--purpose", "encrypt")
    kc = load_config(sqlite_ws.config).keys["payments"]
    assert kc.ref == ref and kc.exclusive is False
    assert dict(kc.options) == {"region": "eu-west-1", "replica_regions": ["eu-central-1", "us-east-1"],
                                "purpose": "encrypt"}


def _job_files(ws: Workspace) -> list[Path]:
    return list((ws.root / ".keystead").glob("reseal-*.json"))


def test_killed_reseal_resumes_and_finishes(ws: Workspace, tmp_path: Path) -> None:
    n = 600
    src = tmp_path / "many.json"
    src.write_text(json.dumps({f"S{i:04d}": f"value-{i}" for i in range(n)}))
    ws.cli("secrets", "import", str(src))
    before = {name: env.nonce for name, env in envelopes(ws).items()}
    env = {**os.environ, "KEYSTEAD_CONFIG": str(ws.config)}
    proc = subprocess.Popen([sys.executable, "-m", "keystead.cli", "secrets", "reseal", "--all", "--batch", "10"],
                            env=env, cwd=ws.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        jobs = _job_files(ws)
        if jobs:
            try:
                done = json.loads(jobs[0].read_text())["done"]
            except (OSError, ValueError):
                done = 0
            if done >= 20:
                proc.send_signal(signal.SIGKILL)
                killed_at = done
                break
        time.sleep(0.005)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert killed_at is not None and proc.returncode == -signal.SIGKILL, "the re-seal ended before it was killed"
    mid = envelopes(ws)
    assert len(mid) == n  # every secret still opens: old or new, never neither
    assert json.loads(ws.cli("secrets", "export", "--format", "json").stdout) == {
        f"S{i:04d}": f"value-{i}" for i in range(n)}
    assert _job_files(ws)
    resumed = ws.cli("secrets", "reseal", "--all", "--batch", "100")
    assert "resumed after" in resumed.stderr
    after = envelopes(ws)
    assert all(after[name].nonce != before[name] for name in before)  # every one re-sealed, once or twice
    assert not _job_files(ws)
    assert ws.cli("audit", "verify").exit_code == 0
