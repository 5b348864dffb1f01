"""The rotation's rate limit on AWS keys, against moto server behind a loopback proxy
(tests/providers/aws/throttling_proxy.py) that answers ThrottlingException for every Nth ReEncrypt
and counts, at the wire, when each forwarded ReEncrypt arrived.

The keys name the proxy as their ``endpoint``, so the provider builds its own boto3 client (the
production path: adaptive retries, a connection pool per thread, the rate limit's gate on every
HTTP attempt). Rates are asserted as counts per window at the proxy, with slack, and as the
lower bound a token bucket guarantees (N calls at rate R take at least (N - burst) / R seconds):
never the timing of our own code."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from keystead.config import load_config
from keystead.providers.limits import RateLimit
from keystead.rotation import run_once
from keystead.rotation.engine import Engine, Outcome
from keystead.rotation.state import StateDB
from keystead.vault import Vault
from tests.providers.aws.helpers import aws_key_toml, make_key, workspace
from tests.providers.aws.moto_server import ACCOUNT, REGION, Clients
from tests.providers.aws.throttling_proxy import ThrottlingProxy

PROVIDERS = f'[providers.aws]\nregion = "{REGION}"\naccount = "{ACCOUNT}"\n'


@pytest.fixture
def proxy(aws_env: Clients) -> Iterator[ThrottlingProxy]:
    p = ThrottlingProxy(aws_env.url)
    yield p
    p.stop()


def sealed(aws_env: Clients, tmp_path: Path, proxy: ThrottlingProxy, n: int, *, providers: str = "",
           rotation: str = "") -> Path:
    """A vault of ``n`` secrets sealed by an AWS key that reaches moto through ``proxy``, then rotated
    by AWS (moto): every slot is behind and the next sweep rewraps all ``n`` with ReEncrypt."""
    kms = aws_env.kms()
    meta = make_key(kms, alias="app")
    w = workspace(tmp_path, aws_key_toml("app", "alias/app", endpoint=proxy.url), local=False,
                  extra=PROVIDERS + providers)
    if rotation:
        text = w.config.read_text()
        assert "\n[rotation]\n" in text
        w.config.write_text(text.replace("\n[rotation]\n", "\n[rotation]\n" + rotation, 1))
    with Vault.open(load_config(w.config)) as vault:
        for i in range(n):
            vault.set(f"S{i:03d}", f"value-{i}".encode())
    kms.rotate_key_on_demand(KeyId=meta["KeyId"])
    return w.config


def sweep(config: Path, limit: RateLimit):
    with Vault.open(load_config(config), wrap_key=limit) as vault:
        state = StateDB.open(vault.config.state_url)
        assert state is not None
        engine = Engine(vault, state, now=datetime.now(UTC))
        try:
            return engine.run_key("app")
        finally:
            engine.close()
            state.close()


@contextmanager
def batch_summaries() -> Iterator[list[str]]:
    """The rate limit's per-batch lines at INFO, read from its own logger (a handler on it: the CLI's
    rotation logging stops ``keystead.rotation`` from propagating to the root, where caplog listens)."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("keystead.rotation.ratelimit")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def every_secret_opens(config: Path, n: int) -> None:
    with Vault.open(load_config(config)) as vault:
        assert {vault.get(f"S{i:03d}") for i in range(n)} == {f"value-{i}".encode() for i in range(n)}
        key = vault.keys["app"]
        primary = key.describe().primary
        assert {e.slot(key.ref).version for e in vault.store.iter_envelopes()} == {primary}


def test_throttled_reencrypts_are_retried_counted_and_the_rotation_completes(
        aws_env: Clients, tmp_path: Path, proxy: ThrottlingProxy) -> None:
    n = 12
    config = sealed(aws_env, tmp_path, proxy, n)
    proxy.every = 5  # every 5th ReEncrypt reaching the proxy (retries included) is throttled
    limit = RateLimit(1000)
    with batch_summaries() as summary:
        result = sweep(config, limit)
    assert (result.outcome, result.state, result.rewrapped) == (Outcome.WAITING, "verified", n), result.message
    counters = limit.counters()
    assert proxy.throttled >= 2 and counters.throttled == proxy.throttled
    assert counters.backoff_seconds > 0  # the retries waited (botocore's backoff, measured by the gate)
    assert counters.calls >= n + proxy.throttled and counters.unavailable == 0
    assert len(proxy.forwarded) == n  # each slot re-encrypted once, in the end
    assert any(f"batch={n} " in m and f"{proxy.throttled} throttled" in m for m in summary), summary
    every_secret_opens(config, n)


