"""Portfolios as data on the real engines: portfolios added, changed and removed on the
portfolios topic, as `streamfolio portfolio add | update | remove` write them, while ticks flow;
the job (Kafka + a PyFlink MiniCluster at parallelism 2) must produce what the replay given the
same definitions produces, bar for bar (docs/semantics.md, "Portfolios as data").

Everything is produced up front and the job reads it bounded (the end of input closes the
bars), so the job reads the definitions, seeds and weights at whatever moment its readers get to
them: each still takes effect at its own time, as the replay applies it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from jobkit import (
    JobProcess,
    Message,
    Outputs,
    assert_matches_replay,
    complete,
    initial_stats,
    produce,
    run_settings,
)

from streamfolio.config import Settings
from streamfolio.messages import Heartbeat
from streamfolio.portfolio_changes import plan_changes
from streamfolio.portfolios import definition_of, portfolio_spec, portfolios_from_entries
from streamfolio.replay import Heartbeat as ReplayHeartbeat
from streamfolio.replay import ReplayEvent, ReplayPortfolio, Tick, replay_topic_records
from streamfolio.serde import codec_for, encode_heartbeat

if TYPE_CHECKING:
    from conftest import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("flink_jars")]

START = 1_750_000_000_000
N_BARS = 90
BOUND_MS = 500
TICKERS = ("AAA", "BBB", "CCC", "DDD")
PARTITION_OF = {"AAA": 0, "BBB": 1, "CCC": 2, "DDD": 0}
CONFIGURED: list[dict[str, Any]] = [
    {
        "id": "p1",
        "tickers": ["AAA", "BBB", "CCC"],
        "weights": {"AAA": 0.4, "BBB": 0.35, "CCC": 0.25},
        "bar_seconds": 1,
        "periods_per_year": 1000,
    },
    {
        "id": "p2",
        "tickers": ["BBB", "CCC", "DDD"],
        "weights": {"BBB": 0.2, "CCC": 0.3, "DDD": 0.5},
        "bar_seconds": 2,
        "periods_per_year": 500,
        "estimator": {"kind": "ewm", "half_life_bars": 20},
    },
]
ADDED, CHANGED, RESTARTED, REMOVED = (START + s * 1_000 for s in (20, 35, 50, 70))
P3 = {"id": "p3", "tickers": ["AAA", "DDD"], "bar_seconds": 1, "periods_per_year": 1000}
P3_MORE = {**P3, "tickers": ["AAA", "CCC", "DDD"]}
P1_CHANGED = {**CONFIGURED[0], "risk_free_rate": 0.2}


def _ticks(seed: int) -> list[Tick]:
    rng = np.random.default_rng(seed)
    price = dict.fromkeys(TICKERS, 100.0)
    ticks = []
    for k in range(N_BARS):
        for ticker in TICKERS:
            for _ in range(int(rng.integers(1, 4))):
                price[ticker] *= math.exp(rng.normal(0, 0.01))
                ticks.append(
                    Tick(START + k * 1_000 + int(rng.integers(0, 1_000)), ticker, price[ticker])
                )
    ticks.sort(key=lambda t: t.event_time_ms)
    return ticks


def _definition_messages(
    settings: Settings, entry: dict[str, Any], at: int
) -> tuple[list[Message], ReplayPortfolio, list[tuple[str, dict[str, Any]]]]:
    """What `portfolio add|update` publishes for ``entry`` at ``at`` (its definition, and for
    a new or restarted portfolio a seed and weights stamped ``at``), and what the replay gets."""
    portfolio = portfolios_from_entries([entry], settings)[0]
    record = definition_of(portfolio, at).to_record()
    value = codec_for("PortfolioDefinition").encode(record)
    messages = [Message("portfolios", value, portfolio.id.encode(), at)]
    controls: list[tuple[str, dict[str, Any]]] = []
    if entry is not P1_CHANGED:
        n = len(entry["tickers"])
        seeded, controls = _seed_and_weights(entry, at, dict.fromkeys(entry["tickers"], 1 / n))
        messages += seeded
    return messages, ReplayPortfolio(portfolio_spec(portfolio, settings.exchange)), controls


def _seed_and_weights(
    entry: dict[str, Any], at: int, weights: dict[str, float]
) -> tuple[list[Message], list[tuple[str, dict[str, Any]]]]:
    """A portfolio's initial statistics and weights stamped ``at``: the messages, and what the
    replay reads."""
    seed = initial_stats(entry, at, 1.0)
    record = {"timestamp": at, "portfolio_id": entry["id"], "weights": weights}
    key = entry["id"].encode()
    messages = [
        Message("initial_stats", codec_for("PortfolioStats").encode(seed), key, at),
        Message("weights", codec_for("Weights").encode(record), key, at),
    ]
    return messages, [("stats", seed), ("weights", record)]


def _tick_messages(prices: dict[int, list[Any]], ticks: list[Tick]) -> list[Message]:
    """``ticks`` as prices messages to their tickers' partitions, appended to ``prices`` (the
    replay's input, with the offsets Kafka gives them)."""
    out = []
    for tick in ticks:
        partition = PARTITION_OF[tick.ticker]
        located = Tick(
            tick.event_time_ms, tick.ticker, tick.price, partition, len(prices[partition])
        )
        prices[partition].append(located)
        value = codec_for("PriceTick").encode(
            {"ticker": tick.ticker, "price": tick.price, "event_time": tick.event_time_ms}
        )
        out.append(Message("prices", value, tick.ticker.encode(), tick.event_time_ms, partition))
    return out


