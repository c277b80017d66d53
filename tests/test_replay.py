"""ReplayEngine: the offline reference implementation of SEMANTICS.md, end to end.

Expected return vectors are computed independently here, from the tick list with numpy: closes
per bar (greatest event time), log returns close to close, warm-up, zeros where a ticker did not
trade.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from streamfolio.core.moments import WelfordMoments
from streamfolio.core.policy import PolicySettings
from streamfolio.core.portfolio import PortfolioSpec
from streamfolio.replay import (
    Heartbeat,
    ReplayEngine,
    ReplayError,
    ReplayEvent,
    ReplayPortfolio,
    Tick,
    ticks_from_rows,
)

BAR_MS = 1_000
Q = 252.0


# -- tick generation and the independent expectation --------------------------------------------


def random_ticks(
    seed: int,
    starts: dict[str, int],
    n_bars: int,
    *,
    p_trade: float = 0.7,
    drift: float = 0.0,
    vol: float = 0.01,
) -> list[Tick]:
    """Ticks in event-time order, all event times distinct.

    Ticker ``t`` trades from bar ``starts[t]`` on, in each bar with probability ``p_trade``
    (always in its first bar), 1–3 times per bar.
    """
    rng = np.random.default_rng(seed)
    price = {t: 100.0 * (1 + i) for i, t in enumerate(starts)}
    ticks: list[Tick] = []
    for k in range(n_bars):
        trading = [t for t, s in starts.items() if k == s or (k > s and rng.random() < p_trade)]
        counts = rng.integers(1, 4, size=len(trading))
        offsets = rng.choice(BAR_MS, size=int(counts.sum()), replace=False)
        i = 0
        for ticker, count in zip(trading, counts, strict=True):
            for _ in range(count):
                price[ticker] *= math.exp(rng.normal(drift, vol))
                ticks.append(Tick(k * BAR_MS + int(offsets[i]), ticker, price[ticker]))
                i += 1
    ticks.sort(key=lambda tick: tick.event_time_ms)
    return ticks


def shuffled_within(ticks: Sequence[Tick], bound_ms: int, seed: int) -> list[Tick]:
    """Reorder ticks so that none arrives more than ``bound_ms`` after a later-stamped one.

    Each tick arrives at ``event time + U[0, bound)``; every tick seen before it then has an
    event time of at most its own plus ``bound_ms``.
    """
    rng = np.random.default_rng(seed)
    arrival = np.array([t.event_time_ms for t in ticks]) + rng.uniform(0, bound_ms, len(ticks))
    return [ticks[i] for i in np.argsort(arrival, kind="stable")]


def expected_vectors(
    ticks: Sequence[Tick], tickers: Sequence[str], bar_ms: int = BAR_MS
) -> tuple[np.ndarray, np.ndarray]:
    """(bar indices, return vectors) of a portfolio, computed directly with numpy."""
    times = np.array([t.event_time_ms for t in ticks], dtype=np.int64)
    names = np.array([t.ticker for t in ticks])
    prices = np.array([t.price for t in ticks])
    first_close_bar = []
    returns_by_ticker = []
    for ticker in tickers:
        mask = names == ticker
        t, p = times[mask], prices[mask]
        order = np.argsort(t, kind="stable")
        t, p = t[order], p[order]
        bars = t // bar_ms
        # The close is the last tick of each bar: first occurrence in the reversed arrays.
        uniq, first_in_reversed = np.unique(bars[::-1], return_index=True)
        closes = p[::-1][first_in_reversed]
        first_close_bar.append(int(uniq[0]))
        log_returns = np.log(closes[1:] / closes[:-1])  # r = ln(close / previous close)
        returns_by_ticker.append(dict(zip(uniq[1:].tolist(), log_returns, strict=True)))
    warm_up_end = max(first_close_bar)
    bars_with_returns = sorted({k for r in returns_by_ticker for k in r if k > warm_up_end})
    vectors = np.zeros((len(bars_with_returns), len(tickers)))
    for row, k in enumerate(bars_with_returns):
        for col, r in enumerate(returns_by_ticker):
            vectors[row, col] = r.get(k, 0.0)
    return np.array(bars_with_returns, dtype=np.int64), vectors


def spec(portfolio_id: str, tickers: Sequence[str], **kwargs: object) -> PortfolioSpec:
    return PortfolioSpec(
        portfolio_id,
        tuple(tickers),
        bar_ms=BAR_MS,
        periods_per_year=Q,
        **kwargs,  # type: ignore[arg-type]
    )


def equal_weights(tickers: Sequence[str]) -> dict[str, float]:
    return {t: 1.0 / len(tickers) for t in tickers}


def run(
    portfolios: Sequence[ReplayPortfolio], ticks: Sequence[Tick], bound_ms: int = 0
) -> list[ReplayEvent]:
    return list(ReplayEngine(portfolios, max_out_of_orderness_ms=bound_ms).run(ticks))


def of(events: Sequence[ReplayEvent], *kinds: str, key: str | None = None) -> list[ReplayEvent]:
    return [e for e in events if e.kind in kinds and (key is None or e.key == key)]


def covariance_of(record: dict[str, object] | object, tickers: Sequence[str]) -> np.ndarray:
    matrix = record["covarianceMatrix"]  # type: ignore[index]
    return np.array([[matrix[a][b] for b in tickers] for a in tickers])


def assert_stats_match_vectors(
    stats: Sequence[ReplayEvent], bars: np.ndarray, vectors: np.ndarray, tickers: Sequence[str]
) -> None:
    assert len(stats) == len(vectors) > 2
    reference = WelfordMoments(len(tickers))
    for event, k, x in zip(stats, bars, vectors, strict=True):
        reference.update(x)
        record = event.record
        assert record["timestamp"] == (int(k) + 1) * BAR_MS
        assert record["count"] == reference.n
        mean = np.array([record["meanReturns"][t] for t in tickers])
        np.testing.assert_allclose(mean, reference.mean, rtol=1e-12, atol=1e-18)
        np.testing.assert_allclose(
            covariance_of(record, tickers), reference.covariance, rtol=1e-12, atol=1e-18
        )
    # And the two-pass numpy figures, to 1e-12 relative to the scale of the data.
    last = stats[-1].record
    mean = np.array([last["meanReturns"][t] for t in tickers])
    np.testing.assert_allclose(
        mean, vectors.mean(axis=0), rtol=1e-12, atol=1e-12 * np.abs(vectors).max()
    )
    two_pass = np.cov(vectors.T, ddof=1)
    np.testing.assert_allclose(
        covariance_of(last, tickers), two_pass, rtol=1e-12, atol=1e-12 * np.diag(two_pass).max()
    )


# -- statistics ---------------------------------------------------------------------------------


def test_statistics_equal_welford_over_the_independently_computed_vectors() -> None:
    tickers = ["A", "B", "C"]
    ticks = random_ticks(seed=1, starts={"A": 0, "B": 2, "C": 5}, n_bars=80)
    events = run(
        [ReplayPortfolio(spec("p", tickers), initial_weights=equal_weights(tickers))], ticks
    )
    bars, vectors = expected_vectors(ticks, tickers)
    assert (vectors == 0).any()  # some tickers skipped bars
    assert bars[0] > 5  # the bar of C's first close yields nothing
    assert_stats_match_vectors(of(events, "stats"), bars, vectors, tickers)
    assert of(events, "dead_letter") == []


def test_tickers_that_skip_bars_get_zero_returns_and_chain_over_the_gap() -> None:
    rows = [
        (0, "A", 10.0),
        (10, "B", 20.0),
        (1_500, "A", 11.0),
        (2_100, "B", 22.0),
        (3_200, "A", 12.1),
        (4_000, "C", 1.0),  # not in the portfolio: no vector for bar 4
        (5_999, "B", 19.8),
        (5_998, "B", 99.0),  # earlier in its bar: not the close
    ]
    events = run(
        [ReplayPortfolio(spec("p", ["A", "B"]), initial_weights={"A": 0.5, "B": 0.5})],
        list(ticks_from_rows(rows)),
    )
    stats = [e.record for e in of(events, "stats")]
    assert [s["timestamp"] for s in stats] == [2_000, 3_000, 4_000, 6_000]
    vectors = np.array(
        [[math.log(1.1), 0.0], [0.0, math.log(1.1)], [math.log(1.1), 0.0], [0.0, math.log(0.9)]]
    )
    last = stats[-1]
    assert last["count"] == 4
    np.testing.assert_allclose(
        [last["meanReturns"]["A"], last["meanReturns"]["B"]], vectors.mean(axis=0), rtol=1e-12
    )
    np.testing.assert_allclose(covariance_of(last, ["A", "B"]), np.cov(vectors.T), rtol=1e-12)


def test_two_portfolios_sharing_tickers_each_get_their_own_vectors() -> None:
    ticks = random_ticks(seed=2, starts={"A": 0, "B": 0, "C": 4, "D": 1}, n_bars=70)
    first, second = ["A", "B"], ["B", "C", "D"]
    events = run(
        [
            ReplayPortfolio(spec("p1", first), initial_weights=equal_weights(first)),
            ReplayPortfolio(spec("p2", second), initial_weights=equal_weights(second)),
        ],
        ticks,
        bound_ms=300,
    )
    for portfolio_id, tickers in (("p1", first), ("p2", second)):
        bars, vectors = expected_vectors(ticks, tickers)
        assert_stats_match_vectors(of(events, "stats", key=portfolio_id), bars, vectors, tickers)
        for metrics in of(events, "metrics", key=portfolio_id):
            assert list(metrics.record["weights"]) == tickers
    # p1 warms up in bar 0, p2 only in bar 4.
    assert (
        of(events, "stats", key="p1")[0].record["timestamp"]
        < (of(events, "stats", key="p2")[0].record["timestamp"])
    )


def test_an_initial_statistics_record_is_the_prior() -> None:
    tickers = ["A", "B"]
    ticks = random_ticks(seed=3, starts={"A": 0, "B": 0}, n_bars=30)
    prior = {
        "timestamp": 0,
        "portfolio_id": "p",
        "meanReturns": {"A": 0.001, "B": -0.001},
        "covarianceMatrix": {"A": {"A": 1e-4, "B": 1e-5}, "B": {"A": 1e-5, "B": 2e-4}},
        "count": 40,
    }
    events = run([ReplayPortfolio(spec("p", tickers), initial_stats=prior)], ticks)
    _, vectors = expected_vectors(ticks, tickers)
    reference = WelfordMoments.from_prior([0.001, -0.001], [[1e-4, 1e-5], [1e-5, 2e-4]], 40)
    for x in vectors:
        reference.update(x)
    last = of(events, "stats")[-1].record
    assert last["count"] == 40 + len(vectors)
    np.testing.assert_allclose(covariance_of(last, tickers), reference.covariance, rtol=1e-12)
    assert of(events, "metrics") == []  # no weights, no metrics


def test_invalid_initial_weights_are_refused_up_front() -> None:
    with pytest.raises(ReplayError, match="missing B"):
        ReplayEngine([ReplayPortfolio(spec("p", ["A", "B"]), initial_weights={"A": 1.0})])


# -- event time: disorder, lateness, flush ------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ticks_shuffled_within_the_bound_give_the_same_stats_and_metrics(seed: int) -> None:
    tickers = ["A", "B", "C"]
    ticks = random_ticks(seed=10 + seed, starts={"A": 0, "B": 1, "C": 3}, n_bars=60)
    bound = 2_500
    shuffled = shuffled_within(ticks, bound, seed)
    assert shuffled != ticks

    def portfolios() -> list[ReplayPortfolio]:
        return [ReplayPortfolio(spec("p", tickers), initial_weights=equal_weights(tickers))]

    in_order = run(portfolios(), ticks, bound_ms=bound)
    disordered = run(portfolios(), shuffled, bound_ms=bound)
    without_slack = run(portfolios(), ticks, bound_ms=0)
    assert of(disordered, "dead_letter") == []
    assert of(in_order, "stats", "metrics") == of(disordered, "stats", "metrics")
    assert of(in_order, "stats", "metrics") == of(without_slack, "stats", "metrics")
    assert len(of(in_order, "metrics")) > 10


def test_late_ticks_are_dead_lettered_and_change_nothing() -> None:
    tickers = ["A", "B"]
    bound = 500
    ticks = random_ticks(seed=4, starts={"A": 0, "B": 0}, n_bars=50)
    with_late: list[Tick] = []
    late: list[Tick] = []
    max_seen = -1
    for i, tick in enumerate(ticks):
        with_late.append(tick)
        max_seen = max(max_seen, tick.event_time_ms)
        if i % 17 == 16:
            # Its bar ended more than the bound before the greatest event time seen.
            stale = Tick(max_seen - bound - BAR_MS - 1, "A" if i % 2 else "B", 1e6)
            with_late.append(stale)
            late.append(stale)
    assert len(late) >= 5

    def portfolios() -> list[ReplayPortfolio]:
        return [ReplayPortfolio(spec("p", tickers), initial_weights=equal_weights(tickers))]

    engine = ReplayEngine(portfolios(), max_out_of_orderness_ms=bound)
    events = list(engine.run(with_late))
    clean = run(portfolios(), ticks, bound_ms=bound)

    dead = of(events, "dead_letter")
    assert [e.record["reason"] for e in dead] == ["late"] * len(late)
    assert [
        (e.key, e.record["ticker"], e.record["event_time"], e.record["price"]) for e in dead
    ] == [(t.ticker, t.ticker, t.event_time_ms, t.price) for t in late]
    assert engine.late_ticks == len(late)
    assert [e for e in events if e.kind != "dead_letter"] == clean


def test_lateness_boundary_is_the_out_of_orderness_bound() -> None:
    # Bar 0 is [0, 1000). With a bound of 500 ms it is final once a tick at 1500 has been seen.
    def events_for(rows: list[tuple[int, str, float]]) -> list[ReplayEvent]:
        engine = ReplayEngine(
            [ReplayPortfolio(spec("p", ["A"]), initial_weights={"A": 1.0})],
            max_out_of_orderness_ms=500,
        )
        return list(engine.run(ticks_from_rows(rows)))

    within = events_for([(0, "A", 1.0), (1_499, "A", 2.0), (999, "A", 3.0)])
    assert of(within, "dead_letter") == []
    exactly_at_bound = events_for([(0, "A", 1.0), (1_500, "A", 2.0), (1_000, "A", 3.0)])
    assert of(exactly_at_bound, "dead_letter") == []
    beyond = events_for([(0, "A", 1.0), (1_500, "A", 2.0), (999, "A", 3.0)])
    assert [e.record["reason"] for e in of(beyond, "dead_letter")] == ["late"]


def test_flush_closes_the_bars_still_open_at_the_end() -> None:
    tickers = ["A", "B"]
    ticks = random_ticks(seed=5, starts={"A": 0, "B": 0}, n_bars=20, p_trade=1.0)

    def portfolios() -> list[ReplayPortfolio]:
        return [ReplayPortfolio(spec("p", tickers), initial_weights=equal_weights(tickers))]

    engine = ReplayEngine(portfolios(), max_out_of_orderness_ms=1_500)
    unflushed = list(engine.run(ticks, flush=False))
    last_bars = [e.record["timestamp"] for e in of(unflushed, "stats")]
    assert last_bars[-1] < 20 * BAR_MS  # the last bar(s) are still open
    flushed = list(engine.flush())
    assert [e.record["timestamp"] for e in of(flushed, "stats")][-1] == 20 * BAR_MS
    assert unflushed + flushed == run(portfolios(), ticks, bound_ms=1_500)
    assert list(engine.flush()) == []  # nothing left


# -- rebalancing --------------------------------------------------------------------------------


def regime_change_ticks(seed: int, good_bars: int, bad_bars: int) -> list[Tick]:
    """A, B, C trade once a bar with mean per-bar return 0.002; then A's mean turns to -0.01."""
    rng = np.random.default_rng(seed)
    price = {"A": 100.0, "B": 50.0, "C": 20.0}
    ticks: list[Tick] = []
    for k in range(good_bars + bad_bars):
        offsets = rng.choice(BAR_MS, size=3, replace=False)
        for ticker, offset in zip(price, offsets, strict=True):
            mean = -0.01 if (ticker == "A" and k >= good_bars) else 0.002
            price[ticker] *= math.exp(rng.normal(mean, 0.01))
            ticks.append(Tick(k * BAR_MS + int(offset), ticker, price[ticker]))
    ticks.sort(key=lambda tick: tick.event_time_ms)
    return ticks


