"""The exact solver behind every objective: one least-distance program, one NNLS.

PyPortfolioOpt homogenises the Sharpe ratio with ``y = k·w`` (Cornuéjols & Tütüncü 2006) and puts
the L2 term on ``y``, so the problem it solves is the tangency portfolio of the ridge covariance
``Q = Σ + γI``::

    min_y yᵀQy   s.t.   (μ − r_f)ᵀy ≥ 1,   y_i ≥ lo_i·1ᵀy,   y_i ≤ hi_i·1ᵀy;   w = y / 1ᵀy

With ``Q = LLᵀ`` and ``x = Lᵀy`` this is a least-distance program ``min ‖x‖² s.t. Gx ≥ h``, which
Lawson & Hanson (1974, ch. 23) reduce to one non-negative least-squares problem, solved exactly by
:func:`scipy.optimize.nnls`; an NNLS residual of zero proves the program infeasible. Replacing
``μ − r_f`` by a vector of ones turns the same program into the minimum-variance portfolio
(``1ᵀy ≥ 1`` is tight at the optimum, so ``w = y`` and the objective is ``wᵀΣw + γ‖w‖²``).

References
----------
Lawson, C. L. & Hanson, R. J. (1974). *Solving Least Squares Problems*, ch. 23.
Cornuéjols, G. & Tütüncü, R. (2006). *Optimization Methods in Finance*, §8.2.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import scipy.optimize

from streamfolio.core.optimize.problem import Problem
from streamfolio.core.types import FloatArray

_INFEASIBLE_RESIDUAL = 1e-14
"""The NNLS residual's last entry is −1/(1 + y*ᵀQy*): zero (to rounding) means infeasible."""
_BOUND_CHECK_TOLERANCE = 1e-6
"""A solution further than this outside its bounds is numerical garbage, not a portfolio."""


def solve_least_distance(problem: Problem, direction: FloatArray) -> FloatArray | None:
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
