"""AWS KMS keys as a slot (boto3): wrap = Encrypt, unwrap = Decrypt, rewrap = ReEncrypt.

References: a key ARN, an alias ARN, ``alias/NAME`` or a multi-region id
``mrk-...`` (the last two in the region of the key option ``region``, else
``[providers.aws] region``, else the SDK's own: AWS_REGION, the profile).
The encryption context of every call is :attr:`Context.kms_context`,
``{"keystead:vault": vault, "keystead:secret": name}``, on Encrypt, Decrypt
and both sides of ReEncrypt, so an envelope moved under another name fails.

Version label (docs/envelope.md §3.3): ``<key-id>:<material>``. The key id
is the backing key's (an alias moved to a successor changes it) and always
comes from KMS's answer to the call that wrapped; the material is the key
material id KMS reports (DescribeKey ``CurrentKeyMaterialId``, ReEncrypt
``DestinationKeyMaterialId``, ListKeyRotations with ``ALL_KEY_MATERIAL``).
Where KMS reports no material id (moto does not; older regions), the
material part is derived from ListKeyRotations: ``<n>-<date>``, n rotations
so far and the date of the last one (the key's CreationDate for n = 0).
Encrypt reports no material, so a wrap is labelled with the material as
last listed (read before the call, cached :data:`MATERIAL_TTL` seconds): a
rotation meanwhile only mislabels a fresh slot as old, which the next
catch-up rewraps. Nothing is lost either way: in-place material is never
deleted, and the key-id part is exact.

Rotation kinds: an AWS_KMS symmetric key is ``scheduled`` (KMS rotates it;
keystead catches up; ``rotate --force`` is RotateKeyOnDemand); keys that
cannot rotate in place (custom key store, asymmetric, HMAC) named by an
alias are ``successor``; anything else (imported or external key store
material, or such a key named by its key ARN) does not rotate. See
:mod:`keystead.providers.aws_rotation` for rotation and retirement.

Throughput: ``rewrap_many`` keeps ``max_concurrency`` ReEncrypt calls in flight (default 64)
over one client whose connection pool holds as many connections. The rotation's rate limit
(:mod:`keystead.providers.limits`) is a key wrapper; this key lets it see every HTTP attempt
(``gate_requests``: botocore's before-send, needs-retry and after-call events), so the limit counts
retries too and hears of each throttling answer.

Logging: Encrypt and Decrypt bodies carry the data key. This module pins
the ``botocore``, ``boto3`` and ``urllib3`` loggers at INFO or above when it
is imported and again for every client it builds, whatever the root
logger's level, so their DEBUG body dumps are never emitted.

boto3 is imported here only, lazily: opening an aws key makes no network
call and imports nothing until the key is used.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from keystead.clock import utc
from keystead.envelope import Context
from keystead.errors import DecryptError, KeysteadError, ProviderError, ProviderUnavailable
from keystead.providers.base import Key, KeyInfo, RequestGate, RewrapResult, RotationKind, SlotItem, Wrapped

QUIET_LOGGERS = ("botocore", "boto3", "urllib3")
MATERIAL_TTL = 300.0
"""Seconds a wrap trusts the last listed key material of a key (then DescribeKey again)."""
DEFAULT_CONCURRENCY = 64
"""ReEncrypt calls in flight per process (``max_concurrency``): at a 40 ms round trip, 64 calls are
1,600/s, above what one process's boto3 can send (docs/benchmarks.md), so its CPU is the bound."""
ON_DEMAND_LIMIT = 10
"""RotateKeyOnDemand calls a key may have in its lifetime: 10 in the KMS API reference, 25 in the
newer developer guide; keystead refuses before the lower figure unless ``on_demand_limit`` says more."""
TAG_KEY = "keystead:key"
TAG_ROTATION = "keystead:rotation"
TAG_PREDECESSOR = "keystead:predecessor"