def test_a_regime_change_triggers_a_rebalance_then_new_weights_then_their_metrics() -> None:
    tickers = ["A", "B", "C"]
    good_bars = 80
    ticks = regime_change_ticks(seed=6, good_bars=good_bars, bad_bars=60)
    policy = PolicySettings(
        sharpe_threshold=1.0,
        band=0.1,
        cooldown_ms=5 * BAR_MS,
        min_improvement=0.05,
        min_observations=20,
        periods_per_year=Q,
    )
    portfolio = ReplayPortfolio(
        spec("p", tickers), initial_weights=equal_weights(tickers), policy=policy
    )
    events = run([portfolio], ticks)

    kinds = [e.kind for e in events]
    assert "rebalance" in kinds
    first = kinds.index("rebalance")
    rebalance, weights, metrics = events[first : first + 3]
    assert (rebalance.kind, weights.kind, metrics.kind) == ("rebalance", "weights", "metrics")

    assert rebalance.record["timestamp"] > good_bars * BAR_MS  # after the regime changed
    assert rebalance.record["old_weights"] == equal_weights(tickers)
    new = rebalance.record["new_weights"]
    assert new["A"] < 0.05  # out of the asset whose mean turned negative
    assert math.fsum(new.values()) == pytest.approx(1.0, abs=1e-9)
    assert all(v >= -1e-12 for v in new.values())
    assert rebalance.record["sharpe_before"] < 1.0
    assert rebalance.record["sharpe_after"] - rebalance.record["sharpe_before"] >= 0.05

    assert weights.record["weights"] == new
    assert weights.record["timestamp"] == rebalance.record["timestamp"]
    assert metrics.record["weights"] == new
    assert metrics.record["sharpRatio"] == pytest.approx(
        rebalance.record["sharpe_after"], rel=1e-12
    )
    # The metrics just before the rebalance are those that triggered it.
    trigger = events[first - 1]
    assert trigger.kind == "metrics"
    assert trigger.record["sharpRatio"] == pytest.approx(
        rebalance.record["sharpe_before"], rel=1e-12
    )
    # Later metrics use the new weights (until a further rebalance).
    later = of(events[first + 3 :], "metrics", "rebalance")
    assert later
    assert later[0].kind == "rebalance" or later[0].record["weights"] == new


