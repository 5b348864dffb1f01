"""The IAM spec: who may do what with which keys, parsed into frozen values.

``load_spec(path)`` reads TOML (or YAML when PyYAML is installed) and
``parse_spec(data)`` validates a plain mapping. Every error is a
:class:`SpecError` naming the field, and the line when the text is TOML.
The format is documented in docs/policies.md. The values live in
model.py, principals and workers are parsed in principals.py.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import actions
from .errors import SpecError
from .model import Aws, Grant, Key, Principal, Spec
from .principals import parse_principal, parse_workers
from .reader import Reader

__all__ = ["Aws", "Grant", "Key", "Principal", "Spec", "key_arn_problem", "load_spec",
           "parse_spec"]

ACCOUNT = re.compile(r"^\d{12}$")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
KEY_ARN = re.compile(
    r"^arn:(aws[a-z-]*):kms:([a-z0-9-]+):(\d{12}):key/((?:mrk-[0-9a-f]{32})|[0-9a-f-]{36})$")
ALIAS = re.compile(r"^alias/[A-Za-z0-9/_-]{1,250}$")
GCP_KEY = re.compile(
    r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$")
DEFAULT_SPEC = {"symmetric": "SYMMETRIC_DEFAULT", "hmac": "HMAC_256", "sign": "ECC_NIST_P256"}


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
    r = Reader(text, source)
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
    principals = [parse_principal(r, name, raw, aws, by_name)
                  for name, raw in sorted(r.table(data, (), "principals").items())]
    principals += parse_workers(r, r.table(data, (), "workers"), by_name,
                                 {p.name for p in principals})
    spec = Spec(keys=keys, principals=tuple(sorted(principals, key=lambda p: p.name)),
                aws=aws, gcp_project=gcp_project)
    _check_lockout(r, spec)
    return spec


def _parse_aws(r: Reader, raw: dict[str, Any]) -> Aws:
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


def _parse_key(r: Reader, name: str, raw: Any, aws: Aws | None) -> Key:
    p = ("keys", name)
    r.entry(p, raw, {"cloud", "type", "spec", "arn", "alias", "multi_region",
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
        problem = key_arn_problem(arn, multi_region)
        if problem:
            r.fail(p + ("arn",), problem)
        region, account = arn.split(":")[3], arn.split(":")[4]
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


def key_arn_problem(arn: str, multi_region: bool) -> str | None:
    """Why ``arn`` cannot name an AWS key (multi-Region or not), or None."""
    match = KEY_ARN.match(arn)
    if not match:
        return f"not a KMS key ARN: {arn!r}"
    if multi_region != match.group(4).startswith("mrk-"):
        return "multi-Region key ids start with 'mrk-' and only they do"
    return None


def _check_lockout(r: Reader, spec: Spec) -> None:
    if spec.aws is None or spec.aws.root_access:
        return
    for key in spec.keys:
        if key.cloud == "aws" and not spec.holders(key.name, "admin"):
            r.fail(("keys", key.name), "aws.root_access = false and no principal has 'admin' "
                                       "on this key: its key policy would lock every admin out")
