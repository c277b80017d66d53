"""The report's backtest page: equity curves, drawdowns and the comparison table, one HTML file.

``streamfolio backtest --out report.html`` writes it. It shares the store report's look and its
chart helpers (:mod:`~streamfolio.store.report_charts`: the aligned figures, the time axis, the
palette, ``data:`` URIs), so it is as self-contained: no script, stylesheet, font or image is
loaded from anywhere.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from streamfolio import __version__
from streamfolio.store.report import _CSS, _table, _td
from streamfolio.store.report_charts import (
    ImageFormat,
    TimeRange,
    _colour,
    _dress_time_axis,
    _figure,
    embed,
    instants,
)

if TYPE_CHECKING:
    from streamfolio.backtest.run import BacktestResult, PortfolioBacktest

__all__ = ["render_backtest", "write_backtest"]

_COLUMNS = (
    ("strategy", False),
    ("period", False),
    ("total return", True),
    ("annualised", True),
    ("volatility", True),
    ("Sharpe", True),
    ("Sortino", True),
    ("max drawdown", True),
    ("turnover", True),
    ("costs", True),
    ("rebalances", True),
)


def _pct(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.2%}"


def _ratio(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.2f}"


def _x_range(result: PortfolioBacktest) -> TimeRange:
    times = [int(t) for s in result.strategies for t in (s.times_ms[0], s.times_ms[-1])]
    lo, hi = instants([min(times), max(times)])
    return lo, hi


def equity_chart(result: PortfolioBacktest, zone: ZoneInfo) -> Figure:
    """Each strategy's value, from 1 at its first bar."""
    figure = _figure(3.8)
    ax = figure.add_subplot()
    for i, strategy in enumerate(result.strategies):
        width = 2.0 if strategy.key == "policy" else 1.2
        ax.plot(
            instants(strategy.times_ms.tolist()),
            strategy.values,
            color=_colour(i),
            lw=width,
            label=strategy.label,
        )
    ax.axhline(1.0, color="#888", lw=0.8, ls=":")
    ax.set_ylabel("value (start = 1)")
    ax.legend(loc="best", fontsize="small", frameon=False)
    _dress_time_axis(figure, _x_range(result), zone)
    return figure


def drawdown_chart(result: PortfolioBacktest, zone: ZoneInfo) -> Figure:
    """Each strategy's drawdown below its running peak."""
    figure = _figure(3.2)
    ax = figure.add_subplot()
    for i, strategy in enumerate(result.strategies):
        ax.plot(
            instants(strategy.times_ms.tolist()),
            strategy.drawdowns,
            color=_colour(i),
            lw=2.0 if strategy.key == "policy" else 1.1,
            label=strategy.label,
        )
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylabel("drawdown")
    ax.legend(loc="lower left", fontsize="small", frameon=False)
    _dress_time_axis(figure, _x_range(result), zone)
    return figure


def _comparison(result: PortfolioBacktest) -> str:
    rows = []
    for s in result.strategies:
        d: dict[str, Any] = s.as_dict()
        f = s.figures
        period = f"{d['first']} – {d['last']}" + (f" ({s.note})" if s.note else "")
        cells = [
            _td(s.label),
            _td(period, nowrap=True),
            _td(_pct(f.total_return), True),
            _td(_pct(f.annualised_return), True),
            _td(_pct(f.volatility), True),
            _td(_ratio(f.sharpe), True),
            _td(_ratio(f.sortino), True),
            _td(_pct(f.max_drawdown), True),
            _td(_pct(s.turnover), True),
            _td(_pct(s.costs), True),
            _td(str(s.rebalances), True),
        ]
        rows.append((cells, "rebalance" if s.key == "policy" else ""))
    return _table(_COLUMNS, rows)