def test_replays_with_a_policy_are_deterministic() -> None:
    tickers = ["A", "B", "C"]
    ticks = regime_change_ticks(seed=7, good_bars=60, bad_bars=60)

    def portfolios() -> list[ReplayPortfolio]:
        policy = PolicySettings(sharpe_threshold=1.5, cooldown_ms=0, min_observations=10)
        return [
            ReplayPortfolio(
                spec("p", tickers), initial_weights=equal_weights(tickers), policy=policy
            )
        ]

    first = run(portfolios(), ticks)
    assert of(first, "rebalance")
    assert first == run(portfolios(), ticks)


# -- partitions, heartbeats, future skew (SEMANTICS §4) -----------------------------------------

NOW = 10_000_000


def partitioned(
    portfolios: Sequence[ReplayPortfolio], partitions: int, bound_ms: int = 0
) -> ReplayEngine:
    return ReplayEngine(
        portfolios, max_out_of_orderness_ms=bound_ms, partitions=partitions, now_ms=lambda: NOW
    )


def one_ticker() -> list[ReplayPortfolio]:
    return [ReplayPortfolio(spec("p", ["A"]), initial_weights={"A": 1.0})]


def test_lateness_is_judged_on_the_ticks_own_partition() -> None:
    engine = partitioned(one_ticker(), partitions=2, bound_ms=500)
    events = list(
        engine.run(
            [
                Tick(0, "A", 1.0, partition=0),
                Tick(5_000, "A", 2.0, partition=0),  # partition 0's watermark: 4500
                Tick(100, "A", 3.0, partition=1),  # bar 0: late on partition 0, not on its own
                Tick(4_600, "A", 4.0, partition=0),  # bar 4 ends at 5000 > 4500: counted
                Tick(3_999, "A", 5.0, partition=0),  # bar 3 ends at 4000 <= 4500: late
            ]
        )
    )
    dead = of(events, "dead_letter")
    assert [
        (e.record["event_time"], e.record["partition"], e.record["watermark"]) for e in dead
    ] == [(3_999, 0, 4_500)]
    assert engine.late_ticks == 1
    # Bar 0's close is partition 1's tick (greater event time), so bar 4 chains from 3.0.
    stats = of(events, "stats")
    assert [s.record["timestamp"] for s in stats] == [5_000, 6_000]
    assert stats[0].record["meanReturns"]["A"] == pytest.approx(math.log(4.0 / 3.0), rel=1e-15)


