"""What the AWS key components share: tags, replicas in DR regions, aliases in every region.

Replicas and aliases are placed with pulumi-aws v7's per-resource ``region`` argument: one
default provider serves every region, none is declared per region.
"""

from __future__ import annotations

from typing import Any, Protocol

import pulumi
import pulumi_aws as aws

from keystead.policies.generate.aws_roles import TAG_KEY


def key_tags(name: str) -> dict[str, str]:
    """The tag the generated IAM scopes keys by (``aws:ResourceTag/keystead:key``)."""
    return {TAG_KEY: name, "managed-by": "keystead"}


def alias(parent: pulumi.Resource, resource_name: str, alias_name: str, target_key_id: pulumi.Input[str],
          region: str) -> aws.kms.Alias:
    """An alias the worker moves to successor keys: a later ``pulumi up`` must never move it back."""
    return aws.kms.Alias(resource_name, name=alias_name, target_key_id=target_key_id, region=region,
                         opts=pulumi.ResourceOptions(parent=parent, ignore_changes=["targetKeyId"]))


def replicas(parent: pulumi.Resource, name: str, primary: aws.kms.Key, regions: tuple[str, ...], policy: str,
             deletion_window_days: int, description: str, key_name: str) -> dict[str, aws.kms.ReplicaKey]:
    """One ReplicaKey per DR region, each with the key policy (AWS does not sync replica policies)."""
    return {region: aws.kms.ReplicaKey(
        f"{name}-{region}", primary_key_arn=primary.arn, region=region, policy=policy,
        deletion_window_in_days=deletion_window_days, description=f"{description} (replica in {region})",
        tags=key_tags(key_name), opts=pulumi.ResourceOptions(parent=parent)) for region in regions}


class ReplicatedKey(Protocol):
    """What :func:`replicate` fills in on a key component (MultiRegionKey, SigningKey)."""

    replicas: dict[str, aws.kms.ReplicaKey]
    aliases: list[aws.kms.Alias]
    arn: pulumi.Output[str]
    key_id: pulumi.Output[str]
    replica_arns: dict[str, pulumi.Output[str]]

    def register_outputs(self, outputs: dict[str, Any]) -> None: ...


def replicate(component: ReplicatedKey, name: str, key: aws.kms.Key, *, key_name: str, region: str,
              replica_regions: tuple[str, ...], policy: str, deletion_window_days: int, description: str,
              alias_name: str) -> None:
    """The part every AWS key component shares, after its primary key: a replica in each DR region,
    the alias in every region, the component's attributes and its outputs (registered last)."""
    assert isinstance(component, pulumi.Resource)
    component.replicas = replicas(component, name, key, replica_regions, policy, deletion_window_days,
                                  description, key_name)
    component.aliases = [alias(component, f"{name}-alias", alias_name, key.key_id, region)] + [
        alias(component, f"{name}-alias-{r}", alias_name, replica.key_id, r)
        for r, replica in component.replicas.items()]
    component.arn = key.arn
    component.key_id = key.key_id
    component.replica_arns = {r: replica.arn for r, replica in component.replicas.items()}
    component.register_outputs({"arn": component.arn, "keyId": component.key_id, "alias": alias_name,
                                "replicaArns": component.replica_arns})
