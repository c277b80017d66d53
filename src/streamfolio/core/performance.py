"""What a portfolio earned: returns, risk and drawdown figures of a value series.

A backtest (:mod:`streamfolio.backtest`) produces one value per bar; these functions turn that
series into the figures a portfolio manager compares strategies by. They are pure numpy so that
the same definitions serve every engine and are checked against hand-computed cases.

Conventions, the usual ones (PyPortfolioOpt, empyrical, quantstats):

- returns are *simple* bar returns ``r_t = V_t / V_{t−1} − 1``;
- annualised return is geometric: ``(V_T / V_0)^(q / T) − 1`` for ``T`` bars and ``q`` bars a
  year; volatility is ``std(r, ddof=1)·√q``;
- the risk-free rate is annual and taken per bar as ``r_f / q`` (as the live metrics do);
- Sharpe is ``mean(r − r_f/q) / std(r)·√q``; Sortino divides by the downside deviation
  ``√mean(min(r − r_f/q, 0)²)`` instead (all bars in the mean, as Sortino & Price 1994);
- drawdowns are fractions ``V_t / max_{s≤t} V_s − 1``, so they are ``≤ 0``; the maximum
  drawdown is the most negative one.

Undefined figures (a single value, zero volatility) are NaN rather than errors: a flat strategy
is a legitimate comparison.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from streamfolio.core.types import ArrayLike, FloatArray

__all__ = [
    "PerformanceFigures",
    "annualised_return",
    "annualised_volatility",
    "drawdown_series",
    "max_drawdown",
    "performance_figures",
    "sharpe_ratio",
    "simple_returns",
    "sortino_ratio",
    "total_return",
    "total_turnover",
]


def _values(values: ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"values must be a 1-D series, got shape {array.shape}")
    return array


def simple_returns(values: ArrayLike) -> FloatArray:
    """Bar-to-bar simple returns ``V_t / V_{t−1} − 1`` (one fewer than the values).

    >>> simple_returns([100, 110, 99]).round(6).tolist()
    [0.1, -0.1]
    """
    v = _values(values)
    returns: FloatArray = v[1:] / v[:-1] - 1.0
    return returns


def total_return(values: ArrayLike) -> float:
    """``V_T / V_0 − 1``; NaN for fewer than one value.

    >>> round(total_return([100, 110, 99]), 6)
    -0.01
    """
    v = _values(values)
    if v.size == 0:
        return math.nan
    return float(v[-1] / v[0] - 1.0)


def annualised_return(values: ArrayLike, periods_per_year: float) -> float:
    """Geometric annual return ``(V_T / V_0)^(q / T) − 1`` over ``T`` bars.

    >>> round(annualised_return([100, 110, 121], periods_per_year=2), 6)   # 10 % a half-year
    0.21
    """
    v = _values(values)
    bars = v.size - 1
    if bars < 1 or v[0] <= 0 or v[-1] < 0:
        return math.nan
    return float((v[-1] / v[0]) ** (periods_per_year / bars) - 1.0)


def annualised_volatility(returns: ArrayLike, periods_per_year: float) -> float:
    """``std(r, ddof=1)·√q``; NaN for fewer than two returns.

    >>> round(annualised_volatility([0.01, -0.01], periods_per_year=4), 6)
    0.028284
    """
    r = _values(returns)
    if r.size < 2:
        return math.nan
    return float(np.std(r, ddof=1) * math.sqrt(periods_per_year))


def sharpe_ratio(returns: ArrayLike, periods_per_year: float, risk_free_rate: float = 0.0) -> float:
    """Annualised Sharpe ratio ``mean(r − r_f/q) / std(r)·√q``; NaN when ``std`` is 0.

    >>> round(sharpe_ratio([0.02, 0.0, 0.01], periods_per_year=4), 6)
    2.0
    """
    r = _values(returns)
    if r.size < 2:
        return math.nan
    deviation = float(np.std(r, ddof=1))
    if deviation == 0.0:
        return math.nan
    excess = float(np.mean(r)) - risk_free_rate / periods_per_year
    return excess / deviation * math.sqrt(periods_per_year)


def sortino_ratio(
    returns: ArrayLike, periods_per_year: float, risk_free_rate: float = 0.0
) -> float:
    """Annualised Sortino ratio: mean excess return over the downside deviation, ``·√q``.

    The downside deviation is ``√mean(min(r − r_f/q, 0)²)`` over every bar; NaN when no bar
    falls below the risk-free return.

    >>> round(sortino_ratio([0.02, -0.01, 0.02], periods_per_year=1), 6)   # 0.01 / √(0.0001/3)
    1.732051
    """
    r = _values(returns)
    if r.size == 0:
        return math.nan
    excess = r - risk_free_rate / periods_per_year
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    if downside == 0.0:
        return math.nan
    return float(np.mean(excess)) / downside * math.sqrt(periods_per_year)


def drawdown_series(values: ArrayLike) -> FloatArray:
    """``V_t / max_{s≤t} V_s − 1`` at every bar (0 at a new high, negative below it).

    >>> drawdown_series([100, 120, 90, 130]).round(4).tolist()
    [0.0, 0.0, -0.25, 0.0]
    """
    v = _values(values)
    if v.size == 0:
        return v.copy()
    drawdowns: FloatArray = v / np.maximum.accumulate(v) - 1.0
    return drawdowns


def max_drawdown(values: ArrayLike) -> float:
    """The most negative drawdown (a fraction ``≤ 0``); 0 for a series that never falls.

    >>> max_drawdown([100, 120, 90, 130, 65])
    -0.5
    """
    drawdowns = drawdown_series(values)
    return float(drawdowns.min()) if drawdowns.size else math.nan


def total_turnover(traded_values: ArrayLike, portfolio_values: ArrayLike) -> float:
    """Sum of one-way turnovers ``traded / (2·V)`` over the trades.

    ``traded_values[i]`` is the gross value bought plus sold in trade ``i`` and
    ``portfolio_values[i]`` the portfolio's value then; moving from ``[0.5, 0.5]`` to
    ``[0.8, 0.2]`` trades 0.6 of the value, a one-way turnover of 0.3.

    >>> total_turnover([60.0, 20.0], [100.0, 100.0])
    0.4
    """
    traded = _values(traded_values)
    value = _values(portfolio_values)
    if traded.shape != value.shape:
        raise ValueError("one portfolio value per trade")
    if traded.size == 0:
        return 0.0
    return float(np.sum(traded / (2.0 * value)))


@dataclass(frozen=True, slots=True)
class PerformanceFigures:
    """The figures of one strategy over one period, as the comparison table shows them."""

    total_return: float
    annualised_return: float
    volatility: float
    sharpe: float
    sortino: float
    max_drawdown: float
    bars: int

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers by name (NaN stays NaN)."""
        return asdict(self)


def performance_figures(
    values: ArrayLike, periods_per_year: float, risk_free_rate: float = 0.0
) -> PerformanceFigures:
    """Every figure of a value series at once.

    >>> f = performance_figures([100, 110, 99, 108.9], periods_per_year=3)
    >>> round(f.total_return, 4), round(f.max_drawdown, 4), f.bars
    (0.089, -0.1, 3)
    """
    v = _values(values)
    returns = simple_returns(v) if v.size > 1 else np.empty(0)
    return PerformanceFigures(
        total_return=total_return(v),
        annualised_return=annualised_return(v, periods_per_year),
        volatility=annualised_volatility(returns, periods_per_year),
        sharpe=sharpe_ratio(returns, periods_per_year, risk_free_rate),
        sortino=sortino_ratio(returns, periods_per_year, risk_free_rate),
        max_drawdown=max_drawdown(v),
        bars=max(v.size - 1, 0),
    )
