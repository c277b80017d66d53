"""PortfolioMonitor: one portfolio's bars → statistics → metrics (SEMANTICS §4–§6)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from streamfolio.core.metrics import portfolio_performance
from streamfolio.core.moments import EWMoments, MomentsError, WelfordMoments
from streamfolio.core.portfolio import PortfolioMonitor, PortfolioSpec, check_weights
from streamfolio.core.returns import BarReturns

TICKERS = ("A", "B", "C")
BAR_MS = 60_000
SPEC = PortfolioSpec(
    "pf", TICKERS, bar_ms=BAR_MS, periods_per_year=252.0, risk_free_rate=0.01, sharpe_threshold=0.5
)
EQUAL = {"A": 1 / 3, "B": 1 / 3, "C": 1 / 3}


def bars(seed: int, count: int, start: int = 0) -> list[BarReturns]:
    """Closed bars in which each ticker trades with probability 0.7 (returns ~ N(3e-4, 1e-2))."""
    rng = np.random.default_rng(seed)
    result = []
    for k in range(start, start + count):
        traded = [t for t in TICKERS if rng.random() < 0.7]
        returns = {t: float(rng.normal(3e-4, 1e-2)) for t in traded}
        result.append(BarReturns(k, dict.fromkeys(traded, 100.0), returns))
    return result


def warm_up_bar(index: int = 0) -> BarReturns:
    return BarReturns(index, dict.fromkeys(TICKERS, 100.0), {})


def vector_of(bar: BarReturns) -> np.ndarray:
    return np.array([bar.returns.get(t, 0.0) for t in TICKERS])


def drive(monitor: PortfolioMonitor, feed: list[BarReturns]) -> list[Any]:
    """Feed bars; collect every stats and metrics record."""
    out: list[Any] = []
    for bar in feed:
        stats = monitor.on_bar(bar)
        out.append(stats)
        if stats is not None:
            out.append(monitor.metrics())
    return out


# -- check_weights ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "reason"),
    [
        ({"A": 0.5, "B": 0.5}, "weights do not cover the portfolio: missing C"),
        (
            {"A": 0.4, "B": 0.3, "C": 0.2, "D": 0.1},
            "weights do not cover the portfolio: unexpected D",
        ),
        (
            {"A": 0.5, "B": 0.25, "X": 0.25},
            "weights do not cover the portfolio: missing C; unexpected X",
        ),
        ({"A": math.nan, "B": 0.5, "C": 0.5}, "weights are not finite for A"),
        ({"A": 0.5, "B": math.inf, "C": -math.inf}, "weights are not finite for B, C"),
        ({"A": 0.5, "B": 0.5, "C": 0.5}, "weights sum to 1.5, not 1 (tolerance 1e-06)"),
        ({"A": 0.5, "B": 0.5, "C": 2e-6}, "weights sum to 1.000002, not 1 (tolerance 1e-06)"),
        ({}, "weights do not cover the portfolio: missing A, B, C"),
        # leveraged and short: the portfolios are long-only
        ({"A": 1.5, "B": -0.25, "C": -0.25}, "weight of A is 1.5, outside its bounds [0, 1]"),
        ({"A": 5, "B": -4, "C": 0}, "weight of A is 5, outside its bounds [0, 1]"),
    ],
)
def test_check_weights_explains_why_weights_are_refused(
    weights: dict[str, float], reason: str
) -> None:
    assert check_weights(TICKERS, weights) == reason


@pytest.mark.parametrize(
    "weights",
    [
        EQUAL,
        {"A": 1.0, "B": 0.0, "C": 0.0},
        {"C": 0.2, "A": 0.3, "B": 0.5},  # any key order
        {"A": 0.5, "B": 0.5, "C": 9e-7},  # within 1e-6
    ],
)
def test_check_weights_accepts_finite_weights_covering_the_tickers_summing_to_one(
    weights: dict[str, float],
) -> None:
    assert check_weights(TICKERS, weights) is None


def test_check_weights_holds_each_weight_to_its_bounds() -> None:
    bounds = [(0.1, 0.5), (0.0, 0.6), (0.2, 1.0)]
    assert check_weights(TICKERS, {"A": 0.3, "B": 0.4, "C": 0.3}, bounds) is None
    assert check_weights(TICKERS, {"A": 0.05, "B": 0.55, "C": 0.4}, bounds) == (
        "weight of A is 0.05, outside its bounds [0.1, 0.5]"
    )


def test_weights_older_than_those_in_force_are_refused_equal_stamps_accepted() -> None:
    monitor = PortfolioMonitor(SPEC)
    assert monitor.set_weights(EQUAL, timestamp_ms=2_000) is None
    assert monitor.set_weights(EQUAL, timestamp_ms=2_000) is None
    refused = monitor.set_weights({"A": 1.0, "B": 0.0, "C": 0.0}, timestamp_ms=1_999)
    assert refused == "weights stamped 1999 are older than those in force (stamped 2000)"
    assert monitor.weights is not None and monitor.weights.tolist() == list(EQUAL.values())


def test_refused_weights_keep_the_previous_ones() -> None:
    monitor = PortfolioMonitor(SPEC)
    assert monitor.set_weights({"A": 0.2, "B": 0.3, "C": 0.5}, timestamp_ms=1_000) is None
    reason = monitor.set_weights({"A": 0.9, "B": 0.9, "C": 0.9}, timestamp_ms=2_000)
    assert reason is not None
    assert reason.startswith("weights sum to 2.7")
    assert monitor.weights is not None
    assert monitor.weights.tolist() == [0.2, 0.3, 0.5]
    assert monitor.weights_timestamp_ms == 1_000


def test_weights_are_stored_in_ticker_order() -> None:
    monitor = PortfolioMonitor(SPEC)
    monitor.set_weights({"C": 0.5, "B": 0.3, "A": 0.2}, timestamp_ms=0)
    assert monitor.weights is not None
    assert monitor.weights.tolist() == [0.2, 0.3, 0.5]


# -- statistics ---------------------------------------------------------------------------------


def test_statistics_follow_the_return_vectors_after_warm_up() -> None:
    monitor = PortfolioMonitor(SPEC)
    assert monitor.on_bar(warm_up_bar()) is None
    feed = bars(seed=1, count=40, start=1)
    reference = WelfordMoments(3)
    for bar in feed:
        stats = monitor.on_bar(bar)
        if not bar.returns:
            assert stats is None
            continue
        reference.update(vector_of(bar))
        assert stats is not None
        assert stats["timestamp"] == (bar.index + 1) * BAR_MS
        assert stats["count"] == reference.n
    stats = monitor.stats()
    assert stats["portfolio_id"] == "pf"
    assert stats["estimator"] == "welford"
    assert stats["tickers"] == list(TICKERS)
    assert list(stats["meanReturns"].values()) == reference.mean.tolist()
    cov = [[stats["covarianceMatrix"][a][b] for b in TICKERS] for a in TICKERS]
    assert np.array_equal(cov, reference.covariance)


def test_ewm_spec_gives_exponentially_weighted_statistics() -> None:
    spec = PortfolioSpec(
        "ew", TICKERS, bar_ms=BAR_MS, periods_per_year=252.0, estimator="ewm", half_life_bars=10
    )
    monitor = PortfolioMonitor(spec)
    monitor.on_bar(warm_up_bar())
    reference = EWMoments(3, half_life_bars=10)
    for bar in bars(seed=2, count=30, start=1):
        if monitor.on_bar(bar) is not None:
            reference.update(vector_of(bar))
    stats = monitor.stats()
    assert stats["estimator"] == "ewm"
    assert stats["half_life_bars"] == 10.0
    assert stats["count"] == reference.n
    cov = [[stats["covarianceMatrix"][a][b] for b in TICKERS] for a in TICKERS]
    assert np.array_equal(cov, reference.covariance)


def test_ewm_spec_without_half_life_is_rejected() -> None:
    spec = PortfolioSpec("ew", TICKERS, bar_ms=BAR_MS, periods_per_year=252.0, estimator="ewm")
    with pytest.raises(MomentsError, match="half_life_bars"):
        PortfolioMonitor(spec)


def stats_message(
    count: int, timestamp: int = 5_000
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """An initial-statistics record, in another ticker order than the portfolio's, and its μ, Σ."""
    rng = np.random.default_rng(count)
    mean = rng.normal(0.0, 1e-3, size=3)
    factor = rng.normal(0.0, 1e-2, size=(3, 3))
    cov = factor @ factor.T + np.eye(3) * 1e-5
    order = ["C", "A", "B"]
    idx = {t: TICKERS.index(t) for t in order}
    record = {
        "timestamp": timestamp,
        "portfolio_id": "pf",
        "meanReturns": {t: float(mean[idx[t]]) for t in order},
        "covarianceMatrix": {a: {b: float(cov[idx[a], idx[b]]) for b in order} for a in order},
        "count": count,
    }
    return record, mean, cov


