"""A test fake of Cloud KMS: a loopback REST server for the real google-cloud-kms client.

There is no Cloud KMS emulator, so the GCP provider's tests drive the real
client (REST transport, anonymous credentials, ``api_endpoint`` at
``http://127.0.0.1:PORT``) against this stdlib server in a thread. It
implements what keystead uses, as the REST API does (camelCase JSON, bytes
base64, int64 as strings, enums as integers, the ``?$alt=json;enum-encoding=int``
query on every path): get/patch CryptoKey, encrypt, decrypt,
updatePrimaryVersion, list/get/create/patch CryptoKeyVersions, destroy,
restore. Real AES-256-GCM underneath, the AAD bound in, request CRC32Cs
checked and response CRC32Cs given. Errors are the service's: NOT_FOUND,
FAILED_PRECONDITION for a version that is not enabled, PERMISSION_DENIED,
INVALID_ARGUMENT when decryption fails (a wrong AAD, a damaged ciphertext).

Switches for faults: ``corrupt`` (the next N encrypt/decrypt responses carry
a wrong CRC32C), ``unavailable`` (the next N requests, or only those whose
method is in ``unavailable_ops``, answer 503), ``denied`` (methods answered
PERMISSION_DENIED; ``"*"`` for all). Time is ``now`` (None: the real clock;
a DESTROY_SCHEDULED version becomes DESTROYED at its destroy time).

Limits (docs/gcp.md): symmetric software keys only; no IAM, no
pagination, no import jobs, no key rings or key creation over the API
(``add_key`` does it), no etags, no ciphertext format compatibility with the
real service.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import google_crc32c
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENABLED, DISABLED, DESTROYED, DESTROY_SCHEDULED = 1, 2, 3, 4
STATE_NAMES = {ENABLED: "ENABLED", DISABLED: "DISABLED", DESTROYED: "DESTROYED", DESTROY_SCHEDULED: "DESTROY_SCHEDULED"}
MAGIC = b"FAKEKMS1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _crc(data: bytes) -> str:
    return str(google_crc32c.value(data))


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    def __init__(self, http: int, status: str, message: str) -> None:
        super().__init__(message)
        self.http, self.status, self.message = http, status, message


@dataclass
class FakeVersion:
    id: str
    created: datetime
    material: bytes | None = field(repr=False)
    state: int = ENABLED
    destroy_time: datetime | None = None


@dataclass
class FakeKey:
    name: str
    created: datetime
    versions: dict[str, FakeVersion] = field(default_factory=dict)
    primary: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    rotation_period: timedelta | None = None
    destroy_scheduled_duration: timedelta = timedelta(days=30)


class FakeCloudKMS:
    """The server and its state. ``url`` is the api endpoint to hand the client."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now
        self.keys: dict[str, FakeKey] = {}
        self.corrupt = 0
        self.unavailable = 0
        self.unavailable_ops: set[str] | None = None
        self.denied: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-cloud-kms", daemon=True)

    def clock(self) -> datetime:
        return self.now or datetime.now(UTC)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeCloudKMS:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- setting the scene (what `gcloud kms keys create` and the console do) ----
    def add_key(self, name: str, *, rotation_period: timedelta | None = None) -> FakeKey:
        now = self.clock()
        key = FakeKey(name, now, rotation_period=rotation_period)
        key.versions["1"] = FakeVersion("1", now, os.urandom(32))
        key.primary = "1"
        self.keys[name] = key
        return key

    def add_version(self, name: str, *, primary: bool = True) -> str:
        """A new version made outside keystead (the console, gcloud, Google's scheduled rotation)."""
        with self._lock:
            v = self._create(self.keys[name])
            if primary:
                self.keys[name].primary = v.id
            return v.id

    # -- the API ------------------------------------------------------------------
    def _create(self, key: FakeKey) -> FakeVersion:
        vid = str(max(int(i) for i in key.versions) + 1)
        v = key.versions[vid] = FakeVersion(vid, self.clock(), os.urandom(32))
        return v

    def _key(self, name: str) -> FakeKey:
        key = self.keys.get(name)
        if key is None:
            raise ApiError(404, "NOT_FOUND", f"CryptoKey {name} not found.")
        return key

    def _version(self, name: str) -> tuple[FakeKey, FakeVersion]:
        key_name, _, vid = name.partition("/cryptoKeyVersions/")
        key = self._key(key_name)
        v = key.versions.get(vid)
        if v is None:
            raise ApiError(404, "NOT_FOUND", f"CryptoKeyVersion {name} not found.")
        if v.state == DESTROY_SCHEDULED and v.destroy_time and self.clock() >= v.destroy_time:
            v.state, v.material, v.destroy_time = DESTROYED, None, None
        return key, v

    def _version_json(self, key: FakeKey, v: FakeVersion) -> dict:
        self._version(f"{key.name}/cryptoKeyVersions/{v.id}")  # applies a due destruction
        out = {"name": f"{key.name}/cryptoKeyVersions/{v.id}", "state": v.state, "protectionLevel": 1,
               "algorithm": 1, "createTime": _ts(v.created)}
        if v.destroy_time:
            out["destroyTime"] = _ts(v.destroy_time)
        return out

    def _key_json(self, key: FakeKey) -> dict:
        out = {"name": key.name, "purpose": 1, "createTime": _ts(key.created), "labels": key.labels,
               "primary": self._version_json(key, key.versions[key.primary]),
               "destroyScheduledDuration": f"{int(key.destroy_scheduled_duration.total_seconds())}s"}
        if key.rotation_period:
            out["rotationPeriod"] = f"{int(key.rotation_period.total_seconds())}s"
        return out

    @staticmethod
    def _check_crc(body: dict, data_field: str, crc_field: str) -> None:
        if crc_field in body and body[crc_field] != _crc(base64.b64decode(body.get(data_field, ""))):
            raise ApiError(400, "INVALID_ARGUMENT", f"The checksum in field {crc_field} did not match the data.")

    def _corrupting(self) -> bool:
        if self.corrupt > 0:
            self.corrupt -= 1
            return True
        return False

    def encrypt(self, name: str, body: dict) -> dict:
        key = self._key(name)
        _, v = self._version(f"{name}/cryptoKeyVersions/{key.primary}")
        if v.state != ENABLED or v.material is None:
            raise ApiError(400, "FAILED_PRECONDITION", f"The primary version of {name} is not enabled.")
        self._check_crc(body, "plaintext", "plaintextCrc32c")
        self._check_crc(body, "additionalAuthenticatedData", "additionalAuthenticatedDataCrc32c")
        nonce = os.urandom(12)
        aad = base64.b64decode(body.get("additionalAuthenticatedData", ""))
        ct = MAGIC + v.id.encode().rjust(8, b"0") + nonce + AESGCM(v.material).encrypt(
            nonce, base64.b64decode(body["plaintext"]), aad)
        crc = _crc(ct)
        if self._corrupting():
            crc = str((int(crc) + 1) % 2**32)
        return {"name": f"{name}/cryptoKeyVersions/{v.id}", "ciphertext": _b64(ct), "ciphertextCrc32c": crc,
                "verifiedPlaintextCrc32c": "plaintextCrc32c" in body,
                "verifiedAdditionalAuthenticatedDataCrc32c": "additionalAuthenticatedDataCrc32c" in body,
                "protectionLevel": 1}

    def decrypt(self, name: str, body: dict) -> dict:
        key = self._key(name)
        self._check_crc(body, "ciphertext", "ciphertextCrc32c")
        self._check_crc(body, "additionalAuthenticatedData", "additionalAuthenticatedDataCrc32c")
        ct = base64.b64decode(body.get("ciphertext", ""))
        failed = ApiError(400, "INVALID_ARGUMENT", "Decryption failed: verify that 'name' refers to the correct "
                                                   "CryptoKey.")
        if not ct.startswith(MAGIC) or len(ct) < len(MAGIC) + 8 + 12 + 16:
            raise failed
        vid = ct[len(MAGIC):len(MAGIC) + 8].lstrip(b"0").decode(errors="replace")
        if vid not in key.versions:
            raise failed
        _, v = self._version(f"{name}/cryptoKeyVersions/{vid}")
        if v.state != ENABLED or v.material is None:
            raise ApiError(400, "FAILED_PRECONDITION", f"The resource '{name}/cryptoKeyVersions/{vid}' is not "
                                                       f"enabled, current state is: {STATE_NAMES[v.state]}.")
        nonce, sealed = ct[len(MAGIC) + 8:len(MAGIC) + 20], ct[len(MAGIC) + 20:]
        try:
            aad = base64.b64decode(body.get("additionalAuthenticatedData", ""))
            plain = AESGCM(v.material).decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise failed from None
        crc = _crc(plain)
        if self._corrupting():
            crc = str((int(crc) + 1) % 2**32)
        return {"plaintext": _b64(plain), "plaintextCrc32c": crc, "usedPrimary": vid == key.primary,
                "protectionLevel": 1}

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: dict) -> dict:
        name, _, verb = path.partition(":")
        self.calls.append((method, verb or name.rsplit("/", 1)[-1]))
        op = verb or ("list" if name.endswith("/cryptoKeyVersions") and method == "GET" else
                      "create" if name.endswith("/cryptoKeyVersions") else method.lower())
        if self.unavailable > 0 and (self.unavailable_ops is None or op in self.unavailable_ops):
            self.unavailable -= 1
            raise ApiError(503, "UNAVAILABLE", "The service is currently unavailable.")
        if op in self.denied or "*" in self.denied:
            raise ApiError(403, "PERMISSION_DENIED", f"Permission denied on resource '{name}' (or it may not exist).")
        if verb == "encrypt":
            return self.encrypt(name, body)
        if verb == "decrypt":
            return self.decrypt(name, body)
        if verb == "updatePrimaryVersion":
            key = self._key(name)
            _, v = self._version(f"{name}/cryptoKeyVersions/{body.get('cryptoKeyVersionId', '')}")
            if v.state != ENABLED:
                raise ApiError(400, "FAILED_PRECONDITION", f"Version {v.id} is not enabled.")
            key.primary = v.id
            return self._key_json(key)
        if verb in ("destroy", "restore"):
            key, v = self._version(name)
            if verb == "destroy":
                if v.state in (DESTROY_SCHEDULED, DESTROYED):
                    raise ApiError(400, "FAILED_PRECONDITION", f"{name} is already {STATE_NAMES[v.state]}.")
                if v.id == key.primary:
                    raise ApiError(400, "FAILED_PRECONDITION", "The primary version cannot be destroyed.")
                v.state, v.destroy_time = DESTROY_SCHEDULED, self.clock() + key.destroy_scheduled_duration
            else:
                if v.state != DESTROY_SCHEDULED:
                    raise ApiError(400, "FAILED_PRECONDITION", f"{name} is not DESTROY_SCHEDULED.")
                v.state, v.destroy_time = DISABLED, None
            return self._version_json(key, v)
        if name.endswith("/cryptoKeyVersions"):
            key = self._key(name.removesuffix("/cryptoKeyVersions"))
            if method == "GET":
                return {"cryptoKeyVersions": [self._version_json(key, v) for v in key.versions.values()],
                        "totalSize": len(key.versions)}
            return self._version_json(key, self._create(key))
        if "/cryptoKeyVersions/" in name:
            key, v = self._version(name)
            if method == "PATCH":
                if query.get("updateMask") != ["state"] or body.get("state") not in (ENABLED, DISABLED):
                    raise ApiError(400, "INVALID_ARGUMENT", "Only state ENABLED or DISABLED may be updated.")
                if v.state not in (ENABLED, DISABLED):
                    raise ApiError(400, "FAILED_PRECONDITION", f"{name} is {STATE_NAMES[v.state]}.")
                v.state = body["state"]
            return self._version_json(key, v)
        key = self._key(name)
        if method == "PATCH":
            if query.get("updateMask") != ["labels"]:
                raise ApiError(400, "INVALID_ARGUMENT", "The fake updates labels only.")
            key.labels = dict(body.get("labels", {}))
        return self._key_json(key)


def _handler(fake: FakeCloudKMS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)  # every call carries ?$alt=json;enum-encoding=int: route on the path only
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            status, out = 200, {}
            try:
                if not url.path.startswith("/v1/"):
                    raise ApiError(404, "NOT_FOUND", "unknown path")
                with fake._lock:
                    out = fake.handle(self.command, unquote(url.path[4:]), parse_qs(url.query),
                                      json.loads(raw) if raw else {})
            except ApiError as exc:
                status, out = exc.http, {"error": {"code": exc.http, "message": exc.message, "status": exc.status}}
            data = json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _serve

        def log_message(self, *args: object) -> None:  # quiet: the bodies hold data keys
            pass

    return Handler


def kms_client(fake: FakeCloudKMS) -> Callable[[str, object], object]:
    """The ``clients`` factory tests hand to keystead: the real client, REST, pointed at ``fake``."""
    def make(service: str, options: object) -> object:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import kms_v1

        assert service == "kms", service
        return kms_v1.KeyManagementServiceClient(transport="rest", credentials=AnonymousCredentials(),
                                                 client_options={"api_endpoint": fake.url})

    return make
