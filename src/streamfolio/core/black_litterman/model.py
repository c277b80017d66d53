"""The Black-Litterman model: the posterior mean and covariance, and weights on them.

The posterior follows He & Litterman (1999), as PyPortfolioOpt's ``BlackLittermanModel``::

    μ_BL = Π + τΣPᵀ (PτΣPᵀ + Ω)⁻¹ (Q − PΠ)
    Σ_BL = Σ + τΣ − τΣPᵀ (PτΣPᵀ + Ω)⁻¹ PτΣ

The inverse is never formed: the ``k × k`` systems are solved, with a least-squares solution when
the matrix is singular, as PyPortfolioOpt does. :func:`black_litterman_weights` feeds the
posterior to :func:`~streamfolio.core.optimize.max_sharpe`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamfolio.core.black_litterman.inputs import (
    as_covariance,
    as_picking,
    as_vector,
    checked_tau,
)
from streamfolio.core.black_litterman.views import omega_for_views
from streamfolio.core.optimize.objectives import max_sharpe
from streamfolio.core.optimize.result import Bounds, OptimizationResult
from streamfolio.core.types import ArrayLike, FloatArray
from streamfolio.errors import OptimizationError


@dataclass(frozen=True, eq=False)
class BlackLittermanPosterior:
    """The Black-Litterman posterior, in the units of the prior and the covariance."""

    expected_returns: FloatArray
    """Posterior expected returns ``μ_BL``, shape (n,), read-only."""
    covariance: FloatArray
    """Posterior covariance ``Σ_BL``, shape (n, n), symmetric, read-only."""

    def __post_init__(self) -> None:
        self.expected_returns.setflags(write=False)
        self.covariance.setflags(write=False)


def black_litterman(
    covariance: ArrayLike,
    pi: ArrayLike,
    P: ArrayLike | None = None,
    Q: ArrayLike | None = None,
    *,
    omega: ArrayLike | None = None,
    view_confidences: ArrayLike | None = None,
    tau: float = 0.05,
) -> BlackLittermanPosterior:
    """Black-Litterman posterior mean and covariance, as PyPortfolioOpt's ``bl_returns``/``bl_cov``.

    Parameters
    ----------
    covariance : array_like, shape (n, n)
        Prior covariance ``Σ``, annualised.
    pi : array_like, shape (n,)
        Prior expected returns ``Π`` (e.g. :func:`market_implied_prior_returns`).
    P : array_like, shape (k, n), optional
        Picking matrix; omit both ``P`` and ``Q`` for no views.
    Q : array_like, shape (k,), optional
        Expected return of each view portfolio, in the units of ``pi``.
    omega : array_like, shape (k, k), optional
        View uncertainty; by default :func:`default_omega`, or :func:`idzorek_omega` when
        ``view_confidences`` is given.
    view_confidences : array_like, shape (k,), optional
        Confidences in [0, 1] for Idzorek's method; excludes ``omega``.
    tau : float, default 0.05
        Weight on the views, ``0 < τ ≤ 1``.

    Returns
    -------
    BlackLittermanPosterior
        ``μ_BL`` and ``Σ_BL``. With no views they are ``Π`` and ``(1 + τ)Σ``, which is what the
        formulas give for ``k = 0`` (PyPortfolioOpt requires at least one view).

    Raises
    ------
    OptimizationError
        If the shapes disagree, only one of ``P``/``Q`` is given, both ``omega`` and
        ``view_confidences`` are given, ``τ`` is outside (0, 1], or an input is not finite.

    Examples
    --------
    >>> import numpy as np
    >>> from streamfolio.core.black_litterman.views import absolute_views
    >>> cov = np.array([[0.04, 0.01], [0.01, 0.09]])
    >>> P, Q = absolute_views(2, {0: 0.12})
    >>> posterior = black_litterman(cov, [0.08, 0.10], P, Q)
    >>> posterior.expected_returns.round(4)
    array([0.1  , 0.105])
    """
    cov = as_covariance(covariance)
    n_assets = cov.shape[0]
    prior = as_vector(pi, "pi", n_assets)
    tau = checked_tau(tau)
    if (P is None) != (Q is None):
        raise OptimizationError("give both P and Q, or neither for no views")
    picking = np.zeros((0, n_assets)) if P is None else as_picking(P, n_assets)
    targets = np.zeros(0) if Q is None else np.asarray(Q, dtype=np.float64).ravel()
    if targets.shape != (picking.shape[0],):
        raise OptimizationError(
            f"Q has {targets.size} entries, expected one per row of P ({picking.shape[0]})"
        )
    if not all(np.all(np.isfinite(a)) for a in (cov, prior, picking, targets)):
        raise OptimizationError("covariance, pi, P and Q must be finite")
    if picking.shape[0] == 0:
        return BlackLittermanPosterior(expected_returns=prior.copy(), covariance=(1.0 + tau) * cov)
    view_omega = omega_for_views(cov, picking, omega, view_confidences, tau)
    tau_sigma_pt = tau * cov @ picking.T
    view_system = picking @ tau_sigma_pt + view_omega
    mean = prior + tau_sigma_pt @ _solve(view_system, targets - picking @ prior)
    shrinkage = tau * cov - tau_sigma_pt @ _solve(view_system, tau_sigma_pt.T)
    posterior_cov = cov + shrinkage
    # Rounding leaves the product asymmetric in the last bits; a covariance must be symmetric.
    return BlackLittermanPosterior(
        expected_returns=mean, covariance=(posterior_cov + posterior_cov.T) / 2.0
    )


def black_litterman_weights(
    covariance: ArrayLike,
    pi: ArrayLike,
    P: ArrayLike | None = None,
    Q: ArrayLike | None = None,
    *,
    omega: ArrayLike | None = None,
    view_confidences: ArrayLike | None = None,
    tau: float = 0.05,
    risk_free_rate: float = 0.0,
    gamma: float = 0.0,
    bounds: Bounds = (0.0, 1.0),
) -> OptimizationResult:
    """Maximum-Sharpe weights on the Black-Litterman posterior mean and covariance.

    :func:`black_litterman`, then :func:`~streamfolio.core.optimize.max_sharpe` on
    ``(μ_BL, Σ_BL)`` with ``risk_free_rate``, ``gamma`` and ``bounds``; the same as
    PyPortfolioOpt's ``EfficientFrontier(bl.bl_returns(), bl.bl_cov())`` + ``L2_reg`` +
    ``max_sharpe``. Parameters and errors are those of the two functions.

    Examples
    --------
    >>> import numpy as np
    >>> from streamfolio.core.black_litterman import absolute_views, market_implied_prior_returns
    >>> cov = np.array([[0.04, 0.01], [0.01, 0.09]])
    >>> pi = market_implied_prior_returns([300.0, 100.0], 2.5, cov, risk_free_rate=0.02)
    >>> P, Q = absolute_views(2, {1: 0.15})
    >>> result = black_litterman_weights(cov, pi, P, Q, risk_free_rate=0.02)
    >>> result.weights.round(4)
    array([0.6618, 0.3382])
    """
    posterior = black_litterman(
        covariance, pi, P, Q, omega=omega, view_confidences=view_confidences, tau=tau
    )
    return max_sharpe(
        posterior.expected_returns,
        posterior.covariance,
        risk_free_rate=risk_free_rate,
        gamma=gamma,
        bounds=bounds,
    )


def _solve(matrix: FloatArray, rhs: FloatArray) -> FloatArray:
    """``matrix⁻¹·rhs``, or the least-squares solution when ``matrix`` is singular."""
    try:
        solution: FloatArray = np.linalg.solve(matrix, rhs)
    except np.linalg.LinAlgError:
        solution = np.linalg.lstsq(matrix, rhs, rcond=None)[0]
    return solution
