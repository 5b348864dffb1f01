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
    dr_regions: tuple[str, ...] = ()  # the replica Regions of keys declared with dr = true


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
    key_store: str | None = None  # the [hsm_stores] entry of an HSM-backed key
    deletion_window_days: int = 30  # AWS: pending window when the key is deleted
    protection_level: str = "SOFTWARE"  # GCP: SOFTWARE | HSM | EXTERNAL | EXTERNAL_VPC
    algorithm: str | None = None  # GCP: the version template's algorithm
    destroy_scheduled_days: int = 30  # GCP: how long a destroyed version stays restorable

    @property
    def created_by_stack(self) -> bool:
        """An AWS key without an ARN, or any GCP key: the stack declares it."""
        return self.cloud == "gcp" or self.arn is None

    @property
    def location(self) -> str | None:
        """GCP: the CryptoKey's location (from its resource name)."""
        return self.resource.split("/")[3] if self.resource else None

    @property
    def key_ring(self) -> str | None:
        """GCP: the key ring's resource name ``projects/P/locations/L/keyRings/R``."""
        return self.resource.rsplit("/", 2)[0] if self.resource else None

    @property
    def rotates_in_place(self) -> bool:
        return self.cloud == "gcp" or (self.type == "symmetric" and not self.hsm)


@dataclass(frozen=True)
class HsmStore:
    """A CloudHSM cluster and the KMS custom key store on it (created by the stack)."""

    name: str
    region: str
    subnets: tuple[tuple[str, str], ...]  # (subnet id, availability zone), one HSM in each
    hsm_type: str = "hsm2m.medium"
    mode: str = "FIPS"
    backup_retention_days: int = 90
    source_backup_id: str | None = None


@dataclass(frozen=True)
class WorkerTrust:
    """Who may assume a worker's role: an EKS service account (IRSA) or named roles."""

    issuer: str | None = None  # IRSA: the cluster's OIDC issuer URL
    namespace: str | None = None
    service_account: str | None = None
    trusted: tuple[str, ...] = ()  # assume-role: the role/user ARNs that may assume it


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
    trust: WorkerTrust | None = None  # workers only: the trust of the role the stack creates

    def roles_on(self, key: str) -> tuple[str, ...]:
        return tuple(sorted(g.role for g in self.grants if g.key == key))


@dataclass(frozen=True)
class Spec:
    keys: tuple[Key, ...]
    principals: tuple[Principal, ...]
    aws: Aws | None = None
    gcp_project: str | None = None
    hsm_stores: tuple[HsmStore, ...] = ()

    def key(self, name: str) -> Key:
        return next(k for k in self.keys if k.name == name)

    def holders(self, key: str, role: str) -> tuple[Principal, ...]:
        return tuple(p for p in self.principals if Grant(key, role) in p.grants)

    def store(self, name: str) -> HsmStore:
        return next(s for s in self.hsm_stores if s.name == name)

    @property
    def workers(self) -> tuple[Principal, ...]:
        return tuple(p for p in self.principals if p.kind == "worker")
