"""A grid over the policy's parameters, each point a full backtest of the policy, on two cores.

Every point replays the same ticks from the same initial state (computed once, before the
split) with one :class:`~streamfolio.core.policy.PolicySettings` changed, so the rows differ by
the parameters alone. The points run in a :class:`~concurrent.futures.ProcessPoolExecutor` of
two workers (the machine's two cores); each worker receives the prepared data once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

from streamfolio.backtest.run import BacktestOptions, PreparedBacktest, policy_path
from streamfolio.core.performance import performance_figures
from streamfolio.errors import UsageError
from streamfolio.portfolios import policy_settings

__all__ = ["DEFAULT_GRID", "SWEEP_KEYS", "grid_points", "parse_sweep", "run_sweep"]

Progress = Callable[[str], None]

SWEEP_KEYS: Mapping[str, str] = {
    "sharpe_threshold": "sharpe_threshold",
    "threshold": "sharpe_threshold",
    "gamma": "gamma",
    "cooldown_days": "cooldown_ms",
    "cooldown": "cooldown_ms",
    "max_turnover": "max_turnover",
    "turnover": "max_turnover",
    "band": "band",
    "min_improvement": "min_improvement",
    "objective": "objective",
}
"""``--sweep`` names → :class:`PolicySettings` fields (a cool-down is given in days)."""

DEFAULT_GRID: Mapping[str, tuple[Any, ...]] = {
    "sharpe_threshold": (0.0, 0.5, 1.0),
    "gamma": (0.05, 0.1, 0.5),
    "cooldown_days": (0.0, 5.0, 20.0),
    "max_turnover": (0.1, 0.25, 0.5),
}
"""``--sweep default``: 81 points around the example configuration."""

_DAY_MS = 86_400_000


def parse_sweep(items: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """``["gamma=0.05,0.1", "cooldown_days=0,5"]`` → ``{"gamma": (0.05, 0.1), ...}``.

    ``default`` alone is :data:`DEFAULT_GRID`.

    >>> parse_sweep(["threshold=0,0.5", "objective=max_sharpe,min_volatility"])
    {'sharpe_threshold': (0.0, 0.5), 'objective': ('max_sharpe', 'min_volatility')}
    >>> parse_sweep(["speed=1"])
    Traceback (most recent call last):
    ...
    streamfolio.errors.UsageError: --sweep 'speed=1': unknown parameter 'speed'; use \
sharpe_threshold, gamma, cooldown_days, max_turnover, band, min_improvement or objective
    """
    if list(items) == ["default"]:
        return dict(DEFAULT_GRID)
    grid: dict[str, tuple[Any, ...]] = {}
    names = ("sharpe_threshold", "gamma", "cooldown_days", "max_turnover", "band")
    known = ", ".join(names) + ", min_improvement or objective"
    for item in items:
        name, _, values = item.partition("=")
        name = name.strip().lower().replace("-", "_")
        if name not in SWEEP_KEYS:
            raise UsageError(f"--sweep {item!r}: unknown parameter {name!r}; use {known}")
        canonical = next(k for k, v in SWEEP_KEYS.items() if v == SWEEP_KEYS[name])
        texts = [v.strip() for v in values.split(",") if v.strip()]
        if not texts:
            raise UsageError(f"--sweep {item!r}: give values, e.g. {name}=0.1,0.5")
        if canonical == "objective":
            grid[canonical] = tuple(texts)
            continue
        try:
            grid[canonical] = tuple(float(v) for v in texts)
        except ValueError:
            raise UsageError(f"--sweep {item!r}: the values must be numbers") from None
    return grid


def grid_points(grid: Mapping[str, Iterable[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in order.

    >>> grid_points({"gamma": (0.1, 0.5), "cooldown_days": (0.0,)})
    [{'gamma': 0.1, 'cooldown_days': 0.0}, {'gamma': 0.5, 'cooldown_days': 0.0}]
    """
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


_WORKER: dict[str, Any] = {}


def _init_worker(prepared: PreparedBacktest, options: BacktestOptions) -> None:
    _WORKER["prepared"], _WORKER["options"] = prepared, options


def _point(job: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    portfolio_id, params = job
    return sweep_point(_WORKER["prepared"], _WORKER["options"], portfolio_id, params)


def sweep_point(
    prepared: PreparedBacktest,
    options: BacktestOptions,
    portfolio_id: str,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """One row: the policy's figures with ``params`` replacing the configured values."""
    portfolio = prepared.portfolio(portfolio_id)
    exchange = prepared.settings.exchange
    changes: dict[str, Any] = {}
    for name, value in params.items():
        field = SWEEP_KEYS[name]
        changes[field] = int(float(value) * _DAY_MS) if field == "cooldown_ms" else value
    policy = replace(policy_settings(portfolio, exchange), **changes)
    spec_q = portfolio.periods_per_year_value(exchange)
    _, path, _ = policy_path(prepared, portfolio_id, options, policy)
    values = path.values / options.capital
    figures = performance_figures(values, spec_q, portfolio.risk_free_rate)
    return {
        "portfolio_id": portfolio_id,
        **params,
        **figures.as_dict(),
        "turnover": path.turnover,
        "costs": path.costs / options.capital,
        "rebalances": len(path.trades),
    }


def run_sweep(
    prepared: PreparedBacktest,
    options: BacktestOptions,
    grid: Mapping[str, Iterable[Any]],
    *,
    workers: int = 2,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Every grid point for every prepared portfolio; rows in grid order (``workers=1``: here)."""
    jobs = [(p.id, point) for p in prepared.settings.portfolios for point in grid_points(grid)]
    if progress is not None:
        progress(f"sweep: {len(jobs)} backtests on {workers} worker(s)")
    if workers <= 1 or len(jobs) < 2:
        return [sweep_point(prepared, options, pid, params) for pid, params in jobs]
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(prepared, options)
    ) as pool:
        return list(pool.map(_point, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
