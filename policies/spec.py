"""The IAM spec: who may do what with which keys, parsed into frozen values.

``load_spec(path)`` reads TOML (or YAML when PyYAML is installed) and
``parse_spec(data)`` validates a plain mapping. Every error is a
:class:`SpecError` naming the field, and the line when the text is TOML.
The format is documented in docs/policies.md.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import actions
from .errors import SeparationOfDuties, SpecError
from .locate import toml_line

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
ACCOUNT = re.compile(r"^\d{12}$")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
KEY_ARN = re.compile(
    r"^arn:(aws[a-z-]*):kms:([a-z0-9-]+):(\d{12}):key/((?:mrk-[0-9a-f]{32})|[0-9a-f-]{36})$")
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):(role|user)/[\w+=,.@/-]{1,512}$")
ALIAS = re.compile(r"^alias/[A-Za-z0-9/_-]{1,250}$")
GCP_KEY = re.compile(
    r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$")
GCP_MEMBER = re.compile(r"^(serviceAccount|group|user|domain|principal|principalSet):\S+$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
SERVICE = re.compile(r"^[a-z0-9-]+\.[a-z0-9-]+\.amazonaws\.com$")
DEFAULT_SPEC = {"symmetric": "SYMMETRIC_DEFAULT", "hmac": "HMAC_256", "sign": "ECC_NIST_P256"}
WORKERS = {"rotation": ("rotation-worker", "rotator"), "replicator": ("dr-replicator", "replicator")}


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


class _Reader:
    """Typed access to the raw mapping that fails with field and line."""

    def __init__(self, text: str | None, source: str | None) -> None:
        self.text, self.source = text, source

    def fail(self, path: tuple[str, ...], message: str, cls: type[SpecError] = SpecError):
        line = toml_line(self.text, path) if self.text else None
        raise cls(".".join(path) or "spec", message, line=line, source=self.source)

    def get(self, data: Mapping[str, Any], path: tuple[str, ...], name: str, kind: type,
            default: Any = None, required: bool = False) -> Any:
        if name not in data:
            if required:
                self.fail(path, f"missing required field '{name}'")
            return default
        value = data[name]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            self.fail(path + (name,), f"must be {_kind_name(kind)}, got {value!r}")
        return value

    def table(self, data: Mapping[str, Any], path: tuple[str, ...], name: str) -> dict:
        return self.get(data, path, name, dict, default={})

    def strings(self, data: Mapping[str, Any], path: tuple[str, ...], name: str) -> tuple[str, ...]:
        value = self.get(data, path, name, (list, str), default=[])
        items = [value] if isinstance(value, str) else value
        for item in items:
            if not isinstance(item, str):
                self.fail(path + (name,), f"must be a list of strings, got {item!r}")
        return tuple(items)

    def no_unknown(self, data: Mapping[str, Any], path: tuple[str, ...], known: set[str]) -> None:
        for name in data:
            if name not in known:
                self.fail(path + (name,), f"unknown field (known: {', '.join(sorted(known))})")


def _kind_name(kind: Any) -> str:
    names = {str: "a string", bool: "true or false", int: "an integer", dict: "a table",
             list: "a list"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file (TOML, or YAML by its suffix)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), f"cannot read spec: {exc.strerror}") from exc
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml  # optional: only for YAML specs
        except ImportError as exc:
            raise SpecError(str(path), "YAML specs need PyYAML installed; use TOML") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError(str(path), f"invalid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise SpecError(str(path), "the spec must be a mapping at top level")
        return parse_spec(data, source=str(path))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), f"invalid TOML: {exc}") from exc
    return parse_spec(data, text=text, source=str(path))


def parse_spec(data: Mapping[str, Any], *, text: str | None = None,
               source: str | None = None) -> Spec:
    r = _Reader(text, source)
    r.no_unknown(data, (), {"version", "aws", "gcp", "keys", "principals", "workers"})
    version = r.get(data, (), "version", int, default=1)
    if version != 1:
        r.fail(("version",), f"unsupported spec version {version} (this keystead reads 1)")
    aws = _parse_aws(r, r.table(data, (), "aws")) if "aws" in data else None
    gcp = r.table(data, (), "gcp")
    r.no_unknown(gcp, ("gcp",), {"project"})
    gcp_project = r.get(gcp, ("gcp",), "project", str)
    keys = tuple(_parse_key(r, name, raw, aws)
                 for name, raw in sorted(r.table(data, (), "keys").items()))
    if not keys:
        r.fail(("keys",), "declare at least one key")
    if gcp_project is None and any(k.cloud == "gcp" for k in keys):
        r.fail(("gcp",), "GCP keys need [gcp] project (for the custom rotator role)")
    by_name = {k.name: k for k in keys}
    principals = [_parse_principal(r, name, raw, aws, by_name)
                  for name, raw in sorted(r.table(data, (), "principals").items())]
    principals += _parse_workers(r, r.table(data, (), "workers"), by_name,
                                 {p.name for p in principals})
    spec = Spec(keys=keys, principals=tuple(sorted(principals, key=lambda p: p.name)),
                aws=aws, gcp_project=gcp_project)
    _check_lockout(r, spec)
    return spec


def _parse_aws(r: _Reader, raw: dict) -> Aws:
    p = ("aws",)
    r.no_unknown(raw, p, {"account", "region", "partition", "root_access",
                          "deny_destructive", "min_deletion_window_days"})
    account = r.get(raw, p, "account", str, required=True)
    if not ACCOUNT.match(account):
        r.fail(p + ("account",), f"must be a 12-digit AWS account id, got {account!r}")
    region = r.get(raw, p, "region", str, required=True)
    if not REGION.match(region):
        r.fail(p + ("region",), f"not an AWS region: {region!r}")
    window = r.get(raw, p, "min_deletion_window_days", int, default=30)
    if not 7 <= window <= 30:
        r.fail(p + ("min_deletion_window_days",), f"must be 7..30 days, got {window}")
    return Aws(account=account, region=region,
               partition=r.get(raw, p, "partition", str, default="aws"),
               root_access=r.get(raw, p, "root_access", bool, default=True),
               deny_destructive=r.get(raw, p, "deny_destructive", bool, default=True),
               min_deletion_window_days=window)


def _parse_key(r: _Reader, name: str, raw: Any, aws: Aws | None) -> Key:
    p = ("keys", name)
    if not NAME.match(name):
        r.fail(p, "key names are letters, digits, '-' and '_'")
    if not isinstance(raw, dict):
        r.fail(p, "must be a table")
    r.no_unknown(raw, p, {"cloud", "type", "spec", "arn", "alias", "multi_region",
                          "replica_regions", "hsm", "rotation_days", "resource"})
    cloud = r.get(raw, p, "cloud", str, default="aws")
    key_type = r.get(raw, p, "type", str, default="symmetric")
    if key_type not in actions.KEY_TYPES:
        r.fail(p + ("type",), f"unknown key type {key_type!r} "
                              f"(known: {', '.join(actions.KEY_TYPES)})")
    key_spec = r.get(raw, p, "spec", str, default=DEFAULT_SPEC[key_type])
    rotation_days = r.get(raw, p, "rotation_days", int, default=90)
    if cloud == "gcp":
        resource = r.get(raw, p, "resource", str, required=True)
        if not GCP_KEY.match(resource):
            r.fail(p + ("resource",), "must be projects/P/locations/L/keyRings/R/cryptoKeys/K")
        if key_type == "hmac":
            r.fail(p + ("type",), "GCP keys here are symmetric or sign")
        for aws_only in ("arn", "alias", "multi_region", "replica_regions", "hsm"):
            if aws_only in raw:
                r.fail(p + (aws_only,), "applies to AWS keys only (cloud = \"gcp\")")
        return Key(name=name, cloud="gcp", type=key_type, key_spec=key_spec,
                   resource=resource, rotation_days=rotation_days)
    if cloud != "aws":
        r.fail(p + ("cloud",), f"must be \"aws\" or \"gcp\", got {cloud!r}")
    if aws is None:
        r.fail(p, "an AWS key needs an [aws] table with account and region")
    if "resource" in raw:
        r.fail(p + ("resource",), "applies to GCP keys only")
    if not 90 <= rotation_days <= 2560:
        r.fail(p + ("rotation_days",), f"AWS rotates every 90..2560 days, got {rotation_days}")
    multi_region = r.get(raw, p, "multi_region", bool, default=False)
    replicas = r.strings(raw, p, "replica_regions")
    hsm = r.get(raw, p, "hsm", bool, default=False)
    arn = r.get(raw, p, "arn", str)
    region, account = aws.region, aws.account
    if arn is not None:
        match = KEY_ARN.match(arn)
        if not match:
            r.fail(p + ("arn",), f"not a KMS key ARN: {arn!r}")
        region, account = match.group(2), match.group(3)
        if multi_region != match.group(4).startswith("mrk-"):
            r.fail(p + ("arn",), "multi-Region key ids start with 'mrk-' and only they do")
    alias = r.get(raw, p, "alias", str, default=f"alias/keystead/{name}")
    if not ALIAS.match(alias) or alias.startswith("alias/aws/"):
        r.fail(p + ("alias",), f"not a customer alias name: {alias!r}")
    for region_name in replicas:
        if not REGION.match(region_name) or region_name == region:
            r.fail(p + ("replica_regions",), f"not a replica region: {region_name!r}")
    if replicas and not multi_region:
        r.fail(p + ("replica_regions",), "replicas need multi_region = true")
    if hsm and (key_type != "symmetric" or multi_region):
        r.fail(p + ("hsm",), "CloudHSM-backed keys are symmetric and single-Region")
    return Key(name=name, cloud="aws", type=key_type, key_spec=key_spec, arn=arn,
               alias=alias, region=region, account=account, multi_region=multi_region,
               replica_regions=tuple(sorted(replicas)), hsm=hsm, rotation_days=rotation_days)


def _parse_principal(r: _Reader, name: str, raw: Any, aws: Aws | None,
                     keys: dict[str, Key]) -> Principal:
    p = ("principals", name)
    if not NAME.match(name):
        r.fail(p, "principal names are letters, digits, '-' and '_'")
    if not isinstance(raw, dict):
        r.fail(p, "must be a table")
    r.no_unknown(raw, p, {"kind", "arn", "member", "role_name", "issuer", "namespace",
                          "service_account", "roles", "encryption_context", "via_service",
                          "aws_service_grants", "allow_admin_and_crypto", "override_reason"})
    kind = r.get(raw, p, "kind", str, required=True)
    fields: dict[str, Any] = {}
    if kind == "aws-role":
        fields["arn"] = _role_arn(r, p, r.get(raw, p, "arn", str, required=True))
    elif kind == "irsa":
        fields.update(_parse_irsa(r, p, raw, aws))
    elif kind == "gcp":
        fields["member"] = _member(r, p + ("member",), r.get(raw, p, "member", str, required=True))
    else:
        r.fail(p + ("kind",), f"unknown kind {kind!r} (known: aws-role, irsa, gcp)")
    grants = _parse_roles(r, p, r.table(raw, p, "roles"), keys)
    context = r.table(raw, p, "encryption_context")
    for ck, cv in context.items():
        if not isinstance(cv, str) or not ck:
            r.fail(p + ("encryption_context", ck), "encryption context values are strings")
    services = r.strings(raw, p, "via_service")
    for service in services:
        if not SERVICE.match(service):
            r.fail(p + ("via_service",), f"not a service endpoint like "
                                          f"'secretsmanager.eu-west-1.amazonaws.com': {service!r}")
    override = r.get(raw, p, "allow_admin_and_crypto", bool, default=False)
    reason = r.get(raw, p, "override_reason", str)
    if override and not reason:
        r.fail(p + ("allow_admin_and_crypto",), "the override needs an override_reason")
    principal = Principal(
        name=name, kind=kind, grants=grants, encryption_context=tuple(sorted(context.items())),
        via_service=tuple(sorted(set(services))),
        aws_service_grants=r.get(raw, p, "aws_service_grants", bool, default=False),
        allow_admin_and_crypto=override, override_reason=reason, **fields)
    _check_grants(r, p, principal, keys)
    return principal


def _role_arn(r: _Reader, p: tuple[str, ...], arn: str) -> str:
    if not ROLE_ARN.match(arn):
        r.fail(p + ("arn",), f"not an IAM role or user ARN: {arn!r}")
    return arn


def _member(r: _Reader, p: tuple[str, ...], member: str) -> str:
    if member in actions.GCP_PUBLIC_MEMBERS:
        r.fail(p, f"{member} would make the key public; name a service account or group")
    if not GCP_MEMBER.match(member):
        r.fail(p, f"not a GCP member like 'serviceAccount:NAME@PROJECT.iam.gserviceaccount.com':"
                  f" {member!r}")
    return member


def _parse_irsa(r: _Reader, p: tuple[str, ...], raw: dict, aws: Aws | None) -> dict[str, Any]:
    if aws is None:
        r.fail(p, "an IRSA principal needs an [aws] table with account and region")
    issuer = r.get(raw, p, "issuer", str, required=True)
    if not issuer.startswith("https://") or len(issuer) <= len("https://") or " " in issuer:
        r.fail(p + ("issuer",), f"the OIDC issuer must be an https:// URL, got {issuer!r}")
    out = {"issuer": issuer.rstrip("/")}
    for field in ("namespace", "service_account"):
        value = r.get(raw, p, field, str, required=True)
        if not DNS_LABEL.match(value):
            r.fail(p + (field,), f"not a Kubernetes name: {value!r}")
        out[field] = value
    arn = r.get(raw, p, "arn", str)
    role_name = r.get(raw, p, "role_name", str)
    if (arn is None) == (role_name is None):
        r.fail(p, "give either arn or role_name for the IRSA role")
    out["arn"] = (_role_arn(r, p, arn) if arn else
                  _role_arn(r, p + ("role_name",),
                            f"arn:{aws.partition}:iam::{aws.account}:role/{role_name}"))
    return out


def _parse_roles(r: _Reader, p: tuple[str, ...], raw: dict,
                 keys: dict[str, Key]) -> tuple[Grant, ...]:
    grants = set()
    for key_name, roles in raw.items():
        here = p + ("roles", key_name)
        if key_name not in keys:
            r.fail(here, f"key {key_name!r} is not declared under [keys]")
        names = [roles] if isinstance(roles, str) else roles
        if not isinstance(names, list) or not names:
            r.fail(here, "must be a role or a non-empty list of roles")
        for role in names:
            if role not in actions.ROLES:
                r.fail(here, f"unknown role {role!r} (known: {', '.join(actions.ROLES)})")
            grants.add(Grant(key_name, role))
    return tuple(sorted(grants, key=lambda g: (g.key, g.role)))


def _check_grants(r: _Reader, p: tuple[str, ...], principal: Principal,
                  keys: dict[str, Key]) -> None:
    for key_name in sorted({g.key for g in principal.grants}):
        key, here = keys[key_name], p + ("roles", key_name)
        roles = principal.roles_on(key_name)
        for role in roles:
            problem = role_misfit(role, key)
            if problem:
                r.fail(here, problem)
        if key.cloud == "aws" and not principal.arn:
            r.fail(here, f"key {key_name!r} is an AWS key; this principal has no AWS role ARN")
        if key.cloud == "gcp" and not principal.member:
            r.fail(here, f"key {key_name!r} is a GCP key; this principal has no GCP member")
        crypto = sorted(set(roles) & actions.CRYPTO_ROLES)
        if "admin" in roles and crypto and not principal.allow_admin_and_crypto:
            r.fail(here, f"principal {principal.name!r} would be both 'admin' and "
                         f"{', '.join(repr(c) for c in crypto)} on key {key_name!r}: separation "
                         f"of duties forbids it (override: allow_admin_and_crypto = true with "
                         f"override_reason)", SeparationOfDuties)


def role_misfit(role: str, key: Key) -> str | None:
    """Why ``role`` cannot apply to ``key``, or None when it fits."""
    if role in actions.CRYPTO_ROLES:
        table = actions.GCP_ROLES if key.cloud == "gcp" else actions.CRYPTO
        if (role, key.type) not in table:
            return f"role {role!r} does not fit {key.cloud.upper()} {key.type} key {key.name!r}"
    if role == "replicator" and not key.replica_regions:
        return (f"role 'replicator' needs a multi-Region key with replica_regions; "
                f"{key.name!r} has none")
    if role == "keystore-admin" and not key.hsm:
        return f"role 'keystore-admin' needs a CloudHSM-backed key; {key.name!r} is not"
    return None


def _parse_workers(r: _Reader, raw: dict, keys: dict[str, Key], taken: set[str]) -> list[Principal]:
    out = []
    for worker, body in sorted(raw.items()):
        p = ("workers", worker)
        if worker not in WORKERS:
            r.fail(p, f"unknown worker (known: {', '.join(sorted(WORKERS))})")
        if not isinstance(body, dict):
            r.fail(p, "must be a table")
        r.no_unknown(body, p, {"arn", "member", "keys"})
        name, role = WORKERS[worker]
        if name in taken:
            r.fail(p, f"a principal is already named {name!r}")
        arn = r.get(body, p, "arn", str)
        member = r.get(body, p, "member", str)
        if arn:
            _role_arn(r, p, arn)
        if member:
            _member(r, p + ("member",), member)
        if not arn and not member:
            r.fail(p, "give arn (AWS role) and/or member (GCP)")
        listed = r.strings(body, p, "keys")
        for key_name in listed:
            if key_name not in keys:
                r.fail(p + ("keys",), f"key {key_name!r} is not declared under [keys]")
        if not listed:  # default: every key this worker can serve
            listed = tuple(k.name for k in keys.values() if role_misfit(role, k) is None and
                           ((k.cloud == "aws" and arn) or (k.cloud == "gcp" and member)))
        principal = Principal(name=name, kind="worker", arn=arn, member=member,
                              grants=tuple(Grant(k, role) for k in sorted(listed)))
        _check_grants(r, p, principal, keys)
        out.append(principal)
    return out


def _check_lockout(r: _Reader, spec: Spec) -> None:
    if spec.aws is None or spec.aws.root_access:
        return
    for key in spec.keys:
        if key.cloud == "aws" and not spec.holders(key.name, "admin"):
            r.fail(("keys", key.name), "aws.root_access = false and no principal has 'admin' "
                                       "on this key: its key policy would lock every admin out")
