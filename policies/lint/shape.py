"""The shape of a policy document, checked before any lint rule reads it.

A document AWS IAM or Cloud IAM would refuse (an ``Effect`` of "allow", an
``Action`` that is an object, ``members`` as a string) must not lint clean
because the rules cannot see into it: :func:`check_shape` names the first
field that is wrong, and lint turns that into exit code 2.
"""

from __future__ import annotations

from typing import Any

_STRINGS = "a string or a list of strings"
_STATEMENT_FIELDS = ("Action", "NotAction", "Resource", "NotResource")


def _strings(value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    return bool(items) and all(isinstance(v, str) for v in items)


def _principal(value: Any) -> bool:
    if value == "*":
        return True
    return isinstance(value, dict) and bool(value) and all(
        isinstance(k, str) and _strings(v) for k, v in value.items())


def _condition(value: Any) -> bool:
    def scalar(v: Any) -> bool:
        return isinstance(v, (str, bool, int, float)) and v == v  # NaN is not a value
    return isinstance(value, dict) and all(
        isinstance(block, dict) and all(
            scalar(v) or (isinstance(v, list) and all(scalar(x) for x in v))
            for v in block.values())
        for block in value.values())


def _statement(index: int, stmt: Any) -> str | None:
    where = f"Statement[{index}]"
    if not isinstance(stmt, dict):
        return f"{where}: must be an object"
    if stmt.get("Effect") not in ("Allow", "Deny"):
        return f"{where}.Effect: must be \"Allow\" or \"Deny\", got {stmt.get('Effect')!r}"
    if ("Action" in stmt) == ("NotAction" in stmt):
        return f"{where}.Action: give exactly one of Action and NotAction"
    for field in _STATEMENT_FIELDS:
        if field in stmt and not _strings(stmt[field]):
            return f"{where}.{field}: must be {_STRINGS}"
    for field in ("Principal", "NotPrincipal"):
        if field in stmt and not _principal(stmt[field]):
            return f"{where}.{field}: must be \"*\" or an object of {_STRINGS}"
    if "Condition" in stmt and not _condition(stmt["Condition"]):
        return f"{where}.Condition: must be {{operator: {{key: value or list of values}}}}"
    if "Sid" in stmt and not isinstance(stmt["Sid"], str):
        return f"{where}.Sid: must be a string"
    return None


def _aws(data: dict[str, Any]) -> str | None:
    raw = data["Statement"]
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        return "Statement: must be an object or a list of objects"
    for index, stmt in enumerate(raw):
        problem = _statement(index, stmt)
        if problem:
            return problem
    return None


def _gcp_policy(data: dict[str, Any]) -> str | None:
    bindings = data["bindings"]
    if not isinstance(bindings, list):
        return "bindings: must be a list of {role, members}"
    for index, binding in enumerate(bindings):
        where = f"bindings[{index}]"
        if not isinstance(binding, dict):
            return f"{where}: must be an object with role and members"
        if not isinstance(binding.get("role"), str) or not binding["role"]:
            return f"{where}.role: must be a role name"
        members = binding.get("members")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            return f"{where}.members: must be a list of strings"
    return None


def _gcp_role(data: dict[str, Any]) -> str | None:
    permissions = data["includedPermissions"]
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        return "includedPermissions: must be a list of strings"
    return None


_CHECKS = {"identity": _aws, "key-policy": _aws, "trust": _aws,
           "gcp-policy": _gcp_policy, "gcp-role": _gcp_role}


def check_shape(data: dict[str, Any], kind: str) -> str | None:
    """The first field of ``data`` that is not shaped like a ``kind`` document, or None."""
    return _CHECKS[kind](data)
