"""Black-Litterman expected returns, numpy only, matching PyPortfolioOpt 1.6.

Currently implemented:

- :func:`market_implied_risk_aversion`: ``δ = (E[R_m] − r_f) / σ_m²`` from index closes;
- :func:`market_implied_prior_returns`: the prior ``Π = δΣw_mkt + r_f``;
- :func:`absolute_views`: the picking matrix ``P`` and view vector ``Q`` for views on single assets;
- :func:`default_omega` and :func:`idzorek_omega`: the view uncertainty ``Ω``;
- :func:`black_litterman`: the posterior mean and covariance (:class:`BlackLittermanPosterior`);
- :func:`black_litterman_weights`: the posterior fed to
  :func:`~streamfolio.core.optimize.max_sharpe`.

The posterior follows He & Litterman (1999), as PyPortfolioOpt's ``BlackLittermanModel``::

    μ_BL = Π + τΣPᵀ (PτΣPᵀ + Ω)⁻¹ (Q − PΠ)
    Σ_BL = Σ + τΣ − τΣPᵀ (PτΣPᵀ + Ω)⁻¹ PτΣ

The inverse is never formed: the ``k × k`` systems are solved, with a least-squares solution when
the matrix is singular, as PyPortfolioOpt does.

Units. ``Π`` from :func:`market_implied_prior_returns` includes the risk-free rate, so ``Q`` must
be total (not excess) returns over the same horizon as ``Σ``; pass the same annual ``r_f`` to the
optimiser, which subtracts it.

References
----------
He, G. & Litterman, R. (1999). *The Intuition Behind Black-Litterman Model Portfolios*.
Idzorek, T. (2005). *A Step-by-Step Guide to the Black-Litterman Model*.
Walters, J. (2014). *The Black-Litterman Model in Detail*, formulas (41) and (44).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from streamfolio.core.optimize import Bounds, OptimizationResult, max_sharpe
from streamfolio.core.types import ArrayLike, FloatArray
from streamfolio.errors import OptimizationError

__all__ = [
    "BlackLittermanPosterior",
    "absolute_views",
    "black_litterman",
    "black_litterman_weights",
    "default_omega",
    "idzorek_omega",
    "market_implied_prior_returns",
    "market_implied_risk_aversion",
]

_ZERO_CONFIDENCE_OMEGA = 1e6
"""Ω for a view held with 0 % confidence: PyPortfolioOpt's stand-in for an infinite variance."""


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


def market_implied_risk_aversion(
    market_prices: ArrayLike, periods_per_year: float = 252, risk_free_rate: float = 0.0
) -> float:
    """Market price of risk ``δ = (E[R_m] − r_f) / σ_m²`` from a market index's closes.

    Simple returns, their mean and unbiased variance (``ddof=1``) annualised by
    ``periods_per_year``, as PyPortfolioOpt's ``market_implied_risk_aversion``.

    Parameters
    ----------
    market_prices : array_like, shape (t,)
        Closes of the market index (the MASI for the CSE), oldest first, ``t ≥ 3``.
    periods_per_year : float, default 252
        Closes per year.
    risk_free_rate : float, default 0.0
        Annual risk-free rate.

    Returns
    -------
    float
        The risk-aversion coefficient ``δ``.

    Raises
    ------
    OptimizationError
        If the prices are not a 1-D array of at least 3 finite positive numbers, or are constant.

    Examples
    --------
    >>> round(market_implied_risk_aversion([100.0, 101.0, 100.5, 102.0, 103.0]), 2)
    100.74
    """
    prices = np.asarray(market_prices, dtype=np.float64)
    if prices.ndim != 1 or prices.size < 3:
        raise OptimizationError(
            f"market_prices must be a 1-D array of at least 3 closes, got shape {prices.shape}"
        )
    if not (np.all(np.isfinite(prices)) and np.all(prices > 0.0)):
        raise OptimizationError("market_prices must be finite and positive")
    returns = prices[1:] / prices[:-1] - 1.0
    variance = float(returns.var(ddof=1)) * periods_per_year
    if variance == 0.0:
        raise OptimizationError("market_prices are constant: the market variance is zero")
    return (float(returns.mean()) * periods_per_year - risk_free_rate) / variance


