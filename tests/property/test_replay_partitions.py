"""The replay over several partitions of the prices topic (SEMANTICS §4, docs/semantics.md).

Per-partition sequences of ticks and heartbeats (ties, disorder within and beyond the bound,
stale ticks, records stamped in the future) are fed in random interleavings, with control
messages passed at random moments before the bar that follows them is final. Each portfolio's
output, and each partition's dead letters, must not depend on the interleaving; and they must
equal an independent model of the rules, with every open bar closed at the end.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfolio.core.moments import WelfordMoments, moments_from_prior, stats_record
from streamfolio.core.portfolio import PortfolioSpec
from streamfolio.core.types import FloatArray
from streamfolio.replay import (
    ControlKind,
    Heartbeat,
    PriceRecord,
    ReplayEngine,
    ReplayEvent,
    ReplayPortfolio,
    Tick,
    replay_topic_records,
)

NOW_MS = 1_000_000
SKEW_MS = 20_000
FUTURE_MS = NOW_MS + SKEW_MS + 1  # the first event time beyond the skew
TICKERS = ("A", "B", "C")
SPECS = (
    PortfolioSpec("p1", ("A", "B"), bar_ms=1_000, periods_per_year=1_000),
    PortfolioSpec(
        "p2", ("B", "C"), bar_ms=2_000, periods_per_year=500, estimator="ewm", half_life_bars=4
    ),
    PortfolioSpec("p3", ("A", "C"), bar_ms=1_000, periods_per_year=1_000, risk_free_rate=0.01),
)
WELFORD_SPECS = tuple(s for s in SPECS if s.estimator == "welford")

Control = tuple[ControlKind, dict[str, Any]]


def portfolios(specs: Sequence[PortfolioSpec] = SPECS) -> list[ReplayPortfolio]:
    return [
        ReplayPortfolio(spec, initial_weights={t: 1 / len(spec.tickers) for t in spec.tickers})
        for spec in specs
    ]


def engine(
    partitions: Sequence[int], bound: int, specs: Sequence[PortfolioSpec] = SPECS
) -> ReplayEngine:
    return ReplayEngine(
        portfolios(specs),
        max_out_of_orderness_ms=bound,
        partitions=partitions,
        max_future_skew_ms=SKEW_MS,
        now_ms=lambda: NOW_MS,
    )


# -- strategies ---------------------------------------------------------------------------------


@st.composite
def partition_records(draw: st.DrawFn, partition: int) -> list[PriceRecord]:
    """A partition's records in read order, on a 250 ms grid so that event times tie often."""
    with_offsets = draw(st.booleans())
    clock = draw(st.integers(0, 8)) * 250
    records: list[PriceRecord] = []
    for i in range(draw(st.integers(0, 45))):
        clock += draw(st.sampled_from([0, 0, 250, 250, 500, 1_000, 3_000]))
        offset = 3 * i + 7 if with_offsets else None  # offsets need not be consecutive
        kind = draw(st.sampled_from(["tick"] * 8 + ["heartbeat", "future"]))
        if kind == "heartbeat":
            lead = draw(st.sampled_from([0, 250, 1_000]))  # a feed's clock may run ahead
            records.append(Heartbeat(clock + lead, partition, offset))
            continue
        if kind == "future":
            when = FUTURE_MS + draw(st.integers(0, 5)) * 250
            if draw(st.booleans()):
                records.append(Heartbeat(when, partition, offset))
            else:
                records.append(Tick(when, draw(st.sampled_from(TICKERS)), 1e6, partition, offset))
            continue
        # Mostly within a 1.5 s bound, sometimes far behind it (late for some bar sizes).
        lag = draw(st.sampled_from([0, 0, 0, 250, 500, 1_000, 1_500, 2_250, 4_000]))
        price = draw(st.integers(40, 160)) / 8
        records.append(
            Tick(max(0, clock - lag), draw(st.sampled_from(TICKERS)), price, partition, offset)
        )
    return records


