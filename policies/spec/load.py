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
from .model import Aws, Grant, HsmStore, Key, Principal, Spec
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
GCP_ALGORITHM = {"symmetric": "GOOGLE_SYMMETRIC_ENCRYPTION", "sign": "EC_SIGN_P256_SHA256"}
GCP_PROTECTION = ("SOFTWARE", "HSM", "EXTERNAL", "EXTERNAL_VPC")
HSM_TYPES = ("hsm2m.medium", "hsm1.medium")
HSM_MODES = ("FIPS", "NON_FIPS")
SUBNET = re.compile(r"^subnet-[0-9a-f]{8,17}$")
BACKUP = re.compile(r"^backup-[a-z0-9]+$")


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
    r.no_unknown(data, (), {"version", "aws", "gcp", "keys", "principals", "workers", "hsm_stores"})
    version = r.get(data, (), "version", int, default=1)
    if version != 1:
        r.fail(("version",), f"unsupported spec version {version} (this keystead reads 1)")
    aws = _parse_aws(r, r.table(data, (), "aws")) if "aws" in data else None
    gcp = r.table(data, (), "gcp")
    r.no_unknown(gcp, ("gcp",), {"project"})
    gcp_project = r.get(gcp, ("gcp",), "project", str)
    stores = tuple(_parse_store(r, name, raw, aws)
                   for name, raw in sorted(r.table(data, (), "hsm_stores").items()))
    keys = tuple(_parse_key(r, name, raw, aws, stores)
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
                aws=aws, gcp_project=gcp_project, hsm_stores=stores)
    _check_lockout(r, spec)
    return spec


def _parse_aws(r: Reader, raw: dict[str, Any]) -> Aws:
    p = ("aws",)
    r.no_unknown(raw, p, {"account", "region", "partition", "root_access",
                          "deny_destructive", "min_deletion_window_days", "dr_regions"})
    account = r.get(raw, p, "account", str, required=True)
    if not ACCOUNT.match(account):
        r.fail(p + ("account",), f"must be a 12-digit AWS account id, got {account!r}")
    region = r.get(raw, p, "region", str, required=True)
    if not REGION.match(region):
        r.fail(p + ("region",), f"not an AWS region: {region!r}")
    window = r.get(raw, p, "min_deletion_window_days", int, default=30)
    if not 7 <= window <= 30:
        r.fail(p + ("min_deletion_window_days",), f"must be 7..30 days, got {window}")
    dr_regions = r.strings(raw, p, "dr_regions")
    for name in dr_regions:
        if not REGION.match(name):
            r.fail(p + ("dr_regions",), f"not an AWS region: {name!r}")
        if name == region:
            r.fail(p + ("dr_regions",), f"DR region {name!r} is the primary region (aws.region)")
    if len(set(dr_regions)) != len(dr_regions):
        r.fail(p + ("dr_regions",), "lists a region twice")
    return Aws(dr_regions=tuple(dr_regions), account=account, region=region,
               partition=r.get(raw, p, "partition", str, default="aws"),
               root_access=r.get(raw, p, "root_access", bool, default=True),
               deny_destructive=r.get(raw, p, "deny_destructive", bool, default=True),
               min_deletion_window_days=window)


