"""Expected return, risk and Sharpe ratio (SEMANTICS §6, portfolio.md §2.6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfolio.core.metrics import (
    expected_return,
    portfolio_performance,
    sharpe_ratio,
    sharpe_standard_error,
    volatility,
)

PERIODS = 252.0


@st.composite
def portfolio_inputs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Random long-only weights, per-bar mean, a positive definite covariance, q and r_f."""
    n = draw(st.integers(min_value=1, max_value=8))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    rng = np.random.default_rng(seed)
    raw = rng.random(n) + 1e-3
    weights = raw / raw.sum()
    mean = rng.normal(0.0, 1e-3, size=n)
    factor = rng.normal(0.0, 1e-2, size=(n, n))
    covariance = factor @ factor.T / n + np.eye(n) * 1e-6
    periods = draw(st.sampled_from([12.0, 52.0, 252.0, 252.0 * 350]))
    risk_free = draw(st.floats(min_value=-0.02, max_value=0.1))
    return weights, mean, covariance, periods, risk_free


@settings(max_examples=100, deadline=None)
@given(portfolio_inputs())
def test_metrics_match_the_direct_numpy_formulas(
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray, float, float],
) -> None:
    w, mu, sigma, q, rf = inputs
    annual_return = q * float(np.sum(w * mu))
    annual_risk = math.sqrt(q * float(np.einsum("i,ij,j->", w, sigma, w)))

    assert expected_return(w, mu, q) == pytest.approx(annual_return, rel=1e-12, abs=1e-18)
    assert volatility(w, sigma, q) == pytest.approx(annual_risk, rel=1e-12)
    assert sharpe_ratio(annual_return, annual_risk, rf) == pytest.approx(
        (annual_return - rf) / annual_risk, rel=1e-12, abs=1e-12
    )

    perf = portfolio_performance(w, mu, sigma, periods_per_year=q, risk_free_rate=rf)
    assert perf.mean_return == pytest.approx(float(w @ mu), rel=1e-12, abs=1e-18)
    assert perf.variance == pytest.approx(float(w @ sigma @ w), rel=1e-12)
    assert perf.expected_return == pytest.approx(annual_return, rel=1e-12, abs=1e-18)
    assert perf.risk == pytest.approx(annual_risk, rel=1e-12)
    assert perf.sharpe == pytest.approx((annual_return - rf) / annual_risk, rel=1e-12, abs=1e-12)
    assert perf.periods_per_year == q
    assert perf.risk_free_rate == rf
    assert perf.is_defined


@settings(max_examples=50, deadline=None)
@given(portfolio_inputs())
def test_annual_sharpe_is_sqrt_q_times_the_per_bar_sharpe_without_risk_free_rate(
    inputs: tuple[np.ndarray, np.ndarray, np.ndarray, float, float],
) -> None:
    w, mu, sigma, q, _ = inputs
    per_bar = float(w @ mu) / math.sqrt(float(w @ sigma @ w))
    perf = portfolio_performance(w, mu, sigma, periods_per_year=q)
    assert perf.sharpe == pytest.approx(math.sqrt(q) * per_bar, rel=1e-10, abs=1e-12)


def test_documented_example_values() -> None:
    perf = portfolio_performance(
        [0.6, 0.4],
        [4e-4, 2e-4],
        [[1e-4, 2e-5], [2e-5, 5e-5]],
        periods_per_year=252,
        risk_free_rate=0.02,
    )
    # E = 252·(0.6·4e-4 + 0.4·2e-4) = 0.08064; V = 0.36e-4 + 2·0.24·2e-5 + 0.16·5e-5 = 5.36e-5.
    assert perf.expected_return == pytest.approx(0.08064, rel=1e-12)
    assert perf.variance == pytest.approx(5.36e-5, rel=1e-12)
    assert perf.risk == pytest.approx(math.sqrt(252 * 5.36e-5), rel=1e-12)
    assert perf.sharpe == pytest.approx((0.08064 - 0.02) / math.sqrt(252 * 5.36e-5), rel=1e-12)


def test_zero_risk_gives_an_undefined_sharpe_ratio() -> None:
    perf = portfolio_performance(
        [0.5, 0.5], [1e-3, 1e-3], np.zeros((2, 2)), periods_per_year=PERIODS, risk_free_rate=0.01
    )
    assert perf.risk == 0.0
    assert math.isnan(perf.sharpe)
    assert not perf.is_defined
    assert perf.expected_return == pytest.approx(0.252, rel=1e-12)
    assert math.isnan(sharpe_ratio(0.1, 0.0))
    assert math.isnan(sharpe_ratio(0.1, 0.0, 0.1))


def test_perfectly_hedged_weights_have_zero_risk_and_no_sharpe() -> None:
    # Two perfectly anti-correlated assets held half and half: w'Σw is exactly 0.
    sigma = np.array([[1e-4, -1e-4], [-1e-4, 1e-4]])
    perf = portfolio_performance([0.5, 0.5], [1e-3, 5e-4], sigma, periods_per_year=PERIODS)
    assert perf.risk == 0.0
    assert not perf.is_defined


def test_a_tiny_negative_variance_from_rounding_counts_as_zero_risk() -> None:
    # Not quite positive semi-definite: w'Σw = -5e-13 for these weights.
    sigma = np.array([[1.0, 1.0 + 1e-12], [1.0 + 1e-12, 1.0]])
    w = [0.5, -0.5]
    assert float(np.asarray(w) @ sigma @ np.asarray(w)) < 0
    assert volatility(w, sigma, PERIODS) == 0.0
    perf = portfolio_performance(w, [0.0, 0.0], sigma, periods_per_year=PERIODS)
    assert perf.risk == 0.0
    assert math.isnan(perf.sharpe)


def test_negative_excess_return_gives_a_negative_sharpe_ratio() -> None:
    assert sharpe_ratio(0.01, 0.2, 0.03) == pytest.approx(-0.1, rel=1e-12)


@pytest.mark.parametrize(
    ("sharpe", "n"),
    [(0.0, 1), (1.0, 100), (-1.5, 250), (3.0, 10_000), (0.25, 7)],
)
def test_sharpe_standard_error_follows_lo_2002(sharpe: float, n: int) -> None:
    assert sharpe_standard_error(sharpe, n) == pytest.approx(
        math.sqrt((1 + sharpe**2 / 2) / n), rel=1e-15
    )


def test_sharpe_standard_error_shrinks_with_more_data_and_is_infinite_without_any() -> None:
    assert sharpe_standard_error(1.0, 400) == pytest.approx(sharpe_standard_error(1.0, 100) / 2)
    assert sharpe_standard_error(1.0, 0) == math.inf
    assert sharpe_standard_error(1.0, -3) == math.inf