@st.composite
def topics(draw: st.DrawFn) -> tuple[dict[int, list[PriceRecord]], int]:
    """Per-partition records (ids need not be consecutive) and the out-of-orderness bound."""
    ids = draw(st.sampled_from([[0], [0, 1], [0, 1, 2], [1, 4]]))
    return {p: draw(partition_records(p)) for p in ids}, draw(st.sampled_from([0, 500, 1_500]))


def seed(spec: PortfolioSpec, timestamp: int, scale: float) -> dict[str, Any]:
    n = len(spec.tickers)
    moments = moments_from_prior(
        np.full(n, 1e-4 * scale),
        np.eye(n) * 1e-4 * scale + 1e-5,
        20,
        kind=spec.estimator,
        half_life_bars=spec.half_life_bars,
    )
    return stats_record(moments, spec.portfolio_id, spec.tickers, timestamp)


@st.composite
def controls(draw: st.DrawFn) -> list[Control]:
    """Seeds, weights and an invalid weights message, at distinct timestamps."""
    times = draw(st.lists(st.integers(0, 40).map(lambda x: x * 500 + 1), unique=True, max_size=6))
    out: list[Control] = []
    for timestamp in times:
        spec = draw(st.sampled_from(SPECS))
        what = draw(st.sampled_from(["stats", "weights", "weights", "invalid"]))
        if what == "stats":
            out.append(("stats", seed(spec, timestamp, draw(st.sampled_from([0.5, 1.0, 3.0])))))
            continue
        first = draw(st.integers(0, 10)) / 10
        weights = dict(zip(spec.tickers, [first, 1 - first], strict=True))
        if what == "invalid":
            weights = {spec.tickers[0]: 1.0}
        out.append(
            (
                "weights",
                {"timestamp": timestamp, "portfolio_id": spec.portfolio_id, "weights": weights},
            )
        )
    return out


# -- helpers ------------------------------------------------------------------------------------


def interleave(prices: dict[int, list[PriceRecord]], rnd: random.Random) -> list[PriceRecord]:
    """The records in a random order that keeps each partition's own order."""
    order = [p for p, records in prices.items() for _ in records]
    rnd.shuffle(order)
    position = dict.fromkeys(prices, 0)
    out = []
    for p in order:
        out.append(prices[p][position[p]])
        position[p] += 1
    return out


OUTPUT_KINDS = ("stats", "metrics", "weights", "rebalance", "hold")


def by_portfolio(events: Sequence[ReplayEvent]) -> dict[str, list[tuple[str, Any]]]:
    out: dict[str, list[tuple[str, Any]]] = {spec.portfolio_id: [] for spec in SPECS}
    for e in events:
        if e.kind in OUTPUT_KINDS:
            out[e.key].append((e.kind, e.record))
    return out


def letters_by_partition(events: Sequence[ReplayEvent]) -> dict[int, list[tuple[str, Any]]]:
    """Dead letters of ticks and heartbeats, per partition in emission order."""
    out: dict[int, list[tuple[str, Any]]] = {}
    for e in events:
        if e.kind == "dead_letter" and "partition" in e.record:
            out.setdefault(e.record["partition"], []).append((e.key, e.record))
    return out


def control_letters(events: Sequence[ReplayEvent]) -> list[tuple[str, str, str]]:
    """Dead letters of control messages: emitted on arrival, so compared as a set."""
    return sorted(
        (e.key, e.record["reason"], e.record["detail"])
        for e in events
        if e.kind == "dead_letter" and "partition" not in e.record
    )


def watermarks(
    prices: dict[int, list[PriceRecord]], bound: int, records: list[PriceRecord]
) -> list[float]:
    """The job watermark after each record."""
    dry = engine(list(prices), bound)
    out = []
    for record in records:
        list(dry.on_record(record))
        out.append(dry.watermark_ms)
    return out