_ARN = re.compile(r"arn:(aws[a-z\-]*):kms:([a-z0-9\-]+):(\d{12}):(key|alias)/([A-Za-z0-9_/\-]+)")
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_KEY_ID = re.compile(rf"(mrk-[0-9a-f]{{32}}|{_UUID}|mrk-{_UUID})")  # (mrk-<uuid>: moto's 40-character MRK ids)
_ALIAS = re.compile(r"alias/[A-Za-z0-9:/_\-]{1,250}")
_TRANSIENT = frozenset({"ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequestsException",
                        "KMSInternalException", "DependencyTimeoutException", "InternalFailure", "ServiceUnavailable",
                        "CustomKeyStoreInvalidStateException", "XksProxyUriUnreachableException"})
_THROTTLING = frozenset({"ThrottlingException", "Throttling", "ThrottledException", "RequestLimitExceeded",
                         "TooManyRequestsException", "RequestThrottled", "RequestThrottledException"})
_UNREADABLE = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})
log = logging.getLogger("keystead.providers.aws")


def quiet_sdk_loggers() -> None:
    """Pin the SDK loggers at INFO or above: their DEBUG records carry request and response bodies."""
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO or logger.level == logging.NOTSET:
            logger.setLevel(max(logger.level, logging.INFO))


quiet_sdk_loggers()


def key_id_of(arn_or_id: str) -> str:
    """The bare key id of a key ARN (or of a bare id)."""
    return arn_or_id.rsplit("/", 1)[-1]


def stamp(when: datetime) -> str:
    return utc(when).strftime("%Y%m%dT%H%M%SZ")


class AwsRef:
    """A parsed reference: region (None: the SDK's), account (None: unknown), and what it names."""

    def __init__(self, ref: str, region: str | None) -> None:
        self.ref = ref
        m = _ARN.fullmatch(ref)
        self.account: str | None = None
        if m:
            _partition, self.region, self.account, kind, rest = m.groups()
            self.alias = f"alias/{rest}" if kind == "alias" else None
            self.key_id = None if self.alias else rest
            if self.key_id is not None and not _KEY_ID.fullmatch(self.key_id):
                raise ProviderError(f"malformed AWS KMS key ARN {ref!r}: after key/ comes a key id "
                                    "(a UUID or mrk- and 32 hex digits)", op="open", key=ref)
        elif ref.startswith("arn:"):
            raise ProviderError(f"malformed AWS KMS ARN {ref!r}: expected arn:aws:kms:REGION:ACCOUNT:key/ID "
                                "or arn:aws:kms:REGION:ACCOUNT:alias/NAME", op="open", key=ref)
        elif _ALIAS.fullmatch(ref):
            self.region, self.alias, self.key_id = region, ref, None
        elif _KEY_ID.fullmatch(ref):
            self.region, self.alias, self.key_id = region, None, ref
        else:
            raise ProviderError(f"malformed AWS KMS reference {ref!r}: use a key ARN, an alias ARN, "
                                "alias/NAME or mrk-ID", op="open", key=ref)


