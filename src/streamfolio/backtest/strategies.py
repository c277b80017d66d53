"""When each compared strategy trades, and to what: the policy (by the replay) and benchmarks.

A strategy is a *schedule*, bar index → target weights, that
:func:`~streamfolio.backtest.accounting.simulate_holdings` executes. The policy's schedule is
not computed here: it is the ``weights`` events of :class:`~streamfolio.replay.ReplayEngine`
(the engine the streaming job must match bar for bar) run over the backtest's ticks, seeded
with the initial state, so its decisions are the ones the live loop would take. Like the live
loop, the policy sees the weights it last published, not the holdings' drift.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from streamfolio.backtest.data import IntArray
from streamfolio.core.policy import PolicySettings
from streamfolio.core.portfolio import PortfolioSpec
from streamfolio.core.types import FloatArray
from streamfolio.replay import ReplayEngine, ReplayPortfolio, Tick

__all__ = ["PolicyRun", "month_end_rows", "run_policy"]


@dataclass(frozen=True, slots=True)
class PolicyRun:
    """The policy's schedule (bar index → weights) and how often it acted or held."""

    targets: dict[int, FloatArray]
    rebalances: int
    holds_notified: int
    late_ticks: int


def run_policy(
    spec: PortfolioSpec,
    policy: PolicySettings,
    initial_stats: Mapping[str, Any],
    initial_weights: Mapping[str, float],
    ticks: Sequence[Tick],
    *,
    max_out_of_orderness_ms: int = 0,
) -> PolicyRun:
    """Replay ``ticks`` through the engine with ``policy``; its ``weights`` events by bar.

    The engine has no future-skew limit here: a backtest's ticks are history, whatever the
    wall clock says.
    """
    engine = ReplayEngine(
        [ReplayPortfolio(spec, dict(initial_stats), dict(initial_weights), policy)],
        max_out_of_orderness_ms=max_out_of_orderness_ms,
        max_future_skew_ms=None,
    )
    targets: dict[int, FloatArray] = {}
    rebalances = holds = 0
    for event in engine.run(ticks):
        if event.kind == "weights":
            # Stamped with the end of the bar whose close triggered it: trade at that close.
            bar = int(event.record["timestamp"]) // spec.bar_ms - 1
            weights = event.record["weights"]
            targets[bar] = np.array([weights[t] for t in spec.tickers], dtype=np.float64)
        elif event.kind == "rebalance":
            rebalances += 1
        elif event.kind == "hold":
            holds += 1
    return PolicyRun(targets, rebalances, holds, engine.late_ticks)


def month_end_rows(times_ms: Sequence[int] | IntArray, timezone: str) -> list[int]:
    """Rows (after row 0) that are the last of their calendar month in ``timezone``.

    ``times_ms`` are bar ends; a bar belongs to the month of the instant just before its end.

    >>> day = 86_400_000
    >>> ends = [(d + 1) * day for d in range(28, 33)]      # 29 Jan .. 2 Feb 1970
    >>> month_end_rows(ends, "UTC")                          # 31 Jan is row 2
    [2]
    """
    zone = ZoneInfo(timezone)
    months = [
        dt.datetime.fromtimestamp((int(t) - 1) / 1000, tz=zone).strftime("%Y-%m") for t in times_ms
    ]
    return [i for i in range(1, len(months) - 1) if months[i] != months[i + 1]]
