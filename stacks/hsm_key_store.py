"""``keystead:aws:HsmKeyStore``: a CloudHSM cluster, an HSM per subnet, the KMS key store on it and its keys.

The cluster (hsm2m.medium, FIPS mode by default; optionally restored from a backup) spans
at least two subnets in different availability zones, with one HSM in each. AWS then needs
steps outside Pulumi (docs/stacks.md): sign the cluster's CSR, initialize and activate the
cluster, create the kmsuser. Only after them can a custom key store exist, so the store is
declared once the stack config has the cluster's trust anchor certificate
(``keystead:hsmTrustAnchors``) and the kmsuser password (``keystead:hsmPassword``, a secret),
and its keys once the store is connected (``keystead:hsmConnected``; KMS creates keys only
in a CONNECTED store).
Keys in the store have origin AWS_CLOUDHSM and cannot rotate in place: no rotation is
enabled, the worker rotates them by successor.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from keystead.policies.generate import check_admin_access

from . import kms

TYPE = "keystead:aws:HsmKeyStore"


@dataclass(frozen=True)
class HsmKeyArgs:
    key_name: str
    policy: str  # from policies/
    alias: str = ""
    deletion_window_days: int = 30


@dataclass(frozen=True)
class HsmKeyStoreArgs:
    store_name: str
    region: str
    subnets: Sequence[tuple[str, str]]  # (subnet id, availability zone): one HSM in each
    deployer: str
    hsm_type: str = "hsm2m.medium"
    mode: str = "FIPS"
    backup_retention_days: int = 90  # pulumi-aws 7 has no argument for it: exported, set by ModifyCluster
    source_backup_id: str | None = None
    trust_anchor_certificate: str | None = None  # after initialization: the cluster's customerCA.crt
    key_store_password: pulumi.Input[str] | None = None  # the kmsuser password (a Pulumi secret)
    connected: bool = False  # the store is CONNECTED (keystead hsm connect): CreateKey works only then
    keys: Sequence[HsmKeyArgs] = field(default_factory=tuple)


class HsmKeyStore(pulumi.ComponentResource):
    cluster_id: pulumi.Output[str]
    custom_key_store_id: pulumi.Output[str | None]
    key_arns: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: HsmKeyStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE, name, None, opts)
        for key in args.keys:
            check_admin_access(json.loads(key.policy), deployer=args.deployer, where=f"keys.{key.key_name}")
        child = pulumi.ResourceOptions(parent=self)
        tags = {"keystead:hsm-store": args.store_name, "managed-by": "keystead"}
        self.cluster = aws.cloudhsmv2.Cluster(
            f"{name}-cluster", hsm_type=args.hsm_type, mode=args.mode, region=args.region,
            subnet_ids=[subnet for subnet, _ in args.subnets], source_backup_identifier=args.source_backup_id,
            tags=tags, opts=child)
        self.hsms = [aws.cloudhsmv2.Hsm(
            f"{name}-hsm-{zone}", cluster_id=self.cluster.cluster_id, subnet_id=subnet, availability_zone=zone,
            region=args.region, opts=child) for subnet, zone in args.subnets]
        self.cluster_id = self.cluster.cluster_id
        self.store: aws.kms.CustomKeyStore | None = None
        self.keys: dict[str, aws.kms.Key] = {}
        self.key_arns = {}
        if args.trust_anchor_certificate is not None and args.key_store_password is not None:
            self.store = aws.kms.CustomKeyStore(
                f"{name}-store", custom_key_store_name=f"keystead-{args.store_name}",
                custom_key_store_type="AWS_CLOUDHSM", cloud_hsm_cluster_id=self.cluster.cluster_id,
                trust_anchor_certificate=args.trust_anchor_certificate,
                key_store_password=pulumi.Output.secret(args.key_store_password), region=args.region,
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(self.hsms)))
            for key in args.keys if args.connected else ():
                created = aws.kms.Key(
                    key.key_name, description=f"keystead key {key.key_name} (CloudHSM {args.store_name})",
                    region=args.region, custom_key_store_id=self.store.id, policy=key.policy,
                    deletion_window_in_days=key.deletion_window_days, tags=kms.key_tags(key.key_name),
                    opts=child)
                kms.alias(self, f"{key.key_name}-alias", key.alias or f"alias/keystead/{key.key_name}",
                          created.key_id, args.region)
                self.keys[key.key_name] = created
                self.key_arns[key.key_name] = created.arn
        self.custom_key_store_id = self.store.id if self.store is not None else pulumi.Output.from_input(None)
        self.register_outputs({"clusterId": self.cluster_id, "customKeyStoreId": self.custom_key_store_id,
                               "hsmCount": len(self.hsms),
                               "backupRetentionDays": args.backup_retention_days, "keyArns": self.key_arns})
