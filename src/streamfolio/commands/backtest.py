"""``streamfolio backtest``: does the rebalancing pay? The live policy on history, with costs,
against buy-and-hold, monthly rebalancing, equal weight and the MASI."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from streamfolio.cli_support import ConfigOption, command_errors, load_settings, say

if TYPE_CHECKING:
    from streamfolio.backtest.run import BacktestResult
    from streamfolio.config import Settings

__all__ = ["backtest", "format_table"]


def backtest(
    config: ConfigOption = None,
    prices: Annotated[
        Path | None,
        typer.Option(
            help="Ticks or closes, CSV `time,ticker,price[,volume]`. Default: the bundled CSE "
            "daily history (2023-04 to 2026-09)."
        ),
    ] = None,
    index: Annotated[
        Path | None,
        typer.Option(
            help="Index closes for the 5th comparison (same layout). Default with the bundled "
            "history: the bundled MASI (from 2025-12 only)."
        ),
    ] = None,
    start: Annotated[
        dt.datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            help="First day of the backtest; the initial state uses only prices before it.",
        ),
    ] = None,
    split: Annotated[
        float,
        typer.Option(
            help="Without --start: the fraction of trading days kept for the initial state."
        ),
    ] = 0.5,
    costs: Annotated[
        str,
        typer.Option(
            help="Costs per side of a trade: `cse` (brokerage 0.6 % + exchange 0.1 % + "
            "settlement 0.2 %, VAT 10 %: 0.99 %), a fraction (0.004), `25bp` or `0.4%`."
        ),
    ] = "cse",
    capital: Annotated[float, typer.Option(min=1.0, help="Starting value, in MAD.")] = 1_000_000.0,
    lot: Annotated[
        float | None, typer.Option(help="Minimum lot: shares are bought in whole lots of this.")
    ] = None,
    portfolio: Annotated[
        list[str] | None, typer.Option(help="Only this portfolio (repeat for several).")
    ] = None,
    objective: Annotated[
        str | None,
        typer.Option(
            help="Override the portfolios' objective: max_sharpe, min_volatility, "
            "efficient_risk:VOL or efficient_return:RET (annual decimals)."
        ),
    ] = None,
    bar_seconds: Annotated[
        int, typer.Option(help="Bar of the backtest (the bundled history is daily: 86400).")
    ] = 86_400,
    sweep: Annotated[
        list[str] | None,
        typer.Option(
            help="Grid over the policy, NAME=V1,V2 (repeat): sharpe_threshold, gamma, "
            "cooldown_days, max_turnover, band, min_improvement, objective; or `default`."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the figures as JSON on stdout.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Write the HTML report (charts embedded) here.")
    ] = None,
) -> None:
    """Backtest the rebalancing policy on real history, with costs, against four benchmarks.

    The policy's decisions come from the replay engine (the streaming job's semantics); the
    initial statistics and weights are computed as `streamfolio init` does, from the prices
    before the start only. Compared: the policy; buy-and-hold of the initial weights; monthly
    rebalancing to them; equal weight (monthly); the MASI index where it covers the period.
    """
    from streamfolio.backtest.costs import parse_costs
    from streamfolio.backtest.run import BacktestOptions, prepare_backtest, run_backtest
    from streamfolio.backtest.sweep import parse_sweep, run_sweep
    from streamfolio.feeds.history import bundled_history_path, bundled_index_path

    with command_errors():
        settings = _with_objective(load_settings(config), objective)
        grid = parse_sweep(sweep) if sweep else None
        options = BacktestOptions(
            start=None if start is None else start.date(),
            split=split,
            costs=parse_costs(costs),
            capital=capital,
            lot=lot,
            bar_seconds=bar_seconds,
            portfolio_ids=tuple(portfolio or ()),
        )
        prices_path = prices or bundled_history_path()
        index_path = index or (bundled_index_path() if prices is None else None)
        prepared = prepare_backtest(
            settings, prices=prices_path, index=index_path, options=options, progress=say
        )
        rows = run_sweep(prepared, options, grid, progress=say) if grid else []
        result = run_backtest(prepared, options, progress=say, sweep=rows)
        if out is not None:
            from streamfolio.store.report_backtest import write_backtest

            write_backtest(result, out, timezone=settings.exchange.timezone)
            say(f"wrote the backtest report to {out}")
    if as_json:
        typer.echo(json.dumps(_finite(result.as_dict()), indent=2))
    else:
        typer.echo(format_table(result))


def _with_objective(settings: Settings, objective: str | None) -> Settings:
    """``settings`` with every portfolio's objective replaced by ``--objective``."""
    if objective is None:
        return settings
    from pydantic import ValidationError

    from streamfolio.config.portfolio import ObjectiveSettings
    from streamfolio.errors import UsageError

    kind, _, target = objective.partition(":")
    fields: dict[str, Any] = {"kind": kind.strip()}
    try:
        if kind.strip() == "efficient_risk" and target:
            fields["target_volatility"] = float(target)
        elif kind.strip() == "efficient_return" and target:
            fields["target_return"] = float(target)
        chosen = ObjectiveSettings.model_validate(fields)
    except (ValueError, ValidationError) as error:
        first = error.errors()[0]["msg"] if isinstance(error, ValidationError) else str(error)
        raise UsageError(f"--objective {objective!r}: {first}") from None
    portfolios = tuple(p.model_copy(update={"objective": chosen}) for p in settings.portfolios)
    return settings.model_copy(update={"portfolios": portfolios})


