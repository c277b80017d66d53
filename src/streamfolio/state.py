"""Application services behind ``streamfolio init``, ``replay``, ``simulate`` and ``demo``.

They join configuration, files and the analytics core; the math itself lives in
:mod:`streamfolio.core` and :mod:`streamfolio.bootstrap`.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from streamfolio.bootstrap import (
    BlackLittermanInputs,
    View,
    black_litterman_initial_weights,
    daily_statistics,
    scaled_to_bar,
)
from streamfolio.config import PortfolioSettings, Settings
from streamfolio.core.moments import moments_from_prior, stats_record
from streamfolio.errors import DataError
from streamfolio.feeds.history import bundled_history_path, bundled_index_path, read_history
from streamfolio.feeds.simulate import Regime, simulate_ticks
from streamfolio.portfolios import policy_settings, portfolio_spec, weight_bounds
from streamfolio.replay import ReplayEngine, ReplayEvent, ReplayPortfolio, Tick

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _history_rows(
    path: Path, known: set[str] | None = None, *, ticks: bool = False
) -> list[tuple[int, str, float]]:
    history = read_history(path, known_tickers=known, ticks=ticks)
    return list(
        zip(
            (int(t) for t in history.times_ms),
            history.tickers,
            (float(p) for p in history.prices),
            strict=True,
        )
    )


def initial_state(
    settings: Settings,
    *,
    history: Path | None = None,
    index: Path | None = None,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """Initial statistics and weights of every configured portfolio, as schema-named JSON."""
    history_path = history or bundled_history_path()
    rows = _history_rows(history_path)
    progress(f"read {len(rows)} closes from {history_path}")
    index_closes: list[float] | None = None
    index_path = index or (bundled_index_path() if history is None else None)
    if index_path is not None:
        index_closes = [p for _, _, p in _history_rows(index_path)]
    exchange = settings.exchange
    sessions = float(exchange.trading_days_per_year)
    known = {t for _, t, _ in rows}
    out: list[dict[str, Any]] = []
    for portfolio in settings.portfolios:
        unknown = [t for t in portfolio.tickers if t not in known]
        if unknown:
            raise DataError(
                f"portfolio {portfolio.id}: no history for tickers {', '.join(unknown)}",
                str(history_path),
            )
        daily = daily_statistics(rows, portfolio.tickers)
        q = portfolio.periods_per_year_value(exchange)
        mean, cov = scaled_to_bar(daily, sessions, q)
        count = portfolio.prior_count or daily.count
        spec = portfolio_spec(portfolio, exchange)
        moments = moments_from_prior(mean, cov, count, spec.estimator, spec.half_life_bars)
        stats = stats_record(moments, portfolio.id, portfolio.tickers, daily.last_time_ms)
        stats["bar_seconds"] = portfolio.bar_seconds
        stats["kind"] = "initial"
        info: dict[str, Any]
        if portfolio.weights is not None:
            weights = dict(portfolio.weights)
            info = {"source": "configured weights"}
        else:
            weights, info = _black_litterman(portfolio, daily, sessions, index_closes)
        progress(
            f"{portfolio.id}: {daily.count} daily return vectors; weights from {info['source']}"
        )
        out.append(
            {
                "portfolio_id": portfolio.id,
                "stats": stats,
                "weights": {
                    "timestamp": daily.last_time_ms,
                    "portfolio_id": portfolio.id,
                    "weights": weights,
                    "reason": "initial",
                    "source": "init",
                },
                "black_litterman": info,
            }
        )
    return {"history": str(history_path), "portfolios": out}


def _black_litterman(
    portfolio: PortfolioSettings, daily: Any, sessions: float, index_closes: list[float] | None
) -> tuple[dict[str, float], dict[str, Any]]:
    bl = portfolio.initial_black_litterman
    assert bl is not None
    inputs = BlackLittermanInputs(
        market_caps=bl.market_caps,
        risk_aversion=bl.risk_aversion,
        tau=bl.tau,
        views=tuple(View(v.assets, v.expected_return, v.confidence) for v in bl.views),
    )
    result = black_litterman_initial_weights(
        daily,
        inputs,
        sessions_per_year=sessions,
        risk_free_rate=portfolio.risk_free_rate,
        gamma=portfolio.gamma,
        bounds=weight_bounds(portfolio),
        index_closes=index_closes,
    )
    info = {
        "source": "Black-Litterman: " + result.source,
        "risk_aversion": result.risk_aversion,
        "prior_returns": result.prior_returns,
        "market_weights": result.market_weights,
        "optimizer_status": result.result.status.value,
        "expected_return": result.result.expected_return,
        "volatility": result.result.volatility,
        "sharpe": result.result.sharpe,
    }
    return result.weights, info


def load_state(path: Path) -> dict[str, Any]:
    """Read a state file written by ``streamfolio init``."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read initial state: {error}", str(path)) from None
    if not isinstance(data, dict) or not isinstance(data.get("portfolios"), list):
        raise DataError(
            "not a state file from `streamfolio init` (no 'portfolios' list)", str(path)
        )
    return data


def run_replay(
    settings: Settings,
    *,
    prices: Path,
    state_path: Path | None,
    rebalance: bool = True,
    progress: Progress = _quiet,
) -> Iterator[ReplayEvent]:
    """Replay a tick file through every configured portfolio; yields events as emitted."""
    state = load_state(state_path) if state_path else initial_state(settings, progress=progress)
    by_id = {p["portfolio_id"]: p for p in state["portfolios"]}
    portfolios = []
    for portfolio in settings.portfolios:
        entry = by_id.get(portfolio.id)
        if entry is None:
            raise DataError(
                f"initial state has no portfolio {portfolio.id!r}; run `streamfolio init` again"
            )
        portfolios.append(
            ReplayPortfolio(
                spec=portfolio_spec(portfolio, settings.exchange),
                initial_stats=entry["stats"],
                initial_weights=entry["weights"]["weights"],
                policy=policy_settings(portfolio, settings.exchange) if rebalance else None,
            )
        )
    engine = ReplayEngine(
        portfolios, max_out_of_orderness_ms=settings.flink.max_out_of_orderness_ms
    )
    known = {t for p in settings.portfolios for t in p.tickers}
    ticks = (Tick(t, s, p) for t, s, p in _history_rows(prices, known, ticks=True))
    yield from engine.run(ticks)


