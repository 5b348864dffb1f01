"""Principals and workers in the spec: who they are, which roles on which keys.

Checks that each role fits its key (:func:`role_misfit`) and separation of
duties (admin and a crypto role on one key) as it parses.
"""

from __future__ import annotations

import re
from typing import Any

from .. import actions
from .errors import SeparationOfDuties
from .model import Aws, Grant, Key, Principal, WorkerTrust
from .reader import Reader

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):(role|user)/[\w+=,.@/-]{1,512}$")
GCP_MEMBER = re.compile(r"^(serviceAccount|group|user|domain|principal|principalSet):\S+$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
SERVICE = re.compile(r"^[a-z0-9-]+\.[a-z0-9-]+\.amazonaws\.com$")
WORKERS = {"rotation": ("rotation-worker", "rotator"),
           "replicator": ("dr-replicator", "replicator")}


def parse_principal(r: Reader, name: str, raw: Any, aws: Aws | None,
                     keys: dict[str, Key]) -> Principal:
    p = ("principals", name)
    r.entry(p, raw, {"kind", "arn", "member", "role_name", "issuer", "namespace",
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


def _role_arn(r: Reader, p: tuple[str, ...], arn: str) -> str:
    if not ROLE_ARN.match(arn):
        r.fail(p + ("arn",), f"not an IAM role or user ARN: {arn!r}")
    return arn


def _member(r: Reader, p: tuple[str, ...], member: str) -> str:
    if member in actions.GCP_PUBLIC_MEMBERS:
        r.fail(p, f"{member} would make the key public; name a service account or group")
    if not GCP_MEMBER.match(member):
        r.fail(p, f"not a GCP member like 'serviceAccount:NAME@PROJECT.iam.gserviceaccount.com':"
                  f" {member!r}")
    return member


def _parse_irsa(r: Reader, p: tuple[str, ...], raw: dict[str, Any], aws: Aws | None) -> dict[str, Any]:
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


def _parse_roles(r: Reader, p: tuple[str, ...], raw: dict[str, Any],
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


def _check_grants(r: Reader, p: tuple[str, ...], principal: Principal,
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


def parse_workers(r: Reader, raw: dict[str, Any], keys: dict[str, Key], taken: set[str]) -> list[Principal]:
    out = []
    for worker, body in sorted(raw.items()):
        p = ("workers", worker)
        if worker not in WORKERS:
            r.fail(p, f"unknown worker (known: {', '.join(sorted(WORKERS))})")
        r.entry(p, body, {"arn", "member", "keys", "issuer", "namespace", "service_account", "trusted"})
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
                              grants=tuple(Grant(k, role) for k in sorted(listed)),
                              trust=_parse_trust(r, p, body))
        _check_grants(r, p, principal, keys)
        out.append(principal)
    return out


def _parse_trust(r: Reader, p: tuple[str, ...], body: dict[str, Any]) -> WorkerTrust | None:
    """How the worker's role is assumed: IRSA (issuer, namespace, service_account) or trusted ARNs."""
    irsa = {f: r.get(body, p, f, str) for f in ("issuer", "namespace", "service_account")}
    trusted = r.strings(body, p, "trusted")
    given = [f for f, v in irsa.items() if v is not None]
    if (given or trusted) and ":role/" not in str(body.get("arn", ":role/")):
        r.fail(p + ("arn",), "a trust is for a role: give the worker's IAM role ARN, not a user's")
    if given and trusted:
        r.fail(p + ("trusted",), "give either IRSA (issuer, namespace, service_account) or trusted, not both")
    if trusted:
        if not body.get("arn"):
            r.fail(p + ("trusted",), "a trust needs the worker's AWS role (arn)")
        for arn in trusted:
            _role_arn(r, p + ("trusted",), arn)
        return WorkerTrust(trusted=tuple(trusted))
    if not given:
        return None
    if not body.get("arn"):
        r.fail(p + (given[0],), "a trust needs the worker's AWS role (arn)")
    missing = [f for f, v in irsa.items() if v is None]
    if missing:
        r.fail(p, f"IRSA needs issuer, namespace and service_account; missing {', '.join(missing)}")
    issuer = str(irsa["issuer"])
    if not issuer.startswith("https://") or len(issuer) <= len("https://") or " " in issuer:
        r.fail(p + ("issuer",), f"the OIDC issuer must be an https:// URL, got {issuer!r}")
    for field in ("namespace", "service_account"):
        if not DNS_LABEL.match(str(irsa[field])):
            r.fail(p + (field,), f"not a Kubernetes name: {irsa[field]!r}")
    return WorkerTrust(issuer=issuer.rstrip("/"), namespace=irsa["namespace"],
                       service_account=irsa["service_account"])
