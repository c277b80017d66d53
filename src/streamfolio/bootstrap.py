"""Initial state from history: each portfolio's starting statistics and Black-Litterman weights.

The statistics are those of the daily log returns between consecutive closes, computed by the
same bar → return-vector → Welford path the streaming job uses (one bar = one calendar day), so
a ticker that did not trade contributes 0 and tickers listed later only count once all of the
portfolio's tickers have a close.

**Scaling.** A daily history seeds portfolios whose bars are shorter (e.g. 60 s). Means and
covariances are scaled to the portfolio's bar by ``q_history / q_bar`` (square-root-of-time
rule), where ``q_history`` is the exchange's sessions per year and ``q_bar`` the portfolio's
``periods_per_year``, so the annualised figures do not depend on the bar size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamfolio.core.black_litterman import (
    black_litterman_weights,
    market_implied_prior_returns,
    market_implied_risk_aversion,
)
from streamfolio.core.moments import WelfordMoments
from streamfolio.core.optimize import Bounds, OptimizationResult
from streamfolio.core.returns import PortfolioReturns, chain_bar, iter_bars
from streamfolio.core.types import FloatArray
from streamfolio.errors import DataError, OptimizationError

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class DailyStatistics:
    """Mean and unbiased covariance of daily log returns, with the number of return vectors."""

    tickers: tuple[str, ...]
    mean: FloatArray
    covariance: FloatArray
    count: int
    first_time_ms: int
    last_time_ms: int


def daily_statistics(
    ticks: Iterable[tuple[int, str, float]], tickers: Sequence[str]
) -> DailyStatistics:
    """Statistics of ``tickers`` from time-ordered ``(time_ms, ticker, close)`` history rows."""
    wanted = set(tickers)
    returns = PortfolioReturns(tickers)
    moments = WelfordMoments(len(tickers))
    chains: dict[str, Any] = {}
    first = last = None
    for k, closes in iter_bars(((t, s, p) for t, s, p in ticks if s in wanted), DAY_MS):
        vector = returns.on_bar(chain_bar(chains, k, closes))
        if vector is None:
            continue
        moments.update(vector)
        first = k * DAY_MS if first is None else first
        last = (k + 1) * DAY_MS
    if moments.n < 2:
        waiting = ", ".join(returns.waiting_for) or "none"
        raise DataError(
            f"history gives {moments.n} return vectors for tickers {', '.join(tickers)}; "
            "at least 2 "
            f"are needed (tickers without any close: {waiting})"
        )
    return DailyStatistics(
        tuple(tickers), moments.mean, moments.covariance, moments.n, int(first or 0), int(last or 0)
    )


@dataclass(frozen=True, slots=True)
class View:
    """An investor view: ``Σ coefficient·return(asset) = annual_return``, with a confidence."""

    coefficients: Mapping[str, float]
    annual_return: float
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class BlackLittermanInputs:
    market_caps: Mapping[str, float] | None = None
    risk_aversion: float | None = None
    tau: float = 0.05
    views: Sequence[View] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class InitialWeights:
    weights: dict[str, float]
    result: OptimizationResult
    risk_aversion: float
    prior_returns: dict[str, float]
    market_weights: dict[str, float]
    source: str


def black_litterman_initial_weights(
    stats: DailyStatistics,
    inputs: BlackLittermanInputs,
    *,
    sessions_per_year: float,
    risk_free_rate: float,
    gamma: float,
    bounds: Bounds,
    index_closes: Sequence[float] | None = None,
) -> InitialWeights:
    """Black-Litterman weights from daily statistics, market caps and views.

    Without market caps the market prior is equal-weighted. Without a given risk aversion it is
    estimated from the index closes (the MASI), else 2.5, a common textbook value.
    """
    tickers = stats.tickers
    annual_cov = stats.covariance * sessions_per_year
    if inputs.market_caps:
        caps = np.array([float(inputs.market_caps.get(t, 0.0)) for t in tickers])
        source = "market caps"
    else:
        caps = np.ones(len(tickers))
        source = "equal-weight market prior (no market caps configured)"
    if inputs.risk_aversion is not None:
        delta = float(inputs.risk_aversion)
    elif index_closes is not None and len(index_closes) >= 3:
        delta = market_implied_risk_aversion(
            np.asarray(index_closes, dtype=np.float64), sessions_per_year, risk_free_rate
        )
        source += "; risk aversion from the index history"
    else:
        delta = 2.5
        source += "; default risk aversion 2.5"
    if not (delta > 0 and math.isfinite(delta)):
        # A falling index gives a negative δ, which would invert the prior; fall back.
        source += f"; implied risk aversion {delta:.3g} is not positive, used 2.5"
        delta = 2.5
    pi = market_implied_prior_returns(caps, delta, annual_cov, risk_free_rate)
    P = Q = confidences = None
    if inputs.views:
        index = {t: i for i, t in enumerate(tickers)}
        P = np.zeros((len(inputs.views), len(tickers)))
        for row, view in enumerate(inputs.views):
            for ticker, coefficient in view.coefficients.items():
                P[row, index[ticker]] = coefficient
        Q = np.array([v.annual_return for v in inputs.views])
        if all(v.confidence is not None for v in inputs.views):
            confidences = np.array([float(v.confidence or 0.0) for v in inputs.views])
    result = black_litterman_weights(
        annual_cov,
        pi,
        P,
        Q,
        view_confidences=confidences,
        tau=inputs.tau,
        risk_free_rate=risk_free_rate,
        gamma=gamma,
        bounds=bounds,
    )
    if result.weights is None:
        raise OptimizationError(f"Black-Litterman optimisation found no weights: {result.message}")
    weights = _clean(dict(zip(tickers, result.weights.tolist(), strict=True)))
    return InitialWeights(
        weights=weights,
        result=result,
        risk_aversion=delta,
        prior_returns=dict(zip(tickers, pi.tolist(), strict=True)),
        market_weights=dict(zip(tickers, (caps / caps.sum()).tolist(), strict=True)),
        source=source,
    )


def _clean(weights: dict[str, float]) -> dict[str, float]:
    """Clip solver dust (|w| < 1e-12) to 0 and renormalise so the weights sum to exactly 1."""
    clipped = {t: (0.0 if abs(w) < 1e-12 else max(w, 0.0)) for t, w in weights.items()}
    total = math.fsum(clipped.values())
    return {t: w / total for t, w in clipped.items()}


def scaled_to_bar(
    stats: DailyStatistics, sessions_per_year: float, periods_per_year: float
) -> tuple[FloatArray, FloatArray]:
    """Daily mean and covariance scaled to a bar with ``periods_per_year`` bars a year."""
    factor = sessions_per_year / periods_per_year
    return stats.mean * factor, stats.covariance * factor
