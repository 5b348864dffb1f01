"""GCP Cloud KMS: a CryptoKey (purpose ENCRYPT_DECRYPT) wraps data keys, its versions are the labels.

- wrap = Encrypt on the CryptoKey with ``additional_authenticated_data`` =
  :attr:`Context.aad` (docs/envelope.md §3.3); the version label is the short
  CryptoKeyVersion id from ``EncryptResponse.name`` (``"3"``, never the full name).
- unwrap = Decrypt on the CryptoKey: the ciphertext names its version.
- rewrap = Decrypt then Encrypt under the primary (Cloud KMS has no
  server-side re-encrypt): the data key is in memory for the call only;
  ``rewrap_many`` runs up to ``max_concurrency`` calls at once.
- Integrity: every request carries the CRC32C of what it sends and every
  response is checked (``verified_*`` and the returned CRC32C), as Google
  recommends; a mismatch is retried once, then fails; corrupted bytes are
  never returned.
- Rotation: in place (CreateCryptoKeyVersion, then UpdatePrimaryVersion), or
  scheduled when the CryptoKey has a ``rotation_period``. Idempotent per
  token through two labels on the CryptoKey, written before the version is
  made: ``keystead-rotation`` (the token) and ``keystead-rotation-after``
  (the highest version id then). A call whose token matches adopts the first
  version after that id, so a crash between the two calls never makes two.
- Retirement: disable (state DISABLED), then DestroyCryptoKeyVersion
  (DESTROY_SCHEDULED, restorable until its destroy_scheduled_duration ends);
  restore = RestoreCryptoKeyVersion (if scheduled) and enable.

google-cloud-kms is imported here only, when a gcp key is first used, and
always speaks REST (the transport the tests drive). docs/gcp.md is the guide.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from keystead.envelope import Context
from keystead.errors import DecryptError, KeysteadError, ProviderError, ProviderUnavailable
from keystead.providers.base import (
    Key,
    KeyInfo,
    KeyVersion,
    RewrapResult,
    RotationKind,
    SlotItem,
    VersionState,
    Wrapped,
)

_NAME = re.compile(r"projects/([a-z][a-z0-9.:\-]{4,62})/locations/([a-z0-9\-]{1,63})/"
                   r"keyRings/([A-Za-z0-9_\-]{1,63})/cryptoKeys/([A-Za-z0-9_\-]{1,63})")
_REGIONAL = re.compile(r"(?:https?://)?(?:cloudkms\.([a-z0-9\-]+)\.rep\.googleapis\.com|([a-z0-9\-]+)-kms\.googleapis\.com)")
TOKEN_LABEL, AFTER_LABEL = "keystead-rotation", "keystead-rotation-after"
DEFAULT_CONCURRENCY = 8
DEFAULT_RETRY_SECONDS = 60
_TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL", "ABORTED")
_HTTP_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
                504: "DEADLINE_EXCEEDED"}
# CryptoKeyVersionState numbers (google.cloud.kms_v1.CryptoKeyVersion.CryptoKeyVersionState).
ENABLED, DISABLED, DESTROYED, DESTROY_SCHEDULED, PENDING_GENERATION = 1, 2, 3, 4, 5
_STATES = {ENABLED: VersionState.ENABLED, DISABLED: VersionState.DISABLED, DESTROYED: VersionState.RETIRED,
           DESTROY_SCHEDULED: VersionState.PENDING_DELETION,
           9: VersionState.PENDING_DELETION,  # PENDING_EXTERNAL_DESTRUCTION
           10: VersionState.RETIRED}  # EXTERNAL_DESTRUCTION_FAILED: nothing keystead can bring back
_QUIET = ("google.cloud.kms_v1", "google.api_core", "google.auth")
"""At DEBUG these log request and response bodies (a data key!): held at WARNING whatever the root level."""
_T = TypeVar("_T")


class _Corrupt(Exception):
    """A CRC32C check failed: the request or the response was damaged in transit."""


def crc32c(data: bytes) -> int:
    import google_crc32c

    return int(google_crc32c.value(data))


def label_value(token: str) -> str:
    """A rotation token as a GCP label value (1-63 of a-z 0-9 _ -)."""
    value = re.sub(r"[^a-z0-9_\-]", "-", token.lower())
    return value if len(value) <= 63 else "h-" + hashlib.sha256(token.encode()).hexdigest()[:40]


def check_name(ref: str) -> tuple[str, str, str, str]:
    m = _NAME.fullmatch(ref)
    if m is None:
        raise ProviderError(f"malformed GCP key name {ref!r}: use projects/PROJECT/locations/LOCATION/keyRings/RING/"
                            "cryptoKeys/KEY (ring and key ids: 1-63 of A-Z a-z 0-9 _ -)", op="open", key=ref)
    project, location, ring, key = m.groups()
    return project, location, ring, key


def _mask(*paths: str) -> Any:
    from google.protobuf import field_mask_pb2

    return field_mask_pb2.FieldMask(paths=list(paths))


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _when(ts: Any) -> datetime:
    if ts is None:
        return datetime.fromtimestamp(0, UTC)
    ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return datetime.fromtimestamp(ts.timestamp(), UTC)  # a plain datetime, not the SDK's subclass


def _order(version_id: str) -> tuple[int, str]:
    return (int(version_id), "") if version_id.isdigit() else (0, version_id)


def status_of(exc: Exception) -> str | None:
    """The google.rpc status name of an api_core error (REST: the body's ``error.status``)."""
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            status = response.json().get("error", {}).get("status")
            if isinstance(status, str) and status:
                return status
        except Exception:  # an unparsable body: fall back to the HTTP code
            pass
    grpc_code = getattr(exc, "grpc_status_code", None)
    if grpc_code is not None:
        return str(grpc_code.name)
    code = getattr(exc, "code", None)
    return _HTTP_STATUS.get(code) if isinstance(code, int) else None


class GcpKey(Key):
    """One CryptoKey, reached through an injected or lazily built KeyManagementServiceClient."""

    provider = "gcp"

    def __init__(self, ref: str, *, client: Callable[[], Any], name: str | None = None,
                 max_concurrency: int = DEFAULT_CONCURRENCY, retry_seconds: int = DEFAULT_RETRY_SECONDS) -> None:
        check_name(ref)
        self.ref = ref
        self.name = name or ref
        self._make_client = client
        self._client: Any = None
        self._lock = threading.Lock()
        self._workers = max(1, max_concurrency)
        self._retry_seconds = retry_seconds
        self._retry: Any = None

    # -- plumbing ----------------------------------------------------------------
    def _kms(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    self._client = self._make_client()
                except ImportError:
                    raise ProviderError(f"gcp key {self.ref}: google-cloud-kms is not installed: "
                                        "pip install 'keystead[gcp]'", op="open", key=self.ref) from None
                for name in _QUIET:
                    logging.getLogger(name).setLevel(logging.WARNING)
                if self._retry_seconds > 0:
                    from google.api_core import retry

                    self._retry = retry.Retry(predicate=retry.if_transient_error, initial=0.1,
                                              maximum=min(10.0, self._retry_seconds), multiplier=1.3,
                                              timeout=float(self._retry_seconds))
            return self._client

    def _call(self, method: str, **request: Any) -> Any:
        client = self._kms()
        return getattr(client, method)(request=request, retry=self._retry)

    def _checked_twice(self, attempt: Callable[[], _T], op: str) -> _T:
        for tries in (1, 2):
            try:
                return attempt()
            except _Corrupt as exc:
                if tries == 2:
                    raise ProviderError(f"gcp key {self.ref}: {op} failed its CRC32C integrity check twice "
                                        f"({exc}): data was damaged between keystead and Cloud KMS; nothing was "
                                        "used or written, retry later", op=op, key=self.ref,
                                        code="CRC32C_MISMATCH") from None
        raise AssertionError("unreachable")

    # -- what the key does ---------------------------------------------------------
    def _wrap(self, dek: bytes, context: Context) -> Wrapped:
        aad = context.aad

        def attempt() -> Wrapped:
            resp = self._call("encrypt", name=self.ref, plaintext=dek, additional_authenticated_data=aad,
                              plaintext_crc32c=crc32c(dek), additional_authenticated_data_crc32c=crc32c(aad))
            if not resp.verified_plaintext_crc32c or not resp.verified_additional_authenticated_data_crc32c:
                raise _Corrupt("the request's checksums were not verified by the service")
            if resp.ciphertext_crc32c is None or resp.ciphertext_crc32c != crc32c(resp.ciphertext):
                raise _Corrupt("the ciphertext does not match its checksum")
            if not resp.name.startswith(self.ref + "/cryptoKeyVersions/"):
                raise ProviderError(f"gcp key {self.ref}: Encrypt answered for another key", op="wrap",
                                    key=self.ref, code="WRONG_KEY")
            return Wrapped(_short(resp.name), bytes(resp.ciphertext))

        return self._checked_twice(attempt, "wrap")

    def _unwrap(self, wrapped: Wrapped, context: Context) -> bytes:
        aad = context.aad

        def attempt() -> bytes:
            resp = self._call("decrypt", name=self.ref, ciphertext=wrapped.blob, additional_authenticated_data=aad,
                              ciphertext_crc32c=crc32c(wrapped.blob),
                              additional_authenticated_data_crc32c=crc32c(aad))
            if resp.plaintext_crc32c is None or resp.plaintext_crc32c != crc32c(resp.plaintext):
                raise _Corrupt("the data key does not match its checksum")
            return bytes(resp.plaintext)

        try:
            return self._checked_twice(attempt, "unwrap")
        except KeysteadError:
            raise
        except Exception as exc:
            if status_of(exc) == "FAILED_PRECONDITION":
                raise self._not_enabled(wrapped.version) from exc
            raise

    def _not_enabled(self, version: str) -> ProviderError:
        """Decrypt refused: say which state the slot's version is in and what brings it back."""
        try:
            state = _STATES.get(self._version(version).state)
        except Exception:  # the first error is the one to report
            state = None
        if state is VersionState.RETIRED:
            fix = ("it was destroyed and cannot come back: open the secret through another slot, "
                   "or restore it from a backup")
        else:
            fix = f"if rotation disabled it, `keystead keys restore {self.name} {version}` brings it back"
        what = f"is {state}" if state else "is not enabled"
        return ProviderError(f"gcp key {self.ref}: version {version} {what}: {fix}", op="unwrap", key=self.ref,
                             code="FAILED_PRECONDITION")

    def rewrap_many(self, vault: str, items: Sequence[SlotItem]) -> list[RewrapResult]:
        """Decrypt + Encrypt per slot, ``max_concurrency`` at a time; one result per item, in order.

        A slot that does not open (wrong name, tampered, or its version disabled) is that item's
        DecryptError; anything else (an outage: ProviderUnavailable) is raised for the batch."""
        def one(item: SlotItem) -> RewrapResult:
            secret, version, blob = item
            try:
                return self.rewrap(Wrapped(version, blob), Context(vault, secret))
            except DecryptError as exc:
                return exc
            except ProviderError as exc:
                if exc.code == "FAILED_PRECONDITION" and exc.op == "unwrap":
                    return DecryptError(str(exc))
                raise

        if len(items) <= 1 or self._workers == 1:
            return [one(i) for i in items]
        with self._translated("rewrap"):
            self._kms()  # built once, before the threads share it
        with ThreadPoolExecutor(max_workers=min(self._workers, len(items)),
                                thread_name_prefix="keystead-gcp") as pool:
            return list(pool.map(one, items))

    def _rewrap(self, wrapped: Wrapped, context: Context) -> Wrapped:
        dek = self._unwrap(wrapped, context)
        return self._wrap(dek, context)

    # -- how the key is managed ----------------------------------------------------
    def _version(self, version: str) -> Any:
        return self._call("get_crypto_key_version", name=f"{self.ref}/cryptoKeyVersions/{version}")

    def _versions(self) -> list[Any]:
        return list(self._call("list_crypto_key_versions", parent=self.ref))

    def describe(self) -> KeyInfo:
        with self._translated("describe"):
            ck = self._call("get_crypto_key", name=self.ref)
            versions = self._versions()
        if int(ck.purpose) != 1:  # ENCRYPT_DECRYPT
            raise ProviderError(f"gcp key {self.ref} is not a symmetric ENCRYPT_DECRYPT key: it cannot hold slots",
                                op="describe", key=self.ref, code="WRONG_PURPOSE")
        primary = _short(ck.primary.name) if ck.primary and ck.primary.name else ""
        if not primary:
            raise ProviderError(f"gcp key {self.ref} has no primary version: enable one and make it primary "
                                "(gcloud kms keys update --primary-version)", op="describe", key=self.ref)
        out, pending, created = [], None, None
        for v in sorted(versions, key=lambda v: _order(_short(v.name))):
            vid, state = _short(v.name), int(v.state)
            if state == PENDING_GENERATION and _order(vid) > _order(primary):
                pending = vid
            if state in _STATES:
                out.append(KeyVersion(vid, _when(v.create_time), _STATES[state]))
            if vid == primary:
                created = _when(v.create_time)
        scheduled = ck.rotation_period is not None and ck.rotation_period.total_seconds() > 0
        return KeyInfo(ref=self.ref, provider=self.provider, primary=primary, versions=tuple(out),
                       last_rotated=created or _when(ck.primary.create_time),
                       rotation=RotationKind.SCHEDULED if scheduled else RotationKind.IN_PLACE, pending=pending)

    def _rotate(self, *, now: datetime, token: str) -> KeyInfo:
        ck = self._call("get_crypto_key", name=self.ref)
        versions = self._versions()
        labels = dict(ck.labels)
        made = None
        if labels.get(TOKEN_LABEL) == label_value(token) and labels.get(AFTER_LABEL, "").isdigit():
            after = int(labels[AFTER_LABEL])
            ours = [v for v in versions if _order(_short(v.name)) > (after, "")
                    and int(v.state) in (ENABLED, PENDING_GENERATION)]
            made = min(ours, key=lambda v: _order(_short(v.name)), default=None)
        if made is None:
            highest = max((_order(_short(v.name))[0] for v in versions), default=0)
            labels.update({TOKEN_LABEL: label_value(token), AFTER_LABEL: str(highest)})
            self._call("update_crypto_key", crypto_key={"name": self.ref, "labels": labels},
                       update_mask=_mask("labels"))
            made = self._call("create_crypto_key_version", parent=self.ref, crypto_key_version={})
        if int(made.state) == ENABLED and made.name != ck.primary.name:
            self._call("update_crypto_key_primary_version", name=self.ref, crypto_key_version_id=_short(made.name))
        return self.describe()  # PENDING_GENERATION: pending is set; a later call with the token adopts it

    def _admin(self, op: str, version: str) -> Any:
        """The version to change, refusing the primary (it wraps every new secret)."""
        info = self.describe()
        if version == info.primary:
            raise ProviderError(f"gcp key {self.ref}: version {version} is the primary; it cannot be {op}d",
                                op=op, key=self.ref)
        with self._translated(op):
            return self._version(version)

    def disable(self, version: str) -> None:
        v = self._admin("disable", version)
        if int(v.state) == DISABLED:
            return
        if int(v.state) != ENABLED:
            raise ProviderError(f"gcp key {self.ref}: version {version} is {_STATES.get(int(v.state), 'not enabled')}"
                                "; only an enabled version can be disabled", op="disable", key=self.ref)
        with self._translated("disable"):
            self._call("update_crypto_key_version", crypto_key_version={"name": v.name, "state": DISABLED},
                       update_mask=_mask("state"))

    def retire(self, version: str) -> None:
        v = self._admin("retire", version)
        if int(v.state) in (DESTROY_SCHEDULED, DESTROYED):
            return
        with self._translated("retire"):
            self._call("destroy_crypto_key_version", name=v.name)

    def restore(self, version: str) -> None:
        with self._translated("restore"):
            v = self._version(version)
            state = int(v.state)
            if state in (DESTROYED, 9, 10):
                raise ProviderError(f"gcp key {self.ref}: version {version} is destroyed; it cannot be restored",
                                    op="restore", key=self.ref, code="DESTROYED")
            if state == DESTROY_SCHEDULED:
                self._call("restore_crypto_key_version", name=v.name)  # -> DISABLED
                state = DISABLED
            if state == DISABLED:
                self._call("update_crypto_key_version", crypto_key_version={"name": v.name, "state": ENABLED},
                           update_mask=_mask("state"))

    # -- errors ---------------------------------------------------------------------
    def _error(self, op: str, exc: Exception) -> KeysteadError | None:
        """google.api_core / google.auth / requests exceptions, mapped once; never the SDK's text
        (it quotes the request URL), always the key and the fix."""
        from google.api_core import exceptions as gex
        from google.auth import exceptions as aex

        where = f"gcp key {self.ref}: {op}"
        if isinstance(exc, gex.RetryError) or type(exc).__module__.startswith("requests"):
            return ProviderUnavailable(f"{where}: Cloud KMS unreachable or throttled past the retries "
                                       f"({type(exc).__name__}); the next sweep retries", op=op, key=self.ref,
                                       code="UNAVAILABLE")
        if isinstance(exc, aex.TransportError):
            return ProviderUnavailable(f"{where}: the credentials could not be refreshed (network); try again",
                                       op=op, key=self.ref, code="UNAVAILABLE")
        if isinstance(exc, aex.GoogleAuthError):
            return ProviderError(f"{where}: no usable Google credentials ({type(exc).__name__}): set "
                                 "GOOGLE_APPLICATION_CREDENTIALS, run `gcloud auth application-default login`, "
                                 "or set [providers.gcp] credentials_file", op=op, key=self.ref, code="UNAUTHENTICATED")
        if not isinstance(exc, gex.GoogleAPICallError):
            return None
        status = status_of(exc) or "UNKNOWN"
        if status in _TRANSIENT:
            return ProviderUnavailable(f"{where}: Cloud KMS is unavailable ({status}); the next sweep retries",
                                       op=op, key=self.ref, code=status)
        if status == "INVALID_ARGUMENT" and op in ("unwrap", "rewrap"):
            return DecryptError()
        fixes = {
            "NOT_FOUND": "not found: check the project, location, key ring and key name (and that the endpoint "
                         "serves that location)",
            "PERMISSION_DENIED": "permission denied: grant the caller the role keystead's policy generates for "
                                 "this operation (`keystead policy generate`)",
            "UNAUTHENTICATED": "the credentials were refused: refresh them or set [providers.gcp] credentials_file",
            "FAILED_PRECONDITION": "refused in the key's or version's current state (see `keystead keys show`)",
        }
        return ProviderError(f"{where}: {fixes.get(status, f'failed ({status})')}", op=op, key=self.ref, code=status)


# google-api-core warns at import that it will stop supporting this Python some day (a
# FutureWarning on every command that opens a gcp key): not the user's concern when using keystead.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\.")


def default_client(options: Mapping[str, object]) -> Any:
    """A REST KeyManagementServiceClient from the merged ``[providers.gcp]`` and key options."""
    from google.cloud import kms_v1

    endpoint = options.get("endpoint")
    credentials = None
    if options.get("anonymous"):
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    elif options.get("credentials_file"):
        import google.auth

        credentials, _project = google.auth.load_credentials_from_file(
            str(options["credentials_file"]), scopes=["https://www.googleapis.com/auth/cloud-platform"])
    return kms_v1.KeyManagementServiceClient(
        transport="rest", credentials=credentials,
        client_options={"api_endpoint": str(endpoint)} if endpoint else None)


def open_gcp(ref: str, *, name: str | None, options: Mapping[str, object],
             clients: Callable[[str, Mapping[str, object]], object] | None) -> GcpKey:
    """Check the name and options now; build the client on first use (no network call here)."""
    _project, location, _ring, _key = check_name(ref)
    endpoint = options.get("endpoint")
    if isinstance(endpoint, str):
        m = _REGIONAL.match(endpoint)
        region = m and (m.group(1) or m.group(2))
        if region and region != location:
            raise ProviderError(f"gcp key {ref}: its location {location} does not match the regional endpoint "
                                f"{endpoint} ({region}): fix the key's location or the endpoint", op="open", key=ref)
    if options.get("purpose") == "sign":
        raise ProviderError(f"gcp key {ref}: a signing key holds no slots; declare an ENCRYPT_DECRYPT key",
                            op="open", key=ref)
    if options.get("anonymous") and not endpoint:
        raise ProviderError(f"gcp key {ref}: anonymous = true needs an endpoint (a local test server); "
                            "Cloud KMS itself refuses anonymous calls", op="open", key=ref)
    if clients is not None:
        factory: Callable[[], Any] = lambda: clients("kms", options)
    else:
        factory = lambda: default_client(options)
    limits = {"max_concurrency": (DEFAULT_CONCURRENCY, 1, 64), "retry_seconds": (DEFAULT_RETRY_SECONDS, 0, 600)}
    values = {}
    for option, (default, lo, hi) in limits.items():
        value = options.get(option, default)
        if not isinstance(value, int) or not lo <= value <= hi:
            raise ProviderError(f"gcp key {ref}: {option} must be {lo}..{hi}, got {value!r}", op="open", key=ref)
        values[option] = value
    return GcpKey(ref, client=factory, name=name, **values)