def with_controls(
    records: list[PriceRecord],
    marks: list[float],
    control_list: list[Control],
    rnd: random.Random,
) -> list[PriceRecord | Control]:
    """``records`` with each control inserted at a random slot before the first bar ending after
    its timestamp is final (the last moment SEMANTICS leaves it free of timing)."""
    bar_ms = {spec.portfolio_id: spec.bar_ms for spec in SPECS}
    slots: list[tuple[int, int]] = []
    for i, (_, record) in enumerate(control_list):
        size = bar_ms[record["portfolio_id"]]
        next_end = (record["timestamp"] // size + 1) * size
        allowed = sum(1 for w in marks if w < next_end)  # the watermark never goes back
        slots.append((rnd.randint(0, allowed), i))
    slots.sort()
    out: list[PriceRecord | Control] = []
    j = 0
    for slot, i in slots:
        out.extend(records[j:slot])
        j = max(j, slot)
        out.append(control_list[i])
    out.extend(records[j:])
    return out


def run_steps(e: ReplayEngine, steps: list[PriceRecord | Control]) -> list[ReplayEvent]:
    events: list[ReplayEvent] = []
    for step in steps:
        if isinstance(step, tuple):
            events.extend(e.control(*step))
        else:
            events.extend(e.on_record(step))
    events.extend(e.flush())
    return events


# -- interleaving does not matter ---------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(topics(), controls(), st.randoms(use_true_random=False))
def test_each_portfolio_gets_the_same_output_whatever_the_interleaving(
    topic: tuple[dict[int, list[PriceRecord]], int],
    control_list: list[Control],
    rnd: random.Random,
) -> None:
    prices, bound = topic
    # Reference: controls first, then one partition after the other.
    sequential = [r for records in prices.values() for r in records]
    reference = run_steps(engine(list(prices), bound), [*control_list, *sequential])

    mixed = interleave(prices, rnd)
    steps = with_controls(mixed, watermarks(prices, bound, mixed), control_list, rnd)
    events = run_steps(engine(list(prices), bound), steps)

    assert by_portfolio(events) == by_portfolio(reference)
    assert letters_by_partition(events) == letters_by_partition(reference)
    assert control_letters(events) == control_letters(reference)
    topic_events = replay_topic_records(
        portfolios(),
        prices,
        control_list,
        max_out_of_orderness_ms=bound,
        max_future_skew_ms=SKEW_MS,
        now_ms=lambda: NOW_MS,
    )
    assert by_portfolio(topic_events) == by_portfolio(reference)
    assert letters_by_partition(topic_events) == letters_by_partition(reference)


# -- an independent model of the rules ----------------------------------------------------------


def model_letters_and_ticks(
    prices: dict[int, list[PriceRecord]], bound: int, bar_sizes: Sequence[int]
) -> tuple[
    dict[int, list[tuple[str, int, int | None]]],
    dict[int, list[tuple[tuple[int, int, int], str, float]]],
]:
    """Per partition, its dead letters (reason, event time, bar size or 0); per bar size, its
    counted ticks as (rank, ticker, price). Judged partition by partition, as SEMANTICS §4 says."""
    letters: dict[int, list[tuple[str, int, int | None]]] = {}
    counted: dict[int, list[tuple[tuple[int, int, int], str, float]]] = {b: [] for b in bar_sizes}
    for p, records in prices.items():
        greatest: int | None = None
        for read, record in enumerate(records):
            t = record.event_time_ms
            if t > NOW_MS + SKEW_MS:
                letters.setdefault(p, []).append(("future", t, None))
                continue
            if isinstance(record, Tick):
                for size in bar_sizes:
                    bar_end = (t // size + 1) * size
                    if greatest is not None and bar_end <= greatest - bound:
                        letters.setdefault(p, []).append(("late", t, size))
                    else:
                        rank = (t, p, read if record.offset is None else record.offset)
                        counted[size].append((rank, record.ticker, record.price))
            greatest = t if greatest is None else max(greatest, t)
    return letters, counted


def model_vectors(
    ticks: list[tuple[tuple[int, int, int], str, float]], spec: PortfolioSpec
) -> tuple[list[int], list[FloatArray]]:
    """(bar ends, return vectors) of a portfolio from its bar size's counted ticks."""
    closes: dict[str, dict[int, tuple[tuple[int, int, int], float]]] = {}
    for rank, ticker, price in ticks:
        k = rank[0] // spec.bar_ms
        best = closes.setdefault(ticker, {}).get(k)
        if best is None or rank > best[0]:
            closes[ticker][k] = (rank, price)
    if any(t not in closes for t in spec.tickers):
        return [], []
    warm_up_end = max(min(closes[t]) for t in spec.tickers)
    returns: dict[str, dict[int, float]] = {}
    for ticker in spec.tickers:
        bars = sorted(closes[ticker])
        returns[ticker] = {
            k: math.log(closes[ticker][k][1] / closes[ticker][prev][1])
            for prev, k in itertools.pairwise(bars)
        }
    bars_with_returns = sorted({k for r in returns.values() for k in r if k > warm_up_end})
    vectors = [np.array([returns[t].get(k, 0.0) for t in spec.tickers]) for k in bars_with_returns]
    return [(k + 1) * spec.bar_ms for k in bars_with_returns], vectors


@settings(max_examples=150, deadline=None)
@given(topics(), st.randoms(use_true_random=False))
def test_the_output_is_what_the_rules_say_and_the_end_closes_every_bar(
    topic: tuple[dict[int, list[PriceRecord]], int], rnd: random.Random
) -> None:
    prices, bound = topic
    letters, counted = model_letters_and_ticks(
        prices, bound, sorted({s.bar_ms for s in WELFORD_SPECS})
    )
    model_ends = {
        spec.portfolio_id: model_vectors(counted[spec.bar_ms], spec)[0] for spec in WELFORD_SPECS
    }
    e = engine(list(prices), bound, WELFORD_SPECS)
    mixed = interleave(prices, rnd)
    greatest: dict[int, int] = {}
    unflushed: list[ReplayEvent] = []
    for record in mixed:
        unflushed.extend(e.on_record(record))
        if record.event_time_ms <= NOW_MS + SKEW_MS:
            greatest[record.partition] = max(
                greatest.get(record.partition, 0), record.event_time_ms
            )
        # The job's watermark, and every bar ending at or before it emitted, after each record.
        watermark = min(greatest.values()) - bound if len(greatest) == len(prices) else -math.inf
        assert e.watermark_ms == watermark
        for spec in WELFORD_SPECS:
            emitted = [
                ev.record["timestamp"]
                for ev in unflushed
                if ev.kind == "stats" and ev.key == spec.portfolio_id
            ]
            assert emitted == [end for end in model_ends[spec.portfolio_id] if end <= watermark]
    events = unflushed + list(e.flush())
    assert list(e.flush()) == []
    assert events == list(engine(list(prices), bound, WELFORD_SPECS).run(mixed))

    got = {
        p: [(r["reason"], r["event_time"], r.get("bar_ms")) for _, r in records]
        for p, records in letters_by_partition(events).items()
    }
    assert got == letters
    for spec in WELFORD_SPECS:
        ends, vectors = model_vectors(counted[spec.bar_ms], spec)
        stats = [ev.record for ev in events if ev.kind == "stats" and ev.key == spec.portfolio_id]
        assert [s["timestamp"] for s in stats] == ends
        reference = WelfordMoments(len(spec.tickers))
        for record, x in zip(stats, vectors, strict=True):
            reference.update(x)
            assert record["count"] == reference.n
            mean = [record["meanReturns"][t] for t in spec.tickers]
            np.testing.assert_allclose(mean, reference.mean, rtol=1e-12, atol=1e-300)