def _replayed(
    settings: Settings,
    prices: dict[int, list[Any]],
    controls: list[tuple[str, dict[str, Any]]],
    definitions: list[tuple[str, int, ReplayPortfolio | None]],
) -> dict[str, list[ReplayEvent]]:
    """The replay's events for what is produced, by kind."""
    events = replay_topic_records(
        [ReplayPortfolio(portfolio_spec(p, settings.exchange)) for p in settings.portfolios],
        prices,
        controls,  # type: ignore[arg-type]
        definitions=definitions,
        max_out_of_orderness_ms=BOUND_MS,
        max_future_skew_ms=settings.validation.max_future_skew_ms,
    )
    expected: dict[str, list[ReplayEvent]] = {}
    for event in events:
        expected.setdefault(event.kind, []).append(event)
    return expected


def test_portfolios_added_changed_and_removed_on_the_topic_equal_the_replay(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    settings, config = run_settings(
        kafka_broker,
        tmp_path,
        f"defs{time.monotonic_ns() % 10**6}",
        CONFIGURED,
        max_out_of_orderness_ms=BOUND_MS,
        idleness_ms=0,
        parallelism=2,
    )
    # What the CLI would do: p1's rate change keeps its moments, p3's new ticker restarts it.
    changes = {
        c.portfolio.id: c.what
        for c in plan_changes(
            settings, portfolios_from_entries([P1_CHANGED], settings), CHANGED, adding=False
        )
    }
    assert changes == {"p1": "changed"}

    messages: list[Message] = []
    controls: list[tuple[str, dict[str, Any]]] = []
    for portfolio in CONFIGURED:
        seeded, read = _seed_and_weights(portfolio, START, portfolio["weights"])
        messages += seeded
        controls += read
    definitions: list[tuple[str, int, ReplayPortfolio | None]] = []
    for entry, at in ((P3, ADDED), (P1_CHANGED, CHANGED), (P3_MORE, RESTARTED)):
        produced, portfolio, extra = _definition_messages(settings, entry, at)
        messages += produced
        controls += extra
        definitions.append((entry["id"], at, portfolio))
    messages.append(Message("portfolios", None, b"p2", REMOVED))  # type: ignore[arg-type]
    definitions.append(("p2", REMOVED, None))

    prices: dict[int, list[Any]] = {p: [] for p in range(settings.kafka.partitions)}
    messages += _tick_messages(prices, _ticks(7))
    expected = _replayed(settings, prices, controls, definitions)
    assert not expected.get("dead_letter"), expected.get("dead_letter")

    produce(settings, messages)
    outputs = Outputs(settings)
    job = JobProcess(config, tmp_path / "job.log", "--bounded")
    try:
        assert job.wait() == 0, job.log_tail()
        outputs.wait_for(complete(outputs, expected), job, "every bar")
        outputs.poll(1.0)
    finally:
        job.kill()
        outputs.close()

    assert_matches_replay(outputs, expected)
    assert outputs.dead == []
    p3 = outputs.metrics["p3"]
    assert min(m["timestamp"] for m in p3) >= ADDED
    assert {tuple(sorted(m["weights"])) for m in p3 if m["timestamp"] > RESTARTED} == {
        ("AAA", "CCC", "DDD")
    }
    assert max(m["timestamp"] for m in outputs.metrics["p2"]) <= REMOVED
    assert {m["riskFreeRate"] for m in outputs.metrics["p1"] if m["timestamp"] > CHANGED} == {0.2}


def test_a_thousand_portfolios_added_at_once_while_the_job_runs_equal_the_replay(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    """The job runs (unbounded) on the configured portfolios; then 1,000 portfolios arrive on
    the topic at once, with their seeds and weights, stamped ahead of its watermark; every one
    of them follows the ticks from its time on, as the replay says. The statistics are packed
    (the layout for many portfolios)."""
    settings, config = run_settings(
        kafka_broker,
        tmp_path,
        f"many{time.monotonic_ns() % 10**6}",
        CONFIGURED,
        max_out_of_orderness_ms=BOUND_MS,
        idleness_ms=0,
        parallelism=1,
        stats_layout="packed",
    )
    rng = np.random.default_rng(11)
    split, added_at = START + 78_000, START + 81_000
    entries = []
    for i in range(1_000):
        tickers = sorted(rng.choice(TICKERS, size=int(rng.integers(2, 5)), replace=False))
        entries.append(
            {"id": f"m{i:04d}", "tickers": tickers, "bar_seconds": 1, "periods_per_year": 1000}
        )
    ticks = _ticks(13)
    prices: dict[int, list[Any]] = {p: [] for p in range(settings.kafka.partitions)}

    opening: list[Message] = []
    controls: list[tuple[str, dict[str, Any]]] = []
    for portfolio in CONFIGURED:
        seeded, read = _seed_and_weights(portfolio, START, portfolio["weights"])
        opening += seeded
        controls += read
    first = [t for t in ticks if t.event_time_ms < split]
    opening += _tick_messages(prices, first)
    # Heartbeats close the first phase's bars (the job's watermark is the data's alone).
    beat = split
    opening += [
        Message("prices", encode_heartbeat(Heartbeat(beat, "test")), None, beat, partition=p)
        for p in range(settings.kafka.partitions)
    ]
    for p in range(settings.kafka.partitions):
        prices[p].append(ReplayHeartbeat(beat, p, len(prices[p])))

    many: list[Message] = []
    definitions: list[tuple[str, int, ReplayPortfolio | None]] = []
    for entry in entries:
        produced, replayed, extra = _definition_messages(settings, entry, added_at)
        many += produced
        controls += extra
        definitions.append((entry["id"], added_at, replayed))
    rest = _tick_messages(prices, [t for t in ticks if t.event_time_ms >= split])

    expected = _replayed(settings, prices, controls, definitions)
    assert len({e.key for e in expected["metrics"]}) == 1_002

    produce(settings, opening)
    outputs = Outputs(settings)
    job = JobProcess(config, tmp_path / "job.log")
    try:
        first_done = max(
            e.record["timestamp"]
            for e in expected["stats"]
            if e.key == "p1" and e.record["timestamp"] <= beat - BOUND_MS
        )
        outputs.wait_for(lambda: outputs.last_stats_time("p1") >= first_done, job, "phase 1")
        produce(settings, many)  # 1,000 portfolios at once, ahead of the watermark
        time.sleep(3.0)  # their readers read them before the ticks that pass their time
        produce(settings, rest)  # the end of input: a bounded source would close every bar;
        job_end = max(t.event_time_ms for t in ticks) + 10_000  # here heartbeats do
        produce(
            settings,
            [
                Message("prices", encode_heartbeat(Heartbeat(job_end, "test")), None, job_end, p)
                for p in range(settings.kafka.partitions)
            ],
        )
        outputs.wait_for(complete(outputs, expected), job, "every bar of every portfolio")
        outputs.poll(1.0)
    finally:
        job.kill()
        outputs.close()
    assert_matches_replay(outputs, expected)
    records = [r for stats in outputs.stats.values() for r in stats]
    assert all(r["packed_means"] and not r["meanReturns"] for r in records)