def _parse_store(r: Reader, name: str, raw: Any, aws: Aws | None) -> HsmStore:
    p = ("hsm_stores", name)
    r.entry(p, raw, {"region", "subnets", "hsm_type", "mode", "backup_retention_days",
                     "source_backup_id"})
    if aws is None:
        r.fail(p, "a CloudHSM key store needs an [aws] table with account and region")
    region = r.get(raw, p, "region", str, default=aws.region)
    if not REGION.match(region):
        r.fail(p + ("region",), f"not an AWS region: {region!r}")
    subnets = r.table(raw, p, "subnets")
    zones: dict[str, str] = {}
    for subnet, zone in subnets.items():
        here = p + ("subnets", subnet)
        if not SUBNET.match(subnet):
            r.fail(here, f"not a subnet id like 'subnet-0123abcd': {subnet!r}")
        if not isinstance(zone, str) or not zone.startswith(region) or len(zone) == len(region):
            r.fail(here, f"give the subnet's availability zone in {region} (e.g. {region}a), got {zone!r}")
        if zone in zones:
            r.fail(p + ("subnets",), f"subnets {zones[zone]} and {subnet} are both in {zone}: "
                                     "each HSM needs its own availability zone")
        zones[zone] = subnet
    if len(subnets) < 2:
        r.fail(p + ("subnets",), f"give at least two subnets in different availability zones "
                                 f"(one HSM in each; AWS needs two for a key store), got {len(subnets)}")
    hsm_type = r.get(raw, p, "hsm_type", str, default="hsm2m.medium")
    if hsm_type not in HSM_TYPES:
        r.fail(p + ("hsm_type",), f"must be one of {', '.join(HSM_TYPES)}, got {hsm_type!r}")
    mode = r.get(raw, p, "mode", str, default="FIPS")
    if mode not in HSM_MODES:
        r.fail(p + ("mode",), f"must be FIPS or NON_FIPS, got {mode!r}")
    retention = r.get(raw, p, "backup_retention_days", int, default=90)
    if not 7 <= retention <= 379:
        r.fail(p + ("backup_retention_days",), f"CloudHSM keeps backups 7..379 days, got {retention}")
    backup = r.get(raw, p, "source_backup_id", str)
    if backup is not None and not BACKUP.match(backup):
        r.fail(p + ("source_backup_id",), f"not a CloudHSM backup id like 'backup-abc123': {backup!r}")
    return HsmStore(name=name, region=region, subnets=tuple(sorted(subnets.items())),
                    hsm_type=hsm_type, mode=mode, backup_retention_days=retention,
                    source_backup_id=backup)


def _parse_gcp_key(r: Reader, p: tuple[str, ...], raw: dict[str, Any], key_type: str,
                   key_spec: str, rotation_days: int) -> Key:
    resource = r.get(raw, p, "resource", str, required=True)
    if not GCP_KEY.match(resource):
        r.fail(p + ("resource",), "must be projects/P/locations/L/keyRings/R/cryptoKeys/K")
    if key_type == "hmac":
        r.fail(p + ("type",), "GCP keys here are symmetric or sign")
    for aws_only in ("arn", "alias", "multi_region", "replica_regions", "hsm", "region", "dr",
                     "key_store", "deletion_window_days"):
        if aws_only in raw:
            r.fail(p + (aws_only,), "applies to AWS keys only (cloud = \"gcp\")")
    if rotation_days <= 1:
        r.fail(p + ("rotation_days",), f"the GCP rotation period must be above one day, got {rotation_days}")
    level = r.get(raw, p, "protection_level", str, default="SOFTWARE")
    if level not in GCP_PROTECTION:
        r.fail(p + ("protection_level",), f"must be one of {', '.join(GCP_PROTECTION)}, got {level!r}")
    algorithm = r.get(raw, p, "algorithm", str, default=GCP_ALGORITHM[key_type])
    if (key_type == "symmetric") != (algorithm == "GOOGLE_SYMMETRIC_ENCRYPTION"):
        r.fail(p + ("algorithm",), f"algorithm {algorithm!r} does not fit a {key_type} key")
    destroy = r.get(raw, p, "destroy_scheduled_days", int, default=30)
    if not 1 <= destroy <= 120:
        r.fail(p + ("destroy_scheduled_days",), f"GCP keeps destroyed versions 1..120 days, got {destroy}")
    return Key(name=p[-1], cloud="gcp", type=key_type, key_spec=key_spec, resource=resource,
               rotation_days=rotation_days, protection_level=level, algorithm=algorithm,
               destroy_scheduled_days=destroy)


