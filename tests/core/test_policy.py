"""The rebalance policy (SEMANTICS §7): every rule of :class:`RebalancePolicy`.

Statistics are per bar, ``periods_per_year = 252``. Most scenarios use two uncorrelated assets
with per-bar variance 1e-4, where the Sharpe ratio of holding asset 1 alone is
``252·m / √(252·1e-4) = 100·√252·m`` for a per-bar mean ``m``.
"""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfolio.core.metrics import portfolio_performance
from streamfolio.core.policy import (
    Decision,
    Hold,
    PolicySettings,
    PolicyState,
    Rebalance,
    RebalancePolicy,
    cap_turnover,
    turnover,
)

Q = 252.0
COV = np.eye(2) * 1e-4
ALL_IN_FIRST = np.array([1.0, 0.0])
MOSTLY_SECOND = np.array([0.2, 0.8])
GOOD_FIRST = np.array([0.001, -0.0002])
"""Asset 1 has Sharpe 1.587, asset 2 is a loser: the optimum is all in asset 1."""


def mean_for_sharpe(sharpe: float, second: float | None = None) -> np.ndarray:
    """Per-bar means that give ``ALL_IN_FIRST`` this Sharpe ratio under ``COV``."""
    first = sharpe / (100.0 * math.sqrt(Q))
    return np.array([first, first if second is None else second])


def sharpe_of(weights: np.ndarray, mean: np.ndarray, cov: np.ndarray = COV) -> float:
    return portfolio_performance(weights, mean, cov, periods_per_year=Q).sharpe


def make_policy(**overrides: object) -> RebalancePolicy:
    base: dict[str, object] = {
        "sharpe_threshold": 2.0,
        "band": 0.1,
        "cooldown_ms": 60_000,
        "min_improvement": 0.05,
        "min_observations": 20,
        "periods_per_year": Q,
    }
    base.update(overrides)
    return RebalancePolicy(PolicySettings(**base))  # type: ignore[arg-type]


def decide(
    policy: RebalancePolicy,
    mean: np.ndarray,
    weights: np.ndarray,
    state: PolicyState,
    *,
    now_ms: int = 0,
    count: int = 100,
    cov: np.ndarray = COV,
) -> tuple[Decision, PolicyState]:
    return policy.decide(
        mean=mean, covariance=cov, count=count, weights=weights, now_ms=now_ms, state=state
    )


def rebalanced(policy: RebalancePolicy) -> tuple[Rebalance, PolicyState]:
    """A first rebalance at t = 0: from MOSTLY_SECOND to all in asset 1 (expected Sharpe 1.587)."""
    decision, state = decide(policy, GOOD_FIRST, MOSTLY_SECOND, PolicyState())
    assert isinstance(decision, Rebalance)
    return decision, state


