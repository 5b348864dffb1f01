"""Rate limits for a key's provider calls: a token bucket wrapped around a key (docs/aws.md,
"Rate limits and throughput").

:class:`RateLimit` is a :data:`~keystead.providers.base.KeyWrapper`: ``Vault.open(config,
wrap_key=RateLimit(...))`` puts every key of the limited providers behind one token bucket per
process (the quota it protects is the account's, shared by all keys). It holds only numbers, so it
pickles into rotation lanes; each process builds its own bucket on first use, and
:meth:`RateLimit.divided` gives each of ``n`` lanes ``rate / n``.

Where a key lets a wrapper see its requests (:class:`~keystead.providers.base.RequestGate`, the
AWS key does: every HTTP attempt botocore sends, retries included), the bucket admits each request
just before it is sent and hears of each throttling answer; otherwise it admits each call of the
key (a batch of ``rewrap_many`` takes one token per item before it starts).

Throttling is never a failure of its own: the provider's SDK retries it with backoff (botocore's
adaptive retries: exponential backoff with jitter and a client-side send rate that drops after a
throttle), the bucket counts the throttling answers and the time from each one to its retry
(:attr:`LimiterCounters.backoff_seconds`). When the retries run out the key raises the transient
family (:class:`~keystead.errors.ProviderUnavailable`) for the whole batch, and the rotation
engine pauses the key (outcome ``paused``) until the next sweep.

:class:`LimiterCounters` are plain numbers, per process, for metrics to read
(``RateLimit.counters()``); every batch logs its own share on ``keystead.rotation.ratelimit`` at
DEBUG, or at INFO when it was throttled or ran out of retries.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from keystead.envelope import Context
from keystead.errors import ConfigError, ProviderUnavailable
from keystead.providers.base import KeyInfo, ManagedKey, RewrapResult, SlotItem, Wrapped

log = logging.getLogger("keystead.rotation.ratelimit")
"""Under ``keystead.rotation``: the rotation's rate limit logs where the worker's (and its lanes') lines go."""

DEFAULT_REQUESTS_PER_SECOND = 10_000
"""``[providers.aws] requests_per_second``: the account's KMS quota for the shared symmetric
cryptographic operations in a region. 10,000 is AWS's default in most regions; some have more
(20,000 or 50,000 and up), so set yours from Service Quotas."""
DEFAULT_QUOTA_SHARE = 0.5
"""``[providers.aws] quota_share``: the part of that quota keystead's rotation may use, so the
applications decrypting with the same keys keep the rest."""
BURST_SECONDS = 0.05
"""The bucket holds this many seconds of calls (at least one): a short burst, never a second's worth."""


@dataclasses.dataclass(slots=True)
class LimiterCounters:
    """What one process's bucket has done (a snapshot: plain numbers)."""

    calls: int = 0
    """Requests admitted (with a request gate: every HTTP attempt, retries included)."""
    waits: int = 0
    """Of those, how many had to wait for a token."""
    wait_seconds: float = 0.0
    """Time spent waiting for tokens, summed over the threads that waited."""
    throttled: int = 0
    """Throttling answers the provider gave (ThrottlingException and its kin)."""
    backoff_seconds: float = 0.0
    """Time from each throttling answer to the send of its retry (the SDK's backoff), summed."""
    unavailable: int = 0
    """Calls or batches that ended in ProviderUnavailable (retries exhausted, unreachable)."""

    def minus(self, before: LimiterCounters) -> LimiterCounters:
        return LimiterCounters(*(a - b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(before),
                                                       strict=True)))

    def summary(self) -> str:
        return (f"{self.calls} calls, {self.waits} waited {self.wait_seconds:.2f} s, {self.throttled} throttled, "
                f"backoff {self.backoff_seconds:.2f} s, {self.unavailable} unavailable")


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; thread-safe.

    Reservation style: :meth:`acquire` takes its tokens at once (the level may go below zero) and
    sleeps, outside the lock, until the level it left would have been refilled to zero. So the
    callers are admitted in order, spaced ``1 / rate`` apart once the burst is spent, and in any
    interval of length ``t`` at most ``burst + rate * t`` tokens are handed out."""

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not rate > 0 or not burst >= 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._level = self.burst
        self._at = clock()
        self._lock = threading.Lock()

    def reserve(self, n: float = 1) -> float:
        """Take ``n`` tokens now; the seconds the caller must wait before using them."""
        with self._lock:
            now = self._clock()
            self._level = min(self.burst, self._level + (now - self._at) * self.rate) - n
            self._at = now
            return 0.0 if self._level >= 0 else -self._level / self.rate

    def acquire(self, n: float = 1) -> float:
        """Take ``n`` tokens, sleeping until they are due; the seconds slept."""
        delay = self.reserve(n)
        if delay > 0:
            self._sleep(delay)
        return delay


class Limiter:
    """One process's bucket and its counters; the :class:`~keystead.providers.base.RequestGate` a key
    calls around each request it sends."""

    def __init__(self, rate: float, burst: float) -> None:
        self.bucket = TokenBucket(rate, burst)
        self._counters = LimiterCounters()
        self._lock = threading.Lock()
        self._local = threading.local()  # per thread: when its last request was throttled

    @property
    def rate(self) -> float:
        return self.bucket.rate

    def take(self, n: int = 1) -> None:
        """Admit ``n`` calls (waiting for them if the bucket is empty)."""
        waited = self.bucket.acquire(n)
        with self._lock:
            c = self._counters
            c.calls += n
            if waited > 0:
                c.waits += n
                c.wait_seconds += waited

    # -- RequestGate: a key calls these around every request it sends --------------------
    def sending(self) -> None:
        throttled_at = getattr(self._local, "throttled_at", None)
        if throttled_at is not None:  # this is the retry of a throttled request: the backoff is over
            self._local.throttled_at = None
            with self._lock:
                self._counters.backoff_seconds += time.monotonic() - throttled_at
        self.take()

    def answered(self, *, throttled: bool) -> None:
        if throttled:
            self._local.throttled_at = time.monotonic()
            with self._lock:
                self._counters.throttled += 1

    def finished(self) -> None:
        self._local.throttled_at = None  # no retry follows (success, or the retries ran out)

    def failed(self) -> None:
        with self._lock:
            self._counters.unavailable += 1

    def counters(self) -> LimiterCounters:
        with self._lock:
            return dataclasses.replace(self._counters)


class RateLimit:
    """The key wrapper: keys of ``providers`` behind one bucket of ``rate`` calls a second per process
    (others are returned as they are). Picklable; the bucket is made in each process on first use."""

    def __init__(self, rate: float, *, burst: float | None = None, providers: Sequence[str] = ("aws",)) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(1.0, math.floor(self.rate * BURST_SECONDS))
        self.providers = tuple(providers)
        self._limiter: Limiter | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, providers: Mapping[str, Mapping[str, object]]) -> RateLimit:
        """From ``[providers.aws] requests_per_second`` and ``quota_share`` (both optional)."""
        aws = providers.get("aws") or {}
        rps = aws.get("requests_per_second", DEFAULT_REQUESTS_PER_SECOND)
        share = aws.get("quota_share", DEFAULT_QUOTA_SHARE)
        if not isinstance(rps, (int, float)) or isinstance(rps, bool) or not rps > 0:
            raise ConfigError(f"[providers.aws].requests_per_second must be a number above 0, got {rps!r}")
        if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 < share <= 1:
            raise ConfigError(f"[providers.aws].quota_share must be above 0 and at most 1, got {share!r}")
        return cls(rps * share)

    def divided(self, n: int) -> RateLimit:
        """The wrapper for one of ``n`` processes sharing this rate (rotation lanes)."""
        n = max(1, n)
        return RateLimit(self.rate / n, burst=max(1.0, math.floor(self.burst / n)), providers=self.providers)

    @property
    def limiter(self) -> Limiter:
        """This process's bucket and counters."""
        with self._lock:
            if self._limiter is None:
                self._limiter = Limiter(self.rate, self.burst)
            return self._limiter

    def counters(self) -> LimiterCounters:
        return self.limiter.counters()

    def __call__(self, key: ManagedKey) -> ManagedKey:
        if key.provider not in self.providers:
            return key
        return RateLimited(key, self.limiter)

    def __getstate__(self) -> dict[str, Any]:
        return {"rate": self.rate, "burst": self.burst, "providers": self.providers}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.rate, self.burst, self.providers = state["rate"], state["burst"], state["providers"]
        self._limiter = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RateLimit({self.rate:g}/s, burst {self.burst:g})"


