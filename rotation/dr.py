"""Disaster-recovery checks of multi-region keys: what ``keystead dr status``, ``dr drill`` and
``dr promote`` decide (the KMS calls are :mod:`keystead.providers.aws_dr`'s; docs/aws.md).

A *DR key* is an aws key of keystead.toml with ``replica_regions``, or named by
a multi-region id (``mrk-...``). Its configured DR regions are its
``replica_regions``.

- :func:`check`: per region, primary and replicas with their KeyState, the
  primary's rotation settings, and the problems: a configured DR region with
  no replica, a region whose key is not Enabled or that cannot be reached, a
  key that is not multi-region at all. ``error`` is set instead when the
  check itself was refused (AccessDenied...): the key's health is unknown.
- :func:`drill`: for every replica region R, a canary (fresh random bytes,
  never a secret) encrypted in the primary and decrypted in R, and the
  reverse; each step timed. Any failed step fails the drill.
- :func:`promotion`: checks that REGION may become the primary (the key is
  multi-region, REGION holds a replica, it is not the primary already);
  :func:`promote` then asks KMS (UpdatePrimaryRegion).
"""

from __future__ import annotations

import hmac
import os
import statistics
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from keystead.config import Config, KeyConfig
from keystead.errors import InputError, KeysteadError, NotFoundError, ProviderUnavailable

if TYPE_CHECKING:
    from keystead.providers import ManagedKey
    from keystead.providers.aws import AwsKey
    from keystead.providers.aws_dr import Layout

CANARY_BYTES = 32
ENABLED = "Enabled"
UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class RegionStatus:
    region: str
    role: str
    """primary or replica"""
    state: str
    """KMS's KeyState (Enabled, Disabled, PendingDeletion, ...), missing or unreachable."""
    configured: bool
    """Named in replica_regions (or the primary)."""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class KeyStatus:
    name: str
    ref: str
    key_id: str | None = None
    multi_region: bool = False
    primary: str | None = None
    regions: tuple[RegionStatus, ...] = ()
    rotation: Mapping[str, Any] | None = None
    problems: tuple[str, ...] = ()
    error: str | None = None
    """The check was refused (AccessDenied...): nothing is known about the key's health."""

    @property
    def healthy(self) -> bool:
        return self.error is None and not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "healthy": self.healthy}


