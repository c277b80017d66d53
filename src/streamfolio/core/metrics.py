"""Portfolio metrics from weights and return statistics (SEMANTICS §6).

Per bar the portfolio's expected return is ``wᵀμ`` and its variance ``wᵀΣw``. With
``q = periods_per_year``: annual expected return ``E = q·wᵀμ``, risk ``R = √(q·wᵀΣw)`` and Sharpe
``S = (E − r_f) / R`` with ``r_f`` the annual risk-free rate. Inputs are per-bar statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamfolio.core.types import ArrayLike


def expected_return(weights: ArrayLike, mean: ArrayLike, periods_per_year: float) -> float:
    """Annualised expected return ``q·wᵀμ``.

    >>> expected_return([0.5, 0.5], [0.001, 0.003], 252)
    0.504
    """
    return float(periods_per_year * np.dot(weights, mean))


def volatility(weights: ArrayLike, covariance: ArrayLike, periods_per_year: float) -> float:
    """Annualised risk ``√(q·wᵀΣw)``; a tiny negative variance from rounding counts as 0.

    >>> round(volatility([1.0, 0.0], [[1e-4, 0.0], [0.0, 4e-4]], 252), 4)
    0.1587
    """
    w = np.asarray(weights, dtype=np.float64)
    variance = float(w @ np.asarray(covariance, dtype=np.float64) @ w)
    return math.sqrt(max(periods_per_year * variance, 0.0))


def sharpe_ratio(annual_return: float, annual_risk: float, risk_free_rate: float = 0.0) -> float:
    """``(E − r_f) / R``; NaN when the risk is zero (the ratio is undefined).

    >>> round(sharpe_ratio(0.12, 0.2, 0.02), 12)
    0.5
    >>> sharpe_ratio(0.1, 0.0)
    nan
    """
    if not annual_risk > 0:
        return math.nan
    return (annual_return - risk_free_rate) / annual_risk


def sharpe_standard_error(sharpe: float, n_observations: int) -> float:
    """Standard error of an estimated Sharpe ratio under IID returns (Lo 2002).

    ``√((1 + S²/2) / T)`` for the per-period ratio; pass the annual ratio and the number of years
    of data, or the per-bar ratio and the number of bars.

    >>> round(sharpe_standard_error(1.0, 100), 4)
    0.1225
    """
    if n_observations <= 0:
        return math.inf
    return math.sqrt((1.0 + sharpe * sharpe / 2.0) / n_observations)


@dataclass(frozen=True, slots=True)
class PortfolioPerformance:
    """The metrics of one portfolio for one set of weights and statistics."""

    mean_return: float
    """Per-bar expected return ``wᵀμ``."""
    variance: float
    """Per-bar variance ``wᵀΣw``."""
    expected_return: float
    """Annualised, ``q·wᵀμ``."""
    risk: float
    """Annualised, ``√(q·wᵀΣw)``."""
    sharpe: float
    """``(expected_return − r_f) / risk``; NaN when risk is 0."""
    periods_per_year: float
    risk_free_rate: float

    @property
    def is_defined(self) -> bool:
        """True when every figure is finite (the risk is positive)."""
        return all(math.isfinite(v) for v in (self.expected_return, self.risk, self.sharpe))


def portfolio_performance(
    weights: ArrayLike,
    mean: ArrayLike,
    covariance: ArrayLike,
    *,
    periods_per_year: float,
    risk_free_rate: float = 0.0,
) -> PortfolioPerformance:
    """All metrics of ``weights`` under per-bar ``mean`` and ``covariance``.

    >>> p = portfolio_performance([0.6, 0.4], [4e-4, 2e-4], [[1e-4, 2e-5], [2e-5, 5e-5]],
    ...                           periods_per_year=252, risk_free_rate=0.02)
    >>> round(p.expected_return, 4), round(p.risk, 4), round(p.sharpe, 3)
    (0.0806, 0.1162, 0.522)
    """
    w = np.asarray(weights, dtype=np.float64)
    mean_return = float(w @ np.asarray(mean, dtype=np.float64))
    variance = float(w @ np.asarray(covariance, dtype=np.float64) @ w)
    annual_return = periods_per_year * mean_return
    annual_risk = math.sqrt(max(periods_per_year * variance, 0.0))
    return PortfolioPerformance(
        mean_return=mean_return,
        variance=variance,
        expected_return=annual_return,
        risk=annual_risk,
        sharpe=sharpe_ratio(annual_return, annual_risk, risk_free_rate),
        periods_per_year=float(periods_per_year),
        risk_free_rate=float(risk_free_rate),
    )
