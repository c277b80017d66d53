"""Long-only mean-variance optimisation, exact and scipy-only.

Currently implemented:

- :func:`max_sharpe`: the maximum-Sharpe (tangency) portfolio with an L2 penalty ``γ‖w‖²``,
  the same problem as PyPortfolioOpt's ``EfficientFrontier(mu, S, weight_bounds)`` +
  ``add_objective(L2_reg, gamma=γ)`` + ``max_sharpe(risk_free_rate)``;
- :func:`min_volatility`: the minimum-variance portfolio with the same penalty, as PyPortfolioOpt's
  ``min_volatility()`` + ``L2_reg``;
- :class:`OptimizationResult` and :class:`OptimizationStatus`: what came out and why.

How it works. PyPortfolioOpt homogenises the Sharpe ratio with ``y = k·w`` (Cornuéjols &
Tütüncü 2006) and puts the L2 term on ``y``, so the problem it solves is the tangency portfolio of
the ridge covariance ``Q = Σ + γI``::

    min_y yᵀQy   s.t.   (μ − r_f)ᵀy ≥ 1,   y_i ≥ lo_i·1ᵀy,   y_i ≤ hi_i·1ᵀy;   w = y / 1ᵀy

With ``Q = LLᵀ`` and ``x = Lᵀy`` this is a least-distance program ``min ‖x‖² s.t. Gx ≥ h``, which
Lawson & Hanson (1974, ch. 23) reduce to one non-negative least-squares problem, solved exactly by
:func:`scipy.optimize.nnls`; an NNLS residual of zero proves the program infeasible. Replacing
``μ − r_f`` by a vector of ones turns the same program into the minimum-variance portfolio
(``1ᵀy ≥ 1`` is tight at the optimum, so ``w = y`` and the objective is ``wᵀΣw + γ‖w‖²``).

Units. Pass annualised ``μ`` and ``Σ`` and an annual risk-free rate; ``γ`` is then in annual units.
Scaling ``μ``, ``Σ`` and ``r_f`` by ``s`` is the same as dividing ``γ`` by ``s``.

Bad numbers never raise: NaN or infinite inputs give :attr:`OptimizationStatus.INVALID_INPUT`, a
covariance that is not positive definite is repaired, and an empty feasible set gives
:attr:`OptimizationStatus.INFEASIBLE`. Malformed calls (wrong shapes, negative lower bounds,
``lo > hi``, negative ``γ``) raise :class:`~streamfolio.errors.OptimizationError`.

References
----------
Lawson, C. L. & Hanson, R. J. (1974). *Solving Least Squares Problems*, ch. 23.
Cornuéjols, G. & Tütüncü, R. (2006). *Optimization Methods in Finance*, §8.2.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import scipy.linalg
import scipy.optimize

from streamfolio.core.types import ArrayLike, FloatArray
from streamfolio.errors import OptimizationError

__all__ = [
    "Bounds",
    "OptimizationResult",
    "OptimizationStatus",
    "max_sharpe",
    "min_volatility",
]

Bounds: TypeAlias = (
    tuple[float, float] | Sequence[tuple[float, float]] | tuple[FloatArray, FloatArray]
)
"""Weight bounds, in one of three forms (as PyPortfolioOpt's ``weight_bounds``):

- a ``(lo, hi)`` pair of numbers for every asset;
- a sequence (or ``(n, 2)`` array) of one ``(lo, hi)`` pair per asset;
- a pair of numpy arrays ``(lo_array, hi_array)``, each of shape ``(n,)``.

The third form must be numpy arrays: with two assets, ``([0, 0], [1, 1])`` written as lists reads
as per-asset pairs ``(0, 0)`` and ``(1, 1)``, as it does in PyPortfolioOpt."""

_EIGENVALUE_FLOOR_RELATIVE = 1e-10
"""Repaired eigenvalues are at least this fraction of the largest one: PyPortfolioOpt clips to 0,
but the Cholesky factor needs a strictly positive spectrum."""
_EIGENVALUE_FLOOR_ABSOLUTE = 1e-12
"""The floor when no eigenvalue is positive (e.g. an all-zero covariance of constant prices)."""
_SYMMETRY_TOLERANCE = 1e-8
"""Asymmetry beyond this fraction of the largest entry means the matrix is not a covariance."""
_SINGLE_POINT_TOLERANCE = 1e-9
"""When the bounds sum to 1 within this, they admit exactly one portfolio."""
_INFEASIBLE_RESIDUAL = 1e-14
"""The NNLS residual's last entry is −1/(1 + y*ᵀQy*): zero (to rounding) means infeasible."""
_BOUND_CHECK_TOLERANCE = 1e-6
"""A solution further than this outside its bounds is numerical garbage, not a portfolio."""


class OptimizationStatus(enum.StrEnum):
    """What an optimisation produced, declared from least to most severe.

    :attr:`OptimizationResult.status` is the most severe that applies; all of them are in
    :attr:`OptimizationResult.flags`.
    """

    OPTIMAL = "optimal"
    """The requested problem was solved as posed."""
    COVARIANCE_REPAIRED = "covariance_repaired"
    """``Σ + γI`` was not positive definite (or singular to working precision); the eigenvalues
    of ``Σ`` were clipped to a small positive floor first, like PyPortfolioOpt's
    ``fix_nonpositive_semidefinite`` 'spectral' method."""
    MIN_VOLATILITY_FALLBACK = "min_volatility_fallback"
    """No feasible portfolio beats the risk-free rate, so the maximum Sharpe ratio does not exist;
    the weights are the minimum-volatility portfolio."""
    INFEASIBLE = "infeasible"
    """No weights satisfy the bounds (``Σlo > 1`` or ``Σhi < 1``) or the solver failed; the weights
    are ``fallback_weights`` or ``None``."""
    INVALID_INPUT = "invalid_input"
    """The inputs hold NaN or infinite values or the covariance is not symmetric; the weights are
    ``fallback_weights`` or ``None``."""


_SEVERITY = tuple(OptimizationStatus)
"""Statuses from least to most severe, in declaration order."""
_SOLVED = frozenset(
    {
        OptimizationStatus.OPTIMAL,
        OptimizationStatus.COVARIANCE_REPAIRED,
        OptimizationStatus.MIN_VOLATILITY_FALLBACK,
    }
)


@dataclass(frozen=True, eq=False)
class OptimizationResult:
    """The weights an optimiser chose, why, and their annual performance.

    ``expected_return``, ``volatility`` and ``sharpe`` are computed from the inputs (``Σ``
    without ``γI``; the repaired ``Σ`` when it was repaired). They are NaN for
    ``INFEASIBLE`` and ``INVALID_INPUT``, and ``expected_return`` and ``sharpe`` are NaN for
    :func:`min_volatility`, which is given no expected returns.
    """

    weights: FloatArray | None
    """Portfolio weights (read-only), summing to 1 within the bounds; ``None`` if there are none."""
    status: OptimizationStatus
    """The most severe entry of :attr:`flags`."""
    message: str
    """What happened, in words, for logs and alerts."""
    expected_return: float = math.nan
    """Annual expected return ``wᵀμ``."""
    volatility: float = math.nan
    """Annual volatility ``√(wᵀΣw)``."""
    sharpe: float = math.nan
    """``(wᵀμ − r_f) / √(wᵀΣw)``; NaN when the volatility is zero."""
    flags: frozenset[OptimizationStatus] = field(default_factory=frozenset)
    """Every condition met on the way, :attr:`status` included, e.g. a repaired covariance and a
    min-volatility fallback together."""

    @property
    def solved(self) -> bool:
        """Whether :attr:`weights` come from the solver rather than from ``fallback_weights``."""
        return self.status in _SOLVED

    @property
    def covariance_repaired(self) -> bool:
        """Whether the covariance had to be repaired before solving."""
        return OptimizationStatus.COVARIANCE_REPAIRED in self.flags


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
    mu = _as_vector(expected_returns, "expected_returns")
    problem = _prepare(covariance, gamma, bounds, mu.size, fallback_weights)
    if isinstance(problem, OptimizationResult):
        return problem
    if not (np.all(np.isfinite(mu)) and math.isfinite(risk_free_rate)):
        return _no_solution(
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
        solution = _solve_least_distance(problem, excess)
        if solution is None:
            return _min_volatility_fallback(
                problem,
                mu,
                risk_free_rate,
                "no portfolio within the bounds has an expected return above the risk-free "
                f"rate {risk_free_rate:.6g}",
            )
        weights, note = solution, "maximum-Sharpe portfolio found"
    return _solved(problem, weights, mu, risk_free_rate, OptimizationStatus.OPTIMAL, note)


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
    n_assets = _square_size(covariance)
    problem = _prepare(covariance, gamma, bounds, n_assets, fallback_weights)
    if isinstance(problem, OptimizationResult):
        return problem
    if problem.single_point is not None:
        return _solved(
            problem,
            problem.single_point,
            None,
            0.0,
            OptimizationStatus.OPTIMAL,
            "the bounds admit a single portfolio",
        )
    weights = _solve_least_distance(problem, np.ones(n_assets))
    if weights is None:
        return _no_solution(
            OptimizationStatus.INFEASIBLE,
            "the least-distance solver found no minimum-volatility portfolio",
            problem.fallback,
            problem.flags,
        )
    return _solved(
        problem,
        weights,
        None,
        0.0,
        OptimizationStatus.OPTIMAL,
        "minimum-volatility portfolio found",
    )


@dataclass(frozen=True)
class _Problem:
    """A validated problem: the covariance to report with and the factor of ``Σ + γI``."""

    covariance: FloatArray
    ridge_cholesky: FloatArray
    lower: FloatArray
    upper: FloatArray
    fallback: FloatArray | None
    single_point: FloatArray | None
    flags: frozenset[OptimizationStatus]
    notes: tuple[str, ...]


def _prepare(
    covariance: ArrayLike,
    gamma: float,
    bounds: Bounds,
    n_assets: int,
    fallback_weights: ArrayLike | None,
) -> _Problem | OptimizationResult:
    """Validate the shared inputs; a result instead of a problem when there is nothing to solve."""
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.shape != (n_assets, n_assets):
        raise OptimizationError(
            f"covariance has shape {cov.shape}, expected ({n_assets}, {n_assets}) to match "
            f"the {n_assets} expected returns"
        )
    if not (math.isfinite(gamma) and gamma >= 0.0):
        raise OptimizationError(f"gamma must be a finite number >= 0, got {gamma!r}")
    lower, upper = _parse_bounds(bounds, n_assets)
    fallback = None
    if fallback_weights is not None:
        fallback = _as_vector(fallback_weights, "fallback_weights").copy()
        if fallback.size != n_assets:
            raise OptimizationError(
                f"fallback_weights has {fallback.size} entries, expected {n_assets}"
            )
    if not np.all(np.isfinite(cov)):
        return _no_solution(
            OptimizationStatus.INVALID_INPUT, "covariance is NaN or infinite", fallback
        )
    asymmetry = float(np.max(np.abs(cov - cov.T)))
    if asymmetry > _SYMMETRY_TOLERANCE * max(float(np.max(np.abs(cov))), 1e-300):
        return _no_solution(
            OptimizationStatus.INVALID_INPUT,
            f"covariance is not symmetric (max |Σ − Σᵀ| = {asymmetry:.3g})",
            fallback,
        )
    infeasibility = _bounds_infeasibility(lower, upper)
    if infeasibility is not None:
        return _no_solution(OptimizationStatus.INFEASIBLE, infeasibility, fallback)
    # Rounding leaves Σ asymmetric in the last bits; the Cholesky factor only reads one triangle.
    cov = (cov + cov.T) / 2.0
    factorised = _factorise_ridge(cov, gamma)
    if factorised is None:
        return _no_solution(
            OptimizationStatus.INVALID_INPUT,
            "covariance + gamma·I could not be factorised even after repairing its eigenvalues",
            fallback,
        )
    cov, cholesky, repair_note = factorised
    flags = frozenset({OptimizationStatus.COVARIANCE_REPAIRED} if repair_note else ())
    return _Problem(
        covariance=cov,
        ridge_cholesky=cholesky,
        lower=lower,
        upper=upper,
        fallback=fallback,
        single_point=_single_feasible_point(lower, upper),
        flags=flags,
        notes=(repair_note,) if repair_note else (),
    )


def _as_vector(values: ArrayLike, name: str) -> FloatArray:
    vector = np.asarray(values, dtype=np.float64)
    if vector.ndim != 1 or vector.size == 0:
        raise OptimizationError(f"{name} must be a non-empty 1-D array, got shape {vector.shape}")
    return vector


def _square_size(matrix: ArrayLike) -> int:
    shape = np.shape(matrix)
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise OptimizationError(f"covariance must be a non-empty square matrix, got shape {shape}")
    return int(shape[0])


def _parse_bounds(bounds: Bounds, n_assets: int) -> tuple[FloatArray, FloatArray]:
    """Read the bounds (see :data:`Bounds`) into arrays ``lower`` and ``upper``."""
    expected = (
        f"bounds must be a (lo, hi) pair, {n_assets} (lo, hi) pairs or a pair of numpy arrays "
        f"of shape ({n_assets},)"
    )
    # Checked first: with two assets a pair of arrays would otherwise read as two (lo, hi) rows.
    if isinstance(bounds, tuple | list) and len(bounds) == 2:
        first, second = bounds[0], bounds[1]
        if isinstance(first, np.ndarray) and isinstance(second, np.ndarray):
            if first.shape != (n_assets,) or second.shape != (n_assets,):
                raise OptimizationError(
                    f"{expected}; got arrays of shapes {first.shape} and {second.shape}"
                )
            try:
                return _checked_bounds(first.astype(np.float64), second.astype(np.float64))
            except (TypeError, ValueError) as exc:
                raise OptimizationError(f"{expected}, got {bounds!r}") from exc
    try:
        table = np.asarray(bounds, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise OptimizationError(f"{expected}, got {bounds!r}") from exc
    if table.shape == (n_assets, 2):
        return _checked_bounds(table[:, 0].copy(), table[:, 1].copy())
    if table.shape == (2,):
        return _checked_bounds(np.full(n_assets, table[0]), np.full(n_assets, table[1]))
    raise OptimizationError(f"{expected}; got shape {table.shape}")


def _checked_bounds(lower: FloatArray, upper: FloatArray) -> tuple[FloatArray, FloatArray]:
    if not np.all(np.isfinite(lower)) or np.any(np.isnan(upper)):
        raise OptimizationError("lower bounds must be finite and upper bounds must not be NaN")
    if np.any(lower < 0.0):
        raise OptimizationError(f"lower bounds must be >= 0 (long-only), got min {lower.min():.6g}")
    if np.any(lower > upper):
        raise OptimizationError("every lower bound must be <= its upper bound")
    # No weight can exceed 1 in a long-only portfolio, so larger caps do not bind.
    return lower, np.minimum(upper, 1.0)


def _bounds_infeasibility(lower: FloatArray, upper: FloatArray) -> str | None:
    lower_sum, upper_sum = float(lower.sum()), float(upper.sum())
    if lower_sum > 1.0 + _SINGLE_POINT_TOLERANCE:
        return f"the lower bounds sum to {lower_sum:.6g} > 1: no weights satisfy them"
    if upper_sum < 1.0 - _SINGLE_POINT_TOLERANCE:
        return f"the upper bounds sum to {upper_sum:.6g} < 1: no weights satisfy them"
    return None


def _single_feasible_point(lower: FloatArray, upper: FloatArray) -> FloatArray | None:
    """The only feasible weights when the bounds sum to 1, else ``None``.

    The homogenised program needs ``Σlo < 1`` to keep ``1ᵀy`` positive, so this case is handled
    apart.
    """
    only: FloatArray
    if lower.sum() >= 1.0 - _SINGLE_POINT_TOLERANCE:
        only = lower / lower.sum()
    elif upper.sum() <= 1.0 + _SINGLE_POINT_TOLERANCE:
        only = upper / upper.sum()
    else:
        return None
    return only


def _factorise_ridge(cov: FloatArray, gamma: float) -> tuple[FloatArray, FloatArray, str] | None:
    """``(Σ, Cholesky factor of Σ + γI, note)``, with ``Σ`` repaired if needed (else no note).

    ``None`` if even the repaired matrix cannot be factorised (extreme magnitudes).
    """
    ridge = cov + gamma * np.eye(cov.shape[0])
    try:
        cholesky = np.linalg.cholesky(ridge)
    except np.linalg.LinAlgError:
        pass
    else:
        # Squared pivots bound the spectrum from inside, so a tiny ratio proves the matrix is
        # singular to working precision, and the solver would then divide by noise.
        pivots = np.diag(cholesky)
        if pivots.min() ** 2 >= _EIGENVALUE_FLOOR_RELATIVE * pivots.max() ** 2:
            return cov, cholesky, ""
    try:
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
    except np.linalg.LinAlgError:
        return None
    largest = float(eigenvalues[-1])
    floor = _EIGENVALUE_FLOOR_RELATIVE * largest if largest > 0 else _EIGENVALUE_FLOOR_ABSOLUTE
    repaired = (eigenvectors * np.maximum(eigenvalues, floor)) @ eigenvectors.T
    repaired = (repaired + repaired.T) / 2.0
    note = (
        f"covariance + gamma·I was not numerically positive definite (smallest eigenvalue of Σ "
        f"{eigenvalues[0]:.3g}); eigenvalues clipped to {floor:.3g}"
    )
    try:
        return repaired, np.linalg.cholesky(repaired + gamma * np.eye(cov.shape[0])), note
    except np.linalg.LinAlgError:
        return None


def _solve_least_distance(problem: _Problem, direction: FloatArray) -> FloatArray | None:
    """Weights minimising ``yᵀQy`` s.t. ``directionᵀy ≥ 1`` and the bounds; ``None`` if infeasible.

    ``direction = μ − r_f`` gives the maximum-Sharpe portfolio, ``direction = 1`` the
    minimum-variance one.
    """
    n_assets = direction.size
    identity = np.eye(n_assets)
    capped = problem.upper < 1.0
    # Rows of A in A·y ≥ h: the return row, then y_i − lo_i·1ᵀy ≥ 0, then hi_i·1ᵀy − y_i ≥ 0.
    constraints = np.vstack(
        [
            direction[np.newaxis, :],
            identity - problem.lower[:, np.newaxis],
            problem.upper[capped, np.newaxis] - identity[capped],
        ]
    )
    targets = np.zeros(constraints.shape[0])
    targets[0] = 1.0
    # In x = Lᵀy the constraints read (A·L⁻ᵀ)x ≥ h; NNLS works on the transpose L⁻¹Aᵀ.
    cholesky = problem.ridge_cholesky
    constraints_in_x = scipy.linalg.solve_triangular(cholesky, constraints.T, lower=True)
    nnls_matrix = np.vstack([constraints_in_x, targets])
    nnls_target = np.zeros(n_assets + 1)
    nnls_target[-1] = 1.0
    try:
        multipliers, _ = scipy.optimize.nnls(nnls_matrix, nnls_target, maxiter=50 * (n_assets + 1))
    except (RuntimeError, ValueError):
        return None
    residual = nnls_matrix @ multipliers - nnls_target
    if -residual[-1] <= _INFEASIBLE_RESIDUAL:
        return None
    x = -residual[:n_assets] / residual[-1]
    y = scipy.linalg.solve_triangular(cholesky, x, lower=True, trans="T")
    return _normalised_within_bounds(y, problem.lower, problem.upper)


def _normalised_within_bounds(
    y: FloatArray, lower: FloatArray, upper: FloatArray
) -> FloatArray | None:
    """``y / 1ᵀy`` with rounding clipped away, or ``None`` if it is no portfolio at all."""
    total = float(y.sum())
    if not (math.isfinite(total) and total > 0.0):
        return None
    weights = y / total
    if np.any(weights < lower - _BOUND_CHECK_TOLERANCE) or np.any(
        weights > upper + _BOUND_CHECK_TOLERANCE
    ):
        return None
    clipped: FloatArray = np.clip(weights, lower, upper)
    normalised: FloatArray = clipped / clipped.sum()
    return normalised


def _min_volatility_fallback(
    problem: _Problem, mu: FloatArray, risk_free_rate: float, reason: str
) -> OptimizationResult:
    weights = _solve_least_distance(problem, np.ones(mu.size))
    if weights is None:
        return _no_solution(
            OptimizationStatus.INFEASIBLE,
            f"{reason}, and no minimum-volatility portfolio was found",
            problem.fallback,
            problem.flags,
        )
    return _solved(
        problem,
        weights,
        mu,
        risk_free_rate,
        OptimizationStatus.MIN_VOLATILITY_FALLBACK,
        f"{reason}; returned the minimum-volatility portfolio",
    )


def _solved(
    problem: _Problem,
    weights: FloatArray,
    mu: FloatArray | None,
    risk_free_rate: float,
    status: OptimizationStatus,
    note: str,
) -> OptimizationResult:
    flags = problem.flags | {status}
    headline = max(flags, key=_SEVERITY.index)
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


def _no_solution(
    status: OptimizationStatus,
    reason: str,
    fallback: FloatArray | None,
    flags: frozenset[OptimizationStatus] = frozenset(),
) -> OptimizationResult:
    if fallback is not None:
        fallback.setflags(write=False)
        reason += "; returned fallback_weights"
    return OptimizationResult(
        weights=fallback, status=status, message=reason, flags=flags | {status}
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
