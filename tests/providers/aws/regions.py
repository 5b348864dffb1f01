"""Regions for the disaster-recovery tests: a primary region that refuses connections, and a client
factory that routes each region where keystead asks (the ``region_endpoints`` option).

``RefusingPort`` binds a 127.0.0.1 port and never listens on it, so every
connection to it is refused at once (ECONNREFUSED), as when a region's KMS
endpoint cannot be reached; while it is held no other process can take the
port. keystead routes a region to it through its own ``region_endpoints``
key option (the production path for regional PrivateLink endpoints), so the
outage is set in keystead.toml, not patched into the provider.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from typing import Any

from tests.providers.aws.moto_server import REGION, Clients


class RefusingPort:
    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def close(self) -> None:
        self._sock.close()


class RegionalClients(Clients):
    """Like ``Clients``, but a client is built for the endpoint keystead asks for (a region's
    ``region_endpoints`` entry), else the moto server; ``calls`` records (region, operation)."""

    def __init__(self, url: str, *, retries: str = "standard", max_attempts: int = 1) -> None:
        super().__init__(url, retries=retries)
        self.max_attempts = max_attempts
        self.calls: list[tuple[str, str]] = []
        self._calls_lock = threading.Lock()

    def __call__(self, service: str, options: Mapping[str, object]) -> Any:
        import boto3
        from botocore.config import Config

        self.asked.append(dict(options))
        region = str(options.get("region") or REGION)
        endpoint = str(options.get("endpoint") or self.url)
        with self._lock:
            client = self.built.get(f"{service}:{region}:{endpoint}")
            if client is None:
                client = boto3.client(service, region_name=region, endpoint_url=endpoint,
                                      aws_access_key_id="testing", aws_secret_access_key="testing",
                                      config=Config(retries={"mode": self.retries,
                                                             "max_attempts": self.max_attempts}))
                client.meta.events.register("before-call.kms", self._record(region))
                self.built[f"{service}:{region}:{endpoint}"] = client
        return client

    def _record(self, region: str) -> Any:
        def handler(model: Any, **_: Any) -> None:
            with self._calls_lock:
                self.calls.append((region, model.name))
        return handler

    def asked_in(self, operation: str) -> list[str]:
        """The regions ``operation`` was called in, in order."""
        return [region for region, op in self.calls if op == operation]
