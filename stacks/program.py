"""The keystead stack: every key, key store and worker identity the spec declares.

``main()`` is what ``pulumi up`` runs (stacks/__main__.py) and what ``keystead plan`` runs
under mocks. It reads the stack config and the spec, checks all of it
(:mod:`keystead.stacks.config`), and only then declares resources, so a bad setting
stops the program before anything exists. Every IAM document comes from policies/.

Exports (CONTRACTS §1, read by ``keystead stack config --from-outputs``): ``keys``, ``hsm``
and ``workers``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi

from keystead.policies.generate import aws as aws_docs
from keystead.policies.generate import gcp as gcp_docs
from keystead.policies.generate import render
from keystead.policies.spec.model import Key, Principal, Spec

from . import config as stack_config
from .gcp_key_ring import CryptoKeySpec, GcpKeyRing, GcpKeyRingArgs
from .hsm_key_store import HsmKeyArgs, HsmKeyStore, HsmKeyStoreArgs
from .multi_region_key import MultiRegionKey, MultiRegionKeyArgs
from .signing_key import SigningKey, SigningKeyArgs
from .worker_identity import WorkerIdentity, WorkerIdentityArgs

PURPOSE = {"symmetric": "encrypt", "sign": "sign"}


def project_dir(start: Path | None = None) -> Path:
    """The directory holding Pulumi.yaml (the program may run from stacks/ or the project root)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    return here


def read_config() -> tuple[dict[str, str], frozenset[str]]:
    """The ``keystead:*`` config values as Pulumi hands them to the program, and the secret ones.

    ``pulumi up`` passes config in the environment (PULUMI_CONFIG, a JSON object), the mocks
    through ``set_all_config``; both are read, the explicit map winning.
    """
    from pulumi.runtime import config as runtime_config

    every: dict[str, Any] = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    values = {k: str(v) for k, v in every.items() if k.startswith(f"{stack_config.NAMESPACE}:")}
    listed = set(runtime_config.get_config_secret_keys_env())
    secrets = frozenset(k for k in values if k in listed or runtime_config.is_config_secret(k))
    return values, secrets


def main(base_dir: Path | None = None) -> None:
    values, secrets = read_config()
    cfg = stack_config.parse(values, base_dir=base_dir or project_dir(), secret_keys=secrets)
    password = (pulumi.Config(stack_config.NAMESPACE).require_secret("hsmPassword")
                if cfg.has_hsm_password else None)
    declare(cfg, password)


def _policy(spec: Spec, key: Key) -> str:
    return render(aws_docs.key_policy(spec, key.name))


def _aws_entry(key: Key, arn: pulumi.Output[str], replica_arns: Mapping[str, pulumi.Output[str]]) -> dict[str, Any]:
    return {"provider": "aws", "arn": arn, "alias": key.alias, "region": key.region,
            "replica_regions": list(key.replica_regions), "replica_arns": dict(replica_arns),
            "multi_region": key.multi_region,
            "rotation": "scheduled" if key.rotates_in_place else "successor",
            "rotation_period_days": key.rotation_days, "purpose": PURPOSE[key.type], "hsm": key.hsm}