def test_seed_sets_the_prior_as_n0_observations() -> None:
    monitor = PortfolioMonitor(SPEC)
    record, mean, cov = stats_message(count=50)
    monitor.seed(record)
    assert isinstance(monitor.moments, WelfordMoments)
    assert monitor.moments.n == 50
    assert np.array_equal(monitor.moments.mean, mean)
    np.testing.assert_allclose(monitor.moments.comoment, cov * 49, rtol=1e-15)
    np.testing.assert_allclose(monitor.moments.covariance, cov, rtol=1e-15)
    assert monitor.stats_timestamp_ms == 5_000


def test_a_later_seed_replaces_the_statistics() -> None:
    monitor = PortfolioMonitor(SPEC)
    monitor.seed(stats_message(count=50)[0])
    monitor.on_bar(warm_up_bar())
    drive(monitor, bars(seed=3, count=10, start=1))
    assert monitor.moments.n > 50
    record, mean, cov = stats_message(count=8, timestamp=9_000)
    monitor.seed(record)
    assert monitor.moments.n == 8
    assert np.array_equal(monitor.moments.mean, mean)
    np.testing.assert_allclose(monitor.moments.comoment, cov * 7, rtol=1e-15)
    assert monitor.stats_timestamp_ms == 9_000
    # The warm-up is over already, so the next bar updates the new prior.
    bar = BarReturns(20, {"A": 1.0}, {"A": 0.01})
    expected = WelfordMoments.from_prior(mean, cov, 8)
    expected.update(vector_of(bar))
    stats = monitor.on_bar(bar)
    assert stats is not None
    assert stats["count"] == 9
    assert list(stats["meanReturns"].values()) == expected.mean.tolist()


