"""The IAM spec as frozen values: the AWS account, keys, principals and their grants.

:func:`keystead.policies.spec.parse_spec` builds them; everything else in
policies/ only reads them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Aws:
    account: str
    region: str
    partition: str = "aws"
    root_access: bool = True
    deny_destructive: bool = True
    min_deletion_window_days: int = 30


@dataclass(frozen=True)
class Key:
    name: str
    cloud: str  # "aws" | "gcp"
    type: str  # symmetric | hmac | sign
    key_spec: str
    arn: str | None = None
    alias: str | None = None
    region: str | None = None
    account: str | None = None
    multi_region: bool = False
    replica_regions: tuple[str, ...] = ()
    hsm: bool = False
    rotation_days: int = 90
    resource: str | None = None  # GCP CryptoKey name

    @property
    def rotates_in_place(self) -> bool:
        return self.cloud == "gcp" or (self.type == "symmetric" and not self.hsm)


@dataclass(frozen=True)
class Grant:
    key: str
    role: str


@dataclass(frozen=True)
class Principal:
    name: str
    kind: str  # aws-role | irsa | gcp | worker
    grants: tuple[Grant, ...]
    arn: str | None = None
    member: str | None = None
    issuer: str | None = None
    namespace: str | None = None
    service_account: str | None = None
    encryption_context: tuple[tuple[str, str], ...] = ()
    via_service: tuple[str, ...] = ()
    aws_service_grants: bool = False
    allow_admin_and_crypto: bool = False
    override_reason: str | None = None

    def roles_on(self, key: str) -> tuple[str, ...]:
        return tuple(sorted(g.role for g in self.grants if g.key == key))


@dataclass(frozen=True)
class Spec:
    keys: tuple[Key, ...]
    principals: tuple[Principal, ...]
    aws: Aws | None = None
    gcp_project: str | None = None

    def key(self, name: str) -> Key:
        return next(k for k in self.keys if k.name == name)

    def holders(self, key: str, role: str) -> tuple[Principal, ...]:
        return tuple(p for p in self.principals if Grant(key, role) in p.grants)
