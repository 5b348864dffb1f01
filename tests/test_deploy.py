"""deploy/: the systemd unit parses and is hardened; the Kubernetes manifests are valid YAML with
what keystead needs (docs/operations.md).

The unit is read with configparser (systemd's INI dialect: repeated keys, no interpolation) and,
where the machine has it, checked by ``systemd-analyze verify`` itself.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from keystead.config import load_config
from keystead.errors import ConfigError

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNIT = DEPLOY / "systemd" / "keystead-worker.service"
K8S = DEPLOY / "kubernetes"


class _MultiDict(dict[str, Any]):
    """configparser's dict_type that keeps every value of a repeated key (systemd allows them)."""

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, list) and key in self:
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def _unit() -> dict[str, dict[str, list[str]]]:
    parser = configparser.RawConfigParser(strict=False, dict_type=_MultiDict, empty_lines_in_values=False,
                                          interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    out: dict[str, dict[str, list[str]]] = {}
    for section in parser.sections():
        # RawConfigParser with _MultiDict stores each value as a list of lines, joined here per key.
        out[section] = {k: v.split("\n") for k, v in parser.items(section)}
    return out


def test_the_unit_parses_and_runs_the_worker_with_metrics() -> None:
    unit = _unit()
    assert {"Unit", "Service", "Install"} <= set(unit)
    service = unit["Service"]
    (exec_start,) = service["ExecStart"]
    argv = exec_start.split()
    assert argv[0].endswith("/keystead") and "worker" in argv
    assert argv[argv.index("--metrics-port") + 1].isdigit()
    assert argv[argv.index("--log-format") + 1] == "json"
    assert service["Restart"] == ["on-failure"]
    assert service["EnvironmentFile"][0].startswith("/etc/keystead/")
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_the_unit_is_hardened() -> None:
    service = _unit()["Service"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["ProtectSystem"] == ["strict"]
    assert service.get("DynamicUser") == ["yes"] or service.get("User", [""])[0] not in ("", "root")
    writable = service["ReadWritePaths"][0].split()
    assert writable and all(p.startswith("/var/lib/keystead") for p in writable)
    assert service["PrivateTmp"] == ["yes"]  # the metrics directory needs a writable /tmp
    assert service["CapabilityBoundingSet"] == [""]


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    # verify checks that ExecStart's program exists: point it at this interpreter.
    text = UNIT.read_text(encoding="utf-8").replace("/opt/keystead/bin/keystead", sys.executable)
    copy = tmp_path / UNIT.name
    copy.write_text(text, encoding="utf-8")
    try:
        r = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.skip("systemd-analyze verify did not finish in 60 s on this machine")
    assert r.returncode == 0, r.stderr
    assert "keystead-worker.service" not in r.stderr, r.stderr  # no warning about our unit


def _manifests() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), path
            docs[doc["kind"]] = doc
    return docs


def test_kustomization_lists_every_manifest() -> None:
    kustom = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustom["resources"]) == files


def test_the_deployment_runs_several_workers_with_probes_on_healthz() -> None:
    docs = _manifests()
    dep = docs["Deployment"]
    assert dep["spec"]["replicas"] >= 2
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"]
    cmd = container["command"]
    assert cmd[0] == "keystead" and "worker" in cmd
    port = int(cmd[cmd.index("--metrics-port") + 1])
    assert cmd[cmd.index("--metrics-host") + 1] == "0.0.0.0"  # the kubelet probes the pod's IP
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == port
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz" and get["port"] in ("metrics", port)
    assert container["resources"]["requests"] and container["resources"]["limits"]
    sec = container["securityContext"]
    assert sec["readOnlyRootFilesystem"] is True and sec["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts  # the metrics directory, on a read-only root


def test_the_database_url_comes_from_a_secret_and_the_config_names_it() -> None:
    docs = _manifests()
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    ref = env["KEYSTEAD_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"]
    assert "Secret" not in docs  # never committed: the kustomization's comment says how to create it
    toml = docs["ConfigMap"]["data"]["keystead.toml"]
    assert 'store = "env:KEYSTEAD_DATABASE_URL"' in toml and 'state = "env:KEYSTEAD_DATABASE_URL"' in toml


def test_the_configmap_is_a_config_keystead_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = _manifests()["ConfigMap"]["data"]["keystead.toml"]
    path = tmp_path / "keystead.toml"
    path.write_text(toml, encoding="utf-8")
    url = "postgresql://keystead:pw@db.internal:5432/keystead"
    monkeypatch.setenv("KEYSTEAD_DATABASE_URL", url)
    config = load_config(path)
    assert config.store_url == config.state_url == "postgresql+psycopg://keystead:pw@db.internal:5432/keystead"
    assert config.audit_path.is_relative_to("/var/lib/keystead")  # the mounted volume, not the read-only root
    assert set(config.keys) == {"payments", "analytics"}
    monkeypatch.delenv("KEYSTEAD_DATABASE_URL")
    with pytest.raises(ConfigError, match="KEYSTEAD_DATABASE_URL is not set"):
        load_config(path)


def test_the_service_account_carries_irsa_and_workload_identity() -> None:
    docs = _manifests()
    sa = docs["ServiceAccount"]
    notes = sa["metadata"]["annotations"]
    assert notes["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    assert notes["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert sa["metadata"]["namespace"] == docs["Deployment"]["metadata"]["namespace"]


def test_the_disruption_budget_keeps_workers_running() -> None:
    docs = _manifests()
    pdb, dep = docs["PodDisruptionBudget"], docs["Deployment"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"]["maxUnavailable"] < dep["spec"]["replicas"]


def test_the_metrics_service_selects_the_workers_pods() -> None:
    docs = _manifests()
    svc, dep = docs["Service"], docs["Deployment"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    (port,) = svc["spec"]["ports"]
    assert port["targetPort"] == "metrics"
    assert svc["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