class AwsKey(Key):
    """One AWS KMS key (or alias) of keystead.toml."""

    provider = "aws"

    def __init__(self, ref: str, *, options: Mapping[str, object] | None = None,
                 provider_settings: Mapping[str, object] | None = None, clients: Any = None,
                 name: str | None = None, exclusive: bool = False, period_days: int = 90) -> None:
        self.ref = ref
        self.options = {**(provider_settings or {}), **(options or {})}
        region = self.options.get("region")
        self.parsed = AwsRef(ref, region if isinstance(region, str) else None)
        self.region = self.parsed.region
        self.name = name or (self.parsed.alias or ref).rsplit("/", 1)[-1]
        self.exclusive = exclusive
        manage = self.options.get("manage_rotation")
        self.manage_rotation = exclusive if manage is None else bool(manage)
        replicas = self.options.get("replica_regions") or []
        self.replica_regions = [str(r) for r in replicas] if isinstance(replicas, list) else []
        concurrency = self.options.get("max_concurrency")
        self.concurrency = concurrency if isinstance(concurrency, int) and concurrency > 0 else DEFAULT_CONCURRENCY
        self._factory = clients
        self._clients: dict[str | None, Any] = {}
        self._gates: list[RequestGate] = []
        self._lock = threading.Lock()
        self._labels: dict[str, tuple[str, float]] = {}  # key id -> (current label, when listed)
        self._target_id: str | None = None
        self._target_at = 0.0
        self.period_days = period_days
        limit = self.options.get("on_demand_limit")
        self.on_demand_limit = limit if isinstance(limit, int) else ON_DEMAND_LIMIT

    # -- clients -------------------------------------------------------------------
    def client(self, region: str | None = None) -> Any:
        """The KMS client for ``region`` (default: the key's), built on first use; thread-safe."""
        region = region or self.region
        with self._lock:
            found = self._clients.get(region)
            if found is None:
                found = self._clients[region] = self._make_client(region)
        return found

    def _make_client(self, region: str | None) -> Any:
        opts = {k: v for k, v in self.options.items() if k in ("endpoint", "profile", "role_arn")}
        opts["region"] = region
        opts["max_concurrency"] = self.concurrency
        quiet_sdk_loggers()
        client = self._factory("kms", opts) if self._factory is not None else make_client("kms", opts)
        for gate in self._gates:
            _attach(client, gate)
        return client

    def gate_requests(self, gate: RequestGate) -> None:
        """Call ``gate`` around every HTTP request this key's clients send, retries included
        (:class:`~keystead.providers.base.RequestGate`: a rate limit sees what KMS counts)."""
        with self._lock:
            self._gates.append(gate)
            for client in self._clients.values():
                _attach(client, gate)

    # -- labels --------------------------------------------------------------------
    def kind(self, meta: Mapping[str, Any]) -> RotationKind:
        """How the key ``meta`` describes rotates (see the module docstring)."""
        spec = meta.get("KeySpec") or meta.get("CustomerMasterKeySpec") or "SYMMETRIC_DEFAULT"
        origin = meta.get("Origin") or "AWS_KMS"
        if meta.get("KeyUsage", "ENCRYPT_DECRYPT") == "ENCRYPT_DECRYPT" and spec == "SYMMETRIC_DEFAULT" \
                and origin == "AWS_KMS" and not meta.get("CustomKeyStoreId"):
            return RotationKind.SCHEDULED
        if origin in ("EXTERNAL", "EXTERNAL_KEY_STORE") or self.parsed.alias is None:
            return RotationKind.NONE  # imported material, or no alias to move to a successor
        return RotationKind.SUCCESSOR

    def label(self, meta: Mapping[str, Any], rotations: Sequence[Mapping[str, Any]] | None = None) -> str:
        """The version label of a key's current material (see the module docstring)."""
        kid = meta["KeyId"]
        material = meta.get("CurrentKeyMaterialId")
        if material:
            return f"{kid}:{material}"
        dates = sorted(utc(r["RotationDate"]) for r in (rotations or ()) if r.get("RotationDate"))
        last = dates[-1] if dates else meta["CreationDate"]
        return f"{kid}:{len(dates)}-{stamp(last)}"

    def current_label(self, key_id: str, *, fresh: bool = False) -> str:
        """The label of ``key_id``'s current material, as last listed (within MATERIAL_TTL)."""
        cached = self._labels.get(key_id)
        if cached is not None and not fresh and time.monotonic() - cached[1] < MATERIAL_TTL:
            return cached[0]
        return self.remember(self.client().describe_key(KeyId=key_id)["KeyMetadata"])

    def remember(self, meta: Mapping[str, Any], rotations: Sequence[Mapping[str, Any]] | None = None, *,
                 target: bool = False) -> str:
        """Label ``meta``'s current material (listing its rotations where KMS gives no material id)
        and cache it; ``target``: ``meta`` is what the ref names now (DescribeKey of the ref)."""
        if rotations is None and not meta.get("CurrentKeyMaterialId") \
                and self.kind(meta) is RotationKind.SCHEDULED:
            rotations = self.rotations(meta["KeyId"])
        value = self.label(meta, rotations)
        now = time.monotonic()
        self._labels[meta["KeyId"]] = (value, now)
        if target:
            self._target_id, self._target_at = meta["KeyId"], now
        return value

    def rotations(self, key_id: str) -> list[dict[str, Any]]:
        """Every ListKeyRotations entry of ``key_id`` (all key material where KMS lists it)."""
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"KeyId": key_id, "IncludeKeyMaterial": "ALL_KEY_MATERIAL"}
        while True:
            page = self.client().list_key_rotations(**kwargs)
            out.extend(page.get("Rotations", []))
            if not page.get("Truncated"):
                return out
            kwargs["Marker"] = page["NextMarker"]

    def _labelled(self, key_arn: str, material: str | None, known: Mapping[str, str]) -> str:
        kid = key_id_of(key_arn)
        if material:
            return f"{kid}:{material}"
        return known.get(kid) or f"{kid}:unlisted"  # never a primary: the next catch-up rewraps it

    def _source(self, version: str) -> str:
        kid = version.split(":", 1)[0]
        if not _KEY_ID.fullmatch(kid):
            raise DecryptError()
        return kid

    # -- what the key does ---------------------------------------------------------------
    def _target(self) -> str:
        """The backing key id the ref names now (an alias is resolved again after MATERIAL_TTL)."""
        if self.parsed.key_id:
            return self.parsed.key_id
        if self._target_id is None or time.monotonic() - self._target_at >= MATERIAL_TTL:
            self.remember(self.client().describe_key(KeyId=self.ref)["KeyMetadata"], target=True)
        assert self._target_id is not None
        return self._target_id

    def _known_labels(self, *, fresh: bool = False) -> dict[str, str]:
        target = self._target()
        return {target: self.current_label(target, fresh=fresh)}

    def _wrap(self, dek: bytes, context: Context) -> Wrapped:
        known = self._known_labels()  # before the call: a race mislabels a fresh slot as old, never the reverse
        out = self.client().encrypt(KeyId=self.ref, Plaintext=dek, EncryptionContext=context.kms_context)
        return Wrapped(self._labelled(out["KeyId"], None, known), out["CiphertextBlob"])

    def _unwrap(self, wrapped: Wrapped, context: Context) -> bytes:
        out = self.client().decrypt(KeyId=self._source(wrapped.version), CiphertextBlob=wrapped.blob,
                                    EncryptionContext=context.kms_context)
        plaintext: bytes = out["Plaintext"]
        return plaintext

    def _rewrap(self, wrapped: Wrapped, context: Context) -> Wrapped:
        return self._reencrypt(wrapped.version, wrapped.blob, context, self._known_labels())

    def _reencrypt(self, version: str, blob: bytes, context: Context, known: Mapping[str, str]) -> Wrapped:
        out = self.client().re_encrypt(
            CiphertextBlob=blob, SourceKeyId=self._source(version), SourceEncryptionContext=context.kms_context,
            DestinationKeyId=self.ref, DestinationEncryptionContext=context.kms_context)
        return Wrapped(self._labelled(out["KeyId"], out.get("DestinationKeyMaterialId"), known),
                       out["CiphertextBlob"])

    def rewrap_many(self, vault: str, items: Sequence[SlotItem]) -> list[RewrapResult]:
        """Concurrent ReEncrypt calls over one client (clients are thread-safe), one result per item.

        Per item only decryption failures (InvalidCiphertext, IncorrectKey; AccessDenied when other
        items of the batch succeed: a slot made by a key we may not use). Throttling past botocore's
        adaptive retries, or the network, raises ProviderUnavailable for the whole batch; AccessDenied
        on every item, or any other refusal, raises ProviderError for the batch: nothing is marked."""
        if not items:
            return []
        with self._translated("rewrap"):
            known = self._known_labels()

        def one(item: SlotItem) -> RewrapResult | Exception:
            secret, version, blob = item
            try:
                return self._reencrypt(version, blob, Context(vault, secret), known)
            except DecryptError as exc:
                return exc
            except Exception as exc:
                return self._error("rewrap", exc) or exc

        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            results = list(pool.map(one, items))
        errors = [r for r in results if isinstance(r, Exception) and not isinstance(r, DecryptError)]
        transient = next((e for e in errors if isinstance(e, ProviderUnavailable)), None)
        if transient is not None:
            raise transient
        denied = [e for e in errors if isinstance(e, ProviderError) and e.code == "AccessDeniedException"]
        fatal = next((e for e in errors if e not in denied), None)
        if fatal is not None:
            raise fatal
        if denied and len(denied) == len(items):
            raise denied[0]
        return [DecryptError() if isinstance(r, Exception) and not isinstance(r, DecryptError) else r
                for r in results]

    # -- how the key is managed: see aws_rotation -------------------------------------------
    def describe(self) -> KeyInfo:
        from keystead.providers import aws_rotation

        with self._translated("describe"):
            return aws_rotation.describe(self)

    def _rotate(self, *, now: datetime, token: str) -> KeyInfo:
        from keystead.providers import aws_rotation

        return aws_rotation.rotate(self, now=now, token=token)

    def disable(self, version: str) -> None:
        from keystead.providers import aws_rotation

        with self._translated("disable"):
            aws_rotation.disable(self, version)

    def retire(self, version: str) -> None:
        from keystead.providers import aws_rotation

        with self._translated("retire"):
            aws_rotation.retire(self, version)

    def restore(self, version: str) -> None:
        from keystead.providers import aws_rotation

        with self._translated("restore"):
            aws_rotation.restore(self, version)

    # -- errors, mapped once ---------------------------------------------------------------
    def _error(self, op: str, exc: Exception) -> KeysteadError | None:
        return map_error(self.ref, self.region, op, exc)


