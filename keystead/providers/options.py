"""Provider options in keystead.toml, declared without importing any SDK.

A key's table may carry options for its provider, and ``[providers.NAME]``
holds settings every key of that provider shares::

    [providers.aws]
    region = "eu-west-1"

    [keys.payments]
    ref = "alias/payments"
    replica_regions = ["eu-central-1"]
    exclusive = true

Each provider declares what it accepts here (a provider module adds its own
checks when it opens a key); config.py validates the tables against these, so
a typo is a config error naming the field, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping

Kind = type | tuple[str, ...]
"""A value type (str, int, bool, list meaning list of str), or the allowed strings."""

PURPOSES = ("encrypt", "sign")

KEY_OPTIONS: Mapping[str, Mapping[str, Kind]] = {
    "local": {},
    "age": {},
    "aws": {"region": str, "replica_regions": list, "role_arn": str, "endpoint": str, "purpose": PURPOSES,
            "manage_rotation": bool, "on_demand_limit": int, "max_concurrency": int, "region_endpoints": list,
            "connect_timeout": int},
    "gcp": {"endpoint": str, "purpose": PURPOSES},
}
"""Options a ``[keys.X]`` table accepts, by provider, beside ``ref``, ``rotation_period_days``
and ``exclusive``."""

PROVIDER_OPTIONS: Mapping[str, Mapping[str, Kind]] = {
    "age": {"identity_file": str},
    "aws": {"region": str, "endpoint": str, "profile": str, "account": str, "max_concurrency": int,
            "region_endpoints": list, "connect_timeout": int},
    "gcp": {"endpoint": str, "credentials_file": str, "max_concurrency": int, "anonymous": bool,
            "retry_seconds": int},
}
"""What ``[providers.NAME]`` accepts. gcp (docs/gcp.md): ``endpoint`` (an api endpoint URL; a key's
own ``endpoint`` wins), ``credentials_file`` (else Application Default Credentials),
``max_concurrency`` (rewrap calls at once, default 8), ``retry_seconds`` (how long a transient
error is retried per call, default 60, 0 for none) and ``anonymous`` (no credentials at all: only
with an endpoint, for a local test server)."""

EXCLUSIVE_BY_DEFAULT = frozenset({"local"})
"""Providers whose keys are keystead's own unless the config says otherwise: the local key
file belongs to keystead; a cloud key may be used by other systems, so keystead never
retires its versions unless ``exclusive = true``."""


def check(value: object, kind: Kind) -> str | None:
    """None if ``value`` fits ``kind``, else what was expected."""
    if isinstance(kind, tuple):
        return None if value in kind else "one of " + ", ".join(repr(k) for k in kind)
    if kind is list:
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        return None if ok else "a list of strings"
    if type(value) is not kind:
        return kind.__name__
    return None
