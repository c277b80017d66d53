"""Property tests: the optimiser's weights are feasible and no feasible portfolio does better.

For random positive-definite covariances, expected returns and bounds, every feasible portfolio
``v`` is compared with the solution ``w*`` of the problem actually solved (the ridge covariance
``Q = Σ + γI``): neither ``v`` nor points on the segment from ``w*`` towards it may improve the
objective, and the directional derivative towards ``v`` must not be positive (the first-order
optimality condition of a maximum over a polytope).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfolio.core.optimize import OptimizationStatus, max_sharpe, min_volatility
from streamfolio.core.types import FloatArray

RELATIVE_TOLERANCE = 1e-8
CONSTRAINT_TOLERANCE = 1e-9
STEP_SIZES = (1e-4, 1e-2, 0.3, 1.0)


@dataclass(frozen=True)
class Problem:
    mu: FloatArray
    cov: FloatArray
    risk_free_rate: float
    gamma: float
    lower: FloatArray
    upper: FloatArray
    rng: np.random.Generator

    @property
    def ridge(self) -> FloatArray:
        ridge: FloatArray = self.cov + self.gamma * np.eye(self.mu.size)
        return ridge


@st.composite
def problems(draw: st.DrawFn) -> Problem:
    n_assets = draw(st.integers(min_value=2, max_value=12))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    volatilities = rng.uniform(0.05, 0.6, n_assets)
    factors = rng.normal(size=(n_assets, draw(st.integers(min_value=1, max_value=n_assets))))
    correlation = factors @ factors.T + draw(st.floats(0.01, 2.0)) * np.eye(n_assets)
    scale = 1.0 / np.sqrt(np.diag(correlation))
    cov = correlation * np.outer(scale * volatilities, scale * volatilities)
    mu = rng.normal(0.06, draw(st.floats(0.0, 0.1)), n_assets)
    kind = draw(st.sampled_from(["default", "cap", "box"]))
    lower, upper = np.zeros(n_assets), np.ones(n_assets)
    if kind == "cap":
        upper[:] = draw(st.floats(1.0 / n_assets, 1.0))
    elif kind == "box":
        lower = rng.uniform(0.0, 0.9 / n_assets, n_assets)
        upper = np.minimum(lower + rng.uniform(0.0, 1.0, n_assets), 1.0)
        shortfall = 1.0 - upper.sum()
        if shortfall > 0:
            upper = np.minimum(upper + shortfall / n_assets + 0.01, 1.0)
    return Problem(
        mu=mu,
        cov=cov,
        risk_free_rate=draw(st.floats(0.0, 0.08)),
        gamma=draw(st.sampled_from([0.0, 0.01, 0.1, 1.0])),
        lower=lower,
        upper=upper,
        rng=rng,
    )


def project_onto_feasible_set(
    point: FloatArray, lower: FloatArray, upper: FloatArray
) -> FloatArray:
    """Euclidean projection onto ``{lower ≤ w ≤ upper, Σw = 1}`` by bisection on the shift."""
    low, high = float(np.min(point - upper)), float(np.max(point - lower))
    for _ in range(80):  # halves a bracket of width < 20 down to rounding
        shift = (low + high) / 2
        if np.clip(point - shift, lower, upper).sum() > 1.0:
            low = shift
        else:
            high = shift
    projected: FloatArray = np.clip(point - (low + high) / 2, lower, upper)
    return projected


def random_feasible_portfolios(problem: Problem, centre: FloatArray) -> list[FloatArray]:
    n_assets = problem.mu.size
    far = [problem.rng.dirichlet(np.ones(n_assets)) for _ in range(10)]
    near = [centre + problem.rng.normal(0.0, 0.02, n_assets) for _ in range(10)]
    vertices = [np.eye(n_assets)[i] * 10 for i in problem.rng.permutation(n_assets)[:3]]
    candidates = [project_onto_feasible_set(p, problem.lower, problem.upper) for p in far + near]
    candidates += [project_onto_feasible_set(p, problem.lower, problem.upper) for p in vertices]
    return [c for c in candidates if abs(c.sum() - 1.0) < 1e-12]


def assert_feasible(weights: FloatArray | None, problem: Problem) -> FloatArray:
    assert weights is not None
    assert abs(weights.sum() - 1.0) <= CONSTRAINT_TOLERANCE
    assert np.all(weights >= problem.lower - CONSTRAINT_TOLERANCE)
    assert np.all(weights <= problem.upper + CONSTRAINT_TOLERANCE)
    return weights


def ridge_sharpe(weights: FloatArray, problem: Problem) -> float:
    excess = float(weights @ (problem.mu - problem.risk_free_rate))
    return excess / float(np.sqrt(weights @ problem.ridge @ weights))


def ridge_variance(weights: FloatArray, problem: Problem) -> float:
    return float(weights @ problem.ridge @ weights)


@settings(max_examples=100, deadline=None)
@given(problems())
def test_max_sharpe_is_feasible_and_no_feasible_portfolio_beats_it(problem: Problem) -> None:
    result = max_sharpe(
        problem.mu,
        problem.cov,
        problem.risk_free_rate,
        problem.gamma,
        (problem.lower, problem.upper),
    )
    best = assert_feasible(result.weights, problem)

    if result.status is OptimizationStatus.MIN_VOLATILITY_FALLBACK:
        for other in random_feasible_portfolios(problem, best):
            assert float(other @ (problem.mu - problem.risk_free_rate)) <= 1e-6
        return
    assert result.status is OptimizationStatus.OPTIMAL
    best_sharpe = ridge_sharpe(best, problem)
    excess = problem.mu - problem.risk_free_rate
    variance = ridge_variance(best, problem)
    gradient = (excess - best_sharpe * (problem.ridge @ best) / np.sqrt(variance)) / np.sqrt(
        variance
    )
    tolerance = RELATIVE_TOLERANCE * max(1.0, abs(best_sharpe))
    for other in random_feasible_portfolios(problem, best):
        assert float(gradient @ (other - best)) <= tolerance * max(
            1.0, float(np.abs(gradient).sum())
        )
        for step in STEP_SIZES:
            trial = best + step * (other - best)
            if float(trial @ excess) > 0:
                assert ridge_sharpe(trial, problem) <= best_sharpe + tolerance


@settings(max_examples=100, deadline=None)
@given(problems())
def test_min_volatility_is_feasible_and_no_feasible_portfolio_has_less_variance(
    problem: Problem,
) -> None:
    result = min_volatility(problem.cov, problem.gamma, (problem.lower, problem.upper))
    best = assert_feasible(result.weights, problem)

    assert result.status is OptimizationStatus.OPTIMAL
    best_variance = ridge_variance(best, problem)
    gradient = 2.0 * problem.ridge @ best
    for other in random_feasible_portfolios(problem, best):
        assert float(gradient @ (other - best)) >= -RELATIVE_TOLERANCE * best_variance
        for step in STEP_SIZES:
            trial = best + step * (other - best)
            assert ridge_variance(trial, problem) >= best_variance * (1 - RELATIVE_TOLERANCE)
