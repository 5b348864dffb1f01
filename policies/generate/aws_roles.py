"""A role on an AWS key, as groups of actions that share scope and conditions.

One :class:`Group` becomes one statement: in the key policy (Resource "*",
the key itself) and in the principal's identity policy (Resource scoped by
``scope``). Groups carry a ``label`` that makes the statement's Sid stable:
Sid = role + key + label.

Scopes:
  key       the key's ARN (and replica ARNs), or keys tagged keystead:key=<name>
  tagged    always keys tagged keystead:key=<name> (successor keys, unknown ARN)
  new-key   any key in the key's region (only with an aws:RequestTag condition)
  replica   the key's replicas in the replica regions
  alias     the key's alias ARN
  wildcard  "*" (only the wildcard-only actions)
  slr       one service-linked role ARN
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .. import actions as A
from ..spec.model import Aws, Key, Principal

TAG_KEY = "keystead:key"
Conditions = tuple[tuple[str, str, object], ...]  # (operator, condition key, value)


@dataclass(frozen=True)
class Group:
    label: str
    actions: tuple[str, ...]
    scope: str
    conditions: Conditions = ()
    slr: str | None = None  # the service-linked role ARN for scope "slr"

    @property
    def in_key_policy(self) -> bool:
        """Statements that belong in the key's own policy (the rest are IAM-only)."""
        return self.scope in ("key", "tagged")


def role_groups(role: str, key: Key, principal: Principal, aws: Aws) -> list[Group]:
    """The statements ``role`` needs on ``key``, with ``principal``'s constraints."""
    build = _BUILDERS[role]
    parts = [_with_principal_conditions(g, key, principal, role) for g in build(key, aws)]
    return [g for part in parts for g in part]


def _crypto(role: str) -> Callable[[Key, Aws], list[Group]]:
    def build(key: Key, aws: Aws) -> list[Group]:
        return [Group("", A.CRYPTO[(role, key.type)], "key")]
    return build


def _admin(key: Key, aws: Aws) -> list[Group]:
    plain = list(A.ADMIN)
    if key.rotates_in_place:
        plain += A.ADMIN_ROTATION
    if key.multi_region:
        plain += A.ADMIN_MULTI_REGION
    groups = [Group("Wildcard", A.ADMIN_WILDCARD, "wildcard")]
    return _split_special(plain, key, aws) + groups


#: The rotation verifies what it rewrapped by opening it (Decrypt of the new slot), only for
#: keystead's envelopes: their encryption context always carries ``keystead:vault``.
_VERIFY = Group("Verify", ("kms:Decrypt",), "key", (("Null", "kms:EncryptionContext:keystead:vault", "false"),))


def _rotator(key: Key, aws: Aws) -> list[Group]:
    if key.rotates_in_place:
        return _split_special(list(A.ROTATOR_IN_PLACE), key, aws) + [
            Group("Rewrap", A.REWRAP, "key", (("Bool", "kms:ReEncryptOnSameKey", "true"),)), _VERIFY]
    # Successor rotation: create a key like this one, move the alias, rewrap,
    # schedule the old key's deletion. Every generation carries the same tag.
    usage = {"symmetric": "ENCRYPT_DECRYPT", "sign": "SIGN_VERIFY",
             "hmac": "GENERATE_VERIFY_MAC"}[key.type]
    tagged = [Group("Successor", ("kms:DescribeKey", "kms:UpdateAlias"), "tagged"),
              *_split_special(["kms:ScheduleKeyDeletion"], key, aws, scope="tagged")]
    if key.type == "symmetric":
        tagged += [Group("Rewrap", A.REWRAP, "tagged"), Group("Verify", _VERIFY.actions, "tagged", _VERIFY.conditions)]
    request_tag = ("StringEquals", f"aws:RequestTag/{TAG_KEY}", key.name)
    return tagged + [
        Group("Alias", ("kms:UpdateAlias",), "alias"),
        Group("SuccessorTag", ("kms:TagResource",), "new-key", (request_tag,)),
        Group("SuccessorKey", A.ROTATOR_SUCCESSOR_WILDCARD, "wildcard", (
            request_tag,
            ("StringEquals", "kms:KeyOrigin", "AWS_CLOUDHSM" if key.hsm else "AWS_KMS"),
            ("StringEquals", "kms:KeySpec", key.key_spec),
            ("StringEquals", "kms:KeyUsage", usage),
        )),
    ]


