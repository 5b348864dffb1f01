"""How an AWS KMS key is managed: describe, rotate (on demand or by successor), retire, restore.

*Scheduled* keys (AWS_KMS symmetric): KMS rotates the material on its
schedule. Each material is a version; the old ones are ``superseded``: they
still decrypt and AWS keeps them for the key's lifetime, so keystead never
disables or retires them. When keystead manages the schedule (key option
``manage_rotation = true``, the default for ``exclusive = true`` keys),
``describe`` turns automatic rotation on with ``RotationPeriodInDays`` = the
key's ``rotation_period_days`` clamped to AWS's 90..2560 (a key shared with
other systems keeps the schedule its owner set). ``rotate`` (``keystead
rotate KEY --force`` only: the planner never makes a scheduled key due) is
RotateKeyOnDemand: asynchronous (``pending`` while GetKeyRotationStatus shows
it started), limited per key for its lifetime (refused clearly before
``on_demand_limit``, default 10), idempotent per token through the tags
``keystead:rotation`` (the token) and ``keystead:rotation-base`` (the
on-demand count before the call).

*Successor* keys (custom key store, asymmetric, HMAC; named by an alias):
``rotate`` = CreateKey with the same spec, usage, policy, description, tags
and custom key store, tagged ``keystead:key=<name>``,
``keystead:rotation=<token>`` and ``keystead:predecessor=<old key id>``;
ReplicateKey into every replica region of a multi-region key; UpdateAlias
in every region (aliases are regional). A resume after a crash anywhere in
between finds the key tagged with its token (ListKeys + ListResourceTags,
one pass over the region's keys) and adopts it: never a second key. The
versions are the alias's target and its predecessors, walked back through
the ``keystead:predecessor`` tags (at most :data:`MAX_CHAIN`, ending at a key
AWS has deleted). Retirement of a predecessor (only for ``exclusive`` keys,
decided by the engine): ``disable`` = DisableKey; ``retire`` =
ScheduleKeyDeletion with the longest window, 30 days (replicas first);
``restore`` = CancelKeyDeletion + EnableKey.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from keystead.clock import iso, utc
from keystead.errors import NotFoundError, ProviderError
from keystead.providers.aws import TAG_KEY, TAG_PREDECESSOR, TAG_ROTATION, stamp
from keystead.providers.base import KeyInfo, KeyVersion, RotationKind, VersionState

if TYPE_CHECKING:
    from keystead.providers.aws import AwsKey

TAG_ROTATION_BASE = "keystead:rotation-base"
MAX_CHAIN = 32
DELETION_WINDOW_DAYS = 30
PERIOD_RANGE = (90, 2560)
log = logging.getLogger("keystead.providers.aws")

_STATES = {"Enabled": VersionState.ENABLED, "Disabled": VersionState.DISABLED,
           "PendingDeletion": VersionState.PENDING_DELETION, "PendingReplicaDeletion": VersionState.PENDING_DELETION,
           "Unavailable": VersionState.ENABLED, "Creating": VersionState.ENABLED, "Updating": VersionState.ENABLED}


def _code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def state_of(meta: Mapping[str, Any]) -> VersionState:
    return _STATES.get(meta.get("KeyState", "Enabled"), VersionState.DISABLED)


def tags_of(key: AwsKey, key_id: str, region: str | None = None) -> dict[str, str]:
    out: dict[str, str] = {}
    kwargs: dict[str, Any] = {"KeyId": key_id}
    while True:
        page = key.client(region).list_resource_tags(**kwargs)
        out.update({t["TagKey"]: t["TagValue"] for t in page.get("Tags", [])})
        if not page.get("Truncated"):
            return out
        kwargs["Marker"] = page["NextMarker"]


def _target(key: AwsKey) -> dict[str, Any]:
    meta: dict[str, Any] = key.client().describe_key(KeyId=key.ref)["KeyMetadata"]
    return meta


# -- describe ----------------------------------------------------------------------------
def describe(key: AwsKey) -> KeyInfo:
    meta = _target(key)
    kind = key.kind(meta)
    if kind is RotationKind.SCHEDULED:
        return _describe_scheduled(key, meta)
    primary = key.remember(meta, target=True)
    versions = [KeyVersion(primary, utc(meta["CreationDate"]), state_of(meta))]
    if kind is RotationKind.SUCCESSOR:
        versions += _predecessors(key, meta)
    return KeyInfo(ref=key.ref, provider=key.provider, primary=primary, versions=tuple(versions),
                   last_rotated=utc(meta["CreationDate"]) if kind is RotationKind.SUCCESSOR else None, rotation=kind)


def _describe_scheduled(key: AwsKey, meta: dict[str, Any]) -> KeyInfo:
    kid = meta["KeyId"]
    rotations = key.rotations(kid)
    status = key.client().get_key_rotation_status(KeyId=kid)
    if key.manage_rotation:
        _ensure_schedule(key, meta, status)
    primary = key.remember(meta, rotations, target=True)
    created = utc(meta["CreationDate"])
    pending = None
    if status.get("OnDemandRotationStartDate"):
        pending = f"{kid}:on-demand-{iso(status['OnDemandRotationStartDate'])}"
    versions: list[KeyVersion] = []
    if meta.get("CurrentKeyMaterialId"):  # KMS names every material
        for r in rotations:
            label = f"{kid}:{r['KeyMaterialId']}" if r.get("KeyMaterialId") else None
            if label is None or label == primary:
                continue
            if r.get("KeyMaterialState") == "PENDING_ROTATION":
                pending = pending or label
                continue
            versions.append(KeyVersion(label, utc(r.get("RotationDate") or created), VersionState.SUPERSEDED))
        dates = [utc(r["RotationDate"]) for r in rotations if r.get("RotationDate")]
        last = max(dates) if dates else created
    else:  # moto, or a region without material ids: <n>-<date> as in AwsKey.label
        dates = sorted(utc(r["RotationDate"]) for r in rotations if r.get("RotationDate"))
        labels = [(f"{kid}:0-{stamp(created)}", created)]
        labels += [(f"{kid}:{i}-{stamp(d)}", d) for i, d in enumerate(dates, 1)]
        versions = [KeyVersion(label, when, VersionState.SUPERSEDED) for label, when in labels[:-1]]
        last = labels[-1][1]
    versions.append(KeyVersion(primary, last, state_of(meta)))
    return KeyInfo(ref=key.ref, provider=key.provider, primary=primary, versions=tuple(versions),
                   last_rotated=last, rotation=RotationKind.SCHEDULED, pending=pending)


def _ensure_schedule(key: AwsKey, meta: Mapping[str, Any], status: Mapping[str, Any]) -> None:
    """Automatic rotation on, every rotation_period_days (clamped to AWS's range), on keys keystead manages."""
    want = min(max(key.period_days, PERIOD_RANGE[0]), PERIOD_RANGE[1])
    have = status.get("RotationPeriodInDays")
    if status.get("KeyRotationEnabled") and have in (None, want):
        return  # (moto reports no period: then "enabled" is all it can say)
    replica = meta.get("MultiRegionConfiguration", {}).get("MultiRegionKeyType") == "REPLICA"
    if meta.get("KeyState") != "Enabled" or replica:
        return  # a replica's rotation is its primary's
    key.client().enable_key_rotation(KeyId=meta["KeyId"], RotationPeriodInDays=want)
    log.info("aws key %s: automatic rotation enabled every %d days", key.ref, want)


def _predecessors(key: AwsKey, meta: Mapping[str, Any]) -> list[KeyVersion]:
    out: list[KeyVersion] = []
    seen = {meta["KeyId"]}
    current = meta["KeyId"]
    for _ in range(MAX_CHAIN):
        previous = tags_of(key, current).get(TAG_PREDECESSOR)
        if not previous or previous in seen:
            break
        seen.add(previous)
        try:
            pm = key.client().describe_key(KeyId=previous)["KeyMetadata"]
        except Exception as exc:
            if _code(exc) == "NotFoundException":
                break  # deleted by AWS at the end of its window: so is its history
            raise
        out.append(KeyVersion(key.remember(pm), utc(pm["CreationDate"]), state_of(pm)))
        current = previous
    return out


# -- rotate ----------------------------------------------------------------------------------
def rotate(key: AwsKey, *, now: datetime, token: str) -> KeyInfo:
    meta = _target(key)
    kind = key.kind(meta)
    if kind is RotationKind.SCHEDULED:
        _rotate_on_demand(key, meta, token)
    elif kind is RotationKind.SUCCESSOR:
        _rotate_successor(key, meta, token)
    else:
        raise ProviderError(f"{key.ref} does not rotate: its material is imported or external, or it is named by "
                            "its key ARN (name it by an alias to rotate it by successor)", op="rotate", key=key.ref)
    return describe(key)


def _rotate_on_demand(key: AwsKey, meta: Mapping[str, Any], token: str) -> None:
    kid = meta["KeyId"]
    tags = tags_of(key, kid)
    done = sum(1 for r in key.rotations(kid) if r.get("RotationType") == "ON_DEMAND")
    if tags.get(TAG_ROTATION) == token:
        base = int(tags.get(TAG_ROTATION_BASE, "-1") or -1)
        status = key.client().get_key_rotation_status(KeyId=kid)
        if done > base or status.get("OnDemandRotationStartDate"):
            return  # this token's rotation was asked for already: adopt it (done, or still running)
    if done >= key.on_demand_limit:
        raise ProviderError(
            f"rotate {key.ref}: refused: {done} of the {key.on_demand_limit} on-demand rotations AWS allows in a "
            "key's lifetime are used; rely on its scheduled rotation (rotation_period_days), or move to a new key",
            op="rotate", key=key.ref, code="OnDemandRotationLimit")
    key.client().tag_resource(KeyId=kid, Tags=[{"TagKey": TAG_ROTATION, "TagValue": token},
                                               {"TagKey": TAG_ROTATION_BASE, "TagValue": str(done)}])
    key.client().rotate_key_on_demand(KeyId=kid)
    log.info("aws key %s: on-demand rotation %d of %d requested", key.ref, done + 1, key.on_demand_limit)


def _regions(key: AwsKey, meta: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The key's own region and its replica regions (configured, else as KMS lists them)."""
    home = meta["Arn"].split(":")[3]
    listed = [r["Region"] for r in meta.get("MultiRegionConfiguration", {}).get("ReplicaKeys", [])]
    replicas = key.replica_regions or listed
    return home, [r for r in replicas if r != home] if meta.get("MultiRegion") else []


def _find_tagged(key: AwsKey, token: str, skip: str) -> str | None:
    """The key made for ``token`` before a crash, if any (one pass over the region's keys)."""
    kwargs: dict[str, Any] = {}
    while True:
        page = key.client().list_keys(**kwargs)
        for entry in page.get("Keys", []):
            if entry["KeyId"] == skip:
                continue
            tags = tags_of(key, entry["KeyId"])
            if tags.get(TAG_ROTATION) == token and tags.get(TAG_KEY) == key.name:
                return str(entry["KeyId"])
        if not page.get("Truncated"):
            return None
        kwargs["Marker"] = page["NextMarker"]


def _rotate_successor(key: AwsKey, meta: Mapping[str, Any], token: str) -> None:
    client = key.client()
    old = meta["KeyId"]
    old_tags = tags_of(key, old)
    if old_tags.get(TAG_ROTATION) == token:
        return  # the alias already names the key made for this token
    alias = key.parsed.alias
    assert alias is not None  # kind() makes only aliases successor keys
    home, replicas = _regions(key, meta)
    new = _find_tagged(key, token, skip=old)
    policy = client.get_key_policy(KeyId=old, PolicyName="default")["Policy"]
    if new is None:
        inherited = {k: v for k, v in old_tags.items() if not k.startswith("keystead:")}
        tags = {**inherited, TAG_KEY: key.name, TAG_ROTATION: token, TAG_PREDECESSOR: old}
        args: dict[str, Any] = {
            "Policy": policy, "Description": meta.get("Description") or f"keystead key {key.name}",
            "KeyUsage": meta.get("KeyUsage", "ENCRYPT_DECRYPT"),
            "KeySpec": meta.get("KeySpec") or meta.get("CustomerMasterKeySpec") or "SYMMETRIC_DEFAULT",
            "Tags": [{"TagKey": k, "TagValue": v} for k, v in sorted(tags.items())],
            "MultiRegion": bool(meta.get("MultiRegion")),
        }
        if meta.get("Origin") == "AWS_CLOUDHSM":
            args["Origin"] = "AWS_CLOUDHSM"
            if meta.get("CustomKeyStoreId"):
                args["CustomKeyStoreId"] = meta["CustomKeyStoreId"]
        new = str(client.create_key(**args)["KeyMetadata"]["KeyId"])
        log.info("aws key %s: successor %s created for %s", key.ref, new, token)
    for region in replicas:
        try:
            key.client(region).describe_key(KeyId=new)
        except Exception as exc:
            if _code(exc) != "NotFoundException":
                raise
            client.replicate_key(KeyId=new, ReplicaRegion=region, Policy=policy)
    for region in [home, *replicas]:
        regional = key.client(region)
        try:
            regional.update_alias(AliasName=alias, TargetKeyId=new)
        except Exception as exc:
            if _code(exc) != "NotFoundException" or region == home:
                raise
            regional.create_alias(AliasName=alias, TargetKeyId=new)
    key._target_id = None  # the alias moved: resolve it again
    log.info("aws key %s: alias %s now names %s in %s", key.ref, alias, new, ", ".join([home, *replicas]))


# -- retirement of a successor's predecessors -------------------------------------------------------
def _predecessor(key: AwsKey, version: str, op: str) -> tuple[KeyVersion, str]:
    info = describe(key)
    found = info.version(version)
    if found is None:
        raise NotFoundError(f"AWS KMS key {key.ref} has no version {version} "
                            f"(versions: {', '.join(v.id for v in info.versions)})")
    if version == info.primary:
        raise ProviderError(f"cannot {op} version {version} of {key.ref}: it is the primary", op=op, key=key.ref)
    if found.state is VersionState.SUPERSEDED:
        raise ProviderError(f"cannot {op} version {version} of {key.ref}: in-place key material is kept by AWS for "
                            "the key's lifetime (superseded, never retired)", op=op, key=key.ref)
    return found, version.split(":", 1)[0]


def disable(key: AwsKey, version: str) -> None:
    found, kid = _predecessor(key, version, "disable")
    if found.state is VersionState.ENABLED:
        key.client().disable_key(KeyId=kid)


def retire(key: AwsKey, version: str) -> None:
    found, kid = _predecessor(key, version, "retire")
    if found.state is VersionState.PENDING_DELETION:
        return
    meta = key.client().describe_key(KeyId=kid)["KeyMetadata"]
    _home, replicas = _regions(key, meta)
    for region in replicas:  # a multi-region primary waits for its replicas: schedule them first
        _schedule(key.client(region), kid)
    _schedule(key.client(), kid)
    log.info("aws key %s: version %s scheduled for deletion in %d days", key.ref, version, DELETION_WINDOW_DAYS)


def _schedule(client: Any, kid: str) -> None:
    # by key id: moto answers HTTP 500 for an ARN here
    _settled(client.schedule_key_deletion, KeyId=kid, PendingWindowInDays=DELETION_WINDOW_DAYS)


def _settled(call: Any, **kwargs: Any) -> None:
    """``call(**kwargs)``, where the key already being in that state (KMSInvalidStateException) or a
    replica already gone (NotFoundException) means the step is done: retirement and restore are idempotent."""
    try:
        call(**kwargs)
    except Exception as exc:
        if _code(exc) not in ("KMSInvalidStateException", "NotFoundException"):
            raise


def restore(key: AwsKey, version: str) -> None:
    found, kid = _predecessor(key, version, "restore")
    if found.state is VersionState.ENABLED:
        return
    meta = key.client().describe_key(KeyId=kid)["KeyMetadata"]
    _home, replicas = _regions(key, meta)
    for client in [key.client(), *(key.client(r) for r in replicas)]:
        if found.state is VersionState.PENDING_DELETION:
            _settled(client.cancel_key_deletion, KeyId=kid)
        client.enable_key(KeyId=kid)
