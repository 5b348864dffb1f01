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
"""A value type (str, int, bool, float meaning any number, list meaning list of str), or the allowed strings."""

PURPOSES = ("encrypt", "sign")

KEY_OPTIONS: Mapping[str, Mapping[str, Kind]] = {
    "local": {},
    "age": {},
    "aws": {"region": str, "replica_regions": list, "role_arn": str, "endpoint": str, "purpose": PURPOSES,
            "manage_rotation": bool, "on_demand_limit": int, "max_concurrency": int},
    "gcp": {"endpoint": str, "purpose": PURPOSES},
}
"""Options a ``[keys.X]`` table accepts, by provider, beside ``ref``, ``rotation_period_days``
and ``exclusive``."""

PROVIDER_OPTIONS: Mapping[str, Mapping[str, Kind]] = {
    "age": {"identity_file": str},
    "aws": {"region": str, "endpoint": str, "profile": str, "account": str, "max_concurrency": int,
            "requests_per_second": float, "quota_share": float},
    "gcp": {"endpoint": str, "credentials_file": str, "max_concurrency": int, "anonymous": bool,
            "retry_seconds": int},
}
"""What ``[providers.NAME]`` accepts. gcp (docs/gcp.md): ``endpoint`` (an api endpoint URL; a key's
own ``endpoint`` wins), ``credentials_file`` (else Application Default Credentials),
``max_concurrency`` (rewrap calls at once, default 8), ``retry_seconds`` (how long a transient
error is retried per call, default 60, 0 for none) and ``anonymous`` (no credentials at all: only
with an endpoint, for a local test server).

aws (docs/aws.md): ``region``, ``endpoint``, ``profile``, ``account`` (with region, ``alias/NAME``
and ``mrk-`` references become ARNs), ``max_concurrency`` (ReEncrypt calls at once per process,
default 64), and the rotation's rate limit (:mod:`keystead.providers.limits`):
``requests_per_second``, the account's KMS quota for symmetric cryptographic operations
(default 10,000; it differs by region: read yours in Service Quotas) and ``quota_share``, the part
of it rotation may use (default 0.5), divided evenly among the rotation's lane processes."""

EXCLUSIVE_BY_DEFAULT = frozenset({"local"})
"""Providers whose keys are keystead's own unless the config says otherwise: the local key
file belongs to keystead; a cloud key may be used by other systems, so keystead never
retires its versions unless ``exclusive = true``."""


def check(value: object, kind: Kind) -> str | None:
    """None if ``value`` fits ``kind``, else what was expected."""
    if isinstance(kind, tuple):
        return None if value in kind else "one of " + ", ".join(repr(k) for k in kind)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else "a number"
    if kind is list:
        ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
        return None if ok else "a list of strings"
    if type(value) is not kind:
        return kind.__name__
    return None