class RateLimited:
    """A key behind a :class:`Limiter`: the same interface, every call admitted by the bucket."""

    def __init__(self, key: ManagedKey, limiter: Limiter) -> None:
        self.key = key
        self.limiter = limiter
        self.ref = key.ref
        self.provider = key.provider
        hook = getattr(key, "gate_requests", None)
        self.per_request = callable(hook)
        if callable(hook):
            hook(limiter)

    def _admit(self, n: int) -> None:
        if not self.per_request:
            self.limiter.take(n)

    def _call(self, n: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self._admit(n)
        try:
            return fn(*args, **kwargs)
        except ProviderUnavailable:
            self.limiter.failed()
            raise

    def wrap(self, dek: bytes, context: Context) -> Wrapped:
        result: Wrapped = self._call(1, self.key.wrap, dek, context)
        return result

    def unwrap(self, wrapped: Wrapped, context: Context) -> bytes:
        result: bytes = self._call(1, self.key.unwrap, wrapped, context)
        return result

    def rewrap(self, wrapped: Wrapped, context: Context) -> Wrapped:
        result: Wrapped = self._call(1, self.key.rewrap, wrapped, context)
        return result

    def rewrap_many(self, vault: str, items: Sequence[SlotItem]) -> list[RewrapResult]:
        before = self.limiter.counters()
        started = time.monotonic()
        try:
            result: list[RewrapResult] = self._call(len(items), self.key.rewrap_many, vault, items)
            return result
        finally:
            spent = self.limiter.counters().minus(before)
            level = logging.INFO if spent.throttled or spent.unavailable else logging.DEBUG
            if log.isEnabledFor(level):
                log.log(level, "rate limit key=%s batch=%d in %.2f s at most %g/s: %s", self.ref, len(items),
                        time.monotonic() - started, self.limiter.rate, spent.summary())

    def describe(self) -> KeyInfo:
        return self.key.describe()

    def rotate(self, *, now: datetime, token: str) -> KeyInfo:
        return self.key.rotate(now=now, token=token)

    def disable(self, version: str) -> None:
        self.key.disable(version)

    def retire(self, version: str) -> None:
        self.key.retire(version)

    def restore(self, version: str) -> None:
        self.key.restore(version)

    def __getattr__(self, name: str) -> Any:  # what else the provider's key offers (sign, regions...)
        if name == "key":  # not set yet (a copy being built): never recurse
            raise AttributeError(name)
        return getattr(self.key, name)

    def __repr__(self) -> str:
        return f"RateLimited({self.key!r}, {self.limiter.rate:g}/s)"
