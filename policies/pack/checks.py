"""The policy checks of keystead's stacks, on resources as Pulumi hands them over.

Pure Python (no pulumi import): the CrossGuard pack (``crossguard.py``, run by
``pulumi preview --policy-pack policies/pack``) and ``keystead plan`` (the
program under Pulumi's mocks) both call these functions, so a stack is held to
one set of rules wherever it is checked.

A :class:`Resource` is what CrossGuard's ``args`` and the mocks carry: the type
token (``aws:kms/key:Key``), the resource name, the camelCase property bag
(numbers may arrive as floats, ``90.0``; unset arguments are absent) and the
``protect`` option. The rules (docs/policies.md, "CrossGuard pack")::

    kms-rotation          AWS keys that can rotate in place have enableKeyRotation
                          true and rotationPeriodInDays <= max (absent: AWS's 365)
    kms-deletion-window   deletionWindowInDays (AWS keys and replicas) and
                          destroyScheduledDuration (GCP keys) >= min
    kms-replica           a multi-region primary has a ReplicaKey in another region
    kms-key-policy        a key policy (the ``policy`` prop) passes keystead's lint
    gcp-rotation          a GCP CryptoKey that can rotate has rotationPeriod <= max
    gcp-protect           a GCP CryptoKey has the ``protect`` resource option

Keys that cannot rotate in place (a custom key store, an asymmetric or HMAC
spec, a non-ENCRYPT_DECRYPT usage; GCP asymmetric purposes) are exempt from
the rotation rules: the worker rotates them by successor.

A property whose value is not known yet (CrossGuard's preview proxies raise
when one is read) is only read by the rule that needs it, so one unknown
value does not hide the other rules; :data:`RESOURCE_RULES` lets the pack
register each rule as its own policy.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keystead.policies.lint import LintInputError, lint_document, parse

KEY = "aws:kms/key:Key"
REPLICA_KEY = "aws:kms/replicaKey:ReplicaKey"
KEY_POLICY = "aws:kms/keyPolicy:KeyPolicy"
EXTERNAL_KEY = "aws:kms/externalKey:ExternalKey"
REPLICA_EXTERNAL_KEY = "aws:kms/replicaExternalKey:ReplicaExternalKey"
GCP_CRYPTO_KEY = "gcp:kms/cryptoKey:CryptoKey"

AWS_DEFAULT_ROTATION_DAYS = 365
"""What AWS uses when rotation is enabled without RotationPeriodInDays."""
AWS_ROTATION_RANGE = (90, 2560)
AWS_DELETION_RANGE = (7, 30)
AWS_DEFAULT_DELETION_DAYS = 30
DAY_SECONDS = 86400
TAG = "keystead:key"
REPLICA_RULE = "kms-replica"

_GCP_ROTATING_PURPOSES = frozenset({"ENCRYPT_DECRYPT", "RAW_ENCRYPT_DECRYPT"})
_DURATION = re.compile(r"(\d+(?:\.\d+)?)s")


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    props: Mapping[str, Any]
    protect: bool = False


@dataclass(frozen=True)
class Settings:
    max_rotation_days: int = 90
    min_deletion_window_days: int = 7


@dataclass(frozen=True)
class Violation:
    resource: str
    rule: str
    message: str


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    check: Callable[[Resource, Settings], Iterator[str]]
    """Yields one message per problem of one resource."""


# -- values as Pulumi gives them ---------------------------------------------------------

def _number(value: Any) -> float | None:
    """An int or a float (CrossGuard and the mocks send floats: ``90.0``); None if absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _days(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def duration_seconds(value: Any) -> float | None:
    """A protobuf duration string (``"7776000s"``) in seconds; None if it is not one."""
    if not isinstance(value, str):
        return None
    m = _DURATION.fullmatch(value.strip())
    return float(m.group(1)) if m else None


def rotates_in_place(props: Mapping[str, Any]) -> bool:
    """Whether AWS can rotate this key's material itself (symmetric, AWS_KMS, no custom key store)."""
    if props.get("customKeyStoreId") or props.get("xksKeyId"):
        return False
    if str(props.get("origin") or "AWS_KMS") != "AWS_KMS":
        return False
    spec = props.get("keySpec") or props.get("customerMasterKeySpec") or "SYMMETRIC_DEFAULT"
    usage = props.get("keyUsage") or "ENCRYPT_DECRYPT"
    return spec == "SYMMETRIC_DEFAULT" and usage == "ENCRYPT_DECRYPT"


# -- per-resource rules ------------------------------------------------------------------

def _kms_rotation(r: Resource, settings: Settings) -> Iterator[str]:
    if r.type != KEY or not rotates_in_place(r.props):
        return
    if r.props.get("enableKeyRotation") is not True:
        yield "enableKeyRotation must be true (a symmetric AWS_KMS key rotates in place)"
        return
    given = _number(r.props.get("rotationPeriodInDays"))
    period = AWS_DEFAULT_ROTATION_DAYS if given is None else given
    lo, hi = AWS_ROTATION_RANGE
    if not lo <= period <= hi:
        yield f"rotationPeriodInDays {_days(period)} is outside AWS's range {lo}..{hi}"
    elif period > settings.max_rotation_days:
        where = "rotationPeriodInDays" if given is not None else "rotationPeriodInDays is unset: AWS uses"
        yield f"{where} {_days(period)} > {settings.max_rotation_days} (the maximum rotation period)"


def _kms_deletion_window(r: Resource, settings: Settings) -> Iterator[str]:
    if r.type in (KEY, REPLICA_KEY, EXTERNAL_KEY, REPLICA_EXTERNAL_KEY):
        raw = r.props.get("deletionWindowInDays")
        days = _number(raw)
        if raw is None:
            return  # AWS's default, 30 days
        lo, hi = AWS_DELETION_RANGE
        if days is None or not lo <= days <= hi:
            yield f"deletionWindowInDays {raw!r} is outside AWS's range {lo}..{hi}"
        elif days < settings.min_deletion_window_days:
            yield f"deletionWindowInDays {_days(days)} < {settings.min_deletion_window_days} (the minimum)"
    elif r.type == GCP_CRYPTO_KEY:
        raw = r.props.get("destroyScheduledDuration")
        if raw is None:
            return  # GCP's default, 30 days
        seconds = duration_seconds(raw)
        if seconds is None:
            yield f"destroyScheduledDuration {raw!r} is not a duration such as \"2592000s\""
        elif seconds < settings.min_deletion_window_days * DAY_SECONDS:
            yield (f"destroyScheduledDuration {raw} is {_days(seconds / DAY_SECONDS)} days "
                   f"< {settings.min_deletion_window_days} (the minimum)")


def _kms_key_policy(r: Resource, _settings: Settings) -> Iterator[str]:
    if r.type not in (KEY, REPLICA_KEY, KEY_POLICY, EXTERNAL_KEY, REPLICA_EXTERNAL_KEY):
        return
    policy = r.props.get("policy")
    if policy is None:
        if r.type == KEY_POLICY:
            yield "a KeyPolicy without a policy"
        return  # AWS's default key policy: the account root only
    text = policy if isinstance(policy, str) else json.dumps(policy, sort_keys=True)
    yield from key_policy_problems(text)


@functools.lru_cache(maxsize=512)
def key_policy_problems(text: str) -> tuple[str, ...]:
    """The lint's error-level findings on one key policy document, as messages (cached by text: a primary and
    its replicas carry the same document)."""
    try:
        doc = parse(text, "policy")
    except LintInputError as exc:
        return (f"the key policy cannot be read: {exc}",)
    if doc.kind != "key-policy":
        return (f"the policy prop is not a key policy (it reads as {doc.kind})",)
    return tuple(f"key policy {f.rule} [{f.statement}] {f.message} (fix: {f.fix})"
                 for f in lint_document(doc) if f.at_least("error"))


def _gcp_rotation(r: Resource, settings: Settings) -> Iterator[str]:
    if r.type != GCP_CRYPTO_KEY or str(r.props.get("purpose") or "ENCRYPT_DECRYPT") not in _GCP_ROTATING_PURPOSES:
        return
    raw = r.props.get("rotationPeriod")
    if raw is None:
        yield "rotationPeriod is not set: the key never rotates"
        return
    seconds = duration_seconds(raw)
    if seconds is None:
        yield f"rotationPeriod {raw!r} is not a duration such as \"7776000s\""
    elif seconds < DAY_SECONDS:
        yield f"rotationPeriod {raw} is under one day (GCP's minimum)"
    elif seconds > settings.max_rotation_days * DAY_SECONDS:
        yield (f"rotationPeriod {raw} is {_days(seconds / DAY_SECONDS)} days "
               f"> {settings.max_rotation_days} (the maximum rotation period)")


def _gcp_protect(r: Resource, _settings: Settings) -> Iterator[str]:
    if r.type == GCP_CRYPTO_KEY and not r.protect:
        yield "the CryptoKey lacks the protect resource option (a destroyed key loses every version)"


RESOURCE_RULES: tuple[Rule, ...] = (
    Rule("kms-rotation", "AWS KMS keys that can rotate in place have rotation enabled, "
         "at most the maximum rotation period", _kms_rotation),
    Rule("kms-deletion-window", "KMS keys wait at least the minimum deletion window before deletion",
         _kms_deletion_window),
    Rule("kms-key-policy", "Key policies pass keystead's IAM lint (no error-level finding)", _kms_key_policy),
    Rule("gcp-rotation", "GCP CryptoKeys that can rotate have a rotationPeriod of at most the maximum",
         _gcp_rotation),
    Rule("gcp-protect", "GCP CryptoKeys carry the protect resource option", _gcp_protect),
)


def check_rule(rule: Rule, r: Resource, settings: Settings) -> list[Violation]:
    return [Violation(r.name, rule.id, message) for message in rule.check(r, settings)]


def check_resource(r: Resource, settings: Settings) -> list[Violation]:
    """Every per-resource rule on ``r``."""
    return [v for rule in RESOURCE_RULES for v in check_rule(rule, r, settings)]


# -- stack-level: replicas ---------------------------------------------------------------

def _tag(props: Mapping[str, Any]) -> str | None:
    tags = props.get("tags")
    value = tags.get(TAG) if isinstance(tags, Mapping) else None
    return value if isinstance(value, str) and value else None


def _identifiers(props: Mapping[str, Any]) -> set[str]:
    return {v for v in (props.get("arn"), props.get("keyId"), props.get("id")) if isinstance(v, str) and v}


def _replica_of(primary: Resource, replica: Resource) -> bool:
    """The replica's primaryKeyArn names the primary (its arn, or ends in its key id); in a graph
    of inputs only, where the primary's arn is not known, both carry the same ``keystead:key`` tag."""
    target = replica.props.get("primaryKeyArn")
    ids = _identifiers(primary.props)
    if isinstance(target, str) and ids:
        return target in ids or any(target.endswith("/" + i) for i in ids)
    tag = _tag(primary.props)
    return tag is not None and tag == _tag(replica.props)


def check_replicas(resources: Sequence[Resource], _settings: Settings | None = None) -> list[Violation]:
    """Each multi-region primary (``multiRegion`` true) has a ReplicaKey in a region other than its own."""
    replicas = [r for r in resources if r.type == REPLICA_KEY]
    out = []
    for key in resources:
        if key.type != KEY or key.props.get("multiRegion") is not True:
            continue
        home = key.props.get("region")
        mine = [r for r in replicas if _replica_of(key, r)]
        elsewhere = [r for r in mine if not (isinstance(home, str) and r.props.get("region") == home)]
        if not mine:
            out.append(Violation(key.name, REPLICA_RULE, "a multi-region key without a ReplicaKey: "
                                 "declare one in a DR region (or set multiRegion false)"))
        elif not elsewhere:
            out.append(Violation(key.name, REPLICA_RULE, f"every ReplicaKey of this multi-region key is in its "
                                 f"own region {home}: place one in another region"))
    return out


@dataclass(frozen=True)
class StackRule:
    id: str
    description: str
    check: Callable[[Sequence[Resource], Settings], list[Violation]]


STACK_RULES: tuple[StackRule, ...] = (
    StackRule(REPLICA_RULE, "Multi-region AWS KMS keys have a ReplicaKey in another region", check_replicas),
)


def check_stack(resources: Sequence[Resource], settings: Settings) -> list[Violation]:
    """Every rule: each resource's, then the stack-level ones."""
    out = [v for r in resources for v in check_resource(r, settings)]
    return out + [v for rule in STACK_RULES for v in rule.check(resources, settings)]


__all__ = [
    "RESOURCE_RULES",
    "STACK_RULES",
    "Resource",
    "Rule",
    "Settings",
    "StackRule",
    "Violation",
    "check_replicas",
    "check_resource",
    "check_rule",
    "check_stack",
    "duration_seconds",
    "key_policy_problems",
    "rotates_in_place",
]
