"""What a backtest was asked and what it found: options, each strategy's path and figures.

:class:`BacktestOptions` is the question (split, costs, capital, lot, bar, portfolios);
:class:`StrategyResult` one strategy's values and figures; :class:`PortfolioBacktest` the
comparison for one portfolio; :class:`BacktestResult` a whole run, with ``as_dict`` for
``--json``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streamfolio.backtest.costs import CSE_COSTS, CostSchedule
from streamfolio.backtest.data import IntArray
from streamfolio.core.performance import PerformanceFigures, drawdown_series
from streamfolio.core.policy import PolicySettings
from streamfolio.core.types import FloatArray

__all__ = [
    "STRATEGY_LABELS",
    "BacktestOptions",
    "BacktestResult",
    "PortfolioBacktest",
    "StrategyResult",
    "iso",
    "session",
]

STRATEGY_LABELS = {
    "policy": "policy (as configured)",
    "buy_and_hold": "buy and hold",
    "monthly": "monthly to initial",
    "equal_weight": "equal weight (monthly)",
    "masi": "MASI index",
}


@dataclass(frozen=True, slots=True)
class BacktestOptions:
    """What a backtest is asked: where to split, costs, capital, lot, bar, portfolios."""

    start: dt.date | None = None
    split: float = 0.5
    costs: CostSchedule = CSE_COSTS
    capital: float = 1_000_000.0
    lot: float | None = None
    bar_seconds: int = 86_400
    portfolio_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StrategyResult:
    """One strategy's path (values from 1.0) and figures."""

    key: str
    times_ms: IntArray = field(repr=False)
    values: FloatArray = field(repr=False)
    figures: PerformanceFigures
    turnover: float
    costs: float
    """Costs paid, as a fraction of the starting value."""
    rebalances: int
    note: str = ""

    @property
    def label(self) -> str:
        return STRATEGY_LABELS.get(self.key, self.key)

    @property
    def drawdowns(self) -> FloatArray:
        return drawdown_series(self.values)

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.key,
            "label": self.label,
            **self.figures.as_dict(),
            "turnover": self.turnover,
            "costs": self.costs,
            "rebalances": self.rebalances,
            "first": session(int(self.times_ms[0])),
            "last": session(int(self.times_ms[-1])),
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class PortfolioBacktest:
    """The comparison for one portfolio."""

    portfolio_id: str
    tickers: tuple[str, ...]
    initial_weights: dict[str, float]
    periods_per_year: float
    risk_free_rate: float
    strategies: tuple[StrategyResult, ...]
    policy: PolicySettings

    def strategy(self, key: str) -> StrategyResult | None:
        return next((s for s in self.strategies if s.key == key), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "portfolio_id": self.portfolio_id,
            "tickers": list(self.tickers),
            "initial_weights": self.initial_weights,
            "periods_per_year": self.periods_per_year,
            "risk_free_rate": self.risk_free_rate,
            "policy": _policy_dict(self.policy),
            "strategies": [s.as_dict() for s in self.strategies],
        }


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """A whole run: the comparisons of every portfolio, and a sweep's rows if one was asked."""

    source: str
    index_source: str | None
    start_ms: int
    options: BacktestOptions
    portfolios: tuple[PortfolioBacktest, ...]
    sweep: tuple[Mapping[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        o = self.options
        return {
            "prices": self.source,
            "index": self.index_source,
            "start": iso(self.start_ms),
            "costs": {"rate_per_side": o.costs.rate, "schedule": o.costs.describe()},
            "capital": o.capital,
            "lot": o.lot,
            "bar_seconds": o.bar_seconds,
            "portfolios": [p.as_dict() for p in self.portfolios],
            "sweep": [dict(row) for row in self.sweep],
        }


def iso(time_ms: int) -> str:
    return dt.datetime.fromtimestamp(time_ms / 1000, tz=dt.UTC).isoformat()


def session(bar_end_ms: int) -> str:
    """The UTC date of the bar ending at ``bar_end_ms`` (its session, for daily bars)."""
    return iso(bar_end_ms - 1)[:10]


def _policy_dict(policy: PolicySettings) -> dict[str, Any]:
    return {
        "sharpe_threshold": policy.sharpe_threshold,
        "band": policy.band,
        "cooldown_ms": policy.cooldown_ms,
        "min_improvement": policy.min_improvement,
        "max_turnover": policy.max_turnover,
        "gamma": policy.gamma,
        "objective": policy.objective,
    }