def test_a_partition_that_has_read_nothing_holds_every_bar_until_the_end() -> None:
    engine = partitioned(one_ticker(), partitions=3)
    ticks = [Tick(k * BAR_MS, "A", 10.0 + k, partition=k % 2) for k in range(10)]
    assert list(engine.run(ticks, flush=False)) == []
    assert engine.watermark_ms == -math.inf
    assert engine.partition_watermark_ms(0) == 8 * BAR_MS
    flushed = list(engine.flush())
    assert [e.record["timestamp"] for e in of(flushed, "stats")] == [
        (k + 1) * BAR_MS for k in range(1, 10)
    ]


def test_heartbeats_move_their_partition_and_make_no_close() -> None:
    engine = partitioned(one_ticker(), partitions=2)
    ticks = [Tick(0, "A", 10.0), Tick(BAR_MS, "A", 11.0), Tick(2 * BAR_MS, "A", 12.0)]
    assert list(engine.run(ticks, flush=False)) == []  # partition 1 is silent
    events = list(engine.on_heartbeat(2 * BAR_MS, partition=1))
    assert [e.record["timestamp"] for e in of(events, "stats")] == [2 * BAR_MS]
    assert engine.watermark_ms == 2 * BAR_MS
    # Heartbeats far ahead close bar 2, and make no close in the bar they fall in.
    events = list(engine.on_heartbeat(50 * BAR_MS, partition=1))
    assert events == []  # partition 0 holds the watermark at 2000
    events = list(engine.on_heartbeat(50 * BAR_MS, partition=0))
    assert [e.record["timestamp"] for e in of(events, "stats")] == [3 * BAR_MS]
    assert list(engine.flush()) == []
    # And heartbeats make the partition's later ticks late like ticks would.
    late = list(engine.on_tick(Tick(40 * BAR_MS, "A", 1.0, partition=1)))
    assert [e.record["reason"] for e in late] == ["late"]