def simulated_ticks_csv(
    settings: Settings,
    out: Path,
    *,
    bars: int,
    ticks_per_bar: int,
    regime_change: int | None,
    seed: int,
    progress: Progress = _quiet,
) -> int:
    """Write seeded ticks for every configured ticker, calibrated on the bundled history.

    The first regime uses the history's statistics at the first portfolio's bar size; from
    ``regime_change`` on (default: half-way; -1: never) the means turn to minus three times their
    magnitude, which drives Sharpe ratios below any sensible threshold.
    """
    rows = _history_rows(bundled_history_path())
    tickers = sorted({t for p in settings.portfolios for t in p.tickers})
    daily = daily_statistics(rows, tickers)
    first = settings.portfolios[0]
    q = first.periods_per_year_value(settings.exchange)
    mean, cov = scaled_to_bar(daily, float(settings.exchange.trading_days_per_year), q)
    last_close = {t: p for _, t, p in rows}
    change = bars // 2 if regime_change is None else regime_change
    regimes = [Regime(0, np.abs(mean) * 2.0, cov)]
    if change >= 0:
        regimes.append(Regime(change, -np.abs(mean) * 3.0 - np.sqrt(np.diag(cov)) * 0.05, cov))
    start = dt.datetime(2026, 10, 1, 9, 30, tzinfo=dt.UTC)
    start_ms = int(start.timestamp() * 1000)
    n = 0
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "ticker", "price"])
        for ms, ticker, price in simulate_ticks(
            tickers,
            [last_close[t] for t in tickers],
            regimes,
            start_ms=start_ms,
            bar_ms=first.bar_seconds * 1000,
            n_bars=bars,
            ticks_per_bar=ticks_per_bar,
            seed=seed,
        ):
            stamp = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            )
            writer.writerow([stamp.replace("+00:00", "Z"), ticker, repr(price)])
            n += 1
    progress(f"simulated {len(tickers)} tickers, {bars} bars, regime change at bar {change}")
    return n


def summarise(settings: Settings, events: list[ReplayEvent], echo: Callable[[str], None]) -> None:
    """Print, per portfolio, the last metrics and the rebalances of a replay."""
    last: dict[str, dict[str, Any]] = {}
    rebalances: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if event.kind == "metrics":
            last[event.key] = dict(event.record)
        elif event.kind == "rebalance":
            rebalances.setdefault(event.key, []).append(dict(event.record))
    header = ("portfolio", "sharpe", "threshold", "return", "risk", "bars")
    echo("{:<10} {:>8} {:>9} {:>8} {:>8} {:>6} rebalances".format(*header))
    for portfolio in settings.portfolios:
        m = last.get(portfolio.id)
        if m is None:
            echo(f"{portfolio.id:<10} {'n/a':>8}")
            continue
        count = len(rebalances.get(portfolio.id, []))
        echo(
            f"{portfolio.id:<10} {_num(m['sharpRatio']):>8} "
            f"{portfolio.policy.sharpe_threshold:>9.2f} {_num(m['expectedReturn']):>8} "
            f"{_num(m['risk']):>8} {m['count']:>6} {count}"
        )
    for pid, items in rebalances.items():
        for r in items:
            stamp = dt.datetime.fromtimestamp(r["timestamp"] / 1000, tz=dt.UTC).isoformat()
            echo(
                f"  {pid} rebalanced at {stamp}: {r['reason']}; expected sharpe "
                f"{_num(r['sharpe_before'])} -> {_num(r['sharpe_after'])}, "
                f"turnover {r['turnover']:.2f}"
            )


def _num(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def publish_state(settings: Settings, state: dict[str, Any], progress: Progress = _quiet) -> None:
    """Send each portfolio's definition (the portfolios topic), initial statistics and weights
    to their topics, the definition stamped as the statistics, and wait for acks."""
    from streamfolio.kafka.clients import RecordProducer
    from streamfolio.kafka.definitions import publish_definition
    from streamfolio.kafka.topics import contract
    from streamfolio.portfolios import definition_of

    producer = RecordProducer(settings.kafka, component="admin")
    stats_topic = contract(settings, "initial_stats")
    weights_topic = contract(settings, "weights")
    configured = {p.id: p for p in settings.portfolios}
    for entry in state["portfolios"]:
        stats = {k: v for k, v in entry["stats"].items()}
        portfolio = configured.get(entry["portfolio_id"])
        if portfolio is not None:
            publish_definition(
                producer, settings, definition_of(portfolio, int(stats["timestamp"]))
            )
        producer.send(stats_topic, stats, timestamp_ms=int(stats["timestamp"]))
        weights = entry["weights"]
        producer.send(weights_topic, weights, timestamp_ms=int(weights["timestamp"]))
    remaining = producer.flush(60)
    if remaining:
        raise DataError(
            f"{remaining} message(s) not acknowledged by {settings.kafka.bootstrap_servers}"
        )
    progress(
        f"published the definitions, initial statistics and weights of "
        f"{len(state['portfolios'])} portfolio(s) to {contract(settings, 'portfolios').name}, "
        f"{stats_topic.name} and {weights_topic.name}"
    )
