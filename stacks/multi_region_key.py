"""``keystead:aws:MultiRegionKey``: a symmetric KMS key that rotates itself, with DR replicas.

The primary (``aws.kms.Key``, multi-Region when it has replicas) has rotation enabled with
the configured period, the deletion window, the ``keystead:key`` tag and the key policy
policies/ generated; each DR region gets a ReplicaKey with the same policy and every
region an alias (``ignore_changes=["targetKeyId"]``: the worker moves aliases).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from keystead.policies.generate import check_admin_access

from . import kms

TYPE = "keystead:aws:MultiRegionKey"


@dataclass(frozen=True)
class MultiRegionKeyArgs:
    key_name: str  # the keystead key name (the tag value and the output key)
    region: str  # the primary region
    policy: str  # the key policy JSON, from policies/ (keystead.policies.generate)
    deployer: str  # who runs pulumi up: the policy must let it administer the key
    alias: str = ""  # default alias/keystead/<key_name>
    replica_regions: tuple[str, ...] = ()
    multi_region: bool = True
    rotation_period_days: int = 90
    deletion_window_days: int = 30
    description: str = ""


class MultiRegionKey(pulumi.ComponentResource):
    arn: pulumi.Output[str]
    key_id: pulumi.Output[str]
    replica_arns: dict[str, pulumi.Output[str]]
    replicas: dict[str, aws.kms.ReplicaKey]
    aliases: list[aws.kms.Alias]

    def __init__(self, name: str, args: MultiRegionKeyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE, name, None, opts)
        check_admin_access(json.loads(args.policy), deployer=args.deployer, where=f"keys.{args.key_name}")
        description = args.description or f"keystead key {args.key_name}"
        alias_name = args.alias or f"alias/keystead/{args.key_name}"
        child = pulumi.ResourceOptions(parent=self)
        self.key = aws.kms.Key(
            name, description=description, region=args.region,
            multi_region=args.multi_region or bool(args.replica_regions),
            enable_key_rotation=True, rotation_period_in_days=args.rotation_period_days,
            deletion_window_in_days=args.deletion_window_days, policy=args.policy,
            tags=kms.key_tags(args.key_name), opts=child)
        kms.replicate(self, name, self.key, key_name=args.key_name, region=args.region,
                      replica_regions=args.replica_regions, policy=args.policy,
                      deletion_window_days=args.deletion_window_days, description=description,
                      alias_name=alias_name)
