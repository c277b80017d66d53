"""The holdings of a backtest, bar by bar: shares drift with prices, trades happen at the close.

:func:`simulate_holdings` is the accounting every strategy shares, so strategies differ only by
*when* they trade and *to what weights*:

- the portfolio starts fully invested in ``initial_weights`` at the first bar's close (the cost
  of getting in is the same for every strategy and is not counted: the question is whether the
  *re*-balancing pays);
- between trades the number of shares is fixed, so the weights drift with prices;
- a trade at bar ``t`` moves to the target weights at bar ``t``'s close, paying
  ``cost_rate × |value traded|`` from the portfolio; the value after costs ``V'`` solves
  ``V' = V − cost_rate·Σ|w_i·V' − h_i·p_i|`` (a fixed point, found in a few iterations since
  ``cost_rate`` is small);
- with a ``lot`` the shares are rounded down to whole lots and what is left stays in cash
  (earning nothing), as a broker would leave it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from streamfolio.core.types import ArrayLike, FloatArray

__all__ = ["HoldingsPath", "Trade", "simulate_holdings"]

_FIXED_POINT_STEPS = 50
_FIXED_POINT_TOLERANCE = 1e-12


@dataclass(frozen=True, slots=True)
class Trade:
    """One rebalance: at ``bar``, ``traded`` (bought plus sold) cost ``cost``; values in cash."""

    bar: int
    value_before: float
    traded: float
    cost: float

    @property
    def turnover(self) -> float:
        """One-way turnover of this trade, ``traded / (2·value)``."""
        return self.traded / (2.0 * self.value_before) if self.value_before > 0 else 0.0


@dataclass(frozen=True, slots=True)
class HoldingsPath:
    """A strategy's path: value and drifted weights at every bar's close, and its trades."""

    values: FloatArray
    weights: FloatArray
    """Shape ``(bars, assets)``: each asset's share of the value at the close (after trades)."""
    cash: FloatArray
    trades: tuple[Trade, ...] = field(default_factory=tuple)

    @property
    def costs(self) -> float:
        """Costs paid over the path, in cash."""
        return float(sum(t.cost for t in self.trades))

    @property
    def turnover(self) -> float:
        """Sum of the trades' one-way turnovers."""
        return float(sum(t.turnover for t in self.trades))


def _normalised(weights: ArrayLike, n_assets: int) -> FloatArray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_assets,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be {n_assets} finite non-negative numbers with a sum > 0")
    normalised: FloatArray = w / w.sum()
    return normalised


def _trade_to(
    shares: FloatArray,
    cash: float,
    prices: FloatArray,
    target: FloatArray,
    cost_rate: float,
    lot: float | None,
) -> tuple[FloatArray, float, float, float]:
    """New shares and cash after trading to ``target`` weights; with the value traded and cost."""
    value = cash + float(shares @ prices)
    invested = value
    new_shares = shares
    for _ in range(_FIXED_POINT_STEPS):
        new_shares = target * invested / prices
        if lot is not None:
            new_shares = np.floor(new_shares / lot + 1e-9) * lot
        traded = float(np.abs(new_shares - shares) @ prices)
        following = value - cost_rate * traded
        if abs(following - invested) <= _FIXED_POINT_TOLERANCE * max(value, 1.0):
            break
        invested = following
    traded = float(np.abs(new_shares - shares) @ prices)
    cost = cost_rate * traded
    new_cash = value - cost - float(new_shares @ prices)
    return new_shares, new_cash, traded, cost


def simulate_holdings(
    closes: ArrayLike,
    initial_weights: ArrayLike,
    targets: Mapping[int, ArrayLike],
    *,
    cost_rate: float = 0.0,
    initial_value: float = 1.0,
    lot: float | None = None,
) -> HoldingsPath:
    """Value a portfolio over ``closes`` (shape ``(bars, assets)``), trading at ``targets``.

    ``targets`` maps a bar index (≥ 1) to the weights to trade to at that bar's close; a target
    for bar 0 or beyond the last bar is ignored. ``lot`` rounds shares down to whole lots.

    >>> closes = [[10.0, 10.0], [20.0, 10.0], [20.0, 10.0]]
    >>> path = simulate_holdings(closes, [0.5, 0.5], {}, initial_value=100)
    >>> path.values.tolist(), path.weights[1].round(4).tolist()   # weights drift, no trade
    ([100.0, 150.0, 150.0], [0.6667, 0.3333])

    Rebalancing at bar 1 at 1 %: the value after costs is 149.5, so it sells 25.25 of the first
    asset and buys 24.75 of the second, 50 traded for 0.50:

    >>> path = simulate_holdings(closes, [0.5, 0.5], {1: [0.5, 0.5]}, cost_rate=0.01,
    ...                          initial_value=100)
    >>> t = path.trades[0]
    >>> round(t.traded, 4), round(t.cost, 4), round(float(path.values[1]), 4)
    (50.0, 0.5, 149.5)
    """
    prices = np.asarray(closes, dtype=np.float64)
    if prices.ndim != 2 or prices.shape[0] == 0:
        raise ValueError(f"closes must have shape (bars, assets), got {prices.shape}")
    if not np.all(np.isfinite(prices)) or np.any(prices <= 0):
        raise ValueError("closes must be finite and positive (forward-fill gaps first)")
    if not (0.0 <= cost_rate < 1.0):
        raise ValueError(f"cost_rate must be in [0, 1), got {cost_rate}")
    if lot is not None and lot <= 0:
        raise ValueError(f"lot must be positive, got {lot}")
    bars, n_assets = prices.shape
    start = _normalised(initial_weights, n_assets)
    shares = start * initial_value / prices[0]
    if lot is not None:
        shares = np.floor(shares / lot + 1e-9) * lot
    cash = initial_value - float(shares @ prices[0])
    plan = {int(bar): _normalised(w, n_assets) for bar, w in targets.items() if 0 < bar < bars}
    values = np.empty(bars)
    weights = np.empty((bars, n_assets))
    cash_path = np.empty(bars)
    trades: list[Trade] = []
    for t in range(bars):
        target = plan.get(t)
        if target is not None:
            before = cash + float(shares @ prices[t])
            shares, cash, traded, cost = _trade_to(shares, cash, prices[t], target, cost_rate, lot)
            if traded > 0:
                trades.append(Trade(t, before, traded, cost))
        held = shares * prices[t]
        values[t] = cash + float(held.sum())
        weights[t] = held / values[t] if values[t] > 0 else 0.0
        cash_path[t] = cash
    return HoldingsPath(values, weights, cash_path, tuple(trades))