def _attach(client: Any, gate: RequestGate) -> None:
    """``gate`` on botocore's events of ``client``: before-send (every attempt; registered after the
    adaptive retry mode's own rate limiter, so it runs last before the wire), needs-retry (the
    answer of each attempt), after-call and after-call-error (the call is over)."""
    def sending(**_: Any) -> None:
        gate.sending()  # returns None: botocore takes a non-None answer of before-send as the response

    def answered(response: Any = None, **_: Any) -> None:
        code = response[1].get("Error", {}).get("Code") if response is not None else None
        gate.answered(throttled=code in _THROTTLING)

    def finished(**_: Any) -> None:
        gate.finished()

    events = client.meta.events
    events.register("before-send", sending)
    events.register("needs-retry", answered)
    events.register("after-call", finished)
    events.register("after-call-error", finished)


_FIX = {
    "AccessDeniedException": "the credentials in use may not call {api} on it (grant it: "
                             "`keystead policy generate`), or the slot was wrapped by a key they cannot use",
    "NotFoundException": "no such key or alias in region {region}: check the reference and the region",
    "DisabledException": "the key is disabled: enable it (aws kms enable-key), or "
                         "`keystead keys restore KEY VERSION` if keystead disabled it",
    "KMSInvalidStateException": "the key is not usable in its state (pending deletion or import): "
                                "`keystead keys restore KEY VERSION` cancels a deletion keystead scheduled",
    "ExpiredTokenException": "the AWS credentials have expired: refresh them (aws sso login, a new session)",
    "UnrecognizedClientException": "the AWS credentials are not valid: check AWS_PROFILE and the access key",
    "InvalidKeyUsageException": "the key's usage does not allow {api} (a signing key holds no slots)",
    "UnsupportedOperationException": "KMS does not support {api} for this key",
}
_API = {"wrap": "kms:Encrypt", "unwrap": "kms:Decrypt", "rewrap": "kms:ReEncrypt*", "describe": "kms:DescribeKey",
        "rotate": "the rotation calls", "disable": "kms:DisableKey", "retire": "kms:ScheduleKeyDeletion",
        "restore": "kms:CancelKeyDeletion/EnableKey"}


