"""The market prior of Black-Litterman: the market's risk aversion and implied returns.

- :func:`market_implied_risk_aversion`: ``δ = (E[R_m] − r_f) / σ_m²`` from index closes;
- :func:`market_implied_prior_returns`: the prior ``Π = δΣw_mkt + r_f``.

``Π`` includes the risk-free rate, so views on it must be total (not excess) returns.
"""

from __future__ import annotations

import numpy as np

from streamfolio.core.black_litterman.inputs import as_covariance, as_vector
from streamfolio.core.types import ArrayLike, FloatArray
from streamfolio.errors import OptimizationError


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
    cov = as_covariance(covariance)
    caps = as_vector(market_caps, "market_caps", cov.shape[0])
    if not (np.all(np.isfinite(caps)) and np.all(caps >= 0.0) and caps.sum() > 0.0):
        raise OptimizationError("market_caps must be finite, non-negative and not all zero")
    if not risk_aversion > 0.0:
        raise OptimizationError(f"risk_aversion must be > 0, got {risk_aversion!r}")
    market_weights = caps / caps.sum()
    prior: FloatArray = risk_aversion * (cov @ market_weights) + risk_free_rate
    return prior
