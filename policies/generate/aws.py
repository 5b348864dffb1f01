"""AWS documents from a spec: key policies, identity policies, IRSA trust.

Pure functions returning dicts. Statements are sorted and their Sids stable
(role + key or principal + label), so generated files diff cleanly. The
stack calls the same functions with the ARNs it created (``arns``); without
them, keys the stack will create are scoped by their keystead:key tag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from .. import actions as A
from ..spec.errors import SpecError
from ..spec.load import key_arn_problem
from ..spec.model import Aws, Key, Principal, Spec
from .aws_roles import TAG_KEY, Group, role_groups, service_grant_group

VERSION = "2012-10-17"
DESTRUCTIVE = ("kms:DisableKey", "kms:PutKeyPolicy", "kms:ScheduleKeyDeletion")


def pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_.]", name) if part)


def with_arns(spec: Spec, arns: Mapping[str, str] | None) -> Spec:
    """The spec with ARNs filled in for keys the stack created."""
    if not arns:
        return spec
    by_name = {k.name: k for k in spec.keys}
    for name, given in sorted(arns.items()):
        declared = by_name.get(name)
        problem = ("is not declared in the spec" if declared is None else
                   "is a GCP key" if declared.cloud != "aws" else
                   key_arn_problem(given, declared.multi_region))
        if problem:
            raise SpecError(f"--key-arn {name}", problem)
    keys = []
    for key in spec.keys:
        arn = arns.get(key.name)
        if arn:
            region, account = arn.split(":")[3], arn.split(":")[4]
            key = replace(key, arn=arn, region=region, account=account)
        keys.append(key)
    return replace(spec, keys=tuple(keys))


def _conditions(triples: Iterable[tuple[str, str, object]]) -> dict[str, Any]:
    out: dict[str, dict[str, object]] = {}
    for operator, name, value in triples:
        if isinstance(value, list):
            value = sorted(value) if len(value) != 1 else value[0]
        out.setdefault(operator, {})[name] = value
    return {op: dict(sorted(v.items())) for op, v in sorted(out.items())}


def _statement(sid: str, actions: Iterable[str], resource: object,
               conditions: Iterable[tuple[str, str, object]] = (),
               principal: dict[str, Any] | None = None, effect: str = "Allow") -> dict[str, Any]:
    stmt: dict[str, object] = {"Sid": sid, "Effect": effect}
    if principal is not None:
        stmt["Principal"] = principal
    names = sorted(set(actions))
    stmt["Action"] = names[0] if len(names) == 1 else names
    if resource is not None:
        stmt["Resource"] = resource
    if conditions:
        stmt["Condition"] = _conditions(conditions)
    return stmt


def _key_arn(key: Key, region: str, partition: str, key_id: str) -> str:
    return f"arn:{partition}:kms:{region}:{key.account}:key/{key_id}"


def scope(group: Group, key: Key, aws: Aws) -> tuple[list[str], tuple[Any, ...]]:
    """The Resource list (and any resource conditions) for a group in an identity policy."""
    assert key.region is not None  # an AWS key always has one (the spec loader fills it in)
    partition = key.arn.split(":")[1] if key.arn else aws.partition
    tag = (("StringEquals", f"aws:ResourceTag/{TAG_KEY}", key.name),)
    regions = [key.region, *key.replica_regions]
    if group.scope == "wildcard":
        return ["*"], ()
    if group.scope == "slr":
        return [group.slr or ""], ()
    if group.scope == "alias":
        return [f"arn:{partition}:kms:{key.region}:{key.account}:{key.alias}"], ()
    if group.scope == "new-key":
        return [_key_arn(key, key.region or "", partition, "*")], ()
    if group.scope == "replica":
        if key.arn:
            key_id = key.arn.rsplit("/", 1)[1]
            return [_key_arn(key, r, partition, key_id) for r in key.replica_regions], ()
        return [_key_arn(key, r, partition, "*") for r in key.replica_regions], tag
    if group.scope == "key" and key.arn:
        key_id = key.arn.rsplit("/", 1)[1]
        return [_key_arn(key, r, partition, key_id) for r in regions], ()
    return [_key_arn(key, r, partition, "*") for r in regions], tag


def _aws(spec: Spec) -> Aws:
    """The [aws] table, which the spec loader requires as soon as an AWS key is declared."""
    assert spec.aws is not None
    return spec.aws


def _groups(spec: Spec, principal: Principal, key: Key) -> list[tuple[str, Group]]:
    out = []
    for role in principal.roles_on(key.name):
        out += [(role, g) for g in role_groups(role, key, principal, _aws(spec))]
    if principal.aws_service_grants and set(principal.roles_on(key.name)) & A.CRYPTO_ROLES:
        out.append(("", service_grant_group(principal)))
    return out


def _unique(doc: dict[str, Any], where: str) -> dict[str, Any]:
    sids = [s["Sid"] for s in doc["Statement"]]
    dupes = sorted({s for s in sids if sids.count(s) > 1})
    if dupes:
        raise SpecError(where, f"names collide in statement ids {dupes}; rename a key or principal")
    return doc


def key_policy(spec: Spec, key_name: str) -> dict[str, Any]:
    """The key policy for one AWS key (also attached to each of its replicas)."""
    key, aws = spec.key(key_name), _aws(spec)
    root = f"arn:{aws.partition}:iam::{key.account}:root"
    head, allow = [], []
    if aws.root_access:  # rule 2: the account keeps control; no lockout
        head.append(_statement("EnableAccountRootAccess", ["kms:*"], "*",
                               principal={"AWS": root}))
    exempt = {root}
    for principal in spec.principals:
        for role, group in _groups(spec, principal, key):
            assert principal.arn is not None  # a principal with a role on an AWS key has one
            if role == "admin" or (role == "rotator" and not key.rotates_in_place):
                exempt.add(principal.arn)
            if not group.in_key_policy:
                continue
            sid = pascal(role or "") + group.label + pascal(principal.name)
            allow.append(_statement(sid, group.actions, "*", group.conditions,
                                    principal={"AWS": principal.arn}))
    deny = [_statement("DenyLockoutBypass", ["kms:PutKeyPolicy"], "*",
                       (("Bool", "kms:BypassPolicyLockoutSafetyCheck", "true"),),
                       principal={"AWS": "*"}, effect="Deny")]
    if aws.deny_destructive:  # rule 8: only admins may disable, re-policy or delete
        deny.append(_statement("DenyDestructiveToNonAdmins", DESTRUCTIVE, "*",
                               (("ArnNotEquals", "aws:PrincipalArn", sorted(exempt)),),
                               principal={"AWS": "*"}, effect="Deny"))
    doc = {"Version": VERSION,
           "Statement": head + sorted(allow, key=lambda s: s["Sid"]) + deny}
    return _unique(doc, f"keys.{key_name}")


def identity_policy(spec: Spec, principal_name: str) -> dict[str, Any] | None:
    """The IAM policy for one principal's role, or None if it has no AWS key."""
    principal = next(p for p in spec.principals if p.name == principal_name)
    statements: list[dict[str, Any]] = []
    wildcard: set[str] = set()
    bypass = False
    for key in spec.keys:
        if key.cloud != "aws" or not principal.roles_on(key.name):
            continue
        for role, group in _groups(spec, principal, key):
            resources, extra = scope(group, key, _aws(spec))
            if group.scope == "wildcard" and not group.conditions:
                wildcard.update(group.actions)
                continue
            bypass |= bool({"kms:PutKeyPolicy", "kms:CreateKey"} & set(group.actions))
            sid = pascal(role or "") + pascal(key.name) + group.label
            resource = resources[0] if len(resources) == 1 else sorted(resources)
            statements.append(_statement(sid, group.actions, resource,
                                         group.conditions + extra))
    if not statements and not wildcard:
        return None
    if wildcard:
        statements.append(_statement("WildcardOnlyActions", sorted(wildcard), "*"))
    if bypass:  # rule 2: never skip the lockout safety check
        statements.append(_statement(
            "DenyLockoutBypass", ["kms:CreateKey", "kms:PutKeyPolicy"], "*",
            (("Bool", "kms:BypassPolicyLockoutSafetyCheck", "true"),), effect="Deny"))
    doc = {"Version": VERSION, "Statement": sorted(statements, key=lambda s: s["Sid"])}
    return _unique(doc, f"principals.{principal_name}")


