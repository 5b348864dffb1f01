"""`keystead plan` through the command line: click's runner, and once as a real process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from keystead.cli.entry import cli

ROOT = Path(__file__).resolve().parents[2]


def test_plan_json_lists_the_whole_graph_with_secrets_redacted():
    result = CliRunner().invoke(cli, ["plan", "--stack", "dev", "--dir", str(ROOT), "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert (plan["project"], plan["stack"]) == ("keystead", "dev")
    by_type: dict[str, list[dict]] = {}
    for resource in plan["resources"]:
        by_type.setdefault(resource["type"], []).append(resource)
    assert len(by_type["aws:kms/replicaKey:ReplicaKey"]) == 5  # vault x2, payments x1, release-signing x2
    assert len(by_type["aws:cloudhsmv2/hsm:Hsm"]) == 2
    (store,) = by_type["aws:kms/customKeyStore:CustomKeyStore"]
    assert store["props"]["keyStorePassword"] == "[secret]"
    assert "offline-placeholder" not in result.stdout
    crypto_keys = by_type["gcp:kms/cryptoKey:CryptoKey"]
    assert crypto_keys and all(k["protect"] and k["parent"] == "europe-west1-keystead" for k in crypto_keys)
    assert all(a["ignore_changes"] == ["targetKeyId"] for a in by_type["aws:kms/alias:Alias"])
    assert plan["outputs"]["keys"]["vault"]["replica_regions"] == ["us-west-2", "eu-west-1"]
    assert "violations" in plan  # None until the CrossGuard checks are installed, else a list


def test_plan_prints_a_tree_in_a_real_process_without_shutdown_noise():
    done = subprocess.run([sys.executable, "-m", "keystead.cli", "plan", "--dir", str(ROOT)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "keystead:aws:MultiRegionKey vault" in done.stdout
    assert "aws:kms/replicaKey:ReplicaKey vault-eu-west-1" in done.stdout
    assert "gcp:kms/cryptoKey:CryptoKey gcp-vault protect" in done.stdout
    assert "keyStorePassword=[secret]" in done.stdout
    assert "Invalid file descriptor" not in done.stderr and "Traceback" not in done.stderr


def _project(tmp_path: Path, **config: object) -> Path:
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["keystead:spec"] = str(ROOT / "keystead-iam.toml")
    doc["config"]["keystead:hsmTrustAnchors"] = {"main": str(ROOT / "stacks/examples/customerCA.crt")}
    doc["config"].update(config)
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path


def test_a_config_error_is_one_line_and_exit_3(tmp_path):
    project = _project(tmp_path, **{"keystead:keys": ["vault", "nope"]})
    result = CliRunner().invoke(cli, ["plan", "--dir", str(project)])
    assert result.exit_code == 3
    assert result.stderr.strip().splitlines() == [
        "keystead: error: keystead:keys: key 'nope' is not declared in the spec (declared: gcp-signing, "
        "gcp-vault, hsm-vault, payments, release-signing, vault)"]
    assert result.stdout == ""


def test_a_spec_error_is_exit_10_and_a_missing_stack_exit_3(tmp_path):
    spec = tmp_path / "bad-iam.toml"
    spec.write_text((ROOT / "keystead-iam.toml").read_text().replace("rotation_days = 90\n", "rotation_days = 30\n", 1))
    project = _project(tmp_path, **{"keystead:spec": str(spec)})
    result = CliRunner().invoke(cli, ["plan", "--dir", str(project)])
    assert result.exit_code == 10
    assert result.stderr.startswith(f"keystead: error: {spec}:")
    assert "keys.vault.rotation_days: AWS rotates every 90..2560 days, got 30" in result.stderr
    missing = CliRunner().invoke(cli, ["plan", "--dir", str(project), "--stack", "prod"])
    assert missing.exit_code == 3 and "Pulumi.prod.yaml: no such stack config" in missing.stderr


def test_plan_runs_the_policy_checks_and_exits_10_on_a_violation(tmp_path):
    """The same checks as the CrossGuard pack (policies/pack/checks.py)."""
    clean = CliRunner().invoke(cli, ["plan", "--dir", str(ROOT), "--json"])
    assert clean.exit_code == 0 and json.loads(clean.stdout)["violations"] == []
    spec = tmp_path / "slow-iam.toml"
    import tomlkit

    doc = tomlkit.parse((ROOT / "keystead-iam.toml").read_text())
    doc["keys"]["payments"]["rotation_days"] = 180  # valid for AWS, above the pack's 90-day maximum
    spec.write_text(tomlkit.dumps(doc))
    project = _project(tmp_path, **{"keystead:spec": str(spec)})
    result = CliRunner().invoke(cli, ["plan", "--dir", str(project), "--json"])
    assert result.exit_code == 10, result.output
    violations = json.loads(result.stdout)["violations"]
    assert [v["resource"] for v in violations] == ["payments"]
    assert "policy violation" in result.stderr


def test_without_the_pulumi_sdks_plan_says_what_to_install():
    """A real process in which pulumi_gcp cannot be imported (as where the stacks extra is not installed)."""
    code = ("import sys; sys.modules['pulumi_gcp'] = None; sys.argv = ['keystead', 'plan', '--dir', sys.argv[1]]; "
            "from keystead.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == ("keystead: error: keystead plan needs the Pulumi SDKs (pulumi_gcp is not "
                                   "installed): pip install 'keystead[stacks]'")


def test_plan_outputs_feed_stack_config_which_writes_what_the_worker_rotates(tmp_path):
    # The whole path from stack to worker, offline: the outputs `plan --json` shows (the shape
    # `pulumi stack output --json` prints) go through `stack config --from-outputs` into keystead.toml.
    from keystead.config import load_config

    plan = CliRunner().invoke(cli, ["plan", "--stack", "dev", "--dir", str(ROOT), "--json"])
    assert plan.exit_code == 0, plan.output
    outputs = json.loads(plan.stdout)["outputs"]
    (tmp_path / "out.json").write_text(json.dumps(outputs))
    config = tmp_path / "keystead.toml"
    init = subprocess.run([sys.executable, "-m", "keystead.cli", "init"], cwd=tmp_path, capture_output=True)
    assert init.returncode == 0, init.stderr
    done = subprocess.run([sys.executable, "-m", "keystead.cli", "stack", "config", "--from-outputs", "out.json"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    keys = load_config(config).keys
    assert set(outputs["keys"]) <= set(keys)
    for name, out in outputs["keys"].items():
        if out["provider"] == "aws":
            region, account = out["region"], out["arn"].split(":")[4]
            assert keys[name].ref == f"arn:aws:kms:{region}:{account}:{out['alias']}"
            assert keys[name].options.get("replica_regions", []) == out["replica_regions"]
        else:
            assert keys[name].ref == out["id"]
        assert keys[name].rotation_period_days == out["rotation_period_days"]
