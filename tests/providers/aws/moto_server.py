"""moto in server mode for the AWS provider tests: the real KMS API over HTTP on 127.0.0.1.

``start()`` runs a ThreadedMotoServer bound to 127.0.0.1 (its default is
0.0.0.0) on a free port, in this process, and applies the one documented
moto 5.2.5 workaround below first. The provider talks to it with boto3 over
HTTP, exactly as to AWS: no in-process mock decorators.

Workaround (../shared/reference/tooling.md, cloud-libraries.md §3): moto's
multi-region key ids are ``mrk-`` + a uuid4, 40 characters, but its
ciphertext header keeps 36 (``KEY_ID_LEN = 36``), so every Decrypt and
ReEncrypt of an MRK ciphertext fails with an empty AccessDeniedException.
It is patched here, in the process that runs the server and in tests only:
key id length 40 and a parser that strips the NUL padding of 36-character
ids (the replacement keeps the keyword name ``ciphertext_blob``, which moto
calls it by).

What moto cannot show at all (KeyMaterialId, RotationPeriodInDays, on-demand
material change, disabled or pending-deletion keys refusing to encrypt,
custom key stores) is tested with botocore's Stubber, and each such test
says so.
"""

from __future__ import annotations

import logging
import socket
import threading
import urllib.request
from collections.abc import Mapping
from typing import Any

ACCOUNT = "123456789012"
"""moto's default account id."""
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}
"""Dummy credentials: moto accepts any."""

_patched = False


def patch_moto_mrk_key_ids() -> None:
    """The MRK key id length workaround (see the module docstring); idempotent."""
    global _patched
    if _patched:
        return
    import moto.kms.utils as u

    u.KEY_ID_LEN = 40
    u.HEADER_LEN = u.KEY_ID_LEN + u.IV_LEN + u.TAG_LEN
    u.CIPHERTEXT_HEADER_FORMAT = f">{u.KEY_ID_LEN}s{u.IV_LEN}s{u.TAG_LEN}s"
    original = u._deserialize_ciphertext_blob

    def _deserialize_ciphertext_blob(ciphertext_blob: bytes):  # the keyword name matters
        c = original(ciphertext_blob=ciphertext_blob)
        return c._replace(key_id=c.key_id.rstrip("\x00"))

    u._deserialize_ciphertext_blob = _deserialize_ciphertext_blob
    _patched = True


class MotoServer:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        patch_moto_mrk_key_ids()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # verbose=False still logs every request
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Forget every key and alias (between tests)."""
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10)

    def stop(self) -> None:
        self._server.stop()


class Clients:
    """The injected ``clients(service, options)`` factory: boto3 clients pointed at the server,
    one per region, with the same adaptive retries the provider uses; ``hooks`` are botocore
    event handlers registered on every client built (to count calls, throttle, crash)."""

    def __init__(self, url: str, hooks: Mapping[str, Any] | None = None, *, retries: str = "adaptive") -> None:
        self.url = url
        self.hooks = dict(hooks or {})
        self.retries = retries
        self.built: dict[str, Any] = {}
        self.asked: list[Mapping[str, object]] = []
        self._lock = threading.Lock()

    def __call__(self, service: str, options: Mapping[str, object]) -> Any:
        import boto3
        from botocore.config import Config

        self.asked.append(dict(options))
        region = str(options.get("region") or REGION)
        threads = options.get("max_concurrency") or 10  # a pooled connection per rewrap thread, as the provider
        with self._lock:
            client = self.built.get(f"{service}:{region}")
            if client is None:
                client = boto3.client(service, region_name=region, endpoint_url=self.url,
                                      aws_access_key_id="testing", aws_secret_access_key="testing",
                                      config=Config(retries={"mode": self.retries, "max_attempts": 3},
                                                    max_pool_connections=max(10, int(str(threads)))))
                for event, handler in self.hooks.items():
                    client.meta.events.register(event, handler)
                self.built[f"{service}:{region}"] = client
        return client

    def kms(self, region: str = REGION) -> Any:
        return self("kms", {"region": region})


class CallCounter:
    """A ``before-call.kms`` handler counting KMS operations by name."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.counts[model.name] = self.counts.get(model.name, 0) + 1


class Throttle:
    """A ``before-send.kms.<Op>`` handler: answers ThrottlingException (HTTP 400, as KMS does) for a
    share of the calls, before they reach the server, so botocore's own retries handle them."""

    def __init__(self, share: float, *, seed: int = 7) -> None:
        import random

        self.share = share
        self.rng = random.Random(seed)
        self.throttled = 0
        self.passed = 0
        self._lock = threading.Lock()

    def __call__(self, request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        with self._lock:
            hit = self.rng.random() < self.share
            self.throttled += hit
            self.passed += not hit
        if not hit:
            return None
        body = b'{"__type":"ThrottlingException","message":"Rate exceeded"}'
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body))


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any):
        yield self.body

    def read(self, *_: Any) -> bytes:
        return self.body
