"""``policy from-audit``: the least-privilege policy for what a principal did.

Reads keystead's audit log as JSON lines. Each record is an object with at
least ``actor`` (the principal), ``action`` (a keystead operation such as
"secrets.get"), ``key`` (a key reference; may be absent) and ``result``
("ok", or an error). Only successful records count: a policy should allow
what was done, not what was tried. Each operation maps to the KMS actions
it needs in the one table below; the result is an AWS identity policy scoped
to the key ARNs seen, plus the GCP permissions per CryptoKey.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from .spec.errors import SpecError

#: keystead operation -> (AWS KMS actions, GCP Cloud KMS permissions)
OPERATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "secrets.get": (("kms:Decrypt",), ("cloudkms.cryptoKeyVersions.useToDecrypt",)),
    "secrets.set": (("kms:Encrypt", "kms:GenerateDataKey"),
                    ("cloudkms.cryptoKeyVersions.useToEncrypt",)),
    # What the rotation engine writes (rotation/engine.py: "rotation." + step).
    "rotation.plan": (("kms:DescribeKey",), ("cloudkms.cryptoKeys.get",)),
    "rotation.rotate": (("kms:RotateKeyOnDemand",),
                        ("cloudkms.cryptoKeyVersions.create", "cloudkms.cryptoKeys.update")),
    "rotation.rewrap": (("kms:ReEncryptFrom", "kms:ReEncryptTo"),
                        ("cloudkms.cryptoKeyVersions.useToDecrypt",
                         "cloudkms.cryptoKeyVersions.useToEncrypt")),
    "rotation.verify": (("kms:Decrypt",), ("cloudkms.cryptoKeyVersions.useToDecrypt",)),
    "rotation.disable": (("kms:DisableKey",), ("cloudkms.cryptoKeyVersions.update",)),
    "rotation.retire": (("kms:ScheduleKeyDeletion",), ("cloudkms.cryptoKeyVersions.update",)),
    "rotation.restore_version": (("kms:CancelKeyDeletion", "kms:EnableKey"), ("cloudkms.cryptoKeyVersions.update",)),
    "secrets.export": (("kms:Decrypt",), ("cloudkms.cryptoKeyVersions.useToDecrypt",)),
    "secrets.import": (("kms:Encrypt", "kms:GenerateDataKey"),
                       ("cloudkms.cryptoKeyVersions.useToEncrypt",)),
    "run": (("kms:Decrypt",), ("cloudkms.cryptoKeyVersions.useToDecrypt",)),
    "keys.create": (("kms:CreateKey",), ("cloudkms.cryptoKeys.create",)),
    "keys.describe": (("kms:DescribeKey",), ("cloudkms.cryptoKeys.get",)),
    "keys.status": (("kms:GetKeyRotationStatus", "kms:ListKeyRotations"),
                    ("cloudkms.cryptoKeyVersions.list",)),
    "dr.check": (("kms:DescribeKey",), ("cloudkms.cryptoKeys.get",)),
    "dr.drill": (("kms:Decrypt", "kms:Encrypt"),
                 ("cloudkms.cryptoKeyVersions.useToDecrypt",
                  "cloudkms.cryptoKeyVersions.useToEncrypt")),
    "dr.promote": (("kms:UpdatePrimaryRegion",), ()),  # aws only: GCP keys have no primary region
}
#: Operations that touch no KMS key at all.
NO_KMS = frozenset({"secrets.rm", "secrets.list", "vault.init", "audit.verify", "audit.start", "audit.repair",
                    "audit.reset", "demo.seed", "rotation.rewrap_start", "rotation.retarget", "rotation.restore",
                    "rotation.retire_blocked", "rotation.done", "rotation.fail", "rotation.pause",
                    "rotation.supersede", "rotation.abandon", "rotation.retire_skipped", "rotation.delete_waits",
                    "rotation.unreadable"})
WILDCARD = {"kms:CreateKey"}
DELETION = "kms:ScheduleKeyDeletion"
AWS_KEY = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$")
GCP_KEY = re.compile(r"^(projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+)")


def read_records(path: str | Path) -> list[dict]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SpecError("--audit", f"cannot read {path}: {exc.strerror}") from exc
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpecError("--audit", f"invalid JSON: {exc.msg}", line=number,
                            source=str(path)) from exc
        if not isinstance(record, dict) or "actor" not in record or "action" not in record:
            raise SpecError("--audit", "each record needs 'actor' and 'action'", line=number,
                            source=str(path))
        records.append(record)
    return records


def propose(records: list[dict], principal: str, *, min_deletion_window_days: int = 30) -> dict:
    """The proposal for ``principal``: AWS policy, GCP permissions, what was not mapped.

    ScheduleKeyDeletion comes with its minimum waiting period (iam-rules.md rule 8),
    like every generated policy; the audit log does not record the window used."""
    aws: dict[str, set[str]] = {}
    gcp: dict[str, set[str]] = {}
    unmapped: Counter[tuple[str, str, str]] = Counter()
    used = 0
    for record in records:
        if record.get("actor") != principal or record.get("result", "ok") != "ok":
            continue
        used += 1
        operation = str(record["action"])
        if operation in NO_KMS:
            continue
        # A secret's record names every key it used, separated by spaces (keystead/audit.py).
        for key in str(record.get("key") or "").split() or [""]:
            _map(operation, key, aws, gcp, unmapped)
    out: dict = {"principal": principal, "records": used}
    if aws:
        out["aws_identity_policy"] = _policy(aws, min_deletion_window_days)
    if gcp:
        out["gcp_permissions"] = {k: sorted(v) for k, v in sorted(gcp.items())}
    out["unmapped"] = [{"action": a, "key": k, "reason": r, "count": n}
                       for (a, k, r), n in sorted(unmapped.items())]
    return out


def _map(operation: str, key: str, aws: dict, gcp: dict, unmapped: Counter) -> None:
    """Add what ``operation`` on ``key`` needs to ``aws`` / ``gcp``, or count it as unmapped."""
    if operation not in OPERATIONS:
        unmapped[(operation, key, "no KMS permission is known for this operation")] += 1
        return
    aws_actions, gcp_permissions = OPERATIONS[operation]
    gcp_match = GCP_KEY.match(key)
    if AWS_KEY.match(key) or (not key and set(aws_actions) <= WILDCARD):
        for action in aws_actions:
            aws.setdefault("*" if action in WILDCARD else key, set()).add(action)
    elif gcp_match:
        gcp.setdefault(gcp_match.group(1), set()).update(gcp_permissions)
    elif key.startswith(("local:", "age1")):
        return  # keystead's own keys: no cloud permission involved
    elif not key:
        unmapped[(operation, key, "the record names no key")] += 1
    else:
        unmapped[(operation, key, "not a key ARN or CryptoKey name (aliases and bare ids "
                                  "cannot scope a policy)")] += 1


def _policy(by_resource: dict[str, set[str]], window_days: int) -> dict:
    statements = []
    for resource, actions in sorted(by_resource.items()):
        sid = "WildcardOnlyActions" if resource == "*" else \
            "Key" + re.sub(r"[^A-Za-z0-9]", "", resource.split(":")[3] + resource.rsplit("/", 1)[1])
        plain = sorted(actions - {DELETION})
        if plain:
            statements.append(_statement(sid, plain, resource))
        if DELETION in actions:
            statements.append(_statement(sid + "DeletionWindow", [DELETION], resource, {
                "NumericGreaterThanEquals": {
                    "kms:ScheduleKeyDeletionPendingWindowInDays": str(window_days)}}))
    return {"Version": "2012-10-17", "Statement": sorted(statements, key=lambda s: s["Sid"])}


def _statement(sid: str, names: list[str], resource: str, condition: dict | None = None) -> dict:
    out: dict = {"Sid": sid, "Effect": "Allow", "Action": names[0] if len(names) == 1 else names,
                 "Resource": resource}
    if condition:
        out["Condition"] = condition
    return out
