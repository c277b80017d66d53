"""The backtest's holdings against hand-computed small cases: drift, costs, lots, costs' sources."""

from __future__ import annotations

import numpy as np
import pytest

from streamfolio.backtest.accounting import simulate_holdings
from streamfolio.backtest.costs import CSE_COSTS, parse_costs
from streamfolio.backtest.data import close_panel
from streamfolio.backtest.strategies import month_end_rows
from streamfolio.errors import DataError
from streamfolio.replay import Tick

CLOSES = [[10.0, 20.0], [12.0, 20.0], [12.0, 10.0], [6.0, 10.0]]


def test_holdings_drift_with_prices_between_trades() -> None:
    # 50/50 of 100: 5 shares of A, 2.5 of B; never traded again.
    path = simulate_holdings(CLOSES, [0.5, 0.5], {}, initial_value=100.0)
    assert path.values == pytest.approx([100.0, 110.0, 85.0, 55.0])
    assert path.weights[1] == pytest.approx([60 / 110, 50 / 110])
    assert path.weights[3] == pytest.approx([30 / 55, 25 / 55])
    assert path.trades == () and path.costs == 0.0 and path.turnover == 0.0


def test_a_rebalance_trades_at_the_close_and_pays_proportional_costs() -> None:
    # At bar 2 the holdings are 60 of A and 25 of B (85). Back to 50/50 at 1 % per side:
    # V' = 85 − 0.01·(|V'/2 − 60| + |V'/2 − 25|) = 85 − 0.01·35 = 84.65 (both legs move 17.5).
    path = simulate_holdings(CLOSES, [0.5, 0.5], {2: [0.5, 0.5]}, cost_rate=0.01, initial_value=100)
    (trade,) = path.trades
    assert trade.bar == 2 and trade.value_before == pytest.approx(85.0)
    assert trade.traded == pytest.approx(35.0)
    assert trade.cost == pytest.approx(0.35)
    assert trade.turnover == pytest.approx(35.0 / 170.0)
    assert path.values[2] == pytest.approx(84.65)
    assert path.weights[2] == pytest.approx([0.5, 0.5])
    # Then A halves: 42.325 / 6 · 6 ... the half in A loses half.
    assert path.values[3] == pytest.approx(84.65 * 0.25 + 84.65 * 0.5)
    assert path.costs == pytest.approx(0.35)


def test_without_costs_rebalancing_keeps_the_value() -> None:
    path = simulate_holdings(CLOSES, [0.5, 0.5], {1: [0.2, 0.8], 2: [1.0, 0.0]})
    assert path.values[1] == pytest.approx(1.1)
    assert path.values[2] == pytest.approx(1.1 * (0.2 * 1.0 + 0.8 * 0.5))
    assert [t.bar for t in path.trades] == [1, 2]


def test_a_minimum_lot_rounds_shares_down_and_keeps_the_rest_in_cash() -> None:
    # 1000 at 50/50 with lots of 30 shares: A 500/10 = 50 → 30, B 500/20 = 25 → 0.
    path = simulate_holdings(CLOSES, [0.5, 0.5], {}, initial_value=1000.0, lot=30)
    assert path.cash[0] == pytest.approx(1000 - 300)
    assert path.values[1] == pytest.approx(700 + 30 * 12)
    assert path.weights[1] == pytest.approx([360 / 1060, 0.0])


def test_targets_outside_the_period_and_bad_inputs() -> None:
    path = simulate_holdings(CLOSES, [1, 1], {0: [0, 1], 9: [0, 1]})
    assert path.trades == ()
    with pytest.raises(ValueError, match="finite and positive"):
        simulate_holdings([[1.0, np.nan]], [0.5, 0.5], {})
    with pytest.raises(ValueError, match="non-negative"):
        simulate_holdings(CLOSES, [1.5, -0.5], {})
    with pytest.raises(ValueError, match="cost_rate"):
        simulate_holdings(CLOSES, [0.5, 0.5], {}, cost_rate=1.5)


def test_the_cse_default_and_the_costs_option() -> None:
    # 0.6 % + 0.1 % + 0.2 %, plus 10 % VAT on them.
    assert CSE_COSTS.rate == pytest.approx(0.0099)
    assert parse_costs("default") is CSE_COSTS
    assert parse_costs("10bps").rate == pytest.approx(0.001)
    assert "brokerage 0.60%" in CSE_COSTS.describe()
    for bad in ("cheap", "30", "-1%"):
        with pytest.raises(DataError):
            parse_costs(bad)


def test_the_close_panel_forward_fills_and_starts_when_every_ticker_has_a_close() -> None:
    day = 86_400_000
    ticks = [
        Tick(0 * day + 5, "A", 10.0),
        Tick(1 * day + 5, "B", 20.0),
        Tick(1 * day + 9, "B", 21.0),  # the later tick of the bar is its close
        Tick(3 * day + 5, "A", 11.0),
    ]
    panel = close_panel(ticks, ["A", "B"], day)
    assert panel.bars.tolist() == [1, 3]
    assert panel.closes.tolist() == [[10.0, 21.0], [11.0, 21.0]]
    assert panel.times_ms.tolist() == [2 * day, 4 * day]


def test_month_ends_in_the_exchange_zone() -> None:
    day = 86_400_000
    # Bars of 29 Nov to 2 Dec 1970 (UTC); in Casablanca (UTC+0 then) the same days.
    first = 332
    ends = [(first + i + 1) * day for i in range(4)]
    assert month_end_rows(ends, "Africa/Casablanca") == [1]
