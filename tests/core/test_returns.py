"""Bars, closes and log returns (SEMANTICS §2–§4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfolio.core.returns import (
    BarCloses,
    BarReturns,
    PortfolioReturns,
    ReturnChain,
    bar_end_ms,
    bar_index,
    chain_bar,
    iter_bars,
    log_return,
    log_returns,
)

MINUTE = 60_000


# -- bar_index / bar_end_ms ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_time_ms", "expected"),
    [
        (0, 0),
        (1, 0),
        (MINUTE - 1, 0),
        (MINUTE, 1),
        (MINUTE + 1, 1),
        (-1, -1),
        (-MINUTE, -1),
        (-MINUTE - 1, -2),
        (1_700_000_000_000, 1_700_000_000_000 // MINUTE),
    ],
)
def test_bar_index_is_epoch_aligned_with_closed_start_and_open_end(
    event_time_ms: int, expected: int
) -> None:
    assert bar_index(event_time_ms, MINUTE) == expected


def test_bar_end_is_the_exclusive_end_and_the_next_bar_start() -> None:
    assert bar_end_ms(0, MINUTE) == MINUTE
    assert bar_end_ms(-1, MINUTE) == 0
    assert bar_end_ms(-2, MINUTE) == -MINUTE
    assert bar_index(bar_end_ms(5, MINUTE), MINUTE) == 6
    assert bar_index(bar_end_ms(5, MINUTE) - 1, MINUTE) == 5


@settings(max_examples=100, deadline=None)
@given(
    event_time_ms=st.integers(min_value=-(10**13), max_value=10**13),
    bar_ms=st.integers(min_value=1, max_value=86_400_000),
)
def test_every_time_lies_in_its_bar(event_time_ms: int, bar_ms: int) -> None:
    k = bar_index(event_time_ms, bar_ms)
    assert k * bar_ms <= event_time_ms < bar_end_ms(k, bar_ms)
    assert bar_end_ms(k, bar_ms) - k * bar_ms == bar_ms


# -- BarCloses ----------------------------------------------------------------------------------


def test_close_is_the_tick_with_the_greatest_event_time_not_the_last_offered() -> None:
    bar = BarCloses()
    bar.offer("ATW", 500, 10.0)
    bar.offer("ATW", 900, 11.0)
    bar.offer("ATW", 100, 12.0)  # arrives last but is older
    assert bar.closes == {"ATW": 11.0}


def test_among_equal_event_times_the_tick_offered_last_is_the_close() -> None:
    bar = BarCloses()
    bar.offer("ATW", 900, 11.0)
    bar.offer("ATW", 900, 11.5)
    bar.offer("ATW", 900, 11.25)
    assert bar.closes == {"ATW": 11.25}


def test_bar_closes_are_per_ticker_in_order_of_first_appearance() -> None:
    bar = BarCloses()
    bar.offer("B", 10, 2.0)
    bar.offer("A", 20, 1.0)
    bar.offer("B", 30, 2.5)
    assert list(bar.closes.items()) == [("B", 2.5), ("A", 1.0)]
    assert len(bar) == 2
    assert len(BarCloses()) == 0
    assert BarCloses().closes == {}


# -- log returns --------------------------------------------------------------------------------


def test_log_return_is_the_log_of_the_price_ratio() -> None:
    assert log_return(100.0, 110.0) == pytest.approx(math.log(1.1), rel=1e-15)
    assert log_return(50.0, 50.0) == 0.0


def test_log_returns_match_numpy_for_a_price_series_and_a_price_matrix() -> None:
    rng = np.random.default_rng(7)
    prices = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, size=(50, 4)), axis=0))
    np.testing.assert_allclose(
        log_returns(prices), np.log(prices[1:] / prices[:-1]), rtol=1e-12, atol=1e-15
    )
    series = prices[:, 0].tolist()
    result = log_returns(series)
    assert result.shape == (49,)
    assert result.dtype == np.float64
    np.testing.assert_allclose(result, np.diff(np.log(series)), rtol=0, atol=0)


def test_log_returns_add_up_to_the_log_of_the_total_price_change() -> None:
    prices = [100.0, 103.0, 99.5, 101.2, 120.0]
    assert log_returns(prices).sum() == pytest.approx(math.log(120.0 / 100.0), rel=1e-12)


# -- ReturnChain / chain_bar --------------------------------------------------------------------


def test_return_chain_first_close_yields_nothing_then_chains_close_to_close() -> None:
    chain = ReturnChain()
    assert chain.last_close is None
    assert chain.update(100.0) is None
    assert chain.last_close == 100.0
    assert chain.update(105.0) == pytest.approx(math.log(1.05), rel=1e-15)
    assert chain.update(105.0) == 0.0
    assert chain.update(100.0) == pytest.approx(math.log(100.0 / 105.0), rel=1e-15)
    assert chain.last_close == 100.0


def test_return_chain_resumes_from_a_stored_close() -> None:
    chain = ReturnChain(last_close=50.0)
    assert chain.update(55.0) == pytest.approx(math.log(1.1), rel=1e-15)


def test_chain_bar_starts_new_tickers_and_returns_only_chained_ones() -> None:
    chains: dict[str, ReturnChain] = {}
    first = chain_bar(chains, 0, {"A": 10.0})
    assert first == BarReturns(0, {"A": 10.0}, {})
    second = chain_bar(chains, 1, {"A": 11.0, "B": 20.0})
    assert second.index == 1
    assert dict(second.closes) == {"A": 11.0, "B": 20.0}
    assert dict(second.returns) == pytest.approx({"A": math.log(1.1)}, rel=1e-15)
    # Bar 2: A skips; B chains from its close in bar 1.
    third = chain_bar(chains, 2, {"B": 22.0})
    assert dict(third.returns) == pytest.approx({"B": math.log(1.1)}, rel=1e-15)
    # Bar 3: A chains from its close in bar 1, the latest earlier bar in which it traded.
    fourth = chain_bar(chains, 3, {"A": 12.1})
    assert dict(fourth.returns) == pytest.approx({"A": math.log(12.1 / 11.0)}, rel=1e-15)
    assert set(chains) == {"A", "B"}


def test_chain_bar_copies_the_closes() -> None:
    closes = {"A": 1.0}
    bar = chain_bar({}, 0, closes)
    closes["A"] = 2.0
    assert dict(bar.closes) == {"A": 1.0}


# -- PortfolioReturns ---------------------------------------------------------------------------


def test_warm_up_ends_with_the_bar_of_the_last_tickers_first_close_which_yields_nothing() -> None:
    pr = PortfolioReturns(["A", "B", "C"])
    assert pr.waiting_for == ("A", "B", "C")
    assert pr.on_bar(BarReturns(0, {"A": 10.0}, {})) is None
    assert pr.on_bar(BarReturns(1, {"A": 11.0, "B": 5.0}, {"A": 0.1})) is None
    assert not pr.warmed_up
    assert pr.waiting_for == ("C",)
    # C's first close completes the warm-up; the returns of A and B in this bar are not emitted.
    assert pr.on_bar(BarReturns(2, {"A": 12.0, "B": 6.0, "C": 1.0}, {"A": 0.2, "B": 0.3})) is None
    assert pr.warmed_up
    assert pr.waiting_for == ()
    vector = pr.on_bar(
        BarReturns(3, {"A": 13.0, "B": 7.0, "C": 2.0}, {"A": 0.1, "B": 0.2, "C": 0.3})
    )
    assert vector is not None
    assert vector.tolist() == [0.1, 0.2, 0.3]


def test_tickers_that_skip_a_bar_get_a_zero_return() -> None:
    pr = PortfolioReturns(["A", "B", "C"], seen=["A", "B", "C"])
    vector = pr.on_bar(BarReturns(7, {"B": 5.5}, {"B": -0.02}))
    assert vector is not None
    assert vector.tolist() == [0.0, -0.02, 0.0]


def test_a_bar_in_which_no_portfolio_ticker_traded_gives_no_vector() -> None:
    pr = PortfolioReturns(["A", "B"], seen=["A", "B"])
    assert pr.on_bar(BarReturns(3, {}, {})) is None
    # Only tickers outside the portfolio traded.
    assert pr.on_bar(BarReturns(4, {"Z": 1.0}, {"Z": 0.5})) is None


def test_tickers_outside_the_portfolio_are_ignored() -> None:
    pr = PortfolioReturns(["A", "B"])
    # Z's close does not count toward the warm-up.
    assert pr.on_bar(BarReturns(0, {"A": 1.0, "Z": 1.0}, {})) is None
    assert pr.waiting_for == ("B",)
    assert pr.on_bar(BarReturns(1, {"B": 1.0, "Z": 1.1}, {"Z": 0.1})) is None
    vector = pr.on_bar(BarReturns(2, {"A": 1.1, "Z": 1.2}, {"A": 0.05, "Z": 0.2}))
    assert vector is not None
    assert vector.tolist() == [0.05, 0.0]


def test_a_traded_ticker_with_an_unchanged_price_still_makes_a_vector() -> None:
    pr = PortfolioReturns(["A", "B"], seen=["A", "B"])
    vector = pr.on_bar(BarReturns(1, {"A": 1.0}, {"A": 0.0}))
    assert vector is not None
    assert vector.tolist() == [0.0, 0.0]


def test_portfolio_returns_resumed_with_seen_tickers_keep_waiting_for_the_rest() -> None:
    pr = PortfolioReturns(["A", "B"], seen=["A", "Z"])
    assert not pr.warmed_up
    assert pr.waiting_for == ("B",)
    assert pr.on_bar(BarReturns(0, {"B": 1.0}, {})) is None
    assert pr.warmed_up


# -- iter_bars ----------------------------------------------------------------------------------


def test_iter_bars_groups_ordered_ticks_into_bar_closes() -> None:
    ticks = [
        (-5, "A", 0.5),
        (0, "A", 1.0),
        (10, "B", 2.0),
        (10, "A", 1.5),
        (MINUTE - 1, "B", 2.5),
        (3 * MINUTE, "A", 3.0),
    ]
    assert list(iter_bars(ticks, MINUTE)) == [
        (-1, {"A": 0.5}),
        (0, {"A": 1.5, "B": 2.5}),
        (3, {"A": 3.0}),
    ]
    assert list(iter_bars([], MINUTE)) == []
