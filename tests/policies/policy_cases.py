"""Spec builders shared by the policies tests (a plain module, imported by name)."""

from __future__ import annotations

from typing import Any

from keystead.policies.spec import Spec, parse_spec

ACCOUNT = "111122223333"


def small_spec(keys: dict, principals: dict, **top) -> Spec:
    """A spec built in a test: one account, the given keys and principals."""
    data = {"aws": {"account": ACCOUNT, "region": "eu-west-1"}, "gcp": {"project": "p1"},
            "keys": keys, "principals": principals, **top}
    return parse_spec(data)


#: The key types of the role x key-type matrix, as spec tables.
MATRIX_KEYS: dict[str, dict[str, Any]] = {
    "symmetric": {"type": "symmetric"},
    "multi-region": {"multi_region": True, "replica_regions": ["eu-central-1"]},
    "hsm": {"hsm": True},
    "ecc-sign": {"type": "sign", "spec": "ECC_NIST_P256"},
    "hmac": {"type": "hmac"},
    "gcp": {"cloud": "gcp", "resource": "projects/p1/locations/global/keyRings/r/cryptoKeys/k"},
    "gcp-sign": {"cloud": "gcp", "type": "sign",
                 "resource": "projects/p1/locations/global/keyRings/r/cryptoKeys/s"},
}


def matrix_spec(role: str, key_type: str) -> Spec:
    """One key of ``key_type`` and one principal holding ``role`` on it."""
    gcp = key_type.startswith("gcp")
    principal: dict[str, Any] = (
        {"kind": "gcp", "member": "serviceAccount:app@p1.iam.gserviceaccount.com"}
        if gcp else {"kind": "aws-role", "arn": f"arn:aws:iam::{ACCOUNT}:role/app"})
    principal["roles"] = {"k": role}
    return small_spec({"k": dict(MATRIX_KEYS[key_type])}, {"app": principal})