def _parse_key(r: Reader, name: str, raw: Any, aws: Aws | None,
               stores: tuple[HsmStore, ...] = ()) -> Key:
    p = ("keys", name)
    r.entry(p, raw, {"cloud", "type", "spec", "arn", "alias", "multi_region", "dr", "region",
                     "replica_regions", "hsm", "key_store", "rotation_days", "resource",
                     "deletion_window_days", "protection_level", "algorithm",
                     "destroy_scheduled_days"})
    cloud = r.get(raw, p, "cloud", str, default="aws")
    key_type = r.get(raw, p, "type", str, default="symmetric")
    if key_type not in actions.KEY_TYPES:
        r.fail(p + ("type",), f"unknown key type {key_type!r} "
                              f"(known: {', '.join(actions.KEY_TYPES)})")
    key_spec = r.get(raw, p, "spec", str, default=DEFAULT_SPEC[key_type])
    rotation_days = r.get(raw, p, "rotation_days", int, default=90)
    if cloud == "gcp":
        return _parse_gcp_key(r, p, raw, key_type, key_spec, rotation_days)
    if cloud != "aws":
        r.fail(p + ("cloud",), f"must be \"aws\" or \"gcp\", got {cloud!r}")
    if aws is None:
        r.fail(p, "an AWS key needs an [aws] table with account and region")
    for gcp_only in ("resource", "protection_level", "algorithm", "destroy_scheduled_days"):
        if gcp_only in raw:
            r.fail(p + (gcp_only,), "applies to GCP keys only")
    if not 90 <= rotation_days <= 2560:
        r.fail(p + ("rotation_days",), f"AWS rotates every 90..2560 days, got {rotation_days}")
    dr = r.get(raw, p, "dr", bool, default=False)
    replicas = r.strings(raw, p, "replica_regions")
    if dr and not replicas:
        if not aws.dr_regions:
            r.fail(p + ("dr",), "asks for DR replicas, but there is no DR region: "
                                "set [aws] dr_regions or this key's replica_regions")
        replicas = aws.dr_regions
    multi_region = r.get(raw, p, "multi_region", bool, default=dr)
    key_store = r.get(raw, p, "key_store", str)
    hsm = r.get(raw, p, "hsm", bool, default=key_store is not None)
    if key_store is not None and not hsm:
        r.fail(p + ("hsm",), "a key in a key_store is HSM-backed: drop hsm = false")
    if key_store is not None and key_store not in {s.name for s in stores}:
        r.fail(p + ("key_store",), f"key store {key_store!r} is not declared under [hsm_stores]")
    if hsm and key_store is None and len(stores) == 1:
        key_store = stores[0].name
    arn = r.get(raw, p, "arn", str)
    region, account = r.get(raw, p, "region", str, default=aws.region), aws.account
    if not REGION.match(region):
        r.fail(p + ("region",), f"not an AWS region: {region!r}")
    if arn is not None:
        problem = key_arn_problem(arn, multi_region)
        if problem:
            r.fail(p + ("arn",), problem)
        if "region" in raw and arn.split(":")[3] != region:
            r.fail(p + ("region",), f"the key's ARN is in {arn.split(':')[3]}, not {region}")
        region, account = arn.split(":")[3], arn.split(":")[4]
    alias = r.get(raw, p, "alias", str, default=f"alias/keystead/{name}")
    if not ALIAS.match(alias) or alias.startswith("alias/aws/"):
        r.fail(p + ("alias",), f"not a customer alias name: {alias!r}")
    field = "replica_regions" if "replica_regions" in raw else "dr"
    for region_name in replicas:
        if not REGION.match(region_name):
            r.fail(p + (field,), f"not a replica region: {region_name!r}")
        if region_name == region:
            r.fail(p + (field,), f"DR region {region_name!r} is the key's primary region")
    if len(set(replicas)) != len(replicas):
        r.fail(p + (field,), "lists a region twice")
    if replicas and not multi_region:
        r.fail(p + ("replica_regions",), "replicas need multi_region = true")
    if hsm and (key_type != "symmetric" or multi_region):
        r.fail(p + ("hsm",), "CloudHSM-backed keys are symmetric and single-Region")
    if key_store is not None and next(s for s in stores if s.name == key_store).region != region:
        r.fail(p + ("key_store",), f"key store {key_store!r} is in another region than the key ({region})")
    window = r.get(raw, p, "deletion_window_days", int, default=aws.min_deletion_window_days)
    if not 7 <= window <= 30:
        r.fail(p + ("deletion_window_days",), f"AWS deletes keys after 7..30 days, got {window}")
    if window < aws.min_deletion_window_days:
        r.fail(p + ("deletion_window_days",), f"{window} is below [aws] min_deletion_window_days "
                                              f"({aws.min_deletion_window_days}): the key policy would "
                                              f"deny the key's own deletion")
    return Key(name=name, cloud="aws", type=key_type, key_spec=key_spec, arn=arn,
               alias=alias, region=region, account=account, multi_region=multi_region,
               replica_regions=tuple(replicas), hsm=hsm, rotation_days=rotation_days,
               key_store=key_store, deletion_window_days=window)


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
