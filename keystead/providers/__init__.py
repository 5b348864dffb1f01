"""KMS providers, chosen in one place from the form of a key reference.

================================  ==========  =====================================
reference                         provider    status
================================  ==========  =====================================
``local:NAME``                    local       embedded key file (the default)
``age1...[,age1...]``             age         pyrage recipients
``arn:aws:kms:...``, ``alias/..``, aws         arrives with the AWS provider issue
``mrk-...``
``projects/.../cryptoKeys/...``   gcp         arrives with the GCP provider issue
================================  ==========  =====================================
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Protocol

from keystead.errors import ProviderError, UnknownReference
from keystead.providers.base import Key, KeyAdmin, KeyInfo, KeyOps, KeyVersion, Wrapped

__all__ = ["Key", "KeyAdmin", "KeyInfo", "KeyOps", "KeyVersion", "Wrapped", "open_key", "provider_of"]

ACCEPTED_FORMS = (
    "local:NAME",
    "age1... (age X25519 recipient, several comma-separated)",
    "arn:aws:kms:REGION:ACCOUNT:key/ID | alias/NAME | mrk-ID (AWS KMS)",
    "projects/P/locations/L/keyRings/R/cryptoKeys/K (GCP Cloud KMS)",
)

_LOCAL = re.compile(r"local:([A-Za-z0-9_][A-Za-z0-9_.\-]{0,63})")
_AGE = re.compile(r"age1[02-9ac-hj-np-z]{58}(,\s*age1[02-9ac-hj-np-z]{58})*")
_AWS = re.compile(r"(arn:aws[a-z\-]*:kms:[a-z0-9\-]+:\d{12}:(key|alias)/.+|alias/.+|mrk-[0-9a-f]{32})")
_GCP = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")


class KeySettings(Protocol):
    """What providers need from the configuration."""

    key_file: Path
    age_identity_file: Path | None


def provider_of(ref: str) -> str:
    """The provider name for a key reference; UnknownReference if no form fits."""
    for name, pattern in (("local", _LOCAL), ("age", _AGE), ("aws", _AWS), ("gcp", _GCP)):
        if pattern.fullmatch(ref):
            return name
    raise UnknownReference(f"unknown key reference {ref!r}; accepted forms: " + "; ".join(ACCEPTED_FORMS))


def open_key(ref: str, settings: KeySettings) -> Key:
    """Open the key named by ``ref`` with the provider its form selects."""
    provider = provider_of(ref)
    if provider == "local":
        from keystead.providers.local import LocalKey, LocalKeyFile

        return LocalKey(ref.split(":", 1)[1], LocalKeyFile(settings.key_file))
    if provider == "age":
        from keystead.providers.age import AgeKey

        env = os.environ.get("KEYSTEAD_AGE_IDENTITY_FILE")
        return AgeKey(ref, identity_file=Path(env) if env else settings.age_identity_file)
    raise ProviderError(f"the {provider} provider for {ref!r} is not available in this version of keystead yet")