def test_records_beyond_the_future_skew_are_dead_lettered_and_move_nothing() -> None:
    engine = ReplayEngine(
        one_ticker(), max_future_skew_ms=1_000, now_ms=lambda: 5 * BAR_MS, partitions=1
    )
    events = list(
        engine.run(
            [
                Tick(0, "A", 10.0),
                Tick(6 * BAR_MS + 1, "A", 99.0, offset=7),  # beyond now + skew: refused
                Heartbeat(6 * BAR_MS + 1, offset=8),  # likewise
                Tick(BAR_MS, "A", 12.0),  # not late: the refused records moved nothing
                Tick(2 * BAR_MS, "A", 13.0),
                Tick(6 * BAR_MS, "A", 11.0),  # at the limit: accepted
            ]
        )
    )
    dead = of(events, "dead_letter")
    assert [(e.key, e.record["reason"], e.record["offset"]) for e in dead] == [
        ("A", "future", 7),
        ("", "future", 8),
    ]
    assert engine.future_records == 2
    assert [e.record["timestamp"] for e in of(events, "stats")] == [2_000, 3_000, 7_000]


def test_equal_event_times_across_partitions_the_higher_partition_then_offset_is_the_close() -> (
    None
):
    def close_of(ticks: list[Tick]) -> float:
        engine = partitioned([ReplayPortfolio(spec("p", ["A"]))], partitions=3)
        events = list(engine.run([Tick(0, "A", 1.0, partition=2), *ticks]))
        (stats,) = of(events, "stats")
        return math.exp(stats.record["meanReturns"]["A"])

    same_time = [
        Tick(1_500, "A", 2.0, partition=2, offset=9),
        Tick(1_500, "A", 3.0, partition=2, offset=4),  # read later, lower offset
        Tick(1_500, "A", 4.0, partition=0, offset=50),
        Tick(1_400, "A", 5.0, partition=1, offset=60),
    ]
    for order in (same_time, same_time[::-1], same_time[1:] + same_time[:1]):
        assert close_of(order) == pytest.approx(2.0, rel=1e-15)
    # Without offsets, the one read last from its partition.
    no_offsets = [Tick(1_500, "A", 2.0, partition=1), Tick(1_500, "A", 3.0, partition=1)]
    assert close_of(no_offsets) == pytest.approx(3.0, rel=1e-15)


