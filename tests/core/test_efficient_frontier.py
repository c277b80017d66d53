"""efficient_return and efficient_risk against PyPortfolioOpt, and the policy's objectives."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from pypfopt import EfficientFrontier, objective_functions

from streamfolio.core.optimize import (
    OptimizationStatus,
    efficient_return,
    efficient_risk,
    max_sharpe,
    min_volatility,
)
from streamfolio.core.policy import OBJECTIVES, PolicySettings, PolicyState, RebalancePolicy
from streamfolio.core.types import FloatArray

WEIGHT_TOLERANCE = 1e-4
"""|Δw| allowed against PyPortfolioOpt, whose conic solver stops at a tolerance."""


def problem(n_assets: int, seed: int) -> tuple[FloatArray, FloatArray]:
    """Annualised ``(μ, Σ)`` of a one-factor model with idiosyncratic noise."""
    rng = np.random.default_rng(seed)
    beta = rng.normal(1.0, 0.3, n_assets)
    idiosyncratic = rng.uniform(0.10, 0.30, n_assets)
    cov = np.outer(beta, beta) * 0.18**2 + np.diag(idiosyncratic**2)
    mu = 0.02 + 0.06 * beta + rng.normal(0.0, 0.03, n_assets)
    return mu, cov


def frontier(mu: FloatArray, cov: FloatArray, gamma: float, bounds: Any) -> EfficientFrontier:
    ef = EfficientFrontier(mu, cov, weight_bounds=bounds)
    if gamma > 0:
        ef.add_objective(objective_functions.L2_reg, gamma=gamma)
    return ef


CASES = [
    (5, 1, 0.0, (0.0, 1.0)),
    (8, 2, 0.1, (0.0, 1.0)),
    (11, 3, 0.05, (0.0, 0.25)),
    (6, 4, 0.5, (0.05, 0.6)),
]


@pytest.mark.parametrize(("n_assets", "seed", "gamma", "bounds"), CASES)
def test_efficient_return_matches_pypfopt(
    n_assets: int, seed: int, gamma: float, bounds: tuple[float, float]
) -> None:
    mu, cov = problem(n_assets, seed)
    least = min_volatility(cov, gamma, bounds).weights
    assert least is not None
    # Between the least-risk portfolio's return and the most a portfolio can return.
    best = float(np.sort(mu)[-1])
    target = float(0.5 * (least @ mu) + 0.5 * min(best, float(max_sharpe(mu, cov).weights @ mu)))
    ours = efficient_return(mu, cov, target, gamma, bounds)
    theirs = frontier(mu, cov, gamma, bounds).efficient_return(target)
    assert ours.status is OptimizationStatus.OPTIMAL
    assert ours.weights == pytest.approx(np.array(list(theirs.values())), abs=WEIGHT_TOLERANCE)
    assert ours.expected_return >= target - 1e-9
    assert ours.weights.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(("n_assets", "seed", "gamma", "bounds"), CASES)
def test_efficient_risk_matches_pypfopt(
    n_assets: int, seed: int, gamma: float, bounds: tuple[float, float]
) -> None:
    mu, cov = problem(n_assets, seed)
    least = min_volatility(cov, 0.0, bounds)
    target = least.volatility * 1.15
    ours = efficient_risk(mu, cov, target, gamma, bounds)
    theirs = frontier(mu, cov, gamma, bounds).efficient_risk(target)
    assert ours.status is OptimizationStatus.OPTIMAL
    assert ours.weights == pytest.approx(np.array(list(theirs.values())), abs=WEIGHT_TOLERANCE)
    assert ours.volatility <= target + 1e-9


def test_slack_constraints_give_the_unconstrained_optimum() -> None:
    mu, cov = problem(5, 7)
    # A return target below the least-risk portfolio's return: the least-risk portfolio.
    least = min_volatility(cov, 0.1)
    low = efficient_return(mu, cov, -0.5, gamma=0.1)
    assert low.weights == pytest.approx(least.weights, abs=1e-8)
    # A risk budget above every asset's volatility, γ = 0: all in the best asset.
    high = efficient_risk(mu, cov, target_volatility=4.0)
    assert high.weights == pytest.approx(np.eye(5)[int(np.argmax(mu))], abs=1e-6)


def test_unreachable_targets_are_infeasible_with_the_fallback() -> None:
    mu, cov = problem(4, 9)
    fallback = np.full(4, 0.25)
    too_much = efficient_return(mu, cov, float(mu.max()) + 0.01, fallback_weights=fallback)
    assert too_much.status is OptimizationStatus.INFEASIBLE
    assert too_much.weights == pytest.approx(fallback)
    too_little = efficient_risk(mu, cov, 0.01, fallback_weights=fallback)
    assert too_little.status is OptimizationStatus.INFEASIBLE
    assert "least volatility" in too_little.message
    nan = efficient_return(mu, cov, math.nan)
    assert nan.status is OptimizationStatus.INVALID_INPUT


def _decide(settings: PolicySettings) -> Any:
    mean = np.array([0.0004, 0.0001, -0.0002]) / 1.0
    cov = np.diag([1e-4, 4e-5, 9e-5])
    policy = RebalancePolicy(settings)
    decision, _ = policy.decide(
        mean=mean,
        covariance=cov,
        count=100,
        weights=np.array([0.1, 0.1, 0.8]),
        now_ms=0,
        state=PolicyState(),
    )
    return decision


def test_the_policy_rebalances_to_the_configured_objective() -> None:
    base: dict[str, Any] = {
        "sharpe_threshold": 5.0,
        "min_observations": 2,
        "min_improvement": 0.0,
        "periods_per_year": 252,
        "cooldown_ms": 0,
    }
    mu = np.array([0.0004, 0.0001, -0.0002]) * 252
    cov = np.diag([1e-4, 4e-5, 9e-5]) * 252
    expected = {
        "max_sharpe": max_sharpe(mu, cov).weights,
        "min_volatility": min_volatility(cov).weights,
        "efficient_risk": efficient_risk(mu, cov, 0.12).weights,
        "efficient_return": efficient_return(mu, cov, 0.05).weights,
    }
    targets = {
        "efficient_risk": {"target_volatility": 0.12},
        "efficient_return": {"target_return": 0.05},
    }
    for objective in OBJECTIVES:
        settings = PolicySettings(**base, objective=objective, **targets.get(objective, {}))
        decision = _decide(settings)
        assert type(decision).__name__ == "Rebalance", (objective, decision)
        assert decision.weights == pytest.approx(expected[objective], abs=1e-9), objective


def test_the_default_objective_is_max_sharpe() -> None:
    assert PolicySettings().objective == "max_sharpe"