def map_error(ref: str, region: str | None, op: str, exc: Exception) -> KeysteadError | None:
    """One keystead error for a botocore exception: a one-line message naming the key and the fix."""
    import botocore.exceptions as be

    where = f"{op} with AWS KMS key {ref}"
    if isinstance(exc, be.ClientError):
        code = str(exc.response.get("Error", {}).get("Code") or "Unknown")
        if code in _TRANSIENT:
            return ProviderUnavailable(f"{where}: KMS is unavailable or throttling ({code}) after retries; "
                                       "the next sweep retries", op=op, key=ref, code=code)
        if code in _UNREADABLE and op in ("unwrap", "rewrap"):
            return DecryptError()
        fix = _FIX.get(code, "KMS refused the call").format(api=_API.get(op, op), region=region or "(SDK default)")
        return ProviderError(f"{where}: {code}: {fix}", op=op, key=ref, code=code)
    if isinstance(exc, (be.EndpointConnectionError, be.ConnectionError, be.ConnectTimeoutError,
                        be.ReadTimeoutError)):
        return ProviderUnavailable(f"{where}: cannot reach KMS ({type(exc).__name__}); the next sweep retries",
                                   op=op, key=ref, code=type(exc).__name__)
    if isinstance(exc, (be.NoCredentialsError, be.PartialCredentialsError)):
        return ProviderError(f"{where}: no AWS credentials found: set AWS_PROFILE, AWS_ACCESS_KEY_ID or a role "
                             "(role_arn, IRSA)", op=op, key=ref, code=type(exc).__name__)
    if isinstance(exc, be.NoRegionError):
        return ProviderError(f"{where}: no region: set region in [keys.X] or [providers.aws], or AWS_REGION",
                             op=op, key=ref, code="NoRegion")
    if isinstance(exc, be.BotoCoreError):
        return ProviderError(f"{where}: {type(exc).__name__}", op=op, key=ref, code=type(exc).__name__)
    return None