def test_seed_keeps_the_specs_estimator() -> None:
    spec = PortfolioSpec(
        "ew", TICKERS, bar_ms=BAR_MS, periods_per_year=252.0, estimator="ewm", half_life_bars=5
    )
    monitor = PortfolioMonitor(spec)
    record, _, cov = stats_message(count=30)
    monitor.seed(record)
    assert isinstance(monitor.moments, EWMoments)
    assert monitor.moments.half_life_bars == 5.0
    assert monitor.moments.n == 30
    np.testing.assert_allclose(monitor.moments.covariance, cov, rtol=1e-15)


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_are_the_portfolio_performance_of_the_current_weights() -> None:
    monitor = PortfolioMonitor(SPEC)
    monitor.set_weights({"A": 0.5, "B": 0.3, "C": 0.2}, timestamp_ms=7)
    monitor.on_bar(warm_up_bar())
    produced = drive(monitor, bars(seed=4, count=30, start=1))
    record = [r for r in produced if r is not None and "sharpRatio" in r][-1]
    perf = portfolio_performance(
        [0.5, 0.3, 0.2],
        monitor.moments.mean,
        monitor.moments.covariance,
        periods_per_year=252.0,
        risk_free_rate=0.01,
    )
    assert record["portfolioId"] == "pf"
    assert record["expectedReturn"] == perf.expected_return
    assert record["risk"] == perf.risk
    assert record["sharpRatio"] == perf.sharpe
    assert record["meanReturn"] == perf.mean_return
    assert record["variance"] == perf.variance
    assert record["count"] == monitor.moments.n
    assert record["weights"] == {"A": 0.5, "B": 0.3, "C": 0.2}
    assert record["statsTimestamp"] == monitor.stats_timestamp_ms
    assert record["timestamp"] == max(monitor.stats_timestamp_ms, 7)
    assert record["periodsPerYear"] == 252.0
    assert record["riskFreeRate"] == 0.01
    assert record["sharpeThreshold"] == 0.5


