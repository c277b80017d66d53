"""The objectives: maximum Sharpe ratio and minimum volatility, each with an L2 penalty.

- :func:`max_sharpe`: the maximum-Sharpe (tangency) portfolio with an L2 penalty ``γ‖w‖²``,
  the same problem as PyPortfolioOpt's ``EfficientFrontier(mu, S, weight_bounds)`` +
  ``add_objective(L2_reg, gamma=γ)`` + ``max_sharpe(risk_free_rate)``;
- :func:`min_volatility`: the minimum-variance portfolio with the same penalty, as PyPortfolioOpt's
  ``min_volatility()`` + ``L2_reg``.

Both validate their inputs (:mod:`~streamfolio.core.optimize.problem`), then solve one
least-distance program (:mod:`~streamfolio.core.optimize.least_distance`).

Units. Pass annualised ``μ`` and ``Σ`` and an annual risk-free rate; ``γ`` is then in annual units.
Scaling ``μ``, ``Σ`` and ``r_f`` by ``s`` is the same as dividing ``γ`` by ``s``.

Bad numbers never raise: NaN or infinite inputs give :attr:`OptimizationStatus.INVALID_INPUT`, a
covariance that is not positive definite is repaired, and an empty feasible set gives
:attr:`OptimizationStatus.INFEASIBLE`. Malformed calls (wrong shapes, negative lower bounds,
``lo > hi``, negative ``γ``) raise :class:`~streamfolio.errors.OptimizationError`.
"""

from __future__ import annotations

import math

import numpy as np

from streamfolio.core.optimize.least_distance import solve_least_distance
from streamfolio.core.optimize.problem import Problem, as_vector, prepare, square_size
from streamfolio.core.optimize.result import (
    SEVERITY,
    Bounds,
    OptimizationResult,
    OptimizationStatus,
    no_solution,
)
from streamfolio.core.types import ArrayLike, FloatArray


def max_sharpe(
    expected_returns: ArrayLike,
    covariance: ArrayLike,
    risk_free_rate: float = 0.0,
    gamma: float = 0.0,
    bounds: Bounds = (0.0, 1.0),
    *,
    fallback_weights: ArrayLike | None = None,
) -> OptimizationResult:
    """Long-only maximum-Sharpe portfolio with an L2 penalty, exactly as PyPortfolioOpt.

    Solves the tangency portfolio of ``Σ + γI`` under per-asset bounds, which is what
    PyPortfolioOpt's ``max_sharpe`` computes after ``add_objective(L2_reg, gamma=γ)``.

    Parameters
    ----------
    expected_returns : array_like, shape (n,)
        Annualised expected returns ``μ``.
    covariance : array_like, shape (n, n)
        Annualised covariance ``Σ``.
    risk_free_rate : float, default 0.0
        Annual risk-free rate, in the units of ``μ``.
    gamma : float, default 0.0
        L2 penalty ``γ ≥ 0`` in annual units; larger values spread the weights.
    bounds : Bounds, default (0.0, 1.0)
        Weight bounds with ``0 ≤ lo ≤ hi`` (see :data:`Bounds`); upper bounds above 1 do not bind.
    fallback_weights : array_like, shape (n,), optional
        Returned, as a copy, when there is no solution (``INFEASIBLE``, ``INVALID_INPUT``); pass
        the current weights to keep them.

    Returns
    -------
    OptimizationResult
        ``OPTIMAL`` (or ``COVARIANCE_REPAIRED``) with the tangency weights;
        ``MIN_VOLATILITY_FALLBACK`` when no feasible portfolio beats ``risk_free_rate``;
        ``INFEASIBLE`` or ``INVALID_INPUT`` with ``fallback_weights``.

    Raises
    ------
    OptimizationError
        If the shapes disagree, ``γ`` is negative or not finite, or the bounds are malformed
        (a lower bound below 0, ``lo > hi``, NaN).

    Examples
    --------
    >>> import numpy as np
    >>> mu = np.array([0.10, 0.14, 0.06])
    >>> cov = np.array([[0.04, 0.01, 0.00], [0.01, 0.09, 0.02], [0.00, 0.02, 0.03]])
    >>> result = max_sharpe(mu, cov, risk_free_rate=0.02, gamma=0.1)
    >>> result.status
    <OptimizationStatus.OPTIMAL: 'optimal'>
    >>> result.weights.round(4)
    array([0.3988, 0.4369, 0.1643])
    >>> round(result.sharpe, 4)
    0.5187
    """
    mu = as_vector(expected_returns, "expected_returns")
    problem = prepare(covariance, gamma, bounds, mu.size, fallback_weights)
    if isinstance(problem, OptimizationResult):
        return problem
    if not (np.all(np.isfinite(mu)) and math.isfinite(risk_free_rate)):
        return no_solution(
            OptimizationStatus.INVALID_INPUT,
            "expected_returns or risk_free_rate is NaN or infinite",
            problem.fallback,
        )
    excess = mu - risk_free_rate
    if problem.single_point is not None:
        weights = problem.single_point
        note = "the bounds admit a single portfolio"
    elif excess.max() <= 0.0:
        return _min_volatility_fallback(
            problem,
            mu,
            risk_free_rate,
            f"no asset's expected return (max {mu.max():.6g}) exceeds the risk-free rate "
            f"{risk_free_rate:.6g}",
        )
    else:
        solution = solve_least_distance(problem, excess)
        if solution is None:
            return _min_volatility_fallback(
                problem,
                mu,
                risk_free_rate,
                "no portfolio within the bounds has an expected return above the risk-free "
                f"rate {risk_free_rate:.6g}",
            )
        weights, note = solution, "maximum-Sharpe portfolio found"
    return solved_result(problem, weights, mu, risk_free_rate, OptimizationStatus.OPTIMAL, note)


