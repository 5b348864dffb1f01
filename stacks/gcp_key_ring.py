"""``keystead:gcp:KeyRing``: a Cloud KMS key ring, its CryptoKeys and their additive IAM members.

Each CryptoKey carries its own purpose, algorithm and protection level (set per key, not
per ring), a rotation period (symmetric keys: GCP does not rotate asymmetric keys, the
worker does, by successor), the destroy-scheduled duration and ``protect=True``. Access is
granted with CryptoKeyIAMMember, one member at a time, so grants made outside the stack
survive (an authoritative binding would erase them); the members come from policies/.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

TYPE = "keystead:gcp:KeyRing"
DAY = 86400
PURPOSE = {"symmetric": "ENCRYPT_DECRYPT", "sign": "ASYMMETRIC_SIGN"}


@dataclass(frozen=True)
class CryptoKeySpec:
    key_name: str  # the keystead key name
    crypto_key: str  # the CryptoKey's own name (last part of its resource name)
    type: str  # symmetric | sign
    algorithm: str
    protection_level: str = "SOFTWARE"
    rotation_days: int = 90
    destroy_scheduled_days: int = 30
    members: Sequence[tuple[str, str]] = ()  # (role, member), from keystead.policies.generate.gcp.bindings

    @property
    def rotation_period(self) -> str | None:
        return f"{self.rotation_days * DAY}s" if self.type == "symmetric" else None


@dataclass(frozen=True)
class GcpKeyRingArgs:
    project: str
    location: str
    ring: str  # the key ring's own name
    keys: Sequence[CryptoKeySpec] = field(default_factory=tuple)


def member_resource_name(key: str, role: str, member: str) -> str:
    """A stable name per (key, role, member): reordering grants never replaces one."""
    digest = hashlib.sha256(f"{role} {member}".encode()).hexdigest()[:8]
    return f"{key}-{role.rsplit('/', 1)[-1]}-{member.partition(':')[2].split('@')[0]}-{digest}"


class GcpKeyRing(pulumi.ComponentResource):
    key_ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: GcpKeyRingArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE, name, None, opts)
        self.ring = gcp.kms.KeyRing(name, name=args.ring, location=args.location, project=args.project,
                                    opts=pulumi.ResourceOptions(parent=self, protect=True))
        self.crypto_keys: dict[str, gcp.kms.CryptoKey] = {}
        self.key_ids = {}
        for spec in args.keys:
            external = spec.protection_level in ("EXTERNAL", "EXTERNAL_VPC")
            crypto_key = gcp.kms.CryptoKey(
                spec.key_name, name=spec.crypto_key, key_ring=self.ring.id, purpose=PURPOSE[spec.type],
                rotation_period=spec.rotation_period,
                destroy_scheduled_duration=f"{spec.destroy_scheduled_days * DAY}s",
                version_template=gcp.kms.CryptoKeyVersionTemplateArgs(
                    algorithm=spec.algorithm, protection_level=spec.protection_level),
                skip_initial_version_creation=True if external else None,  # versions need the external key
                labels={"keystead-key": spec.key_name},
                opts=pulumi.ResourceOptions(parent=self, protect=True))
            for role, member in spec.members:
                gcp.kms.CryptoKeyIAMMember(
                    member_resource_name(spec.key_name, role, member), crypto_key_id=crypto_key.id,
                    role=role, member=member, opts=pulumi.ResourceOptions(parent=self))
            self.crypto_keys[spec.key_name] = crypto_key
            self.key_ids[spec.key_name] = crypto_key.id
        self.register_outputs({"keyRing": self.ring.id, "keyIds": self.key_ids})