def declare(cfg: stack_config.StackConfig, password: pulumi.Input[str] | None) -> None:
    """Declare every resource of a checked config and export the outputs."""
    spec = cfg.spec
    keys_out: dict[str, Any] = {}
    arns: dict[str, pulumi.Output[str]] = {}
    for key in cfg.keys:
        if key.cloud != "aws" or key.hsm:
            continue
        assert key.region is not None and key.alias is not None  # the spec loader fills both in for AWS keys
        component: MultiRegionKey | SigningKey
        if key.type == "symmetric":
            component = MultiRegionKey(key.name, MultiRegionKeyArgs(
                key_name=key.name, region=key.region, policy=_policy(spec, key), deployer=cfg.deployer,
                alias=key.alias, replica_regions=key.replica_regions, multi_region=key.multi_region,
                rotation_period_days=key.rotation_days, deletion_window_days=key.deletion_window_days))
        else:
            component = SigningKey(key.name, SigningKeyArgs(
                key_name=key.name, region=key.region, policy=_policy(spec, key), deployer=cfg.deployer,
                key_spec=key.key_spec, alias=key.alias, replica_regions=key.replica_regions,
                multi_region=key.multi_region, deletion_window_days=key.deletion_window_days))
        arns[key.name] = component.arn
        keys_out[key.name] = _aws_entry(key, component.arn, component.replica_arns)

    hsm_out: dict[str, Any] = {}
    for store in spec.hsm_stores:
        in_store = cfg.keys_in(store.name)
        hsm = HsmKeyStore(store.name, HsmKeyStoreArgs(
            store_name=store.name, region=store.region, subnets=store.subnets, deployer=cfg.deployer,
            hsm_type=store.hsm_type, mode=store.mode, backup_retention_days=store.backup_retention_days,
            source_backup_id=store.source_backup_id, trust_anchor_certificate=cfg.trust_anchors.get(store.name),
            key_store_password=password, connected=store.name in cfg.connected,
            keys=[HsmKeyArgs(key_name=k.name, policy=_policy(spec, k), alias=k.alias or "",
                             deletion_window_days=k.deletion_window_days) for k in in_store]))
        if in_store and not hsm.keys:
            waiting = (f"keystead:hsmTrustAnchors.{store.name} (initialize the cluster first)" if hsm.store is None
                       else f"keystead:hsmConnected to list {store.name} (run `keystead hsm connect` first)")
            pulumi.log.info(f"key store {store.name}: its keys ({', '.join(k.name for k in in_store)}) are not "
                            f"declared yet: waiting for {waiting}; see docs/stacks.md")
        for key in in_store:
            if key.name in hsm.key_arns:
                arns[key.name] = hsm.key_arns[key.name]
                keys_out[key.name] = _aws_entry(key, hsm.key_arns[key.name], {})
        hsm_out[store.name] = {"cluster_id": hsm.cluster_id, "custom_key_store_id": hsm.custom_key_store_id,
                               "region": store.region, "hsm_count": len(hsm.hsms)}

    workers_out: dict[str, Any] = {}
    gcp_dependencies: list[pulumi.Resource] = []
    for principal in cfg.workers:
        worker = WorkerIdentity(principal.name, _worker_args(spec, principal, arns))
        workers_out[principal.name] = {"aws_role_arn": worker.aws_role_arn,
                                       "gcp_service_account": worker.gcp_service_account}
        gcp_dependencies.append(worker)

    for ring_id, ring_keys in _rings(cfg.keys).items():
        _, project, _, location, _, ring = ring_id.split("/")
        rings = GcpKeyRing(f"{location}-{ring}", GcpKeyRingArgs(
            project=project, location=location, ring=ring, keys=[_crypto_key(spec, k) for k in ring_keys]),
            pulumi.ResourceOptions(depends_on=gcp_dependencies))
        for key in ring_keys:
            keys_out[key.name] = {"provider": "gcp", "id": rings.key_ids[key.name],
                                  "rotation": "scheduled" if key.type == "symmetric" else "successor",
                                  "rotation_period_days": key.rotation_days, "purpose": PURPOSE[key.type],
                                  "protection_level": key.protection_level}

    pulumi.export("keys", keys_out)
    pulumi.export("hsm", hsm_out)
    pulumi.export("workers", workers_out)


def _rings(keys: tuple[Key, ...]) -> dict[str, list[Key]]:
    out: dict[str, list[Key]] = {}
    for key in keys:
        if key.cloud == "gcp" and key.key_ring is not None:
            out.setdefault(key.key_ring, []).append(key)
    return out


def _crypto_key(spec: Spec, key: Key) -> CryptoKeySpec:
    assert key.resource is not None and key.algorithm is not None  # the spec loader fills both in for GCP keys
    members = [(b["role"], m) for b in gcp_docs.bindings(spec, key.name)["bindings"] for m in b["members"]]
    return CryptoKeySpec(key_name=key.name, crypto_key=key.resource.rsplit("/", 1)[1], type=key.type,
                         algorithm=key.algorithm, protection_level=key.protection_level,
                         rotation_days=key.rotation_days, destroy_scheduled_days=key.destroy_scheduled_days,
                         members=members)


def _identity_policy(spec: Spec, principal: Principal,
                     arns: Mapping[str, pulumi.Output[str]]) -> pulumi.Input[str] | None:
    if aws_docs.identity_policy(spec, principal.name) is None:
        return None
    if not arns:
        return render(aws_docs.identity_policy(spec, principal.name) or {})

    def build(known: dict[str, str]) -> str:
        return render(aws_docs.identity_policy(aws_docs.with_arns(spec, known), principal.name) or {})

    return pulumi.Output.all(**arns).apply(build)


def _worker_args(spec: Spec, principal: Principal, arns: Mapping[str, pulumi.Output[str]]) -> WorkerIdentityArgs:
    creates_role = principal.arn is not None and principal.trust is not None
    account_id = None
    if principal.member and spec.gcp_project:
        email = principal.member.partition(":")[2]
        if principal.member.startswith("serviceAccount:") and email.endswith(
                f"@{spec.gcp_project}.iam.gserviceaccount.com"):
            account_id = email.split("@")[0]
    rotator = (gcp_docs.rotator_role(spec) if principal.member and gcp_docs.needs_rotator_role(spec)
               and any(g.role == "rotator" and spec.key(g.key).cloud == "gcp" for g in principal.grants) else None)
    return WorkerIdentityArgs(
        worker=principal.name, role_arn=principal.arn,
        trust_policy=render(aws_docs.trust_policy(spec, principal.name)) if creates_role else None,
        identity_policy=_identity_policy(spec, principal, arns) if creates_role else None,
        gcp_project=spec.gcp_project, gcp_account_id=account_id, gcp_member=principal.member,
        rotator_role=rotator)


