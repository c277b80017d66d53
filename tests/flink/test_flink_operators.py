"""The job's functions driven directly (no JVM, no Kafka) against the replay, record for record.

:mod:`fakes` stands in for Flink's keyed runtime; the functions are the job's own.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from fakes import KeyedRuntime, Pipeline, split
from pyflink.common import Row

from streamfolio.config import Settings, settings_from_mapping
from streamfolio.core.moments import moments_from_prior, stats_record
from streamfolio.flink import prices as op_prices
from streamfolio.flink.bars import ChainCloses, CollectCloses, GatherBars
from streamfolio.flink.records import MemberBars, ShardBar, TickerClose
from streamfolio.messages import Heartbeat, PortfolioStats, PriceTick, bourse_from_price_tick
from streamfolio.portfolios import portfolio_of, portfolio_spec
from streamfolio.replay import ReplayEngine, ReplayEvent, ReplayPortfolio, Tick
from streamfolio.serde import codec_for, encode_heartbeat

START = 1_700_000_000_000
BOUND = 500
PORTFOLIOS = [
    {
        "id": "p1",
        "tickers": ["AAA", "BBB"],
        "weights": {"AAA": 0.5, "BBB": 0.5},
        "bar_seconds": 1,
        "periods_per_year": 1000,
    },
    {
        "id": "p2",
        "tickers": ["BBB", "CCC"],
        "weights": {"BBB": 0.5, "CCC": 0.5},
        "bar_seconds": 2,
        "periods_per_year": 500,
        "risk_free_rate": 0.01,
        "estimator": {"kind": "ewm", "half_life_bars": 10},
    },
]


def settings(price_format: str = "tick") -> Settings:
    return settings_from_mapping(
        {
            "portfolios": PORTFOLIOS,
            "flink": {"max_out_of_orderness_ms": BOUND, "price_format": price_format},
        }
    )


def encode_tick(tick: Tick) -> bytes:
    return codec_for("PriceTick").encode(
        {"ticker": tick.ticker, "price": tick.price, "event_time": tick.event_time_ms}
    )


def seed_record(portfolio_id: str, timestamp: int, scale: float = 1.0) -> dict[str, Any]:
    spec = next(p for p in PORTFOLIOS if p["id"] == portfolio_id)
    n = len(spec["tickers"])
    estimator = spec.get("estimator", {"kind": "welford"})
    moments = moments_from_prior(
        np.full(n, 1e-4 * scale),
        np.eye(n) * 1e-4 * scale + 1e-5,
        30,
        kind=estimator["kind"],
        half_life_bars=estimator.get("half_life_bars"),
    )
    return stats_record(moments, portfolio_id, spec["tickers"], timestamp)


def weights_record(portfolio_id: str, timestamp: int, weights: dict[str, float]) -> dict[str, Any]:
    return {"timestamp": timestamp, "portfolio_id": portfolio_id, "weights": weights}


def random_ticks(seed: int, n_bars: int = 60) -> list[Tick]:
    """Three tickers, 0-3 ticks per 1 s bar each (so some skip bars), shuffled within BOUND."""
    rng = np.random.default_rng(seed)
    price = {"AAA": 10.0, "BBB": 20.0, "CCC": 30.0}
    ticks = []
    for k in range(n_bars):
        for ticker in price:
            for _ in range(int(rng.integers(0, 4)) if k > 0 else 1):
                price[ticker] *= math.exp(rng.normal(0, 0.01))
                ticks.append(
                    Tick(START + k * 1_000 + int(rng.integers(0, 1_000)), ticker, price[ticker])
                )
    ticks.sort(key=lambda t: t.event_time_ms)
    arrival = np.array([t.event_time_ms for t in ticks]) + rng.uniform(0, BOUND, len(ticks))
    return [ticks[i] for i in np.argsort(arrival, kind="stable")]


Step = tuple[str, Any]
"""("tick", Tick) | ("stats" | "weights", record) | ("raw", bytes) | ("define", definition)
| ("remove", (portfolio id, time))"""


def run_both(steps: Sequence[Step], s: Settings) -> tuple[Pipeline, list[ReplayEvent]]:
    pipeline = Pipeline(s)
    engine = ReplayEngine(
        [ReplayPortfolio(portfolio_spec(p, s.exchange)) for p in s.portfolios],
        max_out_of_orderness_ms=BOUND,
    )
    events: list[ReplayEvent] = []
    for kind, item in steps:
        if kind == "tick":
            pipeline.tick(encode_tick(item), item.event_time_ms)
            events.extend(engine.on_tick(item))
        elif kind == "raw":
            value, timestamp = item
            pipeline.tick(value, timestamp)
        elif kind == "define":  # a PortfolioDefinition on the portfolios topic
            value = codec_for("PortfolioDefinition").encode(item.to_record())
            pipeline.definition(item.portfolio_id.encode(), value)
            spec = portfolio_spec(portfolio_of(item, s), s.exchange)
            events.extend(engine.define(item.portfolio_id, item.timestamp, ReplayPortfolio(spec)))
        elif kind == "restore":  # the portfolio step restored from a checkpoint taken now
            pipeline.restore()
        elif kind == "lose timers":  # every keyed step restored without its pending timers
            pipeline.lose_timers()
        elif kind == "hold":  # the control messages' watermark holds the later steps back
            pipeline.hold()
        elif kind == "release":
            pipeline.release()
        elif kind == "remove":  # (portfolio id, time): a tombstone
            pid, at = item
            pipeline.definition(pid.encode(), None, at)
            events.extend(engine.define(pid, at, None))
        else:
            schema = "PortfolioStats" if kind == "stats" else "Weights"
            pipeline.control(kind, codec_for(schema).encode(item))
            events.extend(engine.control(kind, item))
    pipeline.finish()
    events.extend(engine.flush())
    return pipeline, events


def decoded(rows: list[Any], schema: str, key: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        record = codec_for(schema).decode(row[1])
        assert row[0] == record[key].encode()
        out.setdefault(record[key], []).append(record)
    return out


def expected(events: list[ReplayEvent], kind: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if event.kind == kind:
            out.setdefault(event.key, []).append(dict(event.record))
    return out


def assert_same_as_replay(pipeline: Pipeline, events: list[ReplayEvent]) -> None:
    stats = decoded(pipeline.stats, "PortfolioStats", "portfolio_id")
    want = expected(events, "stats")
    assert sorted(stats) == sorted(want)
    for pid, records in want.items():
        # The wire adds the kind and the bar size; everything else is the core's record, exactly.
        got = [{k: v for k, v in r.items() if k not in ("kind", "bar_seconds")} for r in stats[pid]]
        assert got == records, pid
        assert {r["kind"] for r in stats[pid]} == {"updated"}
    metrics = decoded(pipeline.metrics, "PortfolioMetrics", "portfolioId")
    assert metrics == expected(events, "metrics")


def reasons(pipeline: Pipeline) -> Counter[str]:
    return Counter(codec_for("DeadLetter").decode(d)["reason"] for d in pipeline.dead)


# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_the_job_functions_compute_what_the_replay_computes(seed: int) -> None:
    ticks = random_ticks(seed)
    steps: list[Step] = [
        ("stats", seed_record("p1", START)),
        ("stats", seed_record("p2", START)),
        ("weights", weights_record("p1", START, {"AAA": 0.5, "BBB": 0.5})),
        ("weights", weights_record("p2", START, {"BBB": 0.6, "CCC": 0.4})),
    ]
    half = len(ticks) // 2
    steps += [("tick", t) for t in ticks[:half]]
    # Mid-stream, ahead of the watermark: a re-seed and a weights change.
    steps += [
        ("stats", seed_record("p1", START + 45_000, scale=2.0)),
        ("weights", weights_record("p2", START + 47_300, {"BBB": 0.2, "CCC": 0.8})),
    ]
    steps += [("tick", t) for t in ticks[half:]]
    pipeline, events = run_both(steps, settings())
    assert len(pipeline.stats) > 60
    assert len(pipeline.metrics) > 60
    assert_same_as_replay(pipeline, events)
    assert pipeline.dead == []


def mid_stream_controls(between: Step) -> list[Step]:
    """A re-seed of p1 and a weights change of p2, ahead of the watermark, ``between`` them."""
    return [
        ("stats", seed_record("p1", START + 45_000, scale=2.0)),
        between,
        ("weights", weights_record("p2", START + 47_300, {"BBB": 0.2, "CCC": 0.8})),
    ]


@pytest.mark.parametrize("every", [7, 23])
def test_a_portfolio_step_restored_anywhere_computes_what_the_replay_computes(every: int) -> None:
    """The shards' state read back (panels, roster, bars waiting) by a function that kept
    nothing in memory, every few ticks: before the seeds, mid-bar, between a control message's
    arrival and its time."""
    ticks = random_ticks(5)
    steps: list[Step] = [
        ("weights", weights_record("p1", START, {"AAA": 0.5, "BBB": 0.5})),
        ("stats", seed_record("p1", START)),
        ("restore", None),
        ("stats", seed_record("p2", START)),
        ("weights", weights_record("p2", START, {"BBB": 0.6, "CCC": 0.4})),
    ]
    half = len(ticks) // 2
    for i, tick in enumerate(ticks):
        if i == half:
            steps += mid_stream_controls(("restore", None))
        steps.append(("tick", tick))
        if i % every == every - 1:
            steps.append(("restore", None))
    pipeline, events = run_both(steps, settings())
    assert len(pipeline.metrics) > 60
    assert_same_as_replay(pipeline, events)
    assert pipeline.dead == []


@pytest.mark.parametrize("every", [5, 11])
def test_bars_whose_timers_a_restore_lost_go_out_in_their_place_with_the_next(every: int) -> None:
    """A checkpoint of PyFlink's process mode can keep a step's state without the timers
    registered with it (bars.due_first). Restored from one, the closes, the shards' open bars
    and the portfolio step's bars and control messages still come out in event-time order, as
    the replay has them: here every pending timer of every step is lost, every few ticks, while
    bars wait for the watermark of the control messages (as at start and after a restore)."""
    ticks = random_ticks(6)
    steps: list[Step] = [
        ("stats", seed_record("p1", START)),
        ("weights", weights_record("p1", START, {"AAA": 0.5, "BBB": 0.5})),
        ("stats", seed_record("p2", START)),
        ("weights", weights_record("p2", START, {"BBB": 0.6, "CCC": 0.4})),
    ]
    half = len(ticks) // 2
    for i, tick in enumerate(ticks):
        if i == half:
            steps += mid_stream_controls(("lose timers", None))
        if i % every == 0 and i < len(ticks) - 2 * every:
            steps.append(("hold", None))  # bars pile up in the later steps' state...
        steps.append(("tick", tick))
        if i % every == every - 1 and i < len(ticks) - every:
            steps += [("lose timers", None), ("release", None)]  # ...and lose their timers
    pipeline, events = run_both(steps, settings())
    assert len(pipeline.metrics) > 60
    assert_same_as_replay(pipeline, events)
    assert pipeline.dead == []


def seeded_run(seed: int, **flink: Any) -> tuple[Pipeline, list[ReplayEvent]]:
    """Both portfolios seeded and weighted at the start, then ``seed``'s ticks, with ``flink``
    settings changed: the job's functions and the replay."""
    steps: list[Step] = [
        ("stats", seed_record("p1", START)),
        ("stats", seed_record("p2", START)),
        ("weights", weights_record("p1", START, {"AAA": 0.5, "BBB": 0.5})),
        ("weights", weights_record("p2", START, {"BBB": 0.6, "CCC": 0.4})),
        *[("tick", t) for t in random_ticks(seed)],
    ]
    changed = settings().model_copy(update={"flink": settings().flink.model_copy(update=flink)})
    return run_both(steps, changed)