def _replicator(key: Key, aws: Aws) -> list[Group]:
    slr = (f"arn:{aws.partition}:iam::{key.account}:role/aws-service-role/"
           f"{A.SLR_MULTI_REGION[0]}/{A.SLR_MULTI_REGION[1]}")
    return _split_special(list(A.REPLICATOR), key, aws) + [
        Group("Replica", A.REPLICA, "replica"),
        Group("ReplicaKey", A.REPLICATOR_WILDCARD, "wildcard",
              (("Bool", "kms:MultiRegion", "true"),)),
        Group("ServiceLinkedRole", ("iam:CreateServiceLinkedRole",), "slr",
              (("StringEquals", "iam:AWSServiceName", A.SLR_MULTI_REGION[0]),), slr=slr),
    ]


def _keystore_admin(key: Key, aws: Aws) -> list[Group]:
    slr = (f"arn:{aws.partition}:iam::{key.account}:role/aws-service-role/"
           f"{A.SLR_CUSTOM_KEY_STORE[0]}/{A.SLR_CUSTOM_KEY_STORE[1]}")
    return [
        Group("KeyStore", A.KEYSTORE_ADMIN_WILDCARD, "wildcard"),
        Group("ServiceLinkedRole", ("iam:CreateServiceLinkedRole",), "slr",
              (("StringEquals", "iam:AWSServiceName", A.SLR_CUSTOM_KEY_STORE[0]),), slr=slr),
    ]


def _auditor(key: Key, aws: Aws) -> list[Group]:
    read = A.AUDITOR + (("kms:GetPublicKey",) if key.type == "sign" else ())
    return [Group("", read, "key"), Group("Wildcard", A.AUDITOR_WILDCARD, "wildcard")]


_BUILDERS = {role: _crypto(role) for role in A.CRYPTO_ROLES} | {
    "admin": _admin, "rotator": _rotator, "replicator": _replicator,
    "keystore-admin": _keystore_admin, "auditor": _auditor,
}


def _special(action: str, key: Key, aws: Aws) -> tuple[str, tuple[str, str, object]] | None:
    """An action that always carries its own condition (rules 8, 9, 10)."""
    if action == "kms:ScheduleKeyDeletion":
        return "DeletionWindow", ("NumericGreaterThanEquals",
                                  "kms:ScheduleKeyDeletionPendingWindowInDays",
                                  str(aws.min_deletion_window_days))
    if action == "kms:EnableKeyRotation":
        return "RotationPeriod", ("NumericLessThanEquals", "kms:RotationPeriodInDays",
                                  str(key.rotation_days))
    if action == "kms:ReplicateKey":
        return "ReplicaRegion", ("StringEquals", "kms:ReplicaRegion", list(key.replica_regions))
    if action == "kms:UpdatePrimaryRegion":
        assert key.region is not None  # an AWS key always has one
        return "PrimaryRegion", ("StringEquals", "kms:PrimaryRegion",
                                 sorted({key.region, *key.replica_regions}))
    return None


def _split_special(names: list[str], key: Key, aws: Aws, scope: str = "key") -> list[Group]:
    plain = tuple(a for a in names if _special(a, key, aws) is None)
    groups = [Group("", plain, scope)] if plain else []
    for action in names:
        found = _special(action, key, aws)
        if found:
            label, condition = found
            if not key.replica_regions and action in A.ADMIN_MULTI_REGION:
                continue  # no replica regions declared: nothing to replicate to
            groups.append(Group(label, (action,), scope, (condition,)))
    return groups


def _with_principal_conditions(group: Group, key: Key, principal: Principal,
                               role: str) -> list[Group]:
    """Add the principal's encryption context (where supported) and ViaService."""
    if group.scope in ("wildcard", "slr"):
        return [group]
    via = (("StringEquals", "kms:ViaService", list(principal.via_service)),) \
        if principal.via_service and group.scope != "alias" else ()
    if not (principal.encryption_context and role in A.CRYPTO_ROLES and key.type == "symmetric"):
        return [Group(group.label, group.actions, group.scope, group.conditions + via, group.slr)]
    context = tuple(("StringEquals", f"kms:EncryptionContext:{k}", v)
                    for k, v in principal.encryption_context)
    with_ctx = tuple(a for a in group.actions if a in A.ENCRYPTION_CONTEXT_ACTIONS)
    without = tuple(a for a in group.actions if a not in A.ENCRYPTION_CONTEXT_ACTIONS)
    out = []
    if with_ctx:
        out.append(Group(group.label, with_ctx, group.scope, group.conditions + context + via))
    if without:
        out.append(Group(group.label + "WithoutContext", without, group.scope,
                         group.conditions + via))
    return out


def service_grant_group(principal: Principal) -> Group:
    """Let AWS services (EBS, RDS, ...) act for a key user, and only them (rule 5)."""
    via = (("StringEquals", "kms:ViaService", list(principal.via_service)),) \
        if principal.via_service else ()
    return Group("AwsResourceGrants", A.SERVICE_GRANTS, "key",
                 (("Bool", "kms:GrantIsForAWSResource", "true"),) + via)