def trust_policy(spec: Spec, principal_name: str) -> dict[str, Any]:
    """The role's trust policy: an IRSA principal's (or worker's) service account may assume it,
    or, for a worker with ``trusted``, exactly those role/user ARNs."""
    principal = next(p for p in spec.principals if p.name == principal_name)
    aws = _aws(spec)
    issuer, namespace, account = principal.issuer, principal.namespace, principal.service_account
    if principal.trust is not None:
        if principal.trust.trusted:
            return {"Version": VERSION, "Statement": [_statement(
                "AssumeFromTrusted", ["sts:AssumeRole"], None,
                principal={"AWS": sorted(principal.trust.trusted)})]}
        issuer, namespace, account = (principal.trust.issuer, principal.trust.namespace,
                                      principal.trust.service_account)
    assert issuer is not None  # every IRSA principal has one; workers without a trust are not asked
    host = issuer.removeprefix("https://")
    provider = f"arn:{aws.partition}:iam::{aws.account}:oidc-provider/{host}"
    subject = f"system:serviceaccount:{namespace}:{account}"
    return {"Version": VERSION, "Statement": [_statement(
        "AssumeFromServiceAccount", ["sts:AssumeRoleWithWebIdentity"], None,
        (("StringEquals", f"{host}:aud", "sts.amazonaws.com"),
         ("StringEquals", f"{host}:sub", subject)),
        principal={"Federated": provider})]}
