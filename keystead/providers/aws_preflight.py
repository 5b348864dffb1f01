"""May these credentials rotate this AWS KMS key? Checked before anything is done.

``preflight(key, sample)`` returns one :class:`Check` per IAM action the key's
rotation needs (see :mod:`keystead.providers.aws_rotation` for what each kind
calls), each found out in the least invasive way the API offers:

- ``dry run``: KMS's ``DryRun`` parameter (Encrypt, Decrypt, ReEncrypt,
  GenerateDataKey*, Sign, Verify, ... in botocore's model): KMS checks the
  permission and answers ``DryRunOperationException`` without doing anything.
  ReEncrypt is tried on ``sample``, a real slot of the key from the vault, with
  its own encryption context, so both ``kms:ReEncryptFrom`` (the slot's key)
  and ``kms:ReEncryptTo`` (the key) are checked; so is Decrypt, which the
  rotation's verification step calls on every rewrapped slot. A server that
  ignores DryRun (moto) does the call, and its answer is dropped: the vault is
  never written and no data key is kept.
- ``read-only call``: an action that only reads (DescribeKey, ListKeyRotations,
  GetKeyRotationStatus, ListResourceTags, GetKeyPolicy, ListKeys) is called.
- ``cannot check without doing it``: CreateKey, TagResource, ReplicateKey,
  UpdateAlias, DisableKey, ScheduleKeyDeletion, EnableKeyRotation and
  RotateKeyOnDemand have no DryRun and no harmless form; they are listed as
  unchecked, never called.

A refusal is ``denied`` when KMS answers AccessDeniedException (or any HTTP
403, as IAM's own query-protocol errors and moto's IAM enforcement are); the
action named in its message ("... is not authorized to perform: kms:X") is
reported when there is one. Nothing here changes a key or the vault.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keystead.envelope import Context
from keystead.providers.base import RotationKind

if TYPE_CHECKING:
    from keystead.providers.aws import AwsKey

ALLOWED, DENIED, UNCHECKED, FAILED, SKIPPED = "allowed", "denied", "unchecked", "error", "not needed"
DRY_RUN, READ, CANNOT = "dry run", "read-only call", "cannot check without doing it"
_PERFORM = re.compile(r"perform:? (kms:[A-Za-z]+)")
_DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"})
_PLACEHOLDER = b"\x01" * 160
"""A ciphertext-shaped placeholder for a key no slot uses yet: KMS may refuse it as invalid."""


@dataclass(frozen=True)
class Check:
    actions: tuple[str, ...]
    """The IAM actions this line is about (ReEncrypt: From and To)."""
    status: str
    how: str
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"actions": list(self.actions), "status": self.status, "how": self.how, "detail": self.detail}


def _error_of(exc: Exception) -> tuple[str, int, str] | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    error = response.get("Error", {})
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return str(error.get("Code") or ""), status, str(error.get("Message") or "")


def _probe(actions: tuple[str, ...], how: str, call: Callable[[], Any]) -> Check:
    try:
        call()
    except Exception as exc:
        found = _error_of(exc)
        if found is None:
            raise
        code, status, message = found
        if code == "DryRunOperationException":
            return Check(actions, ALLOWED, how, "KMS: the request would have succeeded")
        if code in _DENIED_CODES or status == 403 or "AccessDenied" in message:
            named = tuple(a for a in dict.fromkeys(_PERFORM.findall(message)) if a in actions) or actions
            return Check(named, DENIED, how, "access denied")
        return Check(actions, FAILED, how, f"{code or status}: {message.splitlines()[0][:200] if message else ''}")
    return Check(actions, ALLOWED, how)


def _unchecked(action: str, why: str) -> Check:
    return Check((action,), UNCHECKED, CANNOT, why)


def preflight(key: AwsKey, sample: tuple[str, str, str, bytes] | None) -> tuple[RotationKind | None, list[Check]]:
    """The checks for ``key``; ``sample`` = (vault, secret, version, blob) of one of its slots, if any."""
    client = key.client()
    meta: dict[str, Any] = {}

    def describe() -> None:
        meta.update(client.describe_key(KeyId=key.ref)["KeyMetadata"])

    first = _probe(("kms:DescribeKey",), READ, describe)
    if first.status != ALLOWED:
        return None, [first]
    kind = key.kind(meta)
    kid = meta["KeyId"]
    checks = [first]
    if kind is RotationKind.SCHEDULED:
        checks += _scheduled(key, client, meta)
    elif kind is RotationKind.SUCCESSOR:
        checks += _successor(key, client, meta)
    if meta.get("KeyUsage", "ENCRYPT_DECRYPT") == "ENCRYPT_DECRYPT" and kind is not RotationKind.NONE:
        checks.append(_reencrypt(key, client, kid, sample))
        checks.append(_decrypt(client, sample))
    return kind, checks


def _scheduled(key: AwsKey, client: Any, meta: Mapping[str, Any]) -> list[Check]:
    kid = meta["KeyId"]
    status: dict[str, Any] = {}

    def rotation_status() -> None:
        status.update(client.get_key_rotation_status(KeyId=kid))

    checks = [_probe(("kms:ListKeyRotations",), READ, lambda: client.list_key_rotations(KeyId=kid, Limit=1)),
              _probe(("kms:GetKeyRotationStatus",), READ, rotation_status)]
    if not key.manage_rotation:
        checks.append(Check(("kms:EnableKeyRotation",), SKIPPED, CANNOT,
                            "keystead does not manage this key's schedule (manage_rotation is off)"))
    elif status.get("KeyRotationEnabled"):
        checks.append(Check(("kms:EnableKeyRotation",), SKIPPED, CANNOT,
                            "automatic rotation is on already; needed only if the period changes"))
    else:
        checks.append(_unchecked("kms:EnableKeyRotation", "the worker turns automatic rotation on at its next sweep"))
    checks.append(_unchecked("kms:RotateKeyOnDemand", "only for `keystead rotate KEY --force`"))
    return checks


def _successor(key: AwsKey, client: Any, meta: Mapping[str, Any]) -> list[Check]:
    kid = meta["KeyId"]
    checks = [
        _probe(("kms:ListResourceTags",), READ, lambda: client.list_resource_tags(KeyId=kid)),
        _probe(("kms:GetKeyPolicy",), READ, lambda: client.get_key_policy(KeyId=kid, PolicyName="default")),
        _probe(("kms:ListKeys",), READ, lambda: client.list_keys(Limit=1)),
        _unchecked("kms:CreateKey", "the successor key, with the same spec, usage, policy and tags"),
        _unchecked("kms:TagResource", "the successor's tags (keystead:key, keystead:rotation, keystead:predecessor)"),
    ]
    if meta.get("MultiRegion"):
        for region in key.replica_regions or [r["Region"] for r in
                                              meta.get("MultiRegionConfiguration", {}).get("ReplicaKeys", [])]:
            checks.append(_unchecked("kms:ReplicateKey", f"the successor's replica in {region}"))
    checks.append(_unchecked("kms:UpdateAlias", f"{key.parsed.alias} moved to the successor (in every region)"))
    if key.exclusive:
        checks.append(_unchecked("kms:DisableKey", "retirement: the predecessor after the grace period"))
        checks.append(_unchecked("kms:ScheduleKeyDeletion", "retirement: the predecessor after a second grace period"))
    else:
        checks.append(Check(("kms:DisableKey", "kms:ScheduleKeyDeletion"), SKIPPED, CANNOT,
                            "the key is not exclusive: keystead never retires its predecessors"))
    return checks


def _reencrypt(key: AwsKey, client: Any, kid: str, sample: tuple[str, str, str, bytes] | None) -> Check:
    actions = ("kms:ReEncryptFrom", "kms:ReEncryptTo")
    if sample is None:
        check = _probe(actions, DRY_RUN, lambda: client.re_encrypt(
            CiphertextBlob=_PLACEHOLDER, SourceKeyId=kid, DestinationKeyId=key.ref, DryRun=True))
        if check.status == FAILED:  # the placeholder itself was refused: nothing is known
            return Check(actions, UNCHECKED, DRY_RUN, "no envelope holds a slot of this key yet: "
                                                      "checked once one does")
        return check
    vault, secret, version, blob = sample
    source = version.split(":", 1)[0]
    context = Context(vault, secret).kms_context
    return _probe(actions, DRY_RUN, lambda: client.re_encrypt(
        CiphertextBlob=blob, SourceKeyId=source, SourceEncryptionContext=context,
        DestinationKeyId=key.ref, DestinationEncryptionContext=context, DryRun=True))


def _decrypt(client: Any, sample: tuple[str, str, str, bytes] | None) -> Check:
    """Verification opens rewrapped slots (Decrypt): checked on the sample slot."""
    if sample is None:
        return Check(("kms:Decrypt",), UNCHECKED, DRY_RUN, "verification opens each rewrapped slot; no envelope "
                                                          "holds a slot of this key yet: checked once one does")
    vault, secret, version, blob = sample
    check = _probe(("kms:Decrypt",), DRY_RUN, lambda: client.decrypt(
        CiphertextBlob=blob, KeyId=version.split(":", 1)[0], EncryptionContext=Context(vault, secret).kms_context,
        DryRun=True))
    return Check(check.actions, check.status, check.how, check.detail or "verification opens each rewrapped slot")
