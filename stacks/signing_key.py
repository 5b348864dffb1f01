"""``keystead:aws:SigningKey``: an asymmetric SIGN_VERIFY key, optionally multi-Region.

AWS cannot rotate asymmetric keys in place, so rotation stays off and the worker rotates
the key by successor (a new key, the alias moved). Replicas and aliases as for
:class:`~keystead.stacks.multi_region_key.MultiRegionKey`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from keystead.policies.generate import check_admin_access

from . import kms

TYPE = "keystead:aws:SigningKey"


@dataclass(frozen=True)
class SigningKeyArgs:
    key_name: str
    region: str
    policy: str  # from policies/
    deployer: str
    key_spec: str = "ECC_NIST_P256"
    alias: str = ""
    replica_regions: tuple[str, ...] = ()
    multi_region: bool = False
    deletion_window_days: int = 30
    description: str = ""


class SigningKey(pulumi.ComponentResource):
    arn: pulumi.Output[str]
    key_id: pulumi.Output[str]
    replica_arns: dict[str, pulumi.Output[str]]
    replicas: dict[str, aws.kms.ReplicaKey]
    aliases: list[aws.kms.Alias]

    def __init__(self, name: str, args: SigningKeyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE, name, None, opts)
        check_admin_access(json.loads(args.policy), deployer=args.deployer, where=f"keys.{args.key_name}")
        description = args.description or f"keystead signing key {args.key_name}"
        alias_name = args.alias or f"alias/keystead/{args.key_name}"
        self.key = aws.kms.Key(
            name, description=description, region=args.region, key_usage="SIGN_VERIFY",
            customer_master_key_spec=args.key_spec, multi_region=args.multi_region or bool(args.replica_regions),
            deletion_window_in_days=args.deletion_window_days, policy=args.policy,
            tags=kms.key_tags(args.key_name), opts=pulumi.ResourceOptions(parent=self))
        kms.replicate(self, name, self.key, key_name=args.key_name, region=args.region,
                      replica_regions=args.replica_regions, policy=args.policy,
                      deletion_window_days=args.deletion_window_days, description=description,
                      alias_name=alias_name)