def test_metrics_are_emitted_only_when_they_change() -> None:
    monitor = PortfolioMonitor(SPEC)
    monitor.set_weights(EQUAL, timestamp_ms=0)
    monitor.on_bar(warm_up_bar())
    feed = bars(seed=5, count=6, start=1)
    drive(monitor, feed)
    assert monitor.metrics() is None  # nothing changed since the last record
    # Same weights again: same figures, nothing to emit.
    monitor.set_weights(dict(EQUAL), timestamp_ms=99_000_000)
    assert monitor.metrics() is None
    # New weights: new figures.
    monitor.set_weights({"A": 0.6, "B": 0.2, "C": 0.2}, timestamp_ms=99_000_001)
    record = monitor.metrics()
    assert record is not None
    assert record["timestamp"] == 99_000_001
    assert monitor.metrics() is None
    # New statistics: new figures.
    assert monitor.on_bar(BarReturns(50, {"B": 1.0}, {"B": 0.02})) is not None
    assert monitor.metrics() is not None


def test_no_metrics_without_weights_or_while_the_risk_is_zero() -> None:
    monitor = PortfolioMonitor(SPEC)
    monitor.on_bar(warm_up_bar())
    assert monitor.on_bar(BarReturns(1, {"A": 1.0}, {"A": 0.01})) is not None
    assert monitor.performance() is None
    assert monitor.metrics() is None  # no weights
    monitor.set_weights(EQUAL, timestamp_ms=0)
    assert monitor.metrics() is None  # one vector: covariance 0, Sharpe undefined
    assert monitor.on_bar(BarReturns(2, {"B": 1.0}, {"B": 0.02})) is not None
    assert monitor.metrics() is not None


# -- checkpoints --------------------------------------------------------------------------------


def restored(monitor: PortfolioMonitor) -> PortfolioMonitor:
    """Round trip through JSON, as Flink keyed state would store it."""
    return PortfolioMonitor.from_state(monitor.spec, json.loads(json.dumps(monitor.to_state())))


@pytest.mark.parametrize("estimator", ["welford", "ewm"])
def test_state_round_trip_mid_warm_up_continues_identically(estimator: str) -> None:
    spec = PortfolioSpec(
        "pf",
        TICKERS,
        bar_ms=BAR_MS,
        periods_per_year=252.0,
        estimator=estimator,  # type: ignore[arg-type]
        half_life_bars=8 if estimator == "ewm" else None,
    )
    original = PortfolioMonitor(spec)
    original.set_weights(EQUAL, timestamp_ms=0)
    assert original.on_bar(BarReturns(0, {"A": 1.0, "B": 1.0}, {})) is None
    copy = restored(original)
    assert copy.returns.waiting_for == ("C",)
    assert not copy.returns.warmed_up
    feed = [BarReturns(1, {"A": 1.0, "C": 1.0}, {"A": 0.01}), *bars(seed=6, count=25, start=2)]
    assert drive(copy, feed) == drive(original, feed)
    assert copy.to_state() == original.to_state()


@pytest.mark.parametrize("estimator", ["welford", "ewm"])
def test_state_round_trip_after_warm_up_continues_identically(estimator: str) -> None:
    spec = PortfolioSpec(
        "pf",
        TICKERS,
        bar_ms=BAR_MS,
        periods_per_year=252.0,
        risk_free_rate=0.02,
        estimator=estimator,  # type: ignore[arg-type]
        half_life_bars=8 if estimator == "ewm" else None,
    )
    original = PortfolioMonitor(spec)
    original.set_weights({"A": 0.2, "B": 0.3, "C": 0.5}, timestamp_ms=0)
    original.on_bar(warm_up_bar())
    drive(original, bars(seed=7, count=20, start=1))
    copy = restored(original)
    assert copy.returns.warmed_up
    assert copy.metrics() is None  # it remembers what was last emitted
    feed = bars(seed=8, count=25, start=21)
    produced = drive(copy, feed)
    assert produced == drive(original, feed)
    assert any(r is not None and "sharpRatio" in r for r in produced)
    # Weight changes after the restore behave the same too.
    new = {"A": 0.6, "B": 0.2, "C": 0.2}
    copy.set_weights(new, timestamp_ms=1)
    original.set_weights(new, timestamp_ms=1)
    assert copy.metrics() == original.metrics()


def test_state_round_trip_without_weights() -> None:
    original = PortfolioMonitor(SPEC)
    copy = restored(original)
    assert copy.weights is None
    assert copy.moments.n == 0
    assert copy.returns.waiting_for == TICKERS