def _sweep_table(sweep: list[dict[str, Any]], limit: int = 60) -> str:
    if not sweep:
        return ""
    figures = ("total_return", "annualised_return", "volatility", "max_drawdown", "costs")
    ratios = ("sharpe", "sortino")
    skip = {"bars", "portfolio_id"}
    keys = [k for k in sweep[0] if k not in skip]
    ranked = sorted(sweep, key=lambda r: -r["sharpe"] if math.isfinite(r["sharpe"]) else math.inf)
    rows = []
    for row in ranked[:limit]:
        cells = []
        for k in keys:
            value = row[k]
            if k in figures or k == "turnover":
                cells.append(_td(_pct(float(value)), True))
            elif k in ratios:
                cells.append(_td(_ratio(float(value)), True))
            else:
                cells.append(_td(str(value), isinstance(value, int | float)))
        rows.append((cells, ""))
    headers = [(k.replace("_", " "), k not in ("objective",)) for k in keys]
    shown = f"the best {limit} of {len(sweep)}" if len(sweep) > limit else f"all {len(sweep)}"
    return f"<p class='meta'>By Sharpe ratio, {shown} points.</p>" + _table(headers, rows)


def render_backtest(
    result: BacktestResult,
    *,
    timezone: str = "Africa/Casablanca",
    image_format: ImageFormat = "png",
) -> str:
    """The backtest page for ``result``: one HTML document, charts embedded."""
    zone = ZoneInfo(timezone)
    o = result.options
    sections = []
    for portfolio in result.portfolios:
        pid = html.escape(portfolio.portfolio_id)
        weights = ", ".join(f"{t} {w:.1%}" for t, w in portfolio.initial_weights.items())
        p = portfolio.policy
        policy = (
            f"objective {p.objective}, Sharpe threshold {p.sharpe_threshold:g}, band {p.band:g}, "
            f"cool-down {p.cooldown_ms / 1000:g} s, min improvement {p.min_improvement:g}, "
            f"max turnover {p.max_turnover:g}, gamma {p.gamma:g}"
        )
        equity = embed(equity_chart(portfolio, zone), f"{pid}: value over time", image_format)
        drawdown = embed(drawdown_chart(portfolio, zone), f"{pid}: drawdowns", image_format)
        sweep = [dict(r) for r in result.sweep if r.get("portfolio_id") == portfolio.portfolio_id]
        sweep_html = f"<h3>Sweep</h3>{_sweep_table(sweep)}" if sweep else ""
        sections.append(
            f"""<h2>Portfolio {pid}</h2>
<p class="meta">Tickers {html.escape(", ".join(portfolio.tickers))}. Initial weights (from before
the start): {html.escape(weights)}. Policy: {html.escape(policy)}.</p>
{_comparison(portfolio)}
<h3>Value</h3>
{equity}
<h3>Drawdowns</h3>
{drawdown}
{sweep_html}"""
        )
    start = dt.datetime.fromtimestamp(result.start_ms / 1000, tz=zone).strftime("%Y-%m-%d")
    lot = "no minimum lot" if o.lot is None else f"lots of {o.lot:g} shares"
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="streamfolio {html.escape(__version__)}">
<title>streamfolio backtest</title>
<style>{_CSS}</style>
</head>
<body>
<h1>Backtest: does the rebalancing pay?</h1>
<p class="meta">Prices: {html.escape(result.source)};
index: {html.escape(result.index_source or "none")}.
Initial statistics and weights from the prices before {html.escape(start)} only; the strategies
run from there, on bars of {o.bar_seconds} s. Costs: {html.escape(o.costs.describe())}; capital
{o.capital:,.0f}; {html.escape(lot)}. Every strategy starts invested at the close before the
start; turnover and costs (as a share of the starting value) count the trades after it.
Generated {generated} by streamfolio {html.escape(__version__)}.</p>
{"".join(sections)}
</body>
</html>
"""


def write_backtest(
    result: BacktestResult,
    out: Path,
    *,
    timezone: str = "Africa/Casablanca",
    image_format: ImageFormat = "png",
) -> None:
    """Write the backtest page of ``result`` to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_backtest(result, timezone=timezone, image_format=image_format), "utf-8")