def test_a_tick_from_a_partition_the_engine_was_not_told_of_is_refused() -> None:
    engine = ReplayEngine(one_ticker(), partitions=[0, 2])
    with pytest.raises(ReplayError, match="partition 1 is not one of"):
        list(engine.on_tick(Tick(0, "A", 1.0, partition=1)))
    with pytest.raises(ReplayError, match="at least one partition"):
        ReplayEngine(one_ticker(), partitions=0)


def test_a_control_takes_effect_at_its_timestamp_until_the_next_bar_is_final() -> None:
    ticks = [Tick(k * BAR_MS + 10, "A", 10.0 * (1.01 + 0.02 * (k % 3)) ** k) for k in range(8)]
    weights = {"timestamp": 3_500, "portfolio_id": "p", "weights": {"A": 0.5, "B": 0.5}}
    b_ticks = [Tick(k * BAR_MS + 20, "B", 20.0 * (1.02 - 0.01 * (k % 2)) ** k) for k in range(8)]
    records = sorted(ticks + b_ticks, key=lambda t: t.event_time_ms)

    def with_control_at(position: int) -> list[ReplayEvent]:
        engine = ReplayEngine([ReplayPortfolio(spec("p", ["A", "B"]))])
        events: list[ReplayEvent] = []
        for i, tick in enumerate(records):
            if i == position:
                events.extend(engine.control("weights", weights))
            events.extend(engine.on_tick(tick))
        return events + list(engine.flush())

    first = with_control_at(0)
    metrics = of(first, "metrics")
    assert metrics[0].record["timestamp"] == 3_500  # after the bar ending 3000, before 4000's
    assert of(first, "stats")[1].record["timestamp"] == 3_000
    # The bar ending 4000 is final once a tick at 4000 or later is read: until then, same output.
    deadline = next(i for i, t in enumerate(records) if t.event_time_ms >= 4_000)
    for position in range(deadline + 1):
        assert with_control_at(position) == first
    # Later it takes effect on arrival, after that bar: the one timing-dependent case.
    late = with_control_at(deadline + 1)
    assert late != first
    assert of(late, "metrics")[0].record["statsTimestamp"] == 4_000


def test_a_pending_control_takes_effect_as_soon_as_the_watermark_passes_it() -> None:
    prior = {
        "timestamp": 0,
        "portfolio_id": "p",
        "meanReturns": {"A": 0.001},
        "covarianceMatrix": {"A": {"A": 1e-4}},
        "count": 10,
    }
    engine = partitioned([ReplayPortfolio(spec("p", ["A"]), initial_stats=prior)], partitions=2)
    weights = {"timestamp": 1_500, "portfolio_id": "p", "weights": {"A": 1.0}}
    assert list(engine.control("weights", weights)) == []
    assert list(engine.on_heartbeat(1_600, partition=0)) == []  # partition 1 holds it
    # No bar is open: the heartbeat alone moves the job's watermark past 1500.
    events = list(engine.on_heartbeat(1_500, partition=1))
    assert [(e.kind, e.record["timestamp"]) for e in events] == [("metrics", 1_500)]