@dataclass(frozen=True, slots=True)
class DrillStep:
    source: str
    """Where the canary was encrypted."""
    target: str
    """Where it was decrypted."""
    ok: bool
    encrypt_ms: float | None = None
    decrypt_ms: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DrillReport:
    name: str
    ref: str
    key_id: str | None
    primary: str | None
    steps: tuple[DrillStep, ...]
    error: str | None = None
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    """Median milliseconds of the calls that succeeded, per region."""

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.steps) and all(s.ok for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


# -- which keys ---------------------------------------------------------------------------
def is_dr_key(kc: KeyConfig) -> bool:
    if kc.provider != "aws":
        return False
    return bool(kc.options.get("replica_regions")) or kc.ref.rsplit("/", 1)[-1].startswith("mrk-")


def dr_keys(config: Config, keys: Mapping[str, ManagedKey], key_errors: Mapping[str, KeysteadError],
            only: str | None = None) -> list[tuple[KeyConfig, AwsKey]]:
    """The DR keys of ``config`` (or the one named ``only``: unknown = NotFoundError, not a DR key = InputError)."""
    if only is not None:
        kc = config.keys.get(only) or next((k for k in config.keys.values() if k.ref == only), None)
        if kc is None:
            raise NotFoundError(f"no key {only!r} in {config.path} (see `keystead keys list`)")
        if not is_dr_key(kc):
            raise InputError(f"key {kc.name} has no replicas: it is not a multi-region AWS key with replica_regions "
                             "in keystead.toml (docs/aws.md, Disaster recovery)")
        chosen = [kc]
    else:
        chosen = [kc for kc in config.keys.values() if is_dr_key(kc)]
        if not chosen:
            raise NotFoundError(f"no multi-region keys in {config.path}: give an aws key replica_regions "
                                "(docs/aws.md, Disaster recovery)")
    out = []
    for kc in chosen:
        if kc.name in key_errors:
            raise key_errors[kc.name]
        out.append((kc, _aws(keys[kc.name])))
    return out


def _aws(key: ManagedKey) -> AwsKey:
    from keystead.providers.aws import AwsKey

    inner: object = key
    for _ in range(8):  # through wrappers (rate limit, metrics), which keep the key they wrap as .key
        if isinstance(inner, AwsKey) or not hasattr(inner, "key"):
            break
        inner = inner.key
    if not isinstance(inner, AwsKey):
        raise InputError(f"key {key.ref} is not an AWS KMS key")
    return inner


def _dr_regions(key: AwsKey, layout: Layout) -> list[str]:
    """The replica regions to check: the configured ones first, then any other KMS lists."""
    regions = [r for r in key.replica_regions if r != layout.primary]
    return regions + [r for r in layout.replicas if r not in regions]


# -- dr status ----------------------------------------------------------------------------
def check(kc: KeyConfig, key: AwsKey) -> KeyStatus:
    from keystead.providers import aws_dr

    try:
        layout = aws_dr.locate(key)
    except ProviderUnavailable as exc:
        return KeyStatus(kc.name, kc.ref, problems=(f"no region answered: {exc}",))
    except KeysteadError as exc:
        return KeyStatus(kc.name, kc.ref, error=str(exc))
    if not layout.multi_region:
        return KeyStatus(kc.name, kc.ref, layout.key_id, False, layout.primary,
                         problems=("not a multi-region key: its replica_regions cannot hold replicas",))
    problems: list[str] = []
    regions: list[RegionStatus] = []
    for region in [layout.primary, *_dr_regions(key, layout)]:
        role = "primary" if region == layout.primary else "replica"
        configured = role == "primary" or region in key.replica_regions
        try:
            state = aws_dr.region_state(key, region, layout.key_id)
        except ProviderUnavailable as exc:
            regions.append(RegionStatus(region, role, UNREACHABLE, configured, str(exc)))
            problems.append(f"{region} cannot be reached")
            continue
        except KeysteadError as exc:
            return KeyStatus(kc.name, kc.ref, layout.key_id, True, layout.primary, tuple(regions), error=str(exc))
        regions.append(RegionStatus(region, role, state, configured))
        if state == aws_dr.MISSING:
            problems.append(f"no replica in DR region {region} (create it: aws kms replicate-key)")
        elif state != ENABLED:
            problems.append(f"{role} in {region} is {state}")
    rotation: Mapping[str, Any] | None = None
    try:
        rotation = aws_dr.rotation_settings(key, layout.primary, layout.key_id)
    except KeysteadError as exc:  # the region's own line already says it cannot be reached
        if not isinstance(exc, ProviderUnavailable):
            return KeyStatus(kc.name, kc.ref, layout.key_id, True, layout.primary, tuple(regions), error=str(exc))
    return KeyStatus(kc.name, kc.ref, layout.key_id, True, layout.primary, tuple(regions), rotation,
                     tuple(problems))


# -- dr drill -----------------------------------------------------------------------------
def drill(kc: KeyConfig, key: AwsKey, *, vault: str, rng: Callable[[int], bytes] = os.urandom,
          timer: Callable[[], float] = time.perf_counter) -> DrillReport:
    """Canaries across the key's regions (see the module docstring). Never raises for a region's failure:
    every failed step is in the report; only a refused lookup of the key is ``error``."""
    from keystead.providers import aws_dr

    try:
        layout = aws_dr.locate(key)
    except KeysteadError as exc:
        return DrillReport(kc.name, kc.ref, None, None, (), error=str(exc))
    if not layout.multi_region:
        return DrillReport(kc.name, kc.ref, layout.key_id, layout.primary, (),
                           error=f"key {kc.name} is not a multi-region key: there is nothing to drill")
    replicas = _dr_regions(key, layout)
    if not replicas:
        return DrillReport(kc.name, kc.ref, layout.key_id, layout.primary, (),
                           error=f"key {kc.name} has no replica to drill (replica_regions, aws kms replicate-key)")
    context = {"keystead:vault": vault, "keystead:drill": uuid.uuid4().hex}
    timings: dict[str, list[float]] = {}
    steps: list[DrillStep] = []
    for replica in replicas:
        for source, target in ((layout.primary, replica), (replica, layout.primary)):
            steps.append(_step(key, layout.key_id, source, target, context, rng, timer, timings))
    latency = {region: round(statistics.median(ms), 2) for region, ms in timings.items() if ms}
    return DrillReport(kc.name, kc.ref, layout.key_id, layout.primary, tuple(steps), latency_ms=latency)


def _step(key: AwsKey, key_id: str, source: str, target: str, context: dict[str, str],
          rng: Callable[[int], bytes], timer: Callable[[], float], timings: dict[str, list[float]]) -> DrillStep:
    from keystead.providers import aws_dr

    canary = rng(CANARY_BYTES)
    encrypt_ms = decrypt_ms = None
    try:
        t0 = timer()
        blob = aws_dr.encrypt_in(key, source, key_id, canary, context)
        encrypt_ms = round((timer() - t0) * 1000, 2)
        timings.setdefault(source, []).append(encrypt_ms)
        t0 = timer()
        back = aws_dr.decrypt_in(key, target, key_id, blob, context)
        decrypt_ms = round((timer() - t0) * 1000, 2)
        timings.setdefault(target, []).append(decrypt_ms)
    except KeysteadError as exc:
        return DrillStep(source, target, False, encrypt_ms, decrypt_ms, str(exc))
    if not hmac.compare_digest(back, canary):
        return DrillStep(source, target, False, encrypt_ms, decrypt_ms, f"{target} returned other bytes")
    return DrillStep(source, target, True, encrypt_ms, decrypt_ms)


# -- dr promote -----------------------------------------------------------------------------
def promotion(kc: KeyConfig, key: AwsKey, region: str) -> Layout | None:
    """The key's layout if ``region`` may become its primary; None if it is the primary already.
    InputError when the key is not multi-region or ``region`` holds no replica."""
    from keystead.providers import aws_dr

    layout = aws_dr.locate(key)
    if not layout.multi_region:
        raise InputError(f"key {kc.name} is not a multi-region key: it has no replica to promote")
    if region == layout.primary:
        return None
    if region not in layout.replicas:
        listed = ", ".join(layout.replicas) or "none"
        raise InputError(f"region {region} is not a replica region of key {kc.name} (replicas: {listed}; "
                         f"primary: {layout.primary})")
    return layout


def promote(key: AwsKey, layout: Layout, region: str) -> None:
    from keystead.providers import aws_dr

    aws_dr.update_primary_region(key, layout, region)
