"""The KMS calls of disaster recovery for an AWS multi-region key (``keystead dr``).

Each function asks one region and answers in keystead's terms; the checks,
the drill and their verdicts are :mod:`keystead.rotation.dr`'s.

- :func:`locate`: the key's id and its multi-region layout (primary region,
  listed replicas), from the first region of :meth:`AwsKey.failover_order`
  that answers. The primary is read from ``MultiRegionConfiguration.PrimaryKey``,
  never from ``MultiRegionKeyType`` (moto 5.2.5 shares one configuration dict
  between a primary and its replicas, so the primary may report REPLICA).
- :func:`region_state`: the KeyState of the key in one region ("missing" when
  the region has no replica).
- :func:`rotation_settings`: GetKeyRotationStatus of the primary.
- :func:`encrypt_in` / :func:`decrypt_in`: a drill canary, by key id, in one region.
- :func:`update_primary_region`: UpdatePrimaryRegion, asked in the current
  primary's region (where AWS takes it: the primary region must be reachable).

Errors are keystead errors naming the region: ProviderUnavailable when the
region cannot serve (connection, 5xx, KMSInternal), ProviderError otherwise
(AccessDenied...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keystead.errors import KeysteadError, ProviderError, ProviderUnavailable
from keystead.providers.aws import key_id_of, map_error

if TYPE_CHECKING:
    from keystead.providers.aws import AwsKey

MISSING = "missing"
"""The state of a region that holds no replica of the key."""


@dataclass(frozen=True, slots=True)
class Layout:
    key_id: str
    multi_region: bool
    primary: str
    """The region of the primary key, as KMS reports it."""
    replicas: tuple[str, ...]
    """The replica regions KMS lists."""
    asked: str | None
    """The region that answered."""


def _error(key: AwsKey, region: str | None, op: str, exc: Exception) -> KeysteadError:
    if isinstance(exc, KeysteadError):
        return exc
    mapped = map_error(key.ref, region, op, exc)
    if mapped is None:
        raise exc
    message = f"region {region or '(SDK default)'}: {mapped}"
    code = mapped.code if isinstance(mapped, ProviderError) else None
    if isinstance(mapped, ProviderUnavailable) or key._cannot_serve(exc, replica=False):
        return ProviderUnavailable(message, op=op, key=key.ref, code=code or type(exc).__name__)
    return ProviderError(message, op=op, key=key.ref, code=code)


def _code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def locate(key: AwsKey) -> Layout:
    """Where the key lives (see the module docstring); the first region that answers wins."""
    last: KeysteadError | None = None
    for region in key.failover_order():
        name = key.parsed.key_id or (key.ref if region == key.region else key.parsed.alias)
        try:
            meta: dict[str, Any] = key.client(region).describe_key(KeyId=name)["KeyMetadata"]
        except Exception as exc:
            last = _error(key, region, "describe", exc)
            if isinstance(last, ProviderUnavailable) or (region != key.region and _code(exc) == "NotFoundException"):
                continue  # this region cannot tell: ask the next
            raise last from exc
        config = meta.get("MultiRegionConfiguration") or {}
        home = str(meta["Arn"]).split(":")[3]
        primary = str((config.get("PrimaryKey") or {}).get("Region") or home)
        replicas = tuple(str(r["Region"]) for r in config.get("ReplicaKeys", []) if r.get("Region") != primary)
        return Layout(key_id_of(meta["KeyId"]), bool(meta.get("MultiRegion")), primary, replicas, region)
    assert last is not None  # failover_order has at least the ref's region
    raise last


def region_state(key: AwsKey, region: str, key_id: str) -> str:
    """KeyState of ``key_id`` in ``region`` (Enabled, Disabled, PendingDeletion, ...), or MISSING."""
    try:
        return str(key.client(region).describe_key(KeyId=key_id)["KeyMetadata"].get("KeyState", "Enabled"))
    except Exception as exc:
        if _code(exc) == "NotFoundException":
            return MISSING
        raise _error(key, region, "describe", exc) from exc


def rotation_settings(key: AwsKey, region: str, key_id: str) -> dict[str, Any]:
    """Automatic rotation of the primary: enabled, period in days, next date (None where KMS says none)."""
    try:
        out = key.client(region).get_key_rotation_status(KeyId=key_id)
    except Exception as exc:
        raise _error(key, region, "describe", exc) from exc
    nxt = out.get("NextRotationDate")
    return {"enabled": bool(out.get("KeyRotationEnabled")), "period_days": out.get("RotationPeriodInDays"),
            "next": nxt.isoformat() if nxt is not None else None}


def encrypt_in(key: AwsKey, region: str, key_id: str, canary: bytes, context: dict[str, str]) -> bytes:
    try:
        blob: bytes = key.client(region).encrypt(KeyId=key_id, Plaintext=canary,
                                                 EncryptionContext=context)["CiphertextBlob"]
    except Exception as exc:
        raise _error(key, region, "wrap", exc) from exc
    return blob


def decrypt_in(key: AwsKey, region: str, key_id: str, blob: bytes, context: dict[str, str]) -> bytes:
    try:
        plaintext: bytes = key.client(region).decrypt(KeyId=key_id, CiphertextBlob=blob,
                                                      EncryptionContext=context)["Plaintext"]
    except Exception as exc:
        raise _error(key, region, "unwrap", exc) from exc
    return plaintext


def update_primary_region(key: AwsKey, layout: Layout, region: str) -> None:
    """UpdatePrimaryRegion of ``layout``'s key to ``region``, asked in the current primary's region."""
    try:
        key.client(layout.primary).update_primary_region(KeyId=layout.key_id, PrimaryRegion=region)
    except Exception as exc:
        raise _error(key, layout.primary, "promote", exc) from exc