def min_volatility(
    covariance: ArrayLike,
    gamma: float = 0.0,
    bounds: Bounds = (0.0, 1.0),
    *,
    fallback_weights: ArrayLike | None = None,
) -> OptimizationResult:
    """Long-only minimum-volatility portfolio with an L2 penalty, exactly as PyPortfolioOpt.

    Minimises ``wᵀΣw + γ‖w‖² = wᵀ(Σ + γI)w`` subject to ``1ᵀw = 1`` and the bounds, the problem
    PyPortfolioOpt's ``min_volatility`` solves after ``add_objective(L2_reg, gamma=γ)``.

    Parameters
    ----------
    covariance : array_like, shape (n, n)
        Annualised covariance ``Σ``.
    gamma : float, default 0.0
        L2 penalty ``γ ≥ 0`` in annual units.
    bounds : Bounds, default (0.0, 1.0)
        Weight bounds with ``0 ≤ lo ≤ hi`` (see :data:`Bounds`).
    fallback_weights : array_like, shape (n,), optional
        Returned, as a copy, when there is no solution.

    Returns
    -------
    OptimizationResult
        ``expected_return`` and ``sharpe`` are NaN: no expected returns are given.

    Raises
    ------
    OptimizationError
        If ``covariance`` is not square, ``γ`` is negative or not finite, or the bounds are
        malformed.

    Examples
    --------
    >>> import numpy as np
    >>> cov = np.array([[0.04, 0.01, 0.00], [0.01, 0.09, 0.02], [0.00, 0.02, 0.03]])
    >>> result = min_volatility(cov, bounds=(0.0, 0.5))
    >>> result.weights.round(4)
    array([0.4545, 0.0455, 0.5   ])
    >>> round(result.volatility, 4)
    0.1314
    """
    n_assets = square_size(covariance)
    problem = prepare(covariance, gamma, bounds, n_assets, fallback_weights)
    if isinstance(problem, OptimizationResult):
        return problem
    if problem.single_point is not None:
        return solved_result(
            problem,
            problem.single_point,
            None,
            0.0,
            OptimizationStatus.OPTIMAL,
            "the bounds admit a single portfolio",
        )
    weights = solve_least_distance(problem, np.ones(n_assets))
    if weights is None:
        return no_solution(
            OptimizationStatus.INFEASIBLE,
            "the least-distance solver found no minimum-volatility portfolio",
            problem.fallback,
            problem.flags,
        )
    return solved_result(
        problem,
        weights,
        None,
        0.0,
        OptimizationStatus.OPTIMAL,
        "minimum-volatility portfolio found",
    )


def _min_volatility_fallback(
    problem: Problem, mu: FloatArray, risk_free_rate: float, reason: str
) -> OptimizationResult:
    weights = solve_least_distance(problem, np.ones(mu.size))
    if weights is None:
        return no_solution(
            OptimizationStatus.INFEASIBLE,
            f"{reason}, and no minimum-volatility portfolio was found",
            problem.fallback,
            problem.flags,
        )
    return solved_result(
        problem,
        weights,
        mu,
        risk_free_rate,
        OptimizationStatus.MIN_VOLATILITY_FALLBACK,
        f"{reason}; returned the minimum-volatility portfolio",
    )


def solved_result(
    problem: Problem,
    weights: FloatArray,
    mu: FloatArray | None,
    risk_free_rate: float,
    status: OptimizationStatus,
    note: str,
) -> OptimizationResult:
    """The result of solved ``weights``, with the problem's flags and notes."""
    flags = problem.flags | {status}
    headline = max(flags, key=SEVERITY.index)
    expected_return, volatility, sharpe = _performance(
        weights, mu, problem.covariance, risk_free_rate
    )
    weights.setflags(write=False)
    return OptimizationResult(
        weights=weights,
        status=headline,
        message="; ".join((note, *problem.notes)),
        expected_return=expected_return,
        volatility=volatility,
        sharpe=sharpe,
        flags=frozenset(flags),
    )


def _performance(
    weights: FloatArray, mu: FloatArray | None, cov: FloatArray, risk_free_rate: float
) -> tuple[float, float, float]:
    """Annual ``(wᵀμ, √(wᵀΣw), Sharpe)``; NaN where undefined."""
    volatility = math.sqrt(max(float(weights @ cov @ weights), 0.0))
    if mu is None:
        return math.nan, volatility, math.nan
    expected_return = float(weights @ mu)
    sharpe = (expected_return - risk_free_rate) / volatility if volatility > 0 else math.nan
    return expected_return, volatility, sharpe
