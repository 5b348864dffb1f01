"""The planner: due dates, behind counts, estimates, as_of; it only reads."""

from __future__ import annotations

from datetime import timedelta

from keystead.rotation import planner
from tests.rotation.conftest import T0, Env, make_env


def plans(env: Env, as_of, **kw):
    with env.vault() as vault:
        state = env.state()
        try:
            return planner.plan(vault, state, as_of=as_of, **kw)
        finally:
            state.close()


def test_due_exactly_at_the_period(env: Env) -> None:
    [before] = plans(env, T0 + timedelta(days=90) - timedelta(seconds=1))
    assert not before.due and before.action == planner.NONE
    [at] = plans(env, T0 + timedelta(days=90))
    assert at.due and at.action == planner.ROTATE
    assert at.next_due == T0 + timedelta(days=90) and at.last_rotated == T0
    assert at.to_rewrap == env.n and at.behind == 0 and at.slots == env.n


def test_period_comes_from_the_config(tmp_path) -> None:
    env = make_env(tmp_path / "ws", period=1, n=3)
    assert not plans(env, T0 + timedelta(hours=23))[0].due
    assert plans(env, T0 + timedelta(days=1))[0].due


def test_behind_counts_and_catch_up(env: Env) -> None:
    with env.vault() as vault:
        vault.keys["main"].rotate(now=T0 + timedelta(days=5), token="by-hand")
        vault.set("NEW", b"sealed under version 2")
    [p] = plans(env, T0 + timedelta(days=6))
    assert p.primary == "2" and p.behind == env.n and p.version_counts == {"1": env.n, "2": 1}
    assert p.action == planner.CATCH_UP and not p.due and p.to_rewrap == env.n


def test_estimate_uses_the_documented_rate(env: Env) -> None:
    [p] = plans(env, T0 + timedelta(days=100))
    assert p.estimated_seconds == env.n / planner.REWRAP_RATES["local"]


def test_force_plans_a_rotation_that_is_not_due(env: Env) -> None:
    [p] = plans(env, T0 + timedelta(days=1), force=True)
    assert p.action == planner.ROTATE and not p.due


def test_unopenable_key_is_an_error_plan_not_an_exception(tmp_path) -> None:
    env = make_env(tmp_path / "ws", n=2, extra='[keys.gone]\nref = "local:gone"\n')
    by = {p.name: p for p in plans(env, T0 + timedelta(days=100))}
    assert by["main"].action == planner.ROTATE
    assert by["gone"].action == planner.ERROR and "gone" in by["gone"].error


def test_planner_changes_nothing(env: Env) -> None:
    before = env.snapshot()
    plans(env, T0 + timedelta(days=400))
    assert env.snapshot() == before
