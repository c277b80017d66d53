"""Oracle tests for streamfolio.core.optimize against PyPortfolioOpt, plus every fallback."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from pypfopt import EfficientFrontier, objective_functions, risk_models

from streamfolio.core.optimize import (
    OptimizationResult,
    OptimizationStatus,
    max_sharpe,
    min_volatility,
)
from streamfolio.core.types import FloatArray
from streamfolio.errors import OptimizationError

RISK_FREE_RATE = 0.02
WEIGHT_TOLERANCE = 1e-5
"""|Δw| allowed against PyPortfolioOpt, whose solvers stop at a tolerance."""
CONSTRAINT_TOLERANCE = 1e-9


def factor_model_problem(n_assets: int, seed: int) -> tuple[FloatArray, FloatArray]:
    """Annualised ``(μ, Σ)``: one market factor, three style factors, idiosyncratic noise."""
    rng = np.random.default_rng(seed)
    beta = rng.normal(1.0, 0.3, n_assets)
    loadings = rng.normal(0.0, 1.0, (n_assets, 3))
    idiosyncratic = rng.uniform(0.10, 0.30, n_assets)
    cov = (
        np.outer(beta, beta) * 0.18**2 + loadings @ loadings.T * 0.08**2 + np.diag(idiosyncratic**2)
    )
    mu = RISK_FREE_RATE + 0.06 * beta + rng.normal(0.0, 0.03, n_assets)
    return mu, cov


def per_asset_bounds(n_assets: int, seed: int) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    lower = rng.uniform(0.0, 0.5 / n_assets, n_assets)
    upper = lower + rng.uniform(2.0 / n_assets, 0.4, n_assets)
    return list(zip(lower.tolist(), upper.tolist(), strict=True))


@contextmanager
def quiet_pypfopt() -> Iterator[None]:
    # PyPortfolioOpt warns that extra objectives may misbehave under max_sharpe's change of
    # variable; for L2_reg the result is exact (tangency on Σ + γI), which these tests check.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="max_sharpe transforms", category=UserWarning)
        yield


def pypfopt_max_sharpe(mu: FloatArray, cov: FloatArray, gamma: float, bounds: Any) -> FloatArray:
    with quiet_pypfopt():
        frontier = EfficientFrontier(mu, cov, weight_bounds=bounds)
        if gamma:
            frontier.add_objective(objective_functions.L2_reg, gamma=gamma)
        frontier.max_sharpe(risk_free_rate=RISK_FREE_RATE)
    weights: FloatArray = frontier.weights
    return weights


def pypfopt_min_volatility(cov: FloatArray, gamma: float, bounds: Any) -> FloatArray:
    frontier = EfficientFrontier(None, cov, weight_bounds=bounds)
    if gamma:
        frontier.add_objective(objective_functions.L2_reg, gamma=gamma)
    frontier.min_volatility()
    weights: FloatArray = frontier.weights
    return weights


def valid_weights(result: OptimizationResult, lower: Any = 0.0, upper: Any = 1.0) -> FloatArray:
    """The weights, after checking that they sum to 1 and lie within the bounds."""
    assert result.weights is not None
    assert abs(result.weights.sum() - 1.0) <= CONSTRAINT_TOLERANCE
    assert np.all(result.weights >= np.asarray(lower) - CONSTRAINT_TOLERANCE)
    assert np.all(result.weights <= np.asarray(upper) + CONSTRAINT_TOLERANCE)
    return result.weights


def bounds_for(kind: str, n_assets: int) -> Any:
    if kind == "default":
        return (0.0, 1.0)
    if kind == "max_weight":
        return (0.0, 0.2)
    return per_asset_bounds(n_assets, seed=n_assets + 7)


def bound_arrays(bounds: Any, n_assets: int) -> tuple[FloatArray, FloatArray]:
    table = np.asarray(bounds, dtype=np.float64)
    if table.shape == (2,):
        return np.full(n_assets, table[0]), np.full(n_assets, table[1])
    return table[:, 0], table[:, 1]


# --- agreement with PyPortfolioOpt -----------------------------------------------------------


@pytest.mark.parametrize("n_assets", [5, 11, 50])
@pytest.mark.parametrize("gamma", [0.0, 0.1])
@pytest.mark.parametrize("bounds_kind", ["default", "max_weight", "per_asset"])
def test_max_sharpe_matches_pypfopt(n_assets: int, gamma: float, bounds_kind: str) -> None:
    mu, cov = factor_model_problem(n_assets, seed=n_assets)
    bounds = bounds_for(bounds_kind, n_assets)

    result = max_sharpe(mu, cov, RISK_FREE_RATE, gamma, bounds)

    assert result.status is OptimizationStatus.OPTIMAL
    weights = valid_weights(result, *bound_arrays(bounds, n_assets))
    expected = pypfopt_max_sharpe(mu, cov, gamma, bounds)
    assert np.max(np.abs(weights - expected)) <= WEIGHT_TOLERANCE


def test_max_sharpe_matches_pypfopt_at_200_assets() -> None:
    mu, cov = factor_model_problem(200, seed=200)

    result = max_sharpe(mu, cov, RISK_FREE_RATE, 0.1, (0.0, 0.05))

    weights = valid_weights(result, 0.0, 0.05)
    expected = pypfopt_max_sharpe(mu, cov, 0.1, (0.0, 0.05))
    assert np.max(np.abs(weights - expected)) <= WEIGHT_TOLERANCE


@pytest.mark.parametrize("n_assets", [5, 11, 50])
@pytest.mark.parametrize("gamma", [0.0, 0.1])
@pytest.mark.parametrize("bounds_kind", ["default", "max_weight", "per_asset"])
def test_min_volatility_matches_pypfopt(n_assets: int, gamma: float, bounds_kind: str) -> None:
    _, cov = factor_model_problem(n_assets, seed=n_assets + 1)
    bounds = bounds_for(bounds_kind, n_assets)

    result = min_volatility(cov, gamma, bounds)

    assert result.status is OptimizationStatus.OPTIMAL
    weights = valid_weights(result, *bound_arrays(bounds, n_assets))
    expected = pypfopt_min_volatility(cov, gamma, bounds)
    assert np.max(np.abs(weights - expected)) <= WEIGHT_TOLERANCE


def test_l2_penalty_equals_ridge_covariance() -> None:
    """γ‖w‖² on w (min_volatility) and on y (max_sharpe) both amount to Σ + γI."""
    mu, cov = factor_model_problem(20, seed=3)
    ridge = cov + 0.3 * np.eye(20)

    penalised_vol = min_volatility(cov, gamma=0.3).weights
    ridge_vol = min_volatility(ridge).weights
    penalised_sharpe = max_sharpe(mu, cov, RISK_FREE_RATE, gamma=0.3).weights
    ridge_sharpe = max_sharpe(mu, ridge, RISK_FREE_RATE).weights

    assert penalised_vol is not None and ridge_vol is not None
    assert penalised_sharpe is not None and ridge_sharpe is not None
    np.testing.assert_allclose(penalised_vol, ridge_vol, atol=1e-12)
    np.testing.assert_allclose(penalised_sharpe, ridge_sharpe, atol=1e-12)


def test_gamma_scales_inversely_with_the_units_of_mu_and_cov() -> None:
    mu, cov = factor_model_problem(15, seed=4)
    annual = max_sharpe(mu, cov, RISK_FREE_RATE, gamma=0.1).weights
    daily = max_sharpe(mu / 252, cov / 252, RISK_FREE_RATE / 252, gamma=0.1 / 252).weights

    assert annual is not None and daily is not None
    np.testing.assert_allclose(daily, annual, atol=1e-9)


def test_performance_is_computed_from_the_inputs_without_the_penalty() -> None:
    mu, cov = factor_model_problem(11, seed=5)
    result = max_sharpe(mu, cov, RISK_FREE_RATE, gamma=0.1)

    weights = result.weights
    assert weights is not None
    volatility = math.sqrt(weights @ cov @ weights)
    assert result.expected_return == pytest.approx(weights @ mu, rel=1e-12)
    assert result.volatility == pytest.approx(volatility, rel=1e-12)
    assert result.sharpe == pytest.approx((weights @ mu - RISK_FREE_RATE) / volatility, rel=1e-12)


# --- bounds ----------------------------------------------------------------------------------


def test_bounds_forms_are_equivalent() -> None:
    mu, cov = factor_model_problem(6, seed=6)
    lower = np.array([0.0, 0.05, 0.0, 0.1, 0.0, 0.0])
    upper = np.array([0.3, 0.4, 1.0, 0.5, 0.25, 2.0])

    pairs = max_sharpe(mu, cov, RISK_FREE_RATE, bounds=list(zip(lower, upper, strict=True)))
    arrays = max_sharpe(mu, cov, RISK_FREE_RATE, bounds=(lower, upper))

    assert pairs.weights is not None and arrays.weights is not None
    np.testing.assert_array_equal(pairs.weights, arrays.weights)
    valid_weights(pairs, lower, upper)


def test_two_assets_read_pairs_as_per_asset_and_numpy_arrays_as_lower_upper() -> None:
    mu = np.array([0.10, 0.12])
    cov = np.array([[0.04, 0.01], [0.01, 0.09]])

    pairs = max_sharpe(mu, cov, RISK_FREE_RATE, bounds=[(0.0, 0.3), (0.0, 1.0)])
    arrays = max_sharpe(mu, cov, RISK_FREE_RATE, bounds=(np.zeros(2), np.array([0.3, 1.0])))

    assert pairs.weights is not None and arrays.weights is not None
    np.testing.assert_allclose(pairs.weights, [0.3, 0.7], atol=1e-12)
    np.testing.assert_array_equal(arrays.weights, pairs.weights)


def test_caps_above_one_or_infinite_do_not_bind() -> None:
    mu, cov = factor_model_problem(8, seed=8)
    capped = max_sharpe(mu, cov, RISK_FREE_RATE, bounds=(0.0, math.inf)).weights
    default = max_sharpe(mu, cov, RISK_FREE_RATE).weights

    assert capped is not None and default is not None
    np.testing.assert_array_equal(capped, default)


def test_bounds_that_admit_a_single_portfolio_return_it() -> None:
    mu, cov = factor_model_problem(5, seed=9)
    lower = np.array([0.1, 0.2, 0.3, 0.15, 0.25])

    from_lower = max_sharpe(mu, cov, RISK_FREE_RATE, bounds=(lower, np.ones(5)))
    from_upper = min_volatility(cov, bounds=(0.0, 0.2))

    assert from_lower.weights is not None and from_upper.weights is not None
    np.testing.assert_allclose(from_lower.weights, lower, atol=1e-15)
    np.testing.assert_allclose(from_upper.weights, np.full(5, 0.2), atol=1e-15)
    assert from_lower.status is OptimizationStatus.OPTIMAL


# --- fallbacks -------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 0.1])
def test_no_asset_beating_the_risk_free_rate_falls_back_to_min_volatility(gamma: float) -> None:
    mu, cov = factor_model_problem(11, seed=10)
    mu = np.minimum(mu, RISK_FREE_RATE)

    result = max_sharpe(mu, cov, RISK_FREE_RATE, gamma, (0.0, 0.3))

    assert result.status is OptimizationStatus.MIN_VOLATILITY_FALLBACK
    assert result.solved
    assert "risk-free rate" in result.message
    assert result.weights is not None
    expected = pypfopt_min_volatility(cov, gamma, (0.0, 0.3))
    assert np.max(np.abs(result.weights - expected)) <= WEIGHT_TOLERANCE
    assert result.sharpe <= 0.0


def test_bounds_that_exclude_every_positive_excess_return_fall_back() -> None:
    mu = np.array([0.03, 0.0, 0.0])
    cov = np.diag([0.04, 0.05, 0.06])

    result = max_sharpe(mu, cov, RISK_FREE_RATE, bounds=[(0.0, 0.1), (0.0, 1.0), (0.0, 1.0)])

    assert result.status is OptimizationStatus.MIN_VOLATILITY_FALLBACK
    assert "within the bounds" in result.message
    valid_weights(result, 0.0, [0.1, 1.0, 1.0])


def _indefinite_covariance(n_assets: int, seed: int) -> FloatArray:
    _, cov = factor_model_problem(n_assets, seed)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    eigenvalues[:2] = [-0.02, -0.001]
    indefinite: FloatArray = (eigenvectors * eigenvalues) @ eigenvectors.T
    return (indefinite + indefinite.T) / 2


def test_indefinite_covariance_is_repaired() -> None:
    mu, _ = factor_model_problem(10, seed=11)
    cov = _indefinite_covariance(10, seed=11)

    result = max_sharpe(mu, cov, RISK_FREE_RATE)

    assert result.status is OptimizationStatus.COVARIANCE_REPAIRED
    assert result.covariance_repaired and result.solved
    assert "eigenvalues clipped" in result.message
    valid_weights(result)
    assert math.isfinite(result.volatility) and result.volatility > 0


def test_repaired_covariance_agrees_with_pypfopt_spectral_fix_when_the_ridge_dominates() -> None:
    """With γ > 0 the floor (ours 1e-10·λmax, PyPortfolioOpt's 0) is negligible next to γ."""
    mu, _ = factor_model_problem(10, seed=12)
    cov = _indefinite_covariance(10, seed=12)
    with pytest.warns(UserWarning, match="non positive semidefinite"):
        fixed = risk_models.fix_nonpositive_semidefinite(cov, fix_method="spectral")

    result = max_sharpe(mu, cov, RISK_FREE_RATE, gamma=0.01)  # Σ + 0.01·I is still indefinite

    assert result.covariance_repaired
    assert result.weights is not None
    expected = pypfopt_max_sharpe(mu, fixed, 0.01, (0.0, 1.0))
    assert np.max(np.abs(result.weights - expected)) <= WEIGHT_TOLERANCE


def test_a_ridge_that_makes_the_covariance_definite_needs_no_repair() -> None:
    mu, _ = factor_model_problem(10, seed=13)
    cov = _indefinite_covariance(10, seed=13)

    result = max_sharpe(mu, cov, RISK_FREE_RATE, gamma=0.1)

    assert result.status is OptimizationStatus.OPTIMAL
    valid_weights(result)


def test_repair_and_fallback_are_both_reported() -> None:
    cov = _indefinite_covariance(10, seed=14)
    mu = np.full(10, 0.01)

    result = max_sharpe(mu, cov, RISK_FREE_RATE)

    assert result.status is OptimizationStatus.MIN_VOLATILITY_FALLBACK
    assert result.flags == {
        OptimizationStatus.MIN_VOLATILITY_FALLBACK,
        OptimizationStatus.COVARIANCE_REPAIRED,
    }
    assert result.covariance_repaired
    valid_weights(result)


def test_singular_covariance_is_repaired() -> None:
    """A zero-variance asset beating the risk-free rate has an unbounded Sharpe ratio."""
    cov = np.diag([0.0, 0.04, 0.09])

    result = max_sharpe([0.03, 0.10, 0.12], cov, RISK_FREE_RATE)

    assert result.status is OptimizationStatus.COVARIANCE_REPAIRED
    assert valid_weights(result)[0] > 0.99


def test_zero_covariance_is_repaired_to_a_valid_portfolio() -> None:
    result = min_volatility(np.zeros((4, 4)))

    assert result.covariance_repaired
    assert result.weights is not None
    np.testing.assert_allclose(result.weights, np.full(4, 0.25), atol=1e-9)


@pytest.mark.parametrize(
    ("bounds", "reason"),
    [((0.0, 0.05), "upper bounds sum to 0.5"), ((0.11, 1.0), "lower bounds sum to 1.1")],
)
def test_infeasible_bounds_return_the_fallback_weights(bounds: Any, reason: str) -> None:
    mu, cov = factor_model_problem(10, seed=15)
    current = np.full(10, 0.1)

    result = max_sharpe(mu, cov, RISK_FREE_RATE, bounds=bounds, fallback_weights=current)

    assert result.status is OptimizationStatus.INFEASIBLE
    assert not result.solved
    assert reason in result.message
    assert result.weights is not None
    np.testing.assert_array_equal(result.weights, current)
    assert result.weights is not current
    assert math.isnan(result.expected_return)
    assert math.isnan(result.volatility)
    assert math.isnan(result.sharpe)


def test_infeasible_without_fallback_weights_has_no_weights() -> None:
    _, cov = factor_model_problem(10, seed=16)

    result = min_volatility(cov, bounds=(0.0, 0.05))

    assert result.status is OptimizationStatus.INFEASIBLE
    assert result.weights is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", ["mu", "cov", "risk_free_rate"])
def test_non_finite_inputs_give_invalid_input_without_raising(bad: float, where: str) -> None:
    mu, cov = factor_model_problem(5, seed=17)
    risk_free_rate = RISK_FREE_RATE
    if where == "mu":
        mu[2] = bad
    elif where == "cov":
        cov[1, 3] = cov[3, 1] = bad
    else:
        risk_free_rate = bad
    current = np.full(5, 0.2)

    result = max_sharpe(mu, cov, risk_free_rate, fallback_weights=current)

    assert result.status is OptimizationStatus.INVALID_INPUT
    assert result.weights is not None
    np.testing.assert_array_equal(result.weights, current)
    assert "NaN or infinite" in result.message


def test_non_finite_covariance_in_min_volatility_gives_invalid_input() -> None:
    cov = np.eye(3)
    cov[0, 0] = math.nan

    result = min_volatility(cov)

    assert result.status is OptimizationStatus.INVALID_INPUT
    assert result.weights is None


def test_asymmetric_covariance_is_invalid_input() -> None:
    cov = np.array([[0.04, 0.02], [0.0, 0.09]])

    result = max_sharpe([0.1, 0.1], cov)

    assert result.status is OptimizationStatus.INVALID_INPUT
    assert "not symmetric" in result.message


THREE_NUMBERS: Any = (0.0, 0.5, 1.0)
TWO_STRINGS: Any = ("a", "b")


# --- malformed calls -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: max_sharpe(np.ones(3), np.eye(4)), "shape"),
        (lambda: max_sharpe(np.ones((3, 1)), np.eye(3)), "1-D"),
        (lambda: max_sharpe([], np.eye(0)), "non-empty"),
        (lambda: max_sharpe(np.ones(3), np.eye(3), gamma=-0.1), "gamma"),
        (lambda: max_sharpe(np.ones(3), np.eye(3), gamma=math.nan), "gamma"),
        (lambda: max_sharpe(np.ones(3), np.eye(3), bounds=(-0.1, 1.0)), "long-only"),
        (lambda: max_sharpe(np.ones(3), np.eye(3), bounds=(0.5, 0.4)), "<= its upper"),
        (lambda: max_sharpe(np.ones(3), np.eye(3), bounds=THREE_NUMBERS), "shape"),
        (lambda: max_sharpe(np.ones(3), np.eye(3), bounds=(math.nan, 1.0)), "finite"),
        (lambda: max_sharpe(np.ones(3), np.eye(3), bounds=TWO_STRINGS), "bounds must be"),
        (lambda: max_sharpe(np.ones(3), np.eye(3), bounds=(np.zeros(2), np.ones(2))), "shapes"),
        (lambda: max_sharpe(np.ones(3), np.eye(3), fallback_weights=np.ones(2)), "fallback"),
        (lambda: min_volatility(np.ones((2, 3))), "square"),
        (lambda: min_volatility(np.ones(3)), "square"),
    ],
)
def test_malformed_calls_raise_optimization_error(call: Any, match: str) -> None:
    with pytest.raises(OptimizationError, match=match):
        call()


# --- the result object -----------------------------------------------------------------------


def test_result_is_frozen_and_its_weights_read_only() -> None:
    mu, cov = factor_model_problem(5, seed=18)
    result = max_sharpe(mu, cov, RISK_FREE_RATE)

    with pytest.raises(dataclasses.FrozenInstanceError):
        result.status = OptimizationStatus.INFEASIBLE  # type: ignore[misc]
    assert result.weights is not None
    with pytest.raises(ValueError, match="read-only"):
        result.weights[0] = 1.0


def test_results_are_deterministic() -> None:
    mu, cov = factor_model_problem(50, seed=19)

    first = max_sharpe(mu, cov, RISK_FREE_RATE, 0.1, (0.0, 0.1))
    second = max_sharpe(mu.copy(), cov.copy(), RISK_FREE_RATE, 0.1, (0.0, 0.1))

    assert first.weights is not None and second.weights is not None
    np.testing.assert_array_equal(first.weights, second.weights)


def test_status_values_are_stable_strings() -> None:
    assert [status.value for status in OptimizationStatus] == [
        "optimal",
        "covariance_repaired",
        "min_volatility_fallback",
        "infeasible",
        "invalid_input",
    ]
