"""The AWS lint rules over identity, key and trust policies (docs/iam-rules.md, rules 1-12)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from typing import Any

from .. import actions as A
from .document import Document, Statement
from .rules import Finding, finding, shorten


def lint_aws(doc: Document) -> list[Finding]:
    out: list[Finding] = []
    statements = doc.statements
    for stmt in statements:
        for rule_id, message in _statement_rules(doc, stmt):
            out.append(finding(rule_id, doc.path, stmt.label, message, doc.line_of(stmt)))
    if doc.kind == "key-policy":
        out += _lockout(doc, statements) + _key_policy_duties(doc, statements)
    if doc.kind == "identity":
        out += _identity_duties(doc, statements)
    return out


def _statement_rules(doc: Document, stmt: Statement) -> Iterator[tuple[str, str]]:
    if not stmt.allow:
        return
    granted = stmt.actions
    root = doc.kind == "key-policy" and stmt.root_only
    lowered = {p.lower() for p in stmt.patterns}
    if not root and ({"*", "kms:*"} & lowered or "NotAction" in stmt.raw):
        yield "KS001", "grants every KMS action (kms:*, * or NotAction)"
    if doc.kind == "identity" and "*" in stmt.resources:
        scoped = {a for a in granted if a.startswith("kms:") and a not in A.WILDCARD_ONLY}
        if scoped:
            yield "KS002", f"Resource \"*\" on actions that take a key ARN: {shorten(scoped)}"
    if stmt.has_condition("kms:BypassPolicyLockoutSafetyCheck", "true"):
        yield "KS004", "allows kms:BypassPolicyLockoutSafetyCheck"
    for pattern in stmt.patterns:
        low = pattern.lower()
        if "*" in low and low not in ("*", "kms:*") and \
                A.expand(pattern) & {"kms:ReEncryptFrom", "kms:ReEncryptTo"}:
            yield "KS006", f"{pattern} grants ReEncryptFrom and ReEncryptTo together"
    if root:
        return
    if "kms:CreateGrant" in granted and not stmt.has_condition("kms:GrantIsForAWSResource", "true"):
        yield "KS007", "kms:CreateGrant without kms:GrantIsForAWSResource true"
    if "*" in stmt.principals and doc.kind == "key-policy":
        if not stmt.has_condition("kms:CallerAccount", positive=True):
            yield "KS008", "Principal \"*\" without kms:CallerAccount: any AWS account"
        elif not stmt.has_condition("kms:ViaService", positive=True):
            yield "KS009", "Principal \"*\" without kms:ViaService"
    for operator, name, _ in stmt.conditions:
        if operator.lower().startswith("forallvalues:") and name.startswith("kms:encryptioncontext"):
            yield "KS010", f"{operator} on {name}: an empty encryption context also matches"
    if any(name.startswith("kms:encryptioncontext") for _, name, _ in stmt.conditions):
        unsupported = {a for a in granted if a.startswith("kms:")} - A.ENCRYPTION_CONTEXT_ACTIONS
        if unsupported:
            yield "KS011", f"encryption context condition on {shorten(unsupported)}"
    if "kms:ScheduleKeyDeletion" in granted and \
            not stmt.has_condition("kms:ScheduleKeyDeletionPendingWindowInDays"):
        yield "KS012", "kms:ScheduleKeyDeletion with any waiting period"
    if "kms:EnableKeyRotation" in granted and not stmt.has_condition("kms:RotationPeriodInDays"):
        yield "KS013", "kms:EnableKeyRotation with any rotation period"
    if "kms:ReplicateKey" in granted and not stmt.has_condition("kms:ReplicaRegion"):
        yield "KS014", "kms:ReplicateKey to any Region"
    if "kms:UpdatePrimaryRegion" in granted and not stmt.has_condition("kms:PrimaryRegion"):
        yield "KS014", "kms:UpdatePrimaryRegion to any Region"
    if any(p.lower() in ("iam:createservicelinkedrole", "iam:*", "*") for p in stmt.patterns) \
            and not stmt.has_condition("iam:AWSServiceName"):
        yield "KS015", "iam:CreateServiceLinkedRole for any service"
    if doc.kind == "trust":
        yield from _trust(stmt)


def _trust(stmt: Statement) -> Iterator[tuple[str, str]]:
    if "*" in stmt.principals:
        yield "KS016", "Principal \"*\" may assume this role"
        return
    if not any(p.lower().startswith("sts:assumerolewithwebidentity") for p in stmt.patterns):
        return
    exact = [(name, values) for op, name, values in stmt.conditions if op == "StringEquals"]
    subs = [v for name, values in exact if name.endswith(":sub") for v in values]
    auds = [v for name, values in exact if name.endswith(":aud") for v in values]
    if not subs or any("*" in s or not s.startswith("system:serviceaccount:") for s in subs):
        yield "KS016", "no StringEquals <issuer>:sub system:serviceaccount:<ns>:<sa>"
    if auds != ["sts.amazonaws.com"]:
        yield "KS016", "no StringEquals <issuer>:aud sts.amazonaws.com"


def _lockout(doc: Document, statements: list[Statement]) -> list[Finding]:
    for stmt in statements:
        if stmt.allow and "kms:PutKeyPolicy" in stmt.actions and stmt.principals and \
                "*" not in stmt.principals:
            return []
    return [finding("KS003", doc.path, "policy",
                    "nobody can change this key policy: the key is unmanageable")]


def _key_policy_duties(doc: Document, statements: list[Statement]) -> list[Finding]:
    by_principal: dict[str, list[Statement]] = {}
    for stmt in statements:
        if stmt.allow and not stmt.root_only:
            for principal in stmt.principals:
                by_principal.setdefault(principal, []).append(stmt)
    out = []
    for principal, stmts in sorted(by_principal.items()):
        granted = set().union(*(s.actions for s in stmts))
        admin, crypto = granted & A.ADMIN_ACTIONS, granted & A.CRYPTO_ACTIONS
        if admin and crypto:
            first = next(s for s in stmts if s.actions & A.ADMIN_ACTIONS)
            out.append(finding("KS005", doc.path, first.label,
                               f"principal {principal} both administers ({shorten(admin)}) and "
                               f"uses ({shorten(crypto)}) the key", doc.line_of(first)))
    return out


def _identity_duties(doc: Document, statements: list[Statement]) -> list[Finding]:
    """One admin statement and one crypto statement whose resources can be the same key.

    Resources overlap when one ARN pattern matches the other (``key/*`` covers
    every key ARN; ``"*"`` covers all); statements that pin a different value of
    the same ``aws:ResourceTag/...`` key are on different keys."""
    allowed = [s for s in statements if s.allow]
    out = []
    for admin_stmt in allowed:
        if not admin_stmt.actions & A.ADMIN_ACTIONS:
            continue
        users = [s for s in allowed if s.actions & A.CRYPTO_ACTIONS and _overlap(admin_stmt, s)]
        if users:
            admin = admin_stmt.actions & A.ADMIN_ACTIONS
            crypto = set().union(*(s.actions for s in users)) & A.CRYPTO_ACTIONS
            out.append(finding("KS005", doc.path, admin_stmt.label,
                               f"this policy both administers ({shorten(admin)}) and uses "
                               f"({shorten(crypto)}) the same key", doc.line_of(admin_stmt)))
    return out


def _resource_tags(stmt: Statement) -> dict[str, tuple[Any, ...]]:
    return {name: values for op, name, values in stmt.conditions
            if name.startswith("aws:resourcetag/") and op == "StringEquals"}


def _overlap(a: Statement, b: Statement) -> bool:
    tags_a, tags_b = _resource_tags(a), _resource_tags(b)
    if any(set(tags_a[k]).isdisjoint(tags_b[k]) for k in tags_a.keys() & tags_b.keys()):
        return False
    return any(fnmatch.fnmatchcase(ra.lower(), rb.lower()) or
               fnmatch.fnmatchcase(rb.lower(), ra.lower())
               for ra in a.resources for rb in b.resources)