def market_implied_prior_returns(
    market_caps: ArrayLike,
    risk_aversion: float,
    covariance: ArrayLike,
    risk_free_rate: float = 0.0,
) -> FloatArray:
    """Prior expected returns implied by market weights, ``Π = δΣw_mkt + r_f``.

    Parameters
    ----------
    market_caps : array_like, shape (n,)
        Market (free-float) capitalisations, in the asset order of ``covariance``.
    risk_aversion : float
        ``δ > 0``, e.g. from :func:`market_implied_risk_aversion`.
    covariance : array_like, shape (n, n)
        Covariance of returns, annualised.
    risk_free_rate : float, default 0.0
        Added to the excess returns ``δΣw_mkt``, as PyPortfolioOpt does.

    Returns
    -------
    FloatArray
        The prior ``Π``, shape (n,), total returns.

    Raises
    ------
    OptimizationError
        If the shapes disagree, a cap is negative or not finite, the caps sum to 0, or
        ``risk_aversion`` is not positive.

    Examples
    --------
    >>> cov = [[0.04, 0.01], [0.01, 0.09]]
    >>> market_implied_prior_returns([300.0, 100.0], 2.5, cov, risk_free_rate=0.02).round(4)
    array([0.1013, 0.095 ])
    """
    cov = _as_covariance(covariance)
    caps = _as_vector(market_caps, "market_caps", cov.shape[0])
    if not (np.all(np.isfinite(caps)) and np.all(caps >= 0.0) and caps.sum() > 0.0):
        raise OptimizationError("market_caps must be finite, non-negative and not all zero")
    if not risk_aversion > 0.0:
        raise OptimizationError(f"risk_aversion must be > 0, got {risk_aversion!r}")
    market_weights = caps / caps.sum()
    prior: FloatArray = risk_aversion * (cov @ market_weights) + risk_free_rate
    return prior


def absolute_views(n_assets: int, views: Mapping[int, float]) -> tuple[FloatArray, FloatArray]:
    """Picking matrix ``P`` and view vector ``Q`` for views "asset i returns q_i".

    Parameters
    ----------
    n_assets : int
        Number of assets in the universe.
    views : Mapping[int, float]
        Asset index → expected return, in the units of the prior; views keep this order.

    Returns
    -------
    tuple[FloatArray, FloatArray]
        ``P`` of shape (k, n_assets) with one 1 per row, and ``Q`` of shape (k,).

    Raises
    ------
    OptimizationError
        If an index is outside ``0 … n_assets − 1``.

    Examples
    --------
    >>> P, Q = absolute_views(3, {2: 0.10, 0: 0.05})
    >>> P
    array([[0., 0., 1.],
           [1., 0., 0.]])
    >>> Q
    array([0.1 , 0.05])
    """
    picking = np.zeros((len(views), n_assets))
    targets = np.zeros(len(views))
    for row, (asset, expected) in enumerate(views.items()):
        if not 0 <= asset < n_assets:
            raise OptimizationError(f"view on asset {asset}: index outside 0..{n_assets - 1}")
        picking[row, asset] = 1.0
        targets[row] = expected
    return picking, targets


def default_omega(covariance: ArrayLike, P: ArrayLike, tau: float) -> FloatArray:
    """He & Litterman's view uncertainty, ``Ω = diag(τ·PΣPᵀ)``.

    Each view's variance is proportional to the variance of its view portfolio.

    Parameters
    ----------
    covariance : array_like, shape (n, n)
        Covariance of returns.
    P : array_like, shape (k, n)
        Picking matrix.
    tau : float
        Weight on the views, ``0 < τ ≤ 1``.

    Returns
    -------
    FloatArray
        Diagonal ``Ω``, shape (k, k).

    Examples
    --------
    >>> default_omega([[0.04, 0.01], [0.01, 0.09]], [[1.0, -1.0]], 0.05).round(4)
    array([[0.0055]])
    """
    cov = _as_covariance(covariance)
    picking = _as_picking(P, cov.shape[0])
    view_variances = np.einsum("ij,jk,ik->i", picking, cov, picking)
    return np.diag(_checked_tau(tau) * view_variances)


