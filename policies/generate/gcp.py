"""GCP documents from a spec: IAM bindings per CryptoKey, the rotator role.

Predefined roles where one fits (rule 13); rotation gets a custom role with
exactly the permissions it needs (rule 14). Pure functions returning dicts.
"""

from __future__ import annotations

from typing import Any

from .. import actions as A
from ..spec.model import Spec


def rotator_role_name(spec: Spec) -> str:
    return f"projects/{spec.gcp_project or '{project}'}/roles/{A.GCP_ROTATOR_ROLE_ID}"


def rotator_role(spec: Spec) -> dict[str, Any]:
    """The custom role for the rotation worker (create versions, set primary, rewrap)."""
    return {
        "description": "keystead rotation worker: add a key version, make it primary, "
                       "rewrap envelopes, disable the old version.",
        "includedPermissions": sorted(A.GCP_ROTATOR_PERMISSIONS),
        "name": rotator_role_name(spec),
        "stage": "GA",
        "title": "keystead rotator",
    }


def bindings(spec: Spec, key_name: str) -> dict[str, Any]:
    """The IAM policy for one CryptoKey: role -> members, sorted."""
    key = spec.key(key_name)
    by_role: dict[str, set[str]] = {}
    for principal in spec.principals:
        roles = set(principal.roles_on(key_name))
        if not roles:
            continue
        names = set()
        if {"signer", "verifier"} <= roles:  # one predefined role holds both
            names.add(A.GCP_SIGNER_VERIFIER)
            roles -= {"signer", "verifier"}
        for role in roles:
            names.add(rotator_role_name(spec) if role == "rotator"
                      else A.GCP_ROLES[(role, key.type)])
        for name in names:
            assert principal.member is not None  # every GCP principal has one
            by_role.setdefault(name, set()).add(principal.member)
    return {"bindings": [{"members": sorted(members), "role": role}
                         for role, members in sorted(by_role.items())],
            "version": 1}


def needs_rotator_role(spec: Spec) -> bool:
    return any(g.role == "rotator" and spec.key(g.key).cloud == "gcp"
               for p in spec.principals for g in p.grants)
