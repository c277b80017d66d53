"""Points on the efficient frontier: the least risk for a return, the most return for a risk.

- :func:`efficient_return`: minimise ``wᵀΣw + γ‖w‖²`` subject to ``μᵀw ≥ target``, as
  PyPortfolioOpt's ``efficient_return(target_return)`` after ``add_objective(L2_reg, gamma=γ)``;
- :func:`efficient_risk`: maximise ``μᵀw − γ‖w‖²`` subject to ``wᵀΣw ≤ σ²``, as its
  ``efficient_risk(target_volatility)``.

Both are solved exactly, with the least-distance method of
:mod:`~streamfolio.core.optimize.least_distance` (Lawson & Hanson 1974, ch. 23: one NNLS). The
first is a quadratic program with linear constraints, so one least-distance program solves it.
The second has a quadratic constraint; its Lagrangian ``wᵀ(νΣ + γI)w − μᵀw`` is a quadratic
program for each multiplier ``ν ≥ 0``, whose solution's volatility falls as ``ν`` grows, so ``ν``
is found by bisection (on ``log ν``) until the volatility meets the target to ``1e-10``: each
step is exact, and the constraint binds unless the unconstrained optimum is already inside it.

Units, bounds, statuses and bad inputs are as in :mod:`~streamfolio.core.optimize.objectives`;
an unreachable target gives :attr:`~OptimizationStatus.INFEASIBLE` (PyPortfolioOpt raises).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import scipy.optimize

from streamfolio.core.optimize.objectives import min_volatility, solved_result
from streamfolio.core.optimize.problem import Problem, as_vector, prepare
from streamfolio.core.optimize.result import (
    Bounds,
    OptimizationResult,
    OptimizationStatus,
    no_solution,
)
from streamfolio.core.types import ArrayLike, FloatArray

__all__ = ["efficient_return", "efficient_risk", "max_return"]

_VOLATILITY_TOLERANCE = 1e-10
_BISECTION_STEPS = 200
_SUM_TOLERANCE = 1e-6


def max_return(expected_returns: ArrayLike, bounds_lower: FloatArray, upper: FloatArray) -> float:
    """The greatest ``μᵀw`` with ``1ᵀw = 1`` and ``lo ≤ w ≤ hi``: fill the best assets first.

    >>> max_return([0.1, 0.3, 0.2], np.zeros(3), np.full(3, 0.5))
    0.25
    """
    mu = np.asarray(expected_returns, dtype=np.float64)
    weights = bounds_lower.astype(np.float64).copy()
    room = 1.0 - float(weights.sum())
    for i in np.argsort(-mu):
        step = min(room, float(upper[i] - weights[i]))
        weights[i] += step
        room -= step
    return float(mu @ weights)


def _least_distance(
    cholesky: FloatArray, constraints: FloatArray, targets: FloatArray, shift: FloatArray
) -> FloatArray | None:
    """``w`` minimising ``‖Lᵀw − shift‖²`` subject to ``constraints·w ≥ targets``; None when
    infeasible. (``shift = 0``: the least ``wᵀLLᵀw``.)"""
    n_assets = cholesky.shape[0]
    # x = Lᵀw − shift, so w = L⁻ᵀ(x + shift) and the constraints read B·x ≥ targets − B·shift.
    b_transposed = scipy.linalg.solve_triangular(cholesky, constraints.T, lower=True)
    h = targets - b_transposed.T @ shift
    matrix = np.vstack([b_transposed, h])
    rhs = np.zeros(n_assets + 1)
    rhs[-1] = 1.0
    try:
        multipliers, _ = scipy.optimize.nnls(matrix, rhs, maxiter=50 * (matrix.shape[1] + 1))
    except (RuntimeError, ValueError):
        return None
    residual = matrix @ multipliers - rhs
    if -residual[-1] <= 1e-14:
        return None
    x = -residual[:n_assets] / residual[-1]
    w: FloatArray = scipy.linalg.solve_triangular(cholesky, x + shift, lower=True, trans="T")
    return w


def _budget_and_bounds(problem: Problem) -> tuple[FloatArray, FloatArray]:
    """Rows ``A`` and targets ``h`` of ``A·w ≥ h``: ``1ᵀw = 1`` (two rows) and the bounds."""
    n_assets = problem.lower.size
    identity = np.eye(n_assets)
    capped = problem.upper < 1.0
    rows = np.vstack([np.ones(n_assets), -np.ones(n_assets), identity, -identity[capped]])
    targets = np.concatenate([[1.0, -1.0], problem.lower, -problem.upper[capped]])
    return rows, targets


def _portfolio(w: FloatArray | None, problem: Problem) -> FloatArray | None:
    """``w`` clipped to its bounds and renormalised, or None if it is not a portfolio."""
    if w is None or not np.all(np.isfinite(w)) or abs(float(w.sum()) - 1.0) > _SUM_TOLERANCE:
        return None
    clipped: FloatArray = np.clip(w, problem.lower, problem.upper)
    normalised: FloatArray = clipped / clipped.sum()
    return normalised


def _prepared(
    mu_values: ArrayLike,
    covariance: ArrayLike,
    gamma: float,
    bounds: Bounds,
    fallback_weights: ArrayLike | None,
) -> tuple[FloatArray, Problem | OptimizationResult]:
    mu = as_vector(mu_values, "expected_returns")
    problem = prepare(covariance, gamma, bounds, mu.size, fallback_weights)
    if isinstance(problem, Problem) and not np.all(np.isfinite(mu)):
        return mu, no_solution(
            OptimizationStatus.INVALID_INPUT,
            "expected_returns is NaN or infinite",
            problem.fallback,
        )
    return mu, problem


def efficient_return(
    expected_returns: ArrayLike,
    covariance: ArrayLike,
    target_return: float,
    gamma: float = 0.0,
    bounds: Bounds = (0.0, 1.0),
    *,
    risk_free_rate: float = 0.0,
    fallback_weights: ArrayLike | None = None,
) -> OptimizationResult:
    """The least ``wᵀΣw + γ‖w‖²`` with an expected return of at least ``target_return``.

    ``risk_free_rate`` only enters the reported Sharpe ratio.

    >>> mu = np.array([0.10, 0.14, 0.06])
    >>> cov = np.array([[0.04, 0.01, 0.00], [0.01, 0.09, 0.02], [0.00, 0.02, 0.03]])
    >>> result = efficient_return(mu, cov, target_return=0.11)
    >>> result.weights.round(4), round(result.expected_return, 4)
    (array([0.5357, 0.3571, 0.1071]), 0.11)
    >>> efficient_return(mu, cov, target_return=0.2).status
    <OptimizationStatus.INFEASIBLE: 'infeasible'>
    """
    mu, problem = _prepared(expected_returns, covariance, gamma, bounds, fallback_weights)
    if isinstance(problem, OptimizationResult):
        return problem
    if not math.isfinite(target_return):
        return no_solution(
            OptimizationStatus.INVALID_INPUT, "target_return is not finite", problem.fallback
        )
    best = max_return(mu, problem.lower, problem.upper)
    if target_return > best + 1e-12:
        return no_solution(
            OptimizationStatus.INFEASIBLE,
            f"no portfolio within the bounds returns {target_return:.6g}: the most is {best:.6g}",
            problem.fallback,
            problem.flags,
        )
    rows, targets = _budget_and_bounds(problem)
    rows = np.vstack([mu, rows])
    targets = np.concatenate([[min(target_return, best)], targets])
    shift = np.zeros(mu.size)
    weights = _portfolio(_least_distance(problem.ridge_cholesky, rows, targets, shift), problem)
    if weights is None:
        return no_solution(
            OptimizationStatus.INFEASIBLE,
            f"the least-distance solver found no portfolio returning {target_return:.6g}",
            problem.fallback,
            problem.flags,
        )
    return solved_result(
        problem,
        weights,
        mu,
        risk_free_rate,
        OptimizationStatus.OPTIMAL,
        f"least-risk portfolio returning at least {target_return:.6g} found",
    )


def efficient_risk(
    expected_returns: ArrayLike,
    covariance: ArrayLike,
    target_volatility: float,
    gamma: float = 0.0,
    bounds: Bounds = (0.0, 1.0),
    *,
    risk_free_rate: float = 0.0,
    fallback_weights: ArrayLike | None = None,
) -> OptimizationResult:
    """The greatest ``μᵀw − γ‖w‖²`` with a volatility ``√(wᵀΣw)`` of at most the target.

    >>> mu = np.array([0.10, 0.14, 0.06])
    >>> cov = np.array([[0.04, 0.01, 0.00], [0.01, 0.09, 0.02], [0.00, 0.02, 0.03]])
    >>> result = efficient_risk(mu, cov, target_volatility=0.16)
    >>> result.weights.round(4), round(result.volatility, 6)
    (array([0.5196, 0.3089, 0.1715]), 0.16)
    >>> efficient_risk(mu, cov, target_volatility=0.05).status     # below the least risk
    <OptimizationStatus.INFEASIBLE: 'infeasible'>
    """
    mu, problem = _prepared(expected_returns, covariance, gamma, bounds, fallback_weights)
    if isinstance(problem, OptimizationResult):
        return problem
    if not (math.isfinite(target_volatility) and target_volatility >= 0.0):
        return no_solution(
            OptimizationStatus.INVALID_INPUT,
            f"target_volatility must be a finite number >= 0, got {target_volatility!r}",
            problem.fallback,
        )
    cov = problem.covariance
    least = min_volatility(cov, 0.0, (problem.lower, problem.upper))
    if not least.solved or least.volatility > target_volatility * (1 + 1e-9):
        return no_solution(
            OptimizationStatus.INFEASIBLE,
            f"the least volatility within the bounds is {least.volatility:.6g}, above the target "
            f"{target_volatility:.6g}",
            problem.fallback,
            problem.flags,
        )
    rows, targets = _budget_and_bounds(problem)
    scale = float(np.trace(cov)) / mu.size or 1.0

    def solve(nu: float) -> tuple[FloatArray | None, float]:
        ridge = nu * cov + gamma * np.eye(mu.size)
        try:
            cholesky = np.linalg.cholesky(ridge + 1e-14 * scale * np.eye(mu.size))
        except np.linalg.LinAlgError:
            return None, math.inf
        shift = 0.5 * scipy.linalg.solve_triangular(cholesky, mu, lower=True)
        w = _portfolio(_least_distance(cholesky, rows, targets, shift), problem)
        vol = math.inf if w is None else math.sqrt(max(float(w @ cov @ w), 0.0))
        return w, vol

    low = 0.0 if gamma > 0 else 1e-9 / scale
    weights, vol = solve(low)
    if vol > target_volatility:
        high = max(low, 1e-9 / scale) * 10.0
        weights, vol = solve(high)
        while vol > target_volatility and high < 1e12 / scale:
            low, high = high, high * 10.0
            weights, vol = solve(high)
        if vol > target_volatility:
            weights = least.weights.copy() if least.weights is not None else None
        else:
            for _ in range(_BISECTION_STEPS):
                middle = math.sqrt(low * high) if low > 0 else high / 2.0
                candidate, candidate_vol = solve(middle)
                if candidate_vol > target_volatility:
                    low = middle
                else:
                    high, weights, vol = middle, candidate, candidate_vol
                if (
                    target_volatility - vol <= _VOLATILITY_TOLERANCE
                    or high / max(low, 1e-300) < 1 + 1e-13
                ):
                    break
    if weights is None:
        return no_solution(
            OptimizationStatus.INFEASIBLE,
            f"no portfolio found with volatility {target_volatility:.6g}",
            problem.fallback,
            problem.flags,
        )
    return solved_result(
        problem,
        np.array(weights, dtype=np.float64),
        mu,
        risk_free_rate,
        OptimizationStatus.OPTIMAL,
        f"greatest-return portfolio with volatility at most {target_volatility:.6g} found",
    )