def test_statistics_every_k_bars_are_the_replays_of_those_bars_and_metrics_are_unchanged() -> None:
    pipeline, events = seeded_run(3, stats_every_bars=3)
    stats = decoded(pipeline.stats, "PortfolioStats", "portfolio_id")
    bar_ms = {p["id"]: int(p["bar_seconds"]) * 1000 for p in PORTFOLIOS}
    for pid, records in expected(events, "stats").items():
        # A bar's statistics are stamped with its end: bar k ends at (k + 1)·B.
        kept = [r for r in records if (r["timestamp"] // bar_ms[pid] - 1) % 3 == 0]
        assert 0 < len(kept) < len(records)
        got = [{k: v for k, v in r.items() if k not in ("kind", "bar_seconds")} for r in stats[pid]]
        assert got == kept, pid
    metrics = decoded(pipeline.metrics, "PortfolioMetrics", "portfolioId")
    assert metrics == expected(events, "metrics")


def test_packed_statistics_are_the_replays_statistics_to_the_bit() -> None:
    pipeline, events = seeded_run(4, stats_layout="packed")
    stats = decoded(pipeline.stats, "PortfolioStats", "portfolio_id")
    want = expected(events, "stats")
    assert sorted(stats) == sorted(want)
    for pid, records in want.items():
        assert all(r["covarianceMatrix"] == {} and r["packed_means"] for r in stats[pid])
        # The wire adds the kind and the bar size to the core's record.
        wire = {"kind": "initial", "bar_seconds": None}
        got = [PortfolioStats.from_record(r | wire) for r in stats[pid]]
        assert got == [PortfolioStats.from_record(r) for r in records], pid
    metrics = decoded(pipeline.metrics, "PortfolioMetrics", "portfolioId")
    assert metrics == expected(events, "metrics")


def test_bars_wait_for_the_first_initial_statistics() -> None:
    ticks = random_ticks(2)
    controls: list[Step] = [
        ("weights", weights_record("p1", START, {"AAA": 0.5, "BBB": 0.5})),
        ("stats", seed_record("p1", START)),
        ("stats", seed_record("p2", START)),
    ]
    # The job reads the control topics last; the replay sees them first.
    pipeline = Pipeline(settings())
    for tick in ticks:
        pipeline.tick(encode_tick(tick), tick.event_time_ms)
    assert pipeline.stats == []  # everything waits in state
    for kind, record in controls:
        schema = "PortfolioStats" if kind == "stats" else "Weights"
        pipeline.control(kind, codec_for(schema).encode(record))
    pipeline.finish()
    _, events = run_both([*controls, *(("tick", t) for t in ticks)], settings())
    assert_same_as_replay(pipeline, events)


def test_a_control_message_older_than_the_processed_bars_takes_effect_on_arrival() -> None:
    ticks = random_ticks(3, n_bars=20)
    steps: list[Step] = [("stats", seed_record("p1", START)), ("stats", seed_record("p2", START))]
    steps += [("tick", t) for t in ticks]
    steps.append(("weights", weights_record("p1", START + 1_000, {"AAA": 0.3, "BBB": 0.7})))
    pipeline, events = run_both(steps, settings())
    assert_same_as_replay(pipeline, events)
    metrics = decoded(pipeline.metrics, "PortfolioMetrics", "portfolioId")["p1"]
    assert len(metrics) == 1  # emitted once, with the weights' arrival
    assert metrics[0]["weights"] == {"AAA": 0.3, "BBB": 0.7}


def test_late_ticks_are_dead_lettered_per_bar_size_and_change_nothing() -> None:
    ticks = random_ticks(4)
    stale = Tick(START + 10_500, "BBB", 1e6)
    steps: list[Step] = [
        ("stats", seed_record("p1", START)),
        ("stats", seed_record("p2", START)),
        ("weights", weights_record("p2", START, {"BBB": 0.5, "CCC": 0.5})),
    ]
    steps += [("tick", t) for t in ticks[:200]]
    steps.append(("tick", stale))
    steps += [("tick", t) for t in ticks[200:]]
    pipeline, events = run_both(steps, settings())
    assert_same_as_replay(pipeline, events)
    dead = [codec_for("DeadLetter").decode(d) for d in pipeline.dead]
    # BBB is used at 1 s (p1) and 2 s (p2): late for both bar sizes, one dead letter.
    assert [d["reason"] for d in dead] == ["late"]
    assert "1000 ms bar ending" in dead[0]["detail"]
    assert "2000 ms bar ending" in dead[0]["detail"]
    assert dead[0]["payload"] == encode_tick(stale)
    assert dead[0]["source_topic"] == settings().topics.prices
    assert dead[0]["component"] == "job"
    assert (dead[0]["partition"], dead[0]["offset"]) == (0, 200)  # where it was read


def test_malformed_input_is_dead_lettered_with_reasons_and_changes_nothing() -> None:
    ticks = random_ticks(5, n_bars=30)
    good: list[Step] = [
        ("stats", seed_record("p1", START)),
        ("stats", seed_record("p2", START)),
        ("weights", weights_record("p1", START, {"AAA": 0.5, "BBB": 0.5})),
    ]
    good += [("tick", t) for t in ticks]
    tick = codec_for("PriceTick")
    t0 = ticks[0].event_time_ms
    future = int(time.time() * 1000) + 86_400_000
    bad: list[Step] = [
        ("raw", (b"\xff\xff\xff\xff\xffgarbage", t0)),
        ("raw", (tick.encode({"ticker": "AAA", "price": math.nan, "event_time": t0}), t0)),
        ("raw", (tick.encode({"ticker": "AAA", "price": -2.0, "event_time": t0}), t0)),
        ("raw", (tick.encode({"ticker": "AAA", "price": math.inf, "event_time": t0}), t0)),
        ("raw", (tick.encode({"ticker": "ZZZ", "price": 1.0, "event_time": t0}), t0)),
        # stamped a day ahead of the clock: refused, and it moves no watermark
        ("raw", (tick.encode({"ticker": "AAA", "price": 1.0, "event_time": future}), future)),
        ("weights", weights_record("p1", START, {"AAA": 0.9, "BBB": 0.9})),
        ("weights", weights_record("p1", START, {"AAA": 1.0})),
        ("weights", weights_record("nope", START, {"AAA": 1.0})),
        ("stats", seed_record("p1", START) | {"meanReturns": {"AAA": 0.0}}),
    ]
    mixed = good[:4] + bad + good[4:]
    pipeline, events = run_both(mixed, settings())
    clean, clean_events = run_both(good, settings())
    assert_same_as_replay(pipeline, clean_events)
    assert_same_as_replay(clean, clean_events)
    assert reasons(pipeline) == Counter(
        undecodable=1,
        invalid=3,
        future=1,
        unknown_ticker=1,
        invalid_weights=2,
        unknown_portfolio=1,
        invalid_stats=1,
    )
    details = {codec_for("DeadLetter").decode(d)["detail"] for d in pipeline.dead}
    assert any("missing ['BBB']" in d for d in details)
    assert any("ahead of the wall clock" in d for d in details)
    replay_reasons = Counter(e.record["reason"] for e in events if e.kind == "dead_letter")
    assert replay_reasons == Counter(invalid_weights=2, unknown_portfolio=1, invalid_stats=1)


def test_reference_bourse_quotes_are_read_when_configured() -> None:
    s = settings("bourse")
    pipeline = Pipeline(s)
    quote = bourse_from_price_tick(PriceTick("AAA", 612.5, START + 1_234))
    pipeline.tick(codec_for("BourseData").encode(quote), START + 1_234)
    assert pipeline.windows.open[(1_000, 1_700_000_001)].closes == {"AAA": 612.5}
    assert pipeline.dead == []


def _decoder(sizes: tuple[int, ...] = (1_000,), bound: int = 0) -> op_prices.DecodeTick:
    decode = op_prices.DecodeTick(
        {"AAA": sizes},
        "PriceTick",
        "prices",
        max_out_of_orderness_ms=bound,
        max_future_skew_ms=60_000,
    )
    decode.open()
    return decode


NOW = START + 86_400_000  # the wall clock the tests give the decoder


def test_a_refused_tick_is_dead_lettered_with_where_it_was_read() -> None:
    decode = _decoder()
    row = decode.judge(b"AAA", b"\x00garbage", 0, START, None, 2, 41, NOW)
    assert (row[0], row[1], row[2]) == (None, None, [])
    letter = codec_for("DeadLetter").decode(row[3])
    assert (letter["reason"], letter["partition"], letter["offset"], letter["key"]) == (
        "undecodable",
        2,
        41,
        b"AAA",
    )
    good = encode_tick(Tick(START + 10, "AAA", 5.0))
    row = decode.judge(b"AAA", good, START + 10, START + 10, None, 2, 42, NOW)
    assert (row[0], row[1], row[2], row[3]) == ("AAA", 5.0, [1_000], None)
    assert decode.counts.snapshot()["ticks_read"] == 2


def test_lateness_is_judged_against_the_ticks_own_partition() -> None:
    decode = _decoder(bound=500)
    late_here = encode_tick(Tick(START + 400, "AAA", 5.0))
    # Its partition has read up to START + 1_500: watermark START + 1_000 = the bar's end.
    row = decode.judge(b"AAA", late_here, START + 400, START + 1_500, None, 0, 1, NOW)
    assert row[:3] == (None, None, [])
    assert codec_for("DeadLetter").decode(row[3])["reason"] == "late"
    # One millisecond less read on its partition: not late, whatever other partitions did.
    row = decode.judge(b"AAA", late_here, START + 400, START + 1_499, None, 1, 1, NOW)
    assert row == ("AAA", 5.0, [1_000], None)
    counts = decode.counts.snapshot()
    assert counts["ticks_read"] == counts["ticks_counted"] + counts["ticks_dead_lettered"] == 2
    assert counts["dead_letters_late"] == 1


def test_heartbeats_make_no_close_and_future_records_are_refused() -> None:
    decode = _decoder()
    beat = encode_heartbeat(Heartbeat(START + 5_000, "test"))
    assert decode.judge(None, beat, START + 5_000, START + 5_000, None, 0, 3, NOW) == (
        None,
        None,
        [],
        None,
    )
    ahead = NOW + 60_001
    future = encode_tick(Tick(ahead, "AAA", 5.0))
    row = decode.judge(b"AAA", future, 0, START, None, 0, 4, NOW)
    assert codec_for("DeadLetter").decode(row[3])["reason"] == "future"
    row = decode.judge(None, encode_heartbeat(Heartbeat(ahead)), 0, START, None, 0, 5, NOW)
    assert codec_for("DeadLetter").decode(row[3])["reason"] == "future"
    # The Java reader and the decoder disagree (cannot happen unless one has a bug): refused,
    # never counted in a close whose window could not take it.
    row = decode.judge(b"AAA", encode_tick(Tick(START, "AAA", 5.0)), 0, START, None, 0, 6, NOW)
    letter = codec_for("DeadLetter").decode(row[3])
    assert letter["reason"] == "invalid" and "sf_event_time" in letter["detail"]
    assert decode.counts.snapshot()["heartbeats_read"] == 2


def test_closes_chain_into_returns() -> None:
    runtime = KeyedRuntime(ChainCloses())
    first = runtime.process("AAA|1000", Row("AAA", 1_000, 2.0, None), timestamp=999)
    assert first == [TickerClose(1_000, "AAA", 0, 2.0, None)]
    # AAA did not trade in bar 1: bar 2's return is from bar 0's close.
    second = runtime.process("AAA|1000", Row("AAA", 1_000, 4.0, None), timestamp=2_999)
    assert second == [(1_000, "AAA", 2, 4.0, math.log(4.0 / 2.0))]
    rows, side = split(runtime.process("!dead-letter", Row(None, None, None, b"letter")))
    assert rows == [] and side == {"dead-letters": [b"letter"]}


def test_a_bars_closes_go_whole_to_every_shard_of_their_bar_size() -> None:
    runtime = KeyedRuntime(CollectCloses(shards=2))
    runtime.process("1000", TickerClose(1_000, "BBB", 0, 20.0, 0.01))
    runtime.process("1000", TickerClose(1_000, "AAA", 0, 10.0, None))
    runtime.process("1000", TickerClose(1_000, "AAA", 1, 11.0, 0.1))  # the next bar
    assert runtime.advance(998) == []
    closes, returns = {"AAA": 10.0, "BBB": 20.0}, {"BBB": 0.01}
    assert runtime.advance(999) == [
        ShardBar("1000|0", 0, closes, returns),
        ShardBar("1000|1", 0, closes, returns),
    ]
    assert list(runtime.stores[("closes", "1000")]) == ["1|AAA"]  # bar 0's entries are gone
    assert runtime.advance(1_999)[0] == ("1000|0", 1, {"AAA": 11.0}, {"AAA": 0.1})
    assert runtime.stores[("closes", "1000")] == {}


def test_a_shard_sends_each_bar_once_with_its_members_to_the_portfolio_step() -> None:
    members = {"1000|1": {"p1": ("AAA", "BBB"), "p2": ("BBB", "CCC"), "p3": ("DDD",)}}
    runtime = KeyedRuntime(GatherBars(members))
    bar0 = ShardBar("1000|1", 0, {"AAA": 10.0, "BBB": 20.0}, {"BBB": 0.01})
    runtime.process("1000|1", bar0, input_index=1)
    # the next bar
    runtime.process("1000|1", ShardBar("1000|1", 1, {"CCC": 30.0}, {"CCC": 0.02}), input_index=1)
    assert runtime.advance(998) == []
    bars = runtime.advance(999)
    assert bars == [
        MemberBars("1", 1_000, 0, {"AAA": 10.0, "BBB": 20.0}, {"BBB": 0.01}, members["1000|1"])
    ]  # one record for the shard: keyed by the portfolios' shard "1", not per portfolio
    assert runtime.advance(1_999) == [
        MemberBars("1", 1_000, 1, {"CCC": 30.0}, {"CCC": 0.02}, members["1000|1"])
    ]


def test_ticks_are_judged_in_batches_as_flink_hands_them() -> None:
    import pandas as pd

    decode = _decoder((1_000, 2_000))
    ticks = [encode_tick(Tick(START + 10, "AAA", 5.0)), encode_tick(Tick(START + 20, "AAA", 6.0))]
    frame = decode.eval(
        pd.Series([b"AAA", None]),
        pd.Series(ticks),
        pd.Series([START + 10, START + 20]),
        pd.Series([START + 10, START + 1_000]),  # its partition's reading closed the 1 s bar
        pd.Series([None, START + 999.0]),  # no watermark yet, then one closing the 1 s bar
        pd.Series([0, 0]),
        pd.Series([7, 8]),
    )
    assert list(frame.columns) == ["ticker", "price", "bar_sizes", "dead_letter"]
    assert frame.iloc[0].tolist() == ["AAA", 5.0, [1_000, 2_000], None]
    assert frame.iloc[1, :3].tolist() == ["AAA", 6.0, [2_000]]
    assert codec_for("DeadLetter").decode(frame.iloc[1, 3])["reason"] == "late"
