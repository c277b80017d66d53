"""Portfolio metrics from weights and return statistics (SEMANTICS §6).

Per bar the portfolio's expected return is ``wᵀμ`` and its variance ``wᵀΣw``. With
``q = periods_per_year``: annual expected return ``E = q·wᵀμ``, risk ``R = √(q·wᵀΣw)`` and Sharpe
``S = (E − r_f) / R`` with ``r_f`` the annual risk-free rate. Inputs are per-bar statistics.

:func:`performance_figures` computes them for any number of portfolios at once (the job's
shards); :func:`portfolio_performance` is its one-portfolio case, so both give the same bits.
Its sums run left to right (``cumsum``'s order), never through BLAS, whose rounding depends on
the shapes and the memory's alignment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamfolio.core.types import ArrayLike, FloatArray


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


def _sum_left_to_right(values: FloatArray) -> FloatArray:
    """The sum over the last axis in index order: the same bits for a row whatever the others."""
    result: FloatArray = np.cumsum(values, axis=-1)[..., -1]
    return result


def performance_figures(
    weights: FloatArray,
    mean: FloatArray,
    covariance: FloatArray,
    periods_per_year: float | FloatArray,
    risk_free_rate: float | FloatArray = 0.0,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """``(wᵀμ, wᵀΣw, E, R, S)`` of each row: ``weights`` and ``mean`` ``(…, d)``, ``covariance``
    ``(…, d, d)``, the annualisation and risk-free rate per row or for all.

    >>> figures = performance_figures(np.array([[1.0, 0.0], [0.5, 0.5]]), np.full((2, 2), 1e-3),
    ...                               np.array([np.eye(2) * 1e-4] * 2), 100.0)
    >>> [round(float(v), 6) for v in figures[3]]          # risk: √(100 · wᵀΣw)
    [0.1, 0.070711]
    """
    mean_return = _sum_left_to_right(weights * mean)
    variance = _sum_left_to_right(weights * _sum_left_to_right(covariance * weights[..., None, :]))
    annual_return = periods_per_year * mean_return
    annual_risk = np.sqrt(np.maximum(periods_per_year * variance, 0.0))
    positive = annual_risk > 0
    sharpe = np.where(
        positive, (annual_return - risk_free_rate) / np.where(positive, annual_risk, 1.0), np.nan
    )
    return mean_return, variance, annual_return, annual_risk, sharpe


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
    figures = performance_figures(
        np.asarray(weights, dtype=np.float64),
        np.asarray(mean, dtype=np.float64),
        np.asarray(covariance, dtype=np.float64),
        float(periods_per_year),
        float(risk_free_rate),
    )
    mean_return, variance, annual_return, annual_risk, sharpe = (float(f) for f in figures)
    return PortfolioPerformance(
        mean_return=mean_return,
        variance=variance,
        expected_return=annual_return,
        risk=annual_risk,
        sharpe=sharpe,
        periods_per_year=float(periods_per_year),
        risk_free_rate=float(risk_free_rate),
    )
