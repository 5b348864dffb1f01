"""KMS providers, chosen in one place from the form of a key reference.

================================  ==========  =====================================
reference                         provider    status
================================  ==========  =====================================
``local:NAME``                    local       embedded key file (the default)
``age1...[,age1...]``             age         pyrage recipients
``arn:aws:kms:...``, ``alias/..``, aws         AWS KMS (boto3, imported on first use)
``mrk-...``
``projects/.../cryptoKeys/...``   gcp         google-cloud-kms (docs/gcp.md)
================================  ==========  =====================================

Provider options (``[keys.X]`` and ``[providers.NAME]`` tables) are declared in
:mod:`keystead.providers.options` and validated at config load.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from keystead.errors import ProviderError, UnknownReference
from keystead.providers.base import (
    Chain,
    Key,
    KeyAdmin,
    KeyInfo,
    KeyOps,
    KeyVersion,
    KeyWrapper,
    ManagedKey,
    RequestGate,
    RewrapResult,
    RotationKind,
    VersionState,
    Wrapped,
    identity,
)

__all__ = [
    "ACCEPTED_FORMS",
    "Chain",
    "ClientFactory",
    "Key",
    "KeyAdmin",
    "KeyInfo",
    "KeyOps",
    "KeySettings",
    "KeyVersion",
    "KeyWrapper",
    "ManagedKey",
    "RequestGate",
    "RewrapResult",
    "RotationKind",
    "VersionState",
    "Wrapped",
    "canonical_ref",
    "identity",
    "open_key",
    "provider_of",
]

ACCEPTED_FORMS = (
    "local:NAME",
    "age1... (age X25519 recipient, several comma-separated)",
    "arn:aws:kms:REGION:ACCOUNT:key/ID | alias/NAME | mrk-ID (AWS KMS)",
    "projects/P/locations/L/keyRings/R/cryptoKeys/K (GCP Cloud KMS)",
)

_LOCAL = re.compile(r"local:([A-Za-z0-9_][A-Za-z0-9_.\-]{0,63})")
_AGE_ONE = r"age1[02-9ac-hj-np-z]{58}"
_AGE = re.compile(rf"{_AGE_ONE}(,\s*{_AGE_ONE})*")
_AWS_ARN = re.compile(r"arn:aws[a-z\-]*:kms:([a-z0-9\-]+):(\d{12}):(key|alias)/(.+)")
_AWS = re.compile(r"(arn:aws[a-z\-]*:kms:[a-z0-9\-]+:\d{12}:(key|alias)/.+|alias/.+|mrk-[0-9a-f]{32})")
_GCP = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")

ClientFactory = Callable[[str, Mapping[str, object]], object]
"""``clients(service, options) -> SDK client``: injected (keyword-only) so tests hand in a
client pointed at a local server; None means the provider builds its own, lazily."""


class KeySettings(Protocol):
    """What providers need from the configuration."""

    @property
    def key_file(self) -> Path: ...
    @property
    def age_identity_file(self) -> Path | None: ...


def provider_of(ref: str) -> str:
    """The provider name for a key reference; UnknownReference if no form fits."""
    for name, pattern in (("local", _LOCAL), ("age", _AGE), ("aws", _AWS), ("gcp", _GCP)):
        if pattern.fullmatch(ref):
            return name
    if ref.startswith("age1"):
        bad = next((r.strip() for r in ref.split(",") if not re.fullmatch(_AGE_ONE, r.strip())), ref)
        raise UnknownReference(
            f"invalid age recipient {bad!r}: an X25519 recipient is 'age1' followed by 58 "
            f"lower-case bech32 characters (this one has {max(len(bad) - 4, 0)})"
        )
    raise UnknownReference(f"unknown key reference {ref!r}; accepted forms: " + "; ".join(ACCEPTED_FORMS))


def canonical_ref(ref: str, options: Mapping[str, object] | None = None,
                  provider_settings: Mapping[str, object] | None = None) -> str:
    """The one spelling of the key ``ref`` names: a slot's identity is its ref, so two
    spellings of one key must not become two keys.

    local and gcp refs are canonical as written; age recipients lose the spaces
    around their commas; an AWS ``alias/NAME`` becomes its alias ARN where the
    region and account are configured (key option ``region`` or ``[providers.aws]``
    ``region`` and ``account``), a bare ``mrk-...`` id its key ARN likewise, and an
    alias or key ARN stays as it is.
    """
    ref = ref.strip()
    provider = provider_of(ref)
    if provider == "age":
        return ",".join(r.strip() for r in ref.split(","))
    if provider == "aws" and not ref.startswith("arn:"):
        opts = {**(provider_settings or {}), **(options or {})}
        region, account = opts.get("region"), opts.get("account")
        if isinstance(region, str) and isinstance(account, str):
            return f"arn:aws:kms:{region}:{account}:{ref if ref.startswith('alias/') else 'key/' + ref}"
    return ref


def open_key(ref: str, settings: KeySettings, *, options: Mapping[str, object] | None = None,
             clients: ClientFactory | None = None) -> Key:
    """Open the key named by ``ref`` with the provider its form selects.

    Opening makes no network call: a cloud provider connects on first use.
    """
    provider = provider_of(ref)
    if provider == "local":
        from keystead.providers.local import LocalKey, LocalKeyFile

        return LocalKey(ref.split(":", 1)[1], LocalKeyFile(settings.key_file))
    if provider == "age":
        from keystead.providers.age import AgeKey

        env = os.environ.get("KEYSTEAD_AGE_IDENTITY_FILE")
        return AgeKey(ref, identity_file=Path(env) if env else settings.age_identity_file)
    if provider == "aws":
        from keystead.providers.aws import AwsKey

        kc = next((k for k in getattr(settings, "keys", {}).values() if k.ref == ref), None)
        return AwsKey(ref, options=options, provider_settings=getattr(settings, "providers", {}).get("aws"),
                      clients=clients, name=kc.name if kc else None, exclusive=kc.exclusive if kc else False,
                      period_days=kc.rotation_period_days if kc else 90)
    if provider == "gcp":
        from keystead.providers.gcp import open_gcp  # google-cloud-kms itself only on first use

        shared = dict(getattr(settings, "providers", {}).get("gcp", {}))
        root = getattr(settings, "root", None)
        if isinstance(shared.get("credentials_file"), str) and root is not None:
            shared["credentials_file"] = str(Path(root) / Path(shared["credentials_file"]).expanduser())
        names = [n for n, kc in getattr(settings, "keys", {}).items() if kc.ref == ref]
        return open_gcp(ref, name=names[0] if names else None, options={**shared, **(options or {})},
                        clients=clients)
    raise ProviderError(f"the {provider} provider for {ref!r} is not available in this version of keystead yet",
                        op="open", key=ref)
