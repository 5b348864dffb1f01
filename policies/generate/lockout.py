"""The lockout check: does a key policy still let the deploying principal administer the key?

AWS refuses CreateKey, ReplicateKey and PutKeyPolicy with MalformedPolicyDocumentException
when the new policy would stop the caller from changing it again (the "policy lockout
safety check"). The stack runs this check offline, on every key policy it is about to
declare, so that a bad spec fails before ``pulumi up`` touches anything. There is no
bypass: keystead's own policies deny ``kms:BypassPolicyLockoutSafetyCheck``.

The evaluation is deliberately narrow and conservative. An Allow counts only without
conditions; the account-root principal counts (it delegates to the deployer's IAM
policies, which keystead assumes grant the deployer kms:*); a Deny applies unless its
conditions are ones this module can evaluate and they exclude the deployer.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Any

from keystead.errors import PolicyError

ACTION = "kms:PutKeyPolicy"
PRINCIPAL = re.compile(r"^arn:(aws[a-z-]*):(iam|sts)::(\d{12}):(.+)$")
NEVER_SET = {"kms:BypassPolicyLockoutSafetyCheck"}  # keystead never sends it as true


class LockoutError(PolicyError):
    """A key policy would lock the deploying principal out of the key (exit 10)."""


def principal_arn(arn: str) -> str:
    """The ARN AWS compares in ``aws:PrincipalArn``: an assumed-role session's role ARN."""
    match = PRINCIPAL.match(arn)
    if not match:
        raise PolicyError(f"keystead:deployer: not an IAM role, user or root ARN: {arn!r}")
    partition, service, account, rest = match.groups()
    if service == "sts":
        if not rest.startswith("assumed-role/") or rest.count("/") < 2:
            raise PolicyError(f"keystead:deployer: not an assumed-role session ARN: {arn!r}")
        rest = "role/" + rest.split("/")[1]
    return f"arn:{partition}:iam::{account}:{rest}"


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _covers(patterns: Any, action: str) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), str(p).lower()) for p in _list(patterns))


def _names(stmt: Mapping[str, Any], deployer: str, root: str, account: str) -> bool:
    principal = stmt.get("Principal")
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        return False
    return any(p in ("*", deployer, root, account) for p in _list(principal.get("AWS", [])))


def _acts(stmt: Mapping[str, Any]) -> bool:
    if "NotAction" in stmt:
        return not _covers(stmt["NotAction"], ACTION)
    return _covers(stmt.get("Action", []), ACTION)


def _deny_applies(conditions: Mapping[str, Any], deployer: str) -> str | None:
    """None when the Deny's conditions exclude the deployer, else why it may apply."""
    for operator, tests in conditions.items():
        for name, value in tests.items():
            values = [str(v) for v in _list(value)]
            if name in NEVER_SET and operator == "Bool" and values == ["true"]:
                return None
            if name.lower() == "aws:principalarn":
                match = any(fnmatch.fnmatchcase(deployer, v) for v in values)
                if operator in ("ArnNotEquals", "ArnNotLike", "StringNotEquals", "StringNotLike") and match:
                    return None
                if operator in ("ArnEquals", "ArnLike", "StringEquals", "StringLike") and not match:
                    return None
                continue
            return f"its condition {operator} {name} cannot be evaluated offline"
    return "it applies to the deployer"


def check_admin_access(document: Mapping[str, Any], *, deployer: str, where: str) -> None:
    """Raise :class:`LockoutError` unless ``document`` lets ``deployer`` call kms:PutKeyPolicy.

    ``where`` names the key in the message (e.g. ``keys.vault`` or ``keys.vault (eu-central-1)``).
    """
    who = principal_arn(deployer)
    partition, account = who.split(":")[1], who.split(":")[4]
    root = f"arn:{partition}:iam::{account}:root"
    hint = ("give the deployer 'admin' on this key in the spec, keep aws.root_access = true, "
            "or set keystead:deployer to a key admin")
    allowed = False
    for index, stmt in enumerate(_list(document.get("Statement", []))):
        if not isinstance(stmt, Mapping) or not _names(stmt, who, root, account) or not _acts(stmt):
            continue
        sid = stmt.get("Sid", f"#{index}")
        if stmt.get("Effect") == "Deny":
            reason = _deny_applies(stmt.get("Condition", {}), who)
            if reason is not None:
                raise LockoutError(f"{where}: the key policy would lock the deployer {who} out "
                                   f"(AWS rejects it with MalformedPolicyDocumentException): Deny {sid} "
                                   f"denies kms:PutKeyPolicy and {reason}; {hint}")
        elif stmt.get("Effect") == "Allow" and not stmt.get("Condition"):
            allowed = True
    if not allowed:
        raise LockoutError(f"{where}: the key policy would lock the deployer {who} out (AWS rejects it "
                           f"with MalformedPolicyDocumentException): no unconditional Allow of "
                           f"kms:PutKeyPolicy names it or the account root; {hint}")