def test_retries_run_out_the_key_pauses_nothing_changes_and_the_next_sweep_completes(
        aws_env: Clients, tmp_path: Path, proxy: ThrottlingProxy) -> None:
    n = 2  # few: after a throttle, botocore's adaptive mode sends this client's calls at its 0.5/s floor
    config = sealed(aws_env, tmp_path, proxy, n)
    with Vault.open(load_config(config)) as vault:
        before = {e.name: e.slot(vault.keys["app"].ref) for e in vault.store.iter_envelopes()}
    proxy.every = 1  # KMS throttles every ReEncrypt: botocore's retries run out
    limit = RateLimit(1000)
    result = sweep(config, limit)
    assert result.outcome is Outcome.PAUSED and "ThrottlingException" in result.message, result.message
    assert result.unreadable == []
    counters = limit.counters()
    assert counters.unavailable == 1 and counters.throttled == proxy.throttled >= 3 * n  # 3 attempts each
    with Vault.open(load_config(config)) as vault:
        assert {e.name: e.slot(vault.keys["app"].ref) for e in vault.store.iter_envelopes()} == before

    proxy.every = None  # the quota is free again: the next sweep resumes and completes
    result = sweep(config, RateLimit(1000))
    assert (result.outcome, result.state, result.rewrapped) == (Outcome.WAITING, "verified", n), result.message
    every_secret_opens(config, n)


def test_the_worker_never_sends_reencrypt_faster_than_the_configured_share(
        aws_env: Clients, tmp_path: Path, proxy: ThrottlingProxy) -> None:
    """``[providers.aws] requests_per_second = 100``, ``quota_share = 0.5``: 50 ReEncrypt/s (burst 2),
    through the worker's own wiring (run_once). moto alone answers several hundred a second."""
    n, rate, burst = 40, 50, 2
    config = sealed(aws_env, tmp_path, proxy, n, providers="requests_per_second = 100\nquota_share = 0.5\n")
    result = run_once(load_config(config), only="app").keys[0]
    assert (result.outcome, result.rewrapped) == (Outcome.WAITING, n), result.message
    assert len(proxy.forwarded) == n
    span = max(proxy.forwarded) - min(proxy.forwarded)
    assert span >= 0.9 * (n - burst) / rate, span
    assert proxy.most_in_window(0.5) <= burst + rate * 0.5 + 3
    every_secret_opens(config, n)


@pytest.mark.slow
def test_lanes_share_the_rate_between_them(aws_env: Clients, tmp_path: Path, proxy: ThrottlingProxy) -> None:
    """Two lane processes (``parallel = 2``), each at half of the configured 50/s: together they
    stay within 50/s at the proxy (each alone at the full rate would send 100/s)."""
    n, rate, burst = 60, 50, 2
    config = sealed(aws_env, tmp_path, proxy, n, providers="requests_per_second = 100\nquota_share = 0.5\n",
                    rotation="parallel = 2\nparallel_above = 0\nbatch_size = 15\n")
    result = run_once(load_config(config), only="app").keys[0]
    assert (result.outcome, result.rewrapped) == (Outcome.WAITING, n), result.message
    assert len(proxy.forwarded) == n
    span = max(proxy.forwarded) - min(proxy.forwarded)
    assert span >= 0.9 * (n - burst) / rate, span
    assert proxy.most_in_window(0.5) <= burst + rate * 0.5 + 3
    every_secret_opens(config, n)


def test_the_connection_pool_holds_a_connection_per_rewrap_thread(aws_env: Clients) -> None:
    """botocore's default pool is 10 connections: with more rewrap threads, urllib3 would discard and
    re-open connections on every call past the tenth."""
    from keystead.providers.aws import AwsKey

    key = AwsKey("alias/app", options={"region": REGION, "endpoint": aws_env.url, "max_concurrency": 48})
    assert key.client().meta.config.max_pool_connections == 48
    assert AwsKey("alias/app", options={"region": REGION}).client().meta.config.max_pool_connections == 64
    few = AwsKey("alias/app", options={"region": REGION, "max_concurrency": 4})
    assert few.client().meta.config.max_pool_connections == 10