def idzorek_omega(
    covariance: ArrayLike, P: ArrayLike, view_confidences: ArrayLike, tau: float
) -> FloatArray:
    """Idzorek's view uncertainty from percentage confidences (Walters' closed form).

    ``Ω_ii = τ·(1 − c_i)/c_i · p_iΣp_iᵀ``, and a very large ``Ω_ii`` for ``c_i = 0``, as
    PyPortfolioOpt's ``idzorek_method``. Unlike that method it takes no ``Π``, ``Q`` or ``δ``:
    the closed form does not use them.

    Parameters
    ----------
    covariance : array_like, shape (n, n)
        Covariance of returns.
    P : array_like, shape (k, n)
        Picking matrix.
    view_confidences : array_like, shape (k,)
        Confidence in each view, in [0, 1]; 1 makes the view certain (``Ω_ii = 0``).
    tau : float
        Weight on the views, ``0 < τ ≤ 1``.

    Returns
    -------
    FloatArray
        Diagonal ``Ω``, shape (k, k).

    Raises
    ------
    OptimizationError
        If a confidence is outside [0, 1] or their number differs from the number of views.

    Examples
    --------
    >>> idzorek_omega([[0.04, 0.01], [0.01, 0.09]], [[1.0, 0.0]], [0.5], 0.05)
    array([[0.002]])
    """
    cov = _as_covariance(covariance)
    picking = _as_picking(P, cov.shape[0])
    confidences = np.asarray(view_confidences, dtype=np.float64).ravel()
    if confidences.shape != (picking.shape[0],):
        raise OptimizationError(
            f"view_confidences has {confidences.size} entries, expected one per view "
            f"({picking.shape[0]})"
        )
    if not np.all((confidences >= 0.0) & (confidences <= 1.0)):
        raise OptimizationError("view_confidences must lie in [0, 1]")
    view_variances = np.einsum("ij,jk,ik->i", picking, cov, picking)
    certain = confidences > 0.0
    omega = np.full(confidences.size, _ZERO_CONFIDENCE_OMEGA)
    alpha = (1.0 - confidences[certain]) / confidences[certain]
    omega[certain] = _checked_tau(tau) * alpha * view_variances[certain]
    return np.diag(omega)


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
    >>> cov = np.array([[0.04, 0.01], [0.01, 0.09]])
    >>> P, Q = absolute_views(2, {0: 0.12})
    >>> posterior = black_litterman(cov, [0.08, 0.10], P, Q)
    >>> posterior.expected_returns.round(4)
    array([0.1  , 0.105])
    """
    cov = _as_covariance(covariance)
    n_assets = cov.shape[0]
    prior = _as_vector(pi, "pi", n_assets)
    tau = _checked_tau(tau)
    if (P is None) != (Q is None):
        raise OptimizationError("give both P and Q, or neither for no views")
    picking = np.zeros((0, n_assets)) if P is None else _as_picking(P, n_assets)
    targets = np.zeros(0) if Q is None else np.asarray(Q, dtype=np.float64).ravel()
    if targets.shape != (picking.shape[0],):
        raise OptimizationError(
            f"Q has {targets.size} entries, expected one per row of P ({picking.shape[0]})"
        )
    if not all(np.all(np.isfinite(a)) for a in (cov, prior, picking, targets)):
        raise OptimizationError("covariance, pi, P and Q must be finite")
    if picking.shape[0] == 0:
        return BlackLittermanPosterior(expected_returns=prior.copy(), covariance=(1.0 + tau) * cov)
    view_omega = _view_omega(cov, picking, omega, view_confidences, tau)
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


def _view_omega(
    cov: FloatArray,
    picking: FloatArray,
    omega: ArrayLike | None,
    view_confidences: ArrayLike | None,
    tau: float,
) -> FloatArray:
    if omega is not None and view_confidences is not None:
        raise OptimizationError("give omega or view_confidences (Idzorek's method), not both")
    if view_confidences is not None:
        return idzorek_omega(cov, picking, view_confidences, tau)
    if omega is None:
        return default_omega(cov, picking, tau)
    view_omega = np.asarray(omega, dtype=np.float64)
    n_views = picking.shape[0]
    if view_omega.shape != (n_views, n_views):
        raise OptimizationError(
            f"omega has shape {view_omega.shape}, expected ({n_views}, {n_views})"
        )
    return view_omega


def _solve(matrix: FloatArray, rhs: FloatArray) -> FloatArray:
    """``matrix⁻¹·rhs``, or the least-squares solution when ``matrix`` is singular."""
    try:
        solution: FloatArray = np.linalg.solve(matrix, rhs)
    except np.linalg.LinAlgError:
        solution = np.linalg.lstsq(matrix, rhs, rcond=None)[0]
    return solution


def _checked_tau(tau: float) -> float:
    if not 0.0 < tau <= 1.0:
        raise OptimizationError(f"tau must lie in (0, 1], got {tau!r}")
    return float(tau)


def _as_covariance(covariance: ArrayLike) -> FloatArray:
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise OptimizationError(f"covariance must be a non-empty square matrix, got {cov.shape}")
    return cov


def _as_vector(values: ArrayLike, name: str, size: int) -> FloatArray:
    vector = np.asarray(values, dtype=np.float64).ravel()
    if vector.size != size:
        raise OptimizationError(f"{name} has {vector.size} entries, expected {size}")
    return vector


def _as_picking(P: ArrayLike, n_assets: int) -> FloatArray:
    picking = np.asarray(P, dtype=np.float64)
    if picking.ndim == 1:
        picking = picking[np.newaxis, :]
    if picking.ndim != 2 or picking.shape[1] != n_assets:
        raise OptimizationError(f"P has shape {picking.shape}, expected (k, {n_assets})")
    return picking