def make_client(service: str, options: Mapping[str, object]) -> Any:
    """A boto3 client from a Session: adaptive retries, the SDK's own environment handling
    (AWS_ENDPOINT_URL, AWS_REGION, AWS_PROFILE, web identity for IRSA), and ``role_arn`` assumed
    through botocore's own AssumeRole credential fetcher (refreshed before it expires)."""
    import boto3
    from botocore.config import Config

    quiet_sdk_loggers()
    region = options.get("region")
    profile = options.get("profile")
    session = boto3.session.Session(profile_name=str(profile) if profile else None,
                                    region_name=str(region) if region else None)
    role_arn = options.get("role_arn")
    if role_arn:
        from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials

        base = session._session  # the botocore session: its credential chain is the source
        fetcher = AssumeRoleCredentialFetcher(base.create_client, base.get_credentials(), str(role_arn),
                                              extra_args={"RoleSessionName": "keystead"})
        base._credentials = DeferredRefreshableCredentials(fetcher.fetch_credentials, "assume-role")
    endpoint = options.get("endpoint")
    threads = options.get("max_concurrency")
    pool = max(10, threads if isinstance(threads, int) else 0)  # one connection per rewrap thread, or more
    return session.client(service, endpoint_url=str(endpoint) if endpoint else None,
                          config=Config(retries={"mode": "adaptive"}, max_pool_connections=pool))
