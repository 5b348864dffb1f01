"""The token bucket and the rate-limit key wrapper (keystead.providers.limits), on a virtual clock
and a real local key; the AWS side (a throttling endpoint, rates at the wire) is in
tests/providers/aws/test_rate_limit.py."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from keystead.config import load_config
from keystead.envelope import Context
from keystead.errors import ConfigError, ProviderUnavailable
from keystead.providers.base import Chain, Wrapped
from keystead.providers.limits import LimiterCounters, RateLimit, RateLimited, TokenBucket
from keystead.vault import Vault
from tests.conftest import STORES, Workspace
from tests.rotation.fakes import RecordingWrapper, _Recorded


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_bucket_spends_its_burst_then_spaces_callers_one_over_rate_apart() -> None:
    clock = Clock()
    bucket = TokenBucket(10, 3, clock=clock, sleep=clock.sleep)
    admitted = []
    for _ in range(8):
        bucket.acquire()
        admitted.append(round(clock.now - 100.0, 6))
    assert admitted == [0, 0, 0, 0.1, 0.2, 0.3, 0.4, 0.5]


def test_bucket_never_hands_out_more_than_burst_plus_rate_times_t() -> None:
    clock = Clock()
    bucket = TokenBucket(50, 5, clock=clock, sleep=lambda s: None)  # reservations only: nobody sleeps
    delays = [bucket.reserve() for _ in range(200)]  # 200 callers at one instant
    due = sorted(clock.now + d for d in delays)
    for t in (0.0, 0.5, 1.0, 3.9):
        assert sum(1 for x in due if x <= clock.now + t + 1e-9) <= 5 + 50 * t + 1


def test_bucket_refills_while_idle_up_to_its_burst_only() -> None:
    clock = Clock()
    bucket = TokenBucket(10, 2, clock=clock, sleep=clock.sleep)
    for _ in range(2):
        assert bucket.acquire() == 0
    clock.now += 60  # a minute idle saves up 2 tokens, not 600
    assert [bucket.acquire() for _ in range(3)] == [0, 0, pytest.approx(0.1)]


def test_rate_is_divided_among_lanes_and_pickles_without_its_bucket() -> None:
    limit = RateLimit(5000)
    assert limit.burst == 250  # 50 ms of calls
    half = limit.divided(2)
    assert (half.rate, half.burst) == (2500, 125)
    limit.limiter.take(3)
    copy = pickle.loads(pickle.dumps(half))  # what a lane process receives
    assert (copy.rate, copy.burst, copy.providers) == (2500, 125, ("aws",))
    assert copy.counters() == LimiterCounters()  # its own bucket and counters, made in that process
    assert limit.counters().calls == 3


def test_rate_from_settings_is_quota_times_share() -> None:
    assert RateLimit.from_settings({}).rate == 5000  # 10,000/s x 0.5
    assert RateLimit.from_settings({"aws": {"requests_per_second": 20000, "quota_share": 0.25}}).rate == 5000
    with pytest.raises(ConfigError):
        RateLimit.from_settings({"aws": {"quota_share": 1.5}})


@pytest.mark.parametrize(("line", "message"), [
    ("quota_share = 0", "quota_share: must be above 0 and at most 1"),
    ("quota_share = 1.5", "quota_share: must be above 0 and at most 1"),
    ("requests_per_second = -1", "requests_per_second: must be above 0"),
    ('requests_per_second = "fast"', "requests_per_second: must be a number"),
])
def test_bad_rate_settings_are_config_errors_naming_the_field(tmp_path: Path, line: str, message: str) -> None:
    w = Workspace(tmp_path, STORES["sqlite"])
    w.cli("init", "--dir", str(tmp_path), "--store", w.store)
    w.config.write_text(w.config.read_text() + f"\n[providers.aws]\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(w.config)
    result = w.cli("secrets", "list", ok=False)
    assert result.exit_code == 3 and "keystead: error:" in result.stderr and "Traceback" not in result.stderr


def test_config_accepts_whole_numbers_for_both_settings(tmp_path: Path) -> None:
    w = Workspace(tmp_path, STORES["sqlite"])
    w.cli("init", "--dir", str(tmp_path), "--store", w.store)
    w.config.write_text(w.config.read_text() + "\n[providers.aws]\nrequests_per_second = 50000\nquota_share = 1\n")
    assert RateLimit.from_settings(load_config(w.config).providers).rate == 50000


def test_a_key_without_a_request_gate_is_admitted_per_call(tmp_path: Path) -> None:
    """The local key offers no request gate: the wrapper takes one token per call, one per item of a
    batch; keys of providers it does not limit are returned unwrapped."""
    w = Workspace(tmp_path, STORES["sqlite"])
    w.cli("init", "--dir", str(tmp_path), "--store", w.store)
    config = load_config(w.config)
    with Vault.open(config, wrap_key=RateLimit(1000)) as vault:
        assert not isinstance(vault.keys["main"], RateLimited)  # aws only, by default
    limit = RateLimit(1000, providers=("local",))
    with Vault.open(config, wrap_key=limit) as vault:
        key = vault.keys["main"]
        assert isinstance(key, RateLimited) and not key.per_request
        ctx = Context(config.vault_name, "S1")
        wrapped = key.wrap(b"k" * 32, ctx)
        assert key.unwrap(wrapped, ctx) == b"k" * 32
        out = key.rewrap_many(config.vault_name, [("S1", wrapped.version, wrapped.blob)] * 4)
        assert all(isinstance(r, Wrapped) for r in out)
        assert key.describe().provider == "local"
    assert limit.counters().calls == 2 + 4


def test_a_transient_failure_is_counted_and_raised_unchanged() -> None:
    class Down:
        ref, provider = "alias/x", "aws"

        def rewrap_many(self, vault, items):
            raise ProviderUnavailable("KMS is unavailable", op="rewrap", key=self.ref, code="ThrottlingException")

    limit = RateLimit(1000)
    key = limit(Down())  # type: ignore[arg-type]
    with pytest.raises(ProviderUnavailable, match="unavailable"):
        key.rewrap_many("v", [("S1", "1", b"x")])
    assert limit.counters().unavailable == 1


def test_a_chain_of_wrappers_divides_its_rate_limit_among_lanes(tmp_path: Path) -> None:
    """Chain(RateLimit, another wrapper): both applied in order, and a lane's share divides the limit
    only (what rotation/lanes.py hands each lane)."""
    w = Workspace(tmp_path, STORES["sqlite"])
    w.cli("init", "--dir", str(tmp_path), "--store", w.store)
    chain = Chain(RateLimit(900, providers=("local",)), RecordingWrapper(str(tmp_path)))
    with Vault.open(load_config(w.config), wrap_key=chain) as vault:
        outer = vault.keys["main"]
        assert isinstance(outer, _Recorded) and isinstance(outer._key, RateLimited)
    lane = pickle.loads(pickle.dumps(chain.divided(3)))
    assert isinstance(lane, Chain) and lane.wrappers[0].rate == 300 and lane.wrappers[1].folder == str(tmp_path)
