"""One backtest run: the initial state from before the split, then five strategies compared.

:func:`prepare_backtest` reads the ticks, places the split and computes each portfolio's initial
state exactly as ``streamfolio init`` does (:func:`streamfolio.state.initial_state`), from the
ticks before the split alone. :func:`run_backtest` then runs, per portfolio, the policy through
the replay engine and four benchmarks through the same accounting, and measures them all:

``policy``        the configured policy, as the live loop would decide (the replay's weights)
``buy_and_hold``  the initial weights, never traded again
``monthly``       back to the initial weights at every month's last session
``equal_weight``  1/n of each ticker, back to 1/n every month (DeMiguel et al.'s 1/N)
``masi``          the MASI index, where the index file covers the period (no costs)
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from streamfolio.backtest.accounting import HoldingsPath, simulate_holdings
from streamfolio.backtest.data import (
    ClosePanel,
    close_panel,
    read_ticks,
    split_start_ms,
    ticks_from_start,
    write_rows,
)
from streamfolio.backtest.results import (
    STRATEGY_LABELS,
    BacktestOptions,
    BacktestResult,
    PortfolioBacktest,
    StrategyResult,
    iso,
    session,
)
from streamfolio.backtest.strategies import month_end_rows, run_policy
from streamfolio.config import PortfolioSettings, Settings
from streamfolio.core.calendar import periods_per_year
from streamfolio.core.performance import performance_figures
from streamfolio.core.policy import PolicySettings
from streamfolio.core.portfolio import PortfolioSpec
from streamfolio.core.types import FloatArray
from streamfolio.errors import DataError
from streamfolio.portfolios import policy_settings, portfolio_spec
from streamfolio.replay import Tick

__all__ = [
    "STRATEGY_LABELS",
    "BacktestOptions",
    "BacktestResult",
    "PortfolioBacktest",
    "PreparedBacktest",
    "StrategyResult",
    "prepare_backtest",
    "run_backtest",
]

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True, slots=True)
class PreparedBacktest:
    """Everything a strategy run needs, computed once (and sent to sweep workers)."""

    settings: Settings
    ticks: tuple[Tick, ...]
    index_ticks: tuple[Tick, ...]
    start_ms: int
    state: Mapping[str, Any]
    source: str
    index_source: str | None

    def portfolio(self, portfolio_id: str) -> PortfolioSettings:
        return self.settings.portfolio(portfolio_id)

    def entry(self, portfolio_id: str) -> Mapping[str, Any]:
        """The initial state (``stats``, ``weights``) of ``portfolio_id``."""
        for entry in self.state["portfolios"]:
            if entry["portfolio_id"] == portfolio_id:
                return dict(entry)
        raise DataError(f"no initial state for portfolio {portfolio_id!r}")


def backtest_settings(settings: Settings, bar_seconds: int) -> Settings:
    """``settings`` with every portfolio on bars of ``bar_seconds`` (the data's bars).

    A configured ``periods_per_year`` is dropped (it belongs to the configured bar) and an
    ``ewm`` half-life is rescaled so that it spans the same time.
    """
    calendar = settings.exchange.calendar()
    new_q = periods_per_year(bar_seconds, calendar)
    portfolios = []
    for p in settings.portfolios:
        if p.bar_seconds == bar_seconds:
            portfolios.append(p)
            continue
        old_q = p.periods_per_year_value(settings.exchange)
        estimator = p.estimator
        if estimator.half_life_bars is not None:
            half_life = max(1.0, estimator.half_life_bars * new_q / old_q)
            estimator = estimator.model_copy(update={"half_life_bars": half_life})
        update = {"bar_seconds": bar_seconds, "periods_per_year": None, "estimator": estimator}
        portfolios.append(p.model_copy(update=update))
    return settings.model_copy(update={"portfolios": tuple(portfolios)})


def prepare_backtest(
    settings: Settings,
    *,
    prices: Path,
    index: Path | None,
    options: BacktestOptions,
    progress: Progress = _quiet,
) -> PreparedBacktest:
    """Read the ticks, split them, and compute the initial state from before the split."""
    from streamfolio.state import initial_state

    chosen = settings.portfolios
    if options.portfolio_ids:
        chosen = tuple(settings.portfolio(pid) for pid in options.portfolio_ids)
    settings = backtest_settings(
        settings.model_copy(update={"portfolios": chosen}), options.bar_seconds
    )
    known = {t for p in settings.portfolios for t in p.tickers}
    ticks = read_ticks(prices)
    ticks = [t for t in ticks if t.ticker in known]
    index_ticks = read_ticks(index) if index is not None else []
    start_ms = split_start_ms(
        ticks, start=options.start, split=options.split, timezone=settings.exchange.timezone
    )
    before = [t for t in ticks if t.event_time_ms < start_ms]
    if not before:
        raise DataError(f"no prices before the backtest's start {iso(start_ms)}", str(prices))
    first_day = dt.datetime.fromtimestamp(start_ms / 1000, tz=ZoneInfo(settings.exchange.timezone))
    progress(
        f"read {len(ticks)} prices from {prices}; initial state from the {len(before)} before "
        f"{first_day.date()}, backtest on the {len(ticks) - len(before)} from it"
    )
    with tempfile.TemporaryDirectory(prefix="streamfolio-backtest-") as tmp:
        history = Path(tmp) / "before.csv"
        write_rows(before, history)
        index_before = [t for t in index_ticks if t.event_time_ms < start_ms]
        index_path = None
        if len(index_before) >= 3:
            index_path = Path(tmp) / "index_before.csv"
            write_rows(index_before, index_path)
        state = initial_state(settings, history=history, index=index_path, progress=progress)
    return PreparedBacktest(
        settings=settings,
        ticks=tuple(ticks),
        index_ticks=tuple(index_ticks),
        start_ms=start_ms,
        state=state,
        source=str(prices),
        index_source=None if index is None else str(index),
    )


def policy_path(
    prepared: PreparedBacktest,
    portfolio_id: str,
    options: BacktestOptions,
    policy: PolicySettings | None = None,
) -> tuple[ClosePanel, HoldingsPath, int]:
    """The policy's holdings for one portfolio (``policy`` overrides the configured one)."""
    portfolio = prepared.portfolio(portfolio_id)
    exchange = prepared.settings.exchange
    spec = portfolio_spec(portfolio, exchange)
    chosen = policy if policy is not None else policy_settings(portfolio, exchange)
    entry = prepared.entry(portfolio_id)
    feed = ticks_from_start(prepared.ticks, prepared.start_ms, set(portfolio.tickers))
    panel = close_panel(feed, portfolio.tickers, spec.bar_ms)
    run = run_policy(
        spec,
        chosen,
        entry["stats"],
        entry["weights"]["weights"],
        feed,
        max_out_of_orderness_ms=prepared.settings.flink.max_out_of_orderness_ms,
    )
    rows = panel.row_of_bar()
    targets = {rows[k]: w for k, w in run.targets.items() if k in rows}
    path = _simulate(panel, _initial(entry, spec), targets, options)
    return panel, path, run.rebalances


def _initial(entry: Mapping[str, Any], spec: PortfolioSpec) -> FloatArray:
    weights = entry["weights"]["weights"]
    return np.array([float(weights[t]) for t in spec.tickers], dtype=np.float64)


def _simulate(
    panel: ClosePanel, start: FloatArray, targets: Mapping[int, FloatArray], o: BacktestOptions
) -> HoldingsPath:
    return simulate_holdings(
        panel.closes,
        start,
        targets,
        cost_rate=o.costs.rate,
        initial_value=o.capital,
        lot=o.lot,
    )


def _result(
    key: str, panel: ClosePanel, path: HoldingsPath, o: BacktestOptions, q: float, rf: float
) -> StrategyResult:
    values = path.values / o.capital
    return StrategyResult(
        key=key,
        times_ms=panel.times_ms,
        values=values,
        figures=performance_figures(values, q, rf),
        turnover=path.turnover,
        costs=path.costs / o.capital,
        rebalances=len(path.trades),
    )


def _index_result(
    prepared: PreparedBacktest, panel: ClosePanel, q: float, rf: float
) -> StrategyResult | None:
    """The index over the rows it covers (forward-filled), from its first close on."""
    if not prepared.index_ticks:
        return None
    ticker = prepared.index_ticks[0].ticker
    feed = ticks_from_start(prepared.index_ticks, prepared.start_ms, {ticker})
    closes: dict[int, float] = {}
    for tick in feed:
        closes[tick.event_time_ms // panel.bar_ms] = tick.price
    known = sorted(closes)
    series = np.full(len(panel.bars), np.nan)
    position, last = 0, math.nan
    for i, k in enumerate(panel.bars):
        while position < len(known) and known[position] <= k:
            last = closes[known[position]]
            position += 1
        series[i] = last
    covered = np.flatnonzero(np.isfinite(series))
    if covered.size < 3:
        return None
    first = int(covered[0])
    values = series[first:] / series[first]
    note = "" if first == 0 else f"index from {session(int(panel.times_ms[first]))} only"
    return StrategyResult(
        key="masi" if ticker == "MASI" else ticker.lower(),
        times_ms=panel.times_ms[first:],
        values=values,
        figures=performance_figures(values, q, rf),
        turnover=0.0,
        costs=0.0,
        rebalances=0,
        note=note,
    )


def compare_portfolio(
    prepared: PreparedBacktest, portfolio_id: str, options: BacktestOptions
) -> PortfolioBacktest:
    """The five strategies of one portfolio, over the same bars and costs."""
    portfolio = prepared.portfolio(portfolio_id)
    exchange = prepared.settings.exchange
    spec = portfolio_spec(portfolio, exchange)
    q, rf = spec.periods_per_year, spec.risk_free_rate
    panel, policy, _ = policy_path(prepared, portfolio_id, options)
    start = _initial(prepared.entry(portfolio_id), spec)
    month_ends = month_end_rows(panel.times_ms, exchange.timezone)
    equal = np.full(len(spec.tickers), 1.0 / len(spec.tickers))
    paths = {
        "policy": policy,
        "buy_and_hold": _simulate(panel, start, {}, options),
        "monthly": _simulate(panel, start, dict.fromkeys(month_ends, start), options),
        "equal_weight": _simulate(panel, equal, dict.fromkeys(month_ends, equal), options),
    }
    results = [_result(key, panel, path, options, q, rf) for key, path in paths.items()]
    index = _index_result(prepared, panel, q, rf)
    if index is not None:
        results.append(index)
    return PortfolioBacktest(
        portfolio_id=portfolio_id,
        tickers=spec.tickers,
        initial_weights=dict(zip(spec.tickers, start.tolist(), strict=True)),
        periods_per_year=q,
        risk_free_rate=rf,
        strategies=tuple(results),
        policy=policy_settings(portfolio, exchange),
    )


def run_backtest(
    prepared: PreparedBacktest,
    options: BacktestOptions,
    *,
    progress: Progress = _quiet,
    sweep: Sequence[Mapping[str, Any]] = (),
) -> BacktestResult:
    """Compare the strategies of every prepared portfolio."""
    results = []
    for portfolio in prepared.settings.portfolios:
        result = compare_portfolio(prepared, portfolio.id, options)
        policy = result.strategy("policy")
        rebalances = 0 if policy is None else policy.rebalances
        progress(
            f"{portfolio.id}: {len(result.strategies)} strategies, policy rebalanced {rebalances}x"
        )
        results.append(result)
    return BacktestResult(
        source=prepared.source,
        index_source=prepared.index_source,
        start_ms=prepared.start_ms,
        options=options,
        portfolios=tuple(results),
        sweep=tuple(sweep),
    )