def assert_valid_weights(weights: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> None:
    assert np.all(np.isfinite(weights))
    assert np.all(weights >= lo - 1e-12)
    assert np.all(weights <= hi + 1e-9)
    assert math.fsum(weights) == pytest.approx(1.0, abs=1e-9)


# -- trigger ------------------------------------------------------------------------------------


def test_sharpe_at_or_above_threshold_holds_quietly_and_keeps_the_state() -> None:
    policy = make_policy(sharpe_threshold=1.0)
    state = PolicyState()
    decision, new_state = decide(policy, GOOD_FIRST, ALL_IN_FIRST, state)
    assert isinstance(decision, Hold)
    assert decision.reason == "sharpe 1.59 at or above threshold 1.00"
    assert decision.sharpe == pytest.approx(sharpe_of(ALL_IN_FIRST, GOOD_FIRST), rel=1e-12)
    assert not decision.notify
    assert new_state == state


def test_sharpe_below_threshold_rebalances_to_long_only_weights_summing_to_one() -> None:
    policy = make_policy()
    decision, state = decide(policy, GOOD_FIRST, MOSTLY_SECOND, PolicyState(), now_ms=5_000)
    assert isinstance(decision, Rebalance)
    assert_valid_weights(decision.weights)
    np.testing.assert_allclose(decision.weights, [1.0, 0.0], atol=1e-9)
    assert decision.sharpe_before == pytest.approx(sharpe_of(MOSTLY_SECOND, GOOD_FIRST), rel=1e-12)
    after = portfolio_performance(decision.weights, GOOD_FIRST, COV, periods_per_year=Q)
    assert decision.sharpe_after == pytest.approx(after.sharpe, rel=1e-12)
    assert decision.expected_return_after == pytest.approx(after.expected_return, rel=1e-12)
    assert decision.risk_after == pytest.approx(after.risk, rel=1e-12)
    assert decision.turnover == pytest.approx(turnover(MOSTLY_SECOND, decision.weights), abs=1e-15)
    assert decision.optimizer_status == "optimal"
    assert "below threshold" in decision.reason
    assert state == PolicyState(
        armed=False,
        last_attempt_ms=5_000,
        last_decision_sharpe=decision.sharpe_after,
        last_attempt_held=False,
    )


def test_rebalanced_weights_respect_per_asset_bounds() -> None:
    policy = make_policy(bounds=(0.0, 0.7))
    decision, _ = decide(policy, GOOD_FIRST, MOSTLY_SECOND, PolicyState())
    assert isinstance(decision, Rebalance)
    assert_valid_weights(decision.weights, 0.0, 0.7)
    np.testing.assert_allclose(decision.weights, [0.7, 0.3], atol=1e-9)


def test_zero_risk_holds_with_an_undefined_sharpe_ratio() -> None:
    policy = make_policy()
    state = PolicyState()
    decision, new_state = decide(policy, GOOD_FIRST, MOSTLY_SECOND, state, cov=np.zeros((2, 2)))
    assert isinstance(decision, Hold)
    assert math.isnan(decision.sharpe)
    assert "undefined" in decision.reason
    assert new_state == state


# -- cool-down and warm-up ----------------------------------------------------------------------


def test_cool_down_holds_until_cooldown_ms_after_the_last_attempt() -> None:
    policy = make_policy(cooldown_ms=60_000)
    first, state = rebalanced(policy)
    # Things get much worse (re-arms), but the last attempt was too recent.
    worse = mean_for_sharpe(0.5)
    assert sharpe_of(first.weights, worse) < first.sharpe_after - 0.1
    decision, state = decide(policy, worse, first.weights, state, now_ms=59_999)
    assert isinstance(decision, Hold)
    assert decision.reason == "cooling down"
    assert not decision.notify
    assert state.last_attempt_ms == 0
    decision, state = decide(policy, worse, first.weights, state, now_ms=60_000)
    assert isinstance(decision, Rebalance)
    assert state.last_attempt_ms == 60_000


def test_warm_up_holds_until_min_observations_without_counting_as_an_attempt() -> None:
    policy = make_policy(min_observations=20)
    state = PolicyState()
    decision, new_state = decide(policy, GOOD_FIRST, MOSTLY_SECOND, state, count=19)
    assert isinstance(decision, Hold)
    assert decision.reason == "warming up (19 of 20 observations)"
    assert new_state == state
    decision, _ = decide(policy, GOOD_FIRST, MOSTLY_SECOND, new_state, count=20)
    assert isinstance(decision, Rebalance)


# -- hysteresis ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sharpe", [1.5, 1.587, 1.7, 1.95, 2.0 - 1e-9])
def test_after_a_rebalance_a_sharpe_inside_the_band_holds_even_after_the_cooldown(
    sharpe: float,
) -> None:
    # Threshold 2.0, band 0.1; last expected Sharpe 1.587: the band is [1.487, 2.1].
    policy = make_policy()
    first, state = rebalanced(policy)
    assert first.sharpe_after == pytest.approx(1.5875, abs=1e-4)
    decision, new_state = decide(
        policy, mean_for_sharpe(sharpe), first.weights, state, now_ms=10**9
    )
    assert isinstance(decision, Hold)
    assert decision.reason == "inside the hysteresis band since the last decision"
    assert not new_state.armed
    assert new_state == state


def test_a_sharpe_above_threshold_but_inside_the_band_does_not_rearm() -> None:
    policy = make_policy()
    first, state = rebalanced(policy)
    decision, state = decide(policy, mean_for_sharpe(2.05), first.weights, state, now_ms=10**6)
    assert isinstance(decision, Hold)
    assert "at or above threshold" in decision.reason
    assert not state.armed
    decision, state = decide(policy, mean_for_sharpe(1.9), first.weights, state, now_ms=2 * 10**6)
    assert isinstance(decision, Hold)
    assert decision.reason == "inside the hysteresis band since the last decision"


def test_rearms_when_sharpe_rises_above_threshold_plus_band() -> None:
    policy = make_policy()
    first, state = rebalanced(policy)
    decision, state = decide(policy, mean_for_sharpe(2.2), first.weights, state, now_ms=10**6)
    assert isinstance(decision, Hold)
    assert "at or above threshold" in decision.reason
    assert state.armed
    # Back below the threshold (inside the old band): this time the policy acts.
    decision, state = decide(policy, mean_for_sharpe(1.9), first.weights, state, now_ms=2 * 10**6)
    assert isinstance(decision, Rebalance)
    assert state.last_attempt_ms == 2 * 10**6


def test_rearms_when_sharpe_falls_below_the_last_expected_sharpe_minus_band() -> None:
    policy = make_policy()
    first, state = rebalanced(policy)
    worse = mean_for_sharpe(first.sharpe_after - 0.1 - 1e-6)
    decision, _ = decide(policy, worse, first.weights, state, now_ms=10**6)
    assert isinstance(decision, Rebalance)


# -- improvement --------------------------------------------------------------------------------


def test_no_worthwhile_improvement_holds_with_notify_and_retries_after_the_cooldown() -> None:
    # Already optimal, yet below the threshold: nothing feasible helps.
    policy = make_policy(cooldown_ms=60_000)
    decision, state = decide(policy, GOOD_FIRST, ALL_IN_FIRST, PolicyState(), now_ms=1_000)
    assert isinstance(decision, Hold)
    assert decision.notify
    assert decision.reason.startswith("best expected gain")
    assert "below the minimum 0.050" in decision.reason
    assert state == PolicyState(
        armed=False,
        last_attempt_ms=1_000,
        last_decision_sharpe=decision.sharpe,
        last_attempt_held=True,
    )
    # Within the cool-down it stays quiet; afterwards it re-arms and tries again.
    again, same_state = decide(policy, GOOD_FIRST, ALL_IN_FIRST, state, now_ms=60_999)
    assert isinstance(again, Hold)
    assert not again.notify
    assert same_state == state
    retry, retry_state = decide(policy, GOOD_FIRST, ALL_IN_FIRST, state, now_ms=61_000)
    assert isinstance(retry, Hold)
    assert retry.notify
    assert retry_state.last_attempt_ms == 61_000


def test_a_gain_below_min_improvement_holds_instead_of_rebalancing() -> None:
    policy = make_policy(min_improvement=10.0)
    decision, _ = decide(policy, GOOD_FIRST, MOSTLY_SECOND, PolicyState())
    assert isinstance(decision, Hold)
    assert decision.notify
    assert "below the minimum 10.000" in decision.reason


# -- turnover cap -------------------------------------------------------------------------------


def test_max_turnover_caps_the_move_toward_the_optimum() -> None:
    policy = make_policy(max_turnover=0.25)
    decision, _ = decide(policy, GOOD_FIRST, MOSTLY_SECOND, PolicyState())
    assert isinstance(decision, Rebalance)
    assert decision.turnover <= 0.25 + 1e-12
    assert turnover(MOSTLY_SECOND, decision.weights) <= 0.25 + 1e-12
    assert_valid_weights(decision.weights)
    np.testing.assert_allclose(decision.weights, [0.45, 0.55], atol=1e-9)
    assert decision.sharpe_after - decision.sharpe_before >= 0.05


def test_turnover_is_half_the_l1_distance() -> None:
    assert turnover([0.5, 0.5], [0.8, 0.2]) == 0.3
    assert turnover([1.0, 0.0, 0.0], [0.0, 0.0, 1.0]) == 1.0
    assert turnover([0.25, 0.75], [0.25, 0.75]) == 0.0


def test_cap_turnover_returns_the_target_when_within_the_cap() -> None:
    target = np.array([0.9, 0.1])
    result = cap_turnover([0.5, 0.5], target, 0.4)
    np.testing.assert_array_equal(result, target)
    assert result is not target
    np.testing.assert_array_equal(cap_turnover([0.5, 0.5], [0.5, 0.5], 0.0), [0.5, 0.5])


@st.composite
def policy_cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    n = draw(st.integers(min_value=2, max_value=6))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    mean = rng.normal(2e-4, 8e-4, size=n)
    factor = rng.normal(0.0, 1e-2, size=(n, n))
    cov = factor @ factor.T / n + np.eye(n) * 1e-5
    raw = rng.random(n) + 0.05
    weights = raw / raw.sum()
    hi = draw(st.floats(min_value=float(weights.max()), max_value=1.0))
    cap = draw(st.floats(min_value=0.01, max_value=1.0))
    return mean, cov, weights, hi, cap


@settings(max_examples=60, deadline=None)
@given(policy_cases())
def test_any_rebalance_is_long_only_in_bounds_sums_to_one_and_respects_the_cap(
    case: tuple[np.ndarray, np.ndarray, np.ndarray, float, float],
) -> None:
    mean, cov, weights, hi, cap = case
    policy = make_policy(
        sharpe_threshold=5.0, max_turnover=cap, bounds=(0.0, hi), min_observations=1
    )
    decision, state = decide(policy, mean, weights, PolicyState(), cov=cov)
    if isinstance(decision, Hold):
        return
    assert_valid_weights(decision.weights, 0.0, hi)
    assert turnover(weights, decision.weights) <= cap + 1e-12
    assert decision.turnover <= cap + 1e-12
    assert decision.sharpe_after - decision.sharpe_before >= 0.05
    assert decision.sharpe_after == pytest.approx(sharpe_of(decision.weights, mean, cov), rel=1e-9)
    assert state.last_decision_sharpe == decision.sharpe_after


# -- degenerate inputs --------------------------------------------------------------------------


def test_no_asset_beating_the_risk_free_rate_still_gives_a_decision() -> None:
    # Every μ ≤ r_f: the optimiser falls back to minimum volatility.
    policy = make_policy(risk_free_rate=0.02, sharpe_threshold=0.5)
    mean = np.array([-0.001, -0.0005, 0.00005])
    cov = np.diag([1e-4, 4e-4, 2e-4])
    for weights in (np.array([0.2, 0.3, 0.5]), np.array([1.0, 0.0, 0.0])):
        decision, state = decide(policy, mean, weights, PolicyState(), cov=cov)
        assert isinstance(decision, Hold | Rebalance)
        assert state.last_attempt_ms == 0
        if isinstance(decision, Rebalance):
            assert decision.optimizer_status == "min_volatility_fallback"
            assert_valid_weights(decision.weights)
        else:
            assert decision.notify


# -- determinism --------------------------------------------------------------------------------


def assert_same_decision(a: Decision, b: Decision) -> None:
    assert type(a) is type(b)
    for f in fields(a):
        left, right = getattr(a, f.name), getattr(b, f.name)
        if isinstance(left, np.ndarray):
            assert np.array_equal(left, right)
        elif isinstance(left, float) and math.isnan(left):
            assert math.isnan(right)
        else:
            assert left == right


def test_same_inputs_give_the_same_decisions_from_any_policy_instance() -> None:
    rng = np.random.default_rng(11)
    n = 5
    factor = rng.normal(0.0, 1e-2, size=(n, n))
    cov = factor @ factor.T / n + np.eye(n) * 1e-5
    mean = rng.normal(3e-4, 5e-4, size=n)
    weights = np.full(n, 1.0 / n)
    runs = []
    for _ in range(2):
        policy = make_policy(max_turnover=0.3, gamma=0.1)
        state = PolicyState()
        trace = []
        for step, shift in enumerate([0.0, -1e-3, -2e-3, 5e-4, -4e-3]):
            decision, state = decide(
                policy, mean + shift, weights.copy(), state, now_ms=step * 70_000, cov=cov.copy()
            )
            trace.append((decision, state))
        runs.append(trace)
    assert any(isinstance(d, Rebalance) for d, _ in runs[0])
    for (d1, s1), (d2, s2) in zip(runs[0], runs[1], strict=True):
        assert_same_decision(d1, d2)
        assert s1 == s2