def _finite(value: Any) -> Any:
    """NaN and infinities as null, so the JSON is standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _pct(value: float) -> str:
    return f"{value:.1%}" if math.isfinite(value) else "n/a"


def _ratio(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "n/a"


def format_table(result: BacktestResult) -> str:
    """The comparison (and sweep) as plain-text tables, one block per portfolio."""
    lines = [f"costs {result.options.costs.describe()}"]
    header = (
        f"{'strategy':<24} {'return':>8} {'annual':>8} {'vol':>7} {'Sharpe':>7} "
        f"{'Sortino':>8} {'max DD':>8} {'turnover':>9} {'costs':>7} {'rebal':>6}"
    )
    for portfolio in result.portfolios:
        first = portfolio.strategies[0].as_dict()
        lines += ["", f"{portfolio.portfolio_id}: {first['first']} to {first['last']}", header]
        for s in portfolio.strategies:
            f = s.figures
            lines.append(
                f"{s.label:<24} {_pct(f.total_return):>8} {_pct(f.annualised_return):>8} "
                f"{_pct(f.volatility):>7} {_ratio(f.sharpe):>7} {_ratio(f.sortino):>8} "
                f"{_pct(f.max_drawdown):>8} {_pct(s.turnover):>9} {_pct(s.costs):>7} "
                f"{s.rebalances:>6}" + (f"  ({s.note})" if s.note else "")
            )
        rows = [r for r in result.sweep if r.get("portfolio_id") == portfolio.portfolio_id]
        if rows:
            lines += ["", f"{portfolio.portfolio_id} sweep, best Sharpe first:"]
            lines += _sweep_lines(rows)
    return "\n".join(lines)


def _sweep_lines(rows: list[Any], limit: int = 20) -> list[str]:
    params = [k for k in rows[0] if k not in _FIGURES and k != "portfolio_id"]
    ranked = sorted(rows, key=lambda r: -r["sharpe"] if math.isfinite(r["sharpe"]) else math.inf)
    out = [
        " ".join(f"{p:>16}" for p in params)
        + f" {'return':>8} {'Sharpe':>7} {'max DD':>8} {'costs':>7} {'rebal':>6}"
    ]
    for r in ranked[:limit]:
        out.append(
            " ".join(f"{r[p]!s:>16}" for p in params)
            + f" {_pct(r['total_return']):>8} {_ratio(r['sharpe']):>7} "
            f"{_pct(r['max_drawdown']):>8} {_pct(r['costs']):>7} {r['rebalances']:>6}"
        )
    if len(ranked) > limit:
        out.append(f"... {len(ranked) - limit} more (--json or --out for all)")
    return out


_FIGURES = frozenset(
    {
        "total_return",
        "annualised_return",
        "volatility",
        "sharpe",
        "sortino",
        "max_drawdown",
        "bars",
        "turnover",
        "costs",
        "rebalances",
    }
)
