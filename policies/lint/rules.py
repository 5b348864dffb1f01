"""The lint rules: id, severity, what it catches, the one-line fix.

Each rule traces to a numbered rule in docs/iam-rules.md (the ``source``
field), so every rule there is a lint rule; that page explains each one for
users, and docs/policies.md carries the same table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

SEVERITIES = ("note", "warning", "error")


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    severity: str
    source: str
    summary: str
    fix: str


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    file: str
    statement: str  # Sid, "Statement[2]", "bindings[0]", or "policy"
    message: str
    fix: str
    line: int | None = None

    def at_least(self, severity: str) -> bool:
        return SEVERITIES.index(self.severity) >= SEVERITIES.index(severity)


_RULES = [
    Rule("KS001", "kms-wildcard-action", "error", "rule 1",
         "grants kms:* (or *): every KMS action, key management and use together",
         "list the actions the role needs (keystead policy generate writes them)"),
    Rule("KS002", "resource-star", "error", "rule 1",
         "Resource \"*\" on actions that take a key ARN",
         "scope the statement to key ARNs; only the 11 wildcard-only actions go on \"*\""),
    Rule("KS003", "missing-lockout-safe-statement", "error", "rule 2",
         "no statement lets the account root or any principal change the key policy",
         "add the account-root kms:* statement, or grant kms:PutKeyPolicy to an admin role"),
    Rule("KS004", "lockout-check-bypass", "error", "rule 2",
         "allows skipping the key policy lockout safety check",
         "remove kms:BypassPolicyLockoutSafetyCheck true; Deny it instead"),
    Rule("KS005", "admin-and-crypto", "error", "rules 3, 8",
         "one principal may both administer a key and use it (separation of duties)",
         "give key administration and key use to different roles"),
    Rule("KS006", "reencrypt-wildcard", "warning", "rule 4",
         "kms:ReEncrypt* instead of the two actions it stands for",
         "write kms:ReEncryptFrom and kms:ReEncryptTo (only where needed)"),
    Rule("KS007", "unconditioned-grant", "error", "rule 5",
         "kms:CreateGrant without kms:GrantIsForAWSResource true",
         "add Condition Bool kms:GrantIsForAWSResource \"true\""),
    Rule("KS008", "public-principal", "error", "rule 6",
         "Principal \"*\" without a kms:CallerAccount condition",
         "add Condition StringEquals kms:CallerAccount <account> (and kms:ViaService)"),
    Rule("KS009", "public-principal-without-via-service", "warning", "rule 6",
         "Principal \"*\" limited by account but not by kms:ViaService",
         "add Condition StringEquals kms:ViaService <service>.<region>.amazonaws.com"),
    Rule("KS010", "forallvalues-encryption-context", "error", "rule 7",
         "ForAllValues on an encryption context key also matches an empty context",
         "use StringEquals on kms:EncryptionContext:<key>"),
    Rule("KS011", "encryption-context-unsupported-action", "warning", "rule 7",
         "an encryption context condition on actions that never carry one",
         "move those actions to a statement without the encryption context condition"),
    Rule("KS012", "deletion-without-window", "warning", "rule 8",
         "kms:ScheduleKeyDeletion without a minimum waiting period",
         "add NumericGreaterThanEquals kms:ScheduleKeyDeletionPendingWindowInDays <days>"),
    Rule("KS013", "rotation-without-period", "note", "rule 9",
         "kms:EnableKeyRotation without a bound on the rotation period",
         "add NumericLessThanEquals kms:RotationPeriodInDays <days>"),
    Rule("KS014", "replication-without-region", "warning", "rule 10",
         "kms:ReplicateKey / UpdatePrimaryRegion to any Region",
         "add StringEquals kms:ReplicaRegion / kms:PrimaryRegion with the DR Regions"),
    Rule("KS015", "service-linked-role-unscoped", "warning", "rule 11",
         "iam:CreateServiceLinkedRole for any service",
         "add StringEquals iam:AWSServiceName (cks.kms.amazonaws.com / mrk.kms.amazonaws.com)"),
    Rule("KS016", "web-identity-trust-unconstrained", "error", "rule 12",
         "a web identity trust without exact sub and aud conditions",
         "add StringEquals <issuer>:sub system:serviceaccount:<ns>:<sa> and <issuer>:aud "
         "sts.amazonaws.com"),
    Rule("KS017", "gcp-public-member", "error", "rule 13",
         "allUsers / allAuthenticatedUsers bound on a key",
         "bind service accounts or groups only"),
    Rule("KS018", "gcp-admin-and-crypto", "error", "rule 13",
         "one member holds cloudkms.admin and an encrypt/decrypt/sign role",
         "bind administration and key use to different members"),
    Rule("KS019", "gcp-crypto-operator", "warning", "rule 13",
         "roles/cloudkms.cryptoOperator grants every crypto operation",
         "bind the narrow role: cryptoKeyEncrypter, cryptoKeyDecrypter, signer, ..."),
    Rule("KS020", "gcp-rotator-excess", "warning", "rule 14",
         "a rotation role with permissions rotation does not need",
         "keep only the permissions of keystead's keysteadRotator role"),
    Rule("KS021", "broader-than-spec", "error", "--against",
         "a live policy grants more than the IAM spec does",
         "regenerate from the spec (keystead policy generate) or widen the spec on purpose"),
]
RULES: dict[str, Rule] = {rule.id: rule for rule in _RULES}


def shorten(names: Iterable[str], most: int = 4) -> str:
    """Names sorted and joined, the first ``most`` of them and a count of the rest."""
    ordered = sorted(names)
    rest = f" (+{len(ordered) - most} more)" if len(ordered) > most else ""
    return ", ".join(ordered[:most]) + rest


def finding(rule_id: str, file: str, statement: str, message: str,
            line: int | None = None) -> Finding:
    rule = RULES[rule_id]
    return Finding(rule=rule_id, severity=rule.severity, file=file, statement=statement,
                   message=message, fix=rule.fix, line=line)
