"""The streaming job for real: Kafka broker + PyFlink MiniCluster, checked against the replay.

One scenario (two portfolios sharing four tickers, 1 s and 2 s bars, Welford and EW, ticks out
of order within the bound, tickers that skip bars or start late, initial statistics, weights, a
re-seed and a weights change mid-stream) is produced to fresh topics for each run. Each ticker's
ticks go to a fixed partition of the prices topic, and after each phase a heartbeat goes to every
partition (as the feeds send them; without idleness, ``flink.idleness_ms: 0``, nothing else moves
a quiet partition's watermark). The expected events are
:func:`~streamfolio.replay.replay_topic_records` over exactly what was produced to each
partition, in offset order, heartbeats included; each run's updated statistics and metrics must
equal them, bar for bar, to 1e-12 relative:

* ``unbounded_run`` (parallelism 1, at-least-once): produced in phases with a few thousand
  malformed messages mixed in (undecodable, invalid prices, unknown tickers) and ticks far
  behind their partition's watermark. The job must dead-letter each refused message with its
  reason, partition and offset, and the late ticks exactly where the replay finds them late.
* ``bounded_run`` (parallelism 2, two tasks for three partitions): everything produced up front,
  no closing heartbeats, the source bounded to the end offsets at start, so the end of input
  closes every bar as the replay's does; late ticks are late from a backlog too.
* ``test_kill_and_resume...``: exactly-once delivery, ``kill -9`` of the job mid-stream once a
  checkpoint newer than the last produce is complete, restart from that checkpoint; a
  ``read_committed`` reader sees every bar exactly once.

Why the job and the replay agree on lateness whatever the timing: a tick is late iff its bar had
ended at or before its own partition's watermark (greatest event time read from that partition
− bound) when it was read, which depends only on each partition's contents. Unknown-ticker ticks
are valid ticks, so they move their partition's watermark in both (they are in the replay's
input; stamped no later than what their partition already carried, they move nothing anyway).
Undecodable and invalid messages state no event time and move nothing in either.
"""

from __future__ import annotations

import math
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from jobkit import (
    JobProcess,
    Message,
    Outputs,
    arrival_order,
    assert_every_tick_accounted_for,
    assert_matches_replay,
    complete,
    free_port,
    heartbeats,
    initial_stats,
    produce,
    run_settings,
)

from streamfolio.config import Settings
from streamfolio.feeds.simulate import Regime, simulate_ticks
from streamfolio.flink.job import routing
from streamfolio.portfolios import portfolio_spec
from streamfolio.replay import (
    ControlKind,
    Heartbeat,
    PriceRecord,
    ReplayEvent,
    ReplayPortfolio,
    Tick,
    replay_topic_records,
)
from streamfolio.serde import codec_for, is_heartbeat

if TYPE_CHECKING:
    from conftest import KafkaBroker  # tests/integration/conftest.py

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("flink_jars")]

START = 1_750_000_000_000  # a multiple of both bar sizes
N_BARS = 200
HALF = START + N_BARS // 2 * 1_000  # the first phase's ticks are before, the second's after
END = START + (N_BARS + 10) * 1_000  # the closing heartbeats: every bar is final
BOUND_MS = 1_000
PAUSE_S = 3.0  # time for the job's control sources to read what was just produced
TICKERS = ("AAA", "BBB", "CCC", "DDD")
PARTITIONS = 3
PARTITION_OF = {"AAA": 0, "BBB": 1, "CCC": 2, "DDD": 0}
"""Where each ticker's ticks go, so the test knows every partition's sequence."""
PORTFOLIOS: list[dict[str, Any]] = [
    {
        "id": "p1",
        "tickers": ["AAA", "BBB", "CCC"],
        "weights": {"AAA": 0.4, "BBB": 0.35, "CCC": 0.25},
        "bar_seconds": 1,
        "periods_per_year": 1000,
        "risk_free_rate": 0.01,
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
RESEED_AT = START + 150_000
REWEIGHT_AT = START + 161_500
NEW_WEIGHTS = {"BBB": 0.5, "CCC": 0.25, "DDD": 0.25}
LATE_BARS = range(40, 80, 3)  # bars of the 1 s clock whose ticks are sent again, late


# ----------------------------------------------------------------------------- the scenario


@dataclass
class Scenario:
    """What a run produces, phase by phase, and what the replay reads of it.

    Every prices message goes to an explicit partition and is counted there, so ``prices`` (the
    replay's input: ticks and heartbeats) carries the offsets Kafka gives them, and ``refused``
    says where each message the job must refuse was produced.
    """

    partitions: int
    opening: list[Message] = field(default_factory=list)
    """Initial statistics and weights, the first half of the ticks, heartbeats at ``HALF``."""
    controls: list[Message] = field(default_factory=list)
    """The re-seed and the weights change, stamped in the second half."""
    rest: list[Message] = field(default_factory=list)
    """Late ticks and the second half of the ticks."""
    closing: list[Message] = field(default_factory=list)
    """Heartbeats at ``END`` (empty for a bounded run: the end of input closes the bars)."""
    prices: dict[int, list[PriceRecord]] = field(init=False)
    control_records: list[tuple[ControlKind, dict[str, Any]]] = field(default_factory=list)
    late: set[tuple[str, int]] = field(default_factory=set)
    bad: Counter[str] = field(default_factory=Counter)
    """Dead letters by reason, but the late ticks: the malformed messages and controls."""
    refused: dict[tuple[int, int], str] = field(default_factory=dict)
    """(partition, offset) → reason, for the prices messages the job must refuse."""
    latest: dict[int, int] = field(init=False)
    """The greatest event time produced to each partition so far."""

    def __post_init__(self) -> None:
        self.prices = {p: [] for p in range(self.partitions)}
        self.latest = dict.fromkeys(range(self.partitions), START)
        self._offsets = [0] * self.partitions

    def _next_offset(self, partition: int) -> int:
        offset = self._offsets[partition]
        self._offsets[partition] += 1
        return offset

    def tick(self, tick: Tick) -> Message:
        partition = PARTITION_OF.get(tick.ticker, 0)
        return self._tick(tick, partition, tick.ticker.encode())

    def _tick(self, tick: Tick, partition: int, key: bytes) -> Message:
        offset = self._next_offset(partition)
        self.prices[partition].append(
            Tick(tick.event_time_ms, tick.ticker, tick.price, partition, offset)
        )
        self.latest[partition] = max(self.latest[partition], tick.event_time_ms)
        value = codec_for("PriceTick").encode(
            {"ticker": tick.ticker, "price": tick.price, "event_time": tick.event_time_ms}
        )
        return Message("prices", value, key, tick.event_time_ms, partition=partition)

    def heartbeats(self, settings: Settings, time_ms: int) -> list[Message]:
        """A heartbeat to every partition: nothing produced after it may be older (but the
        ticks meant to be late)."""
        messages = heartbeats(settings, time_ms)
        for message in messages:
            assert message.partition is not None
            offset = self._next_offset(message.partition)
            self.prices[message.partition].append(Heartbeat(time_ms, message.partition, offset))
            self.latest[message.partition] = max(self.latest[message.partition], time_ms)
        return messages

    def malformed(self, rng: np.random.Generator, partition: int) -> Message:
        """A prices message the job must refuse. An unknown ticker's tick is a valid tick (it
        moves its partition's watermark in the job, so it is in the replay's input), stamped
        with the greatest event time its partition already carried, so it moves nothing."""
        stamp = self.latest[partition]
        choice = int(rng.integers(0, 5))
        codec = codec_for("PriceTick")
        if choice == 4:
            message = self._tick(Tick(stamp, "ZZZ", 1.0), partition, b"bad")
            reason = "unknown_ticker"
        else:
            if choice == 0:
                reason = "undecodable"
                # Garbage that happened to decode as a PriceTick would be "invalid" or worse.
                value = b"\xff\xff\xff\xff\xff" + rng.bytes(int(rng.integers(1, 40)))
            elif choice == 1:
                reason = "invalid"
                value = codec.encode({"ticker": "AAA", "price": math.nan, "event_time": stamp})
            elif choice == 2:
                reason = "invalid"
                price = -1.0 * rng.random()
                value = codec.encode({"ticker": "BBB", "price": price, "event_time": stamp})
            else:
                reason = "invalid"
                value = codec.encode({"ticker": "CCC", "price": 0.0, "event_time": stamp})
            self._next_offset(partition)  # states no event time: not in the replay's input
            message = Message("prices", value, b"bad", stamp, partition=partition)
        assert message.partition is not None
        self.refused[(message.partition, self._offsets[partition] - 1)] = reason
        self.bad[reason] += 1
        return message

    def control(
        self, kind: ControlKind, record: dict[str, Any], key: bytes | str | None = "id"
    ) -> Message:
        """A control message, keyed by its portfolio id unless ``key`` says otherwise (then the
        job refuses it before the replay's engine sees it: the replay has no keys)."""
        schema, role = (
            ("PortfolioStats", "initial_stats") if kind == "stats" else ("Weights", "weights")
        )
        if key == "id":
            self.control_records.append((kind, record))
            key = str(record["portfolio_id"]).encode()
        assert not isinstance(key, str)
        return Message(role, codec_for(schema).encode(record), key, int(record["timestamp"]))

    def hostile_controls(self) -> None:
        """Control records that must change nothing, each with the reason the job gives
        (issue #11: the initial statistics and weights that used to be trusted)."""
        p1, p2 = PORTFOLIOS
        seed = initial_stats(p1, START, 1.0)
        n = len(p1["tickers"])
        t0, t1 = p1["tickers"][:2]
        asymmetric = {**seed["covarianceMatrix"], t0: {**seed["covarianceMatrix"][t0], t1: 1.0}}
        not_psd = {t: {u: (1.0 if t == u else 2.0) for u in p1["tickers"]} for t in p1["tickers"]}
        hostile_stats: list[tuple[dict[str, Any], str]] = [
            (seed | {"meanReturns": dict.fromkeys(p1["tickers"], math.nan)}, "invalid_stats"),
            (seed | {"meanReturns": dict.fromkeys(p1["tickers"], math.inf)}, "invalid_stats"),
            (seed | {"covarianceMatrix": asymmetric}, "invalid_stats"),
            (seed | {"covarianceMatrix": not_psd}, "invalid_stats"),
            (seed | {"count": 2**62}, "invalid_stats"),
            (seed | {"estimator": "ewm", "half_life_bars": 5.0}, "invalid_stats"),
            (seed | {"timestamp": 253_402_214_399_000}, "future"),
            (seed, "stale"),  # a duplicate of the seed in force: would undo the bars since
        ]
        for record, reason in hostile_stats:
            self.opening.append(self.control("stats", record))
            self.bad[reason] += 1
        self.opening.append(self.control("stats", seed, key=b"p2"))
        self.opening.append(self.control("stats", seed, key=None))
        self.bad["key_mismatch"] += 2
        leveraged = {"timestamp": START + 5, "portfolio_id": "p2"} | {
            "weights": {"BBB": 5.0, "CCC": -4.0, "DDD": 0.0}
        }
        self.opening.append(self.control("weights", leveraged))
        self.bad["invalid_weights"] += 1
        future = {"timestamp": 253_402_214_399_000, "portfolio_id": "p2"}
        self.opening.append(self.control("weights", future | {"weights": p2["weights"]}))
        self.bad["future"] += 1
        assert n == 3


def _ticks(seed: int) -> list[Tick]:
    n = len(TICKERS)
    cov = np.full((n, n), 3e-5) + np.diag([1e-4, 2e-4, 1.5e-4, 3e-4])
    rows = simulate_ticks(
        TICKERS,
        [100.0, 50.0, 20.0, 75.0],
        [Regime(0, np.array([2e-4, 1e-4, -1e-4, 3e-4]), cov)],
        start_ms=START,
        bar_ms=1_000,
        n_bars=N_BARS,
        ticks_per_bar=3,
        seed=seed,
    )
    ticks = []
    for event_time, ticker, price in rows:
        k = (event_time - START) // 1_000
        # Tickers that skip bars, and DDD that starts late (p2 warms up at its first close).
        if (ticker == "DDD" and (k < 5 or k % 7 == 3)) or (ticker == "CCC" and k % 11 == 5):
            continue
        ticks.append(Tick(event_time, ticker, price))
    return ticks


def build_scenario(
    settings: Settings,
    seed: int = 7,
    *,
    malformed: int = 0,
    late: bool = False,
    closing: bool = True,
) -> Scenario:
    """About ``malformed`` bad prices messages (plus a few bad controls), spread over the
    partitions; with ``late``, ticks of ``LATE_BARS`` sent again after ``HALF``."""
    assert settings.kafka.partitions == PARTITIONS
    rng = np.random.default_rng(seed)
    ticks = _ticks(seed)
    first = arrival_order([t for t in ticks if t.event_time_ms < HALF], rng, BOUND_MS)
    second = arrival_order([t for t in ticks if t.event_time_ms >= HALF], rng, BOUND_MS)
    s = Scenario(settings.kafka.partitions)
    for portfolio in PORTFOLIOS:
        s.opening.append(s.control("stats", initial_stats(portfolio, START, 1.0)))
        weights = {"timestamp": START, "portfolio_id": portfolio["id"]}
        s.opening.append(s.control("weights", weights | {"weights": portfolio["weights"]}))
    if malformed:
        bad_weights: list[dict[str, Any]] = [
            {"portfolio_id": "p1", "weights": {"AAA": 0.9, "BBB": 0.3, "CCC": 0.1}},
            {"portfolio_id": "p2", "weights": {"BBB": 1.0}},
            {"portfolio_id": "p2", "weights": {"BBB": 0.5, "CCC": math.nan, "DDD": 0.5}},
        ]
        for record in bad_weights:
            s.opening.append(s.control("weights", {"timestamp": START + 5, **record}))
        s.bad["invalid_weights"] += len(bad_weights)
        nope = {"timestamp": START, "portfolio_id": "nope", "weights": {"X": 1.0}}
        s.opening.append(s.control("weights", nope))
        s.bad["unknown_portfolio"] += 1
        s.opening.append(Message("weights", b"\xff\x00garbage", b"p1", START))
        s.bad["undecodable"] += 1
        s.hostile_controls()
    per_good = malformed / (len(first) + len(second))

    def mix(messages: list[Message], ticks: list[Tick]) -> None:
        for tick in ticks:
            messages.append(s.tick(tick))
            for _ in range(int(rng.poisson(per_good))):
                messages.append(s.malformed(rng, int(rng.integers(0, s.partitions))))

    mix(s.opening, first)
    s.opening.extend(s.heartbeats(settings, HALF))
    s.controls.append(s.control("stats", initial_stats(PORTFOLIOS[0], RESEED_AT, 1.5)))
    reweight = {"timestamp": REWEIGHT_AT, "portfolio_id": "p2", "weights": NEW_WEIGHTS}
    s.controls.append(s.control("weights", reweight))
    if late:
        # Their partitions have read HALF: these bars ended long before that minus the bound.
        for k in LATE_BARS:
            for ticker in ("AAA", "DDD"):
                stale = Tick(START + k * 1_000 + 500 + (ticker == "DDD"), ticker, 1e3 + k)
                s.rest.append(s.tick(stale))
                s.late.add((ticker, stale.event_time_ms))
    mix(s.rest, second)
    assert max(s.latest.values()) < END - 2 * BOUND_MS
    if closing:
        s.closing.extend(s.heartbeats(settings, END))
    return s


def replay(settings: Settings, scenario: Scenario) -> dict[str, list[ReplayEvent]]:
    """The replay's events for what the scenario produces, by kind."""
    specs = [portfolio_spec(p, settings.exchange) for p in settings.portfolios]
    events = replay_topic_records(
        [ReplayPortfolio(spec) for spec in specs],
        scenario.prices,
        scenario.control_records,
        max_out_of_orderness_ms=settings.flink.max_out_of_orderness_ms,
        max_future_skew_ms=settings.validation.max_future_skew_ms,
    )
    by_kind: dict[str, list[ReplayEvent]] = {}
    for event in events:
        by_kind.setdefault(event.kind, []).append(event)
    return by_kind


def settings_for(
    broker: KafkaBroker,
    tmp: Path,
    token: str,
    metrics: dict[str, Any] | None = None,
    **flink: Any,
) -> tuple[Settings, Path]:
    # idleness_ms 0 explicitly: heartbeats alone move a quiet partition's watermark.
    return run_settings(
        broker,
        tmp,
        f"{token}{time.monotonic_ns() % 10**6}",
        PORTFOLIOS,
        metrics,
        max_out_of_orderness_ms=BOUND_MS,
        idleness_ms=0,
        **flink,
    )


def scrape_job(port: int, wanted: str = "ticks_read", timeout_s: float = 60.0) -> dict[str, float]:
    """The job's counters from its Prometheus reporter (``streamfolio`` in their name, and the
    portfolio step's output watermark), summed over labels, once it serves one ending with
    ``wanted`` (or after ``timeout_s``)."""
    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            text = ""
        found: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if "streamfolio" in family.name:
                found[family.name] = sum(sample.value for sample in family.samples)
            for sample in family.samples:
                if sample.labels.get("operator_name") == "portfolio_statistics":
                    found[f"portfolio_statistics.{sample.name}"] = sample.value
        if any(name.endswith(wanted) for name in found) or time.monotonic() > deadline:
            return found
        time.sleep(1.0)


def _checkpointed_since(folder: Path, since: float) -> bool:
    """Whether a complete checkpoint was written under ``folder`` after ``since`` (epoch s)."""
    return any(m.stat().st_mtime > since for m in folder.glob("*/chk-*/_metadata"))


# ------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    settings: Settings
    scenario: Scenario
    expected: dict[str, list[ReplayEvent]]
    outputs: Outputs
    job_metrics: dict[str, float] = field(default_factory=dict)
    """The job's own counters as its Prometheus endpoint served them mid-run (unbounded)."""


@pytest.fixture(scope="module")
def unbounded_run(
    kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    """Parallelism 1, at-least-once, phased production with late and malformed messages."""
    tmp = tmp_path_factory.mktemp("flink-unbounded")
    port = free_port()
    settings, config = settings_for(
        kafka_broker, tmp, "unbounded", metrics={"job_port": port}, parallelism=1
    )
    scenario = build_scenario(settings, malformed=3_000, late=True)
    expected = replay(settings, scenario)
    # The last bar the heartbeats at HALF make final for p1.
    opened = max(
        e.record["timestamp"]
        for e in expected["stats"]
        if e.key == "p1" and e.record["timestamp"] <= HALF - BOUND_MS
    )
    produce(settings, scenario.opening)
    outputs = Outputs(settings)
    job = JobProcess(config, tmp / "job.log")
    try:
        outputs.wait_for(lambda: outputs.last_stats_time("p1") >= opened, job, "the first half")
        job_metrics = scrape_job(port)
        # Controls are read by their own sources; give them time before the ticks that pass
        # their timestamps, so they are placed among the bars rather than applied on arrival.
        produce(settings, scenario.controls)
        time.sleep(PAUSE_S)
        produce(settings, scenario.rest)
        produce(settings, scenario.closing)
        outputs.wait_for(complete(outputs, expected), job, "every bar")
        outputs.poll(2.0)  # anything extra would show up now
        prices = [
            m
            for part in (scenario.opening, scenario.rest, scenario.closing)
            for m in part
            if m.role == "prices" and not is_heartbeat(m.value)
        ]
        assert_every_tick_accounted_for(job, len(prices))
    finally:
        job.kill()  # before the other runs start: 2 cores
        outputs.close()
    yield Run(settings, scenario, expected, outputs, job_metrics)


@pytest.fixture(scope="module")
def bounded_run(
    kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    """Parallelism 2, everything produced first, source bounded at the end offsets."""
    tmp = tmp_path_factory.mktemp("flink-bounded")
    settings, config = settings_for(kafka_broker, tmp, "bounded", parallelism=2)
    scenario = build_scenario(settings, malformed=500, late=True, closing=False)
    expected = replay(settings, scenario)
    produce(settings, [*scenario.opening, *scenario.controls, *scenario.rest])
    outputs = Outputs(settings)
    job = JobProcess(config, tmp / "job.log", "--bounded")
    try:
        assert job.wait() == 0, job.log_tail()
        outputs.wait_for(complete(outputs, expected), job, "every bar")
        outputs.poll(1.0)
    finally:
        job.kill()
        outputs.close()
    yield Run(settings, scenario, expected, outputs)


# ------------------------------------------------------------------------------------ tests


def assert_equals_replay(outputs: Outputs, expected: dict[str, list[ReplayEvent]]) -> None:
    """:func:`jobkit.assert_matches_replay`, saying where the job and the replay part ways."""
    try:
        assert_matches_replay(outputs, expected)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_first_difference(outputs, expected)}") from None


def _first_difference(outputs: Outputs, expected: dict[str, list[ReplayEvent]]) -> str:
    lines = []
    for kind, got in (("stats", outputs.stats), ("metrics", outputs.metrics)):
        for key in sorted({e.key for e in expected.get(kind, [])} | set(got)):
            theirs = [
                (e.record["timestamp"], e.record["count"], e.record.get("weights"))
                for e in expected.get(kind, [])
                if e.key == key
            ]
            ours = [(r["timestamp"], r["count"], r.get("weights")) for r in got.get(key, [])]
            if [t for t, _, _ in ours] == [t for t, _, _ in theirs]:
                continue
            i = next(
                (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a[0] != b[0]),
                min(len(ours), len(theirs)),
            )
            lines.append(f"{kind} {key}: {len(ours)} from the job, {len(theirs)} replayed")
            lines.append(f"  job    [{i - 2}:]: {ours[max(0, i - 2) : i + 4]}")
            lines.append(f"  replay [{i - 2}:]: {theirs[max(0, i - 2) : i + 4]}")
            if kind == "metrics":  # where the weights changed: a control applied late shows
                for who, records in (("job", ours), ("replay", theirs)):
                    changes = [b[0] for a, b in pairwise(records) if a[2] != b[2]]
                    lines.append(f"  weights changed ({who}) at {changes}")
    return "\n".join(lines) or "(same timestamps)"


def assert_dead_letters(run: Run) -> None:
    """Every prices message the job refused is one the scenario made bad or late, at the place
    it was produced; the late ones are exactly the replay's (for the tickers' own bar sizes)."""
    prices_topic = run.settings.topics.prices
    reasons = Counter(d["reason"] for d in run.outputs.dead)
    assert sum(reasons.values()) == len(run.outputs.dead)
    located = {
        (d["partition"], d["offset"]): d
        for d in run.outputs.dead
        if d["source_topic"] == prices_topic
    }
    prices_letters = [d for d in run.outputs.dead if d["source_topic"] == prices_topic]
    assert len(located) == len(prices_letters), "a prices message dead-lettered twice"
    late = {where: d for where, d in located.items() if d["reason"] == "late"}
    assert {where: d["reason"] for where, d in located.items() if where not in late} == (
        run.scenario.refused
    )

    route = routing(run.settings)
    replay_late = {
        (e.record["partition"], e.record["offset"]): (e.record["ticker"], e.record["event_time"])
        for e in run.expected.get("dead_letter", [])
        if e.record.get("reason") == "late"
        and e.record["bar_ms"] in route.bar_sizes.get(e.record["ticker"], ())
    }
    job_late = {}
    for where, letter in late.items():
        tick = codec_for("PriceTick").decode(letter["payload"])
        assert letter["component"] == "job"
        assert letter["key"] == tick["ticker"].encode()
        job_late[where] = (tick["ticker"], tick["event_time"])
    assert job_late == replay_late
    assert set(job_late.values()) == run.scenario.late

    assert {r: reasons[r] for r in run.scenario.bad} == dict(run.scenario.bad)
    assert reasons["late"] == len(run.scenario.late)
    controls = {run.settings.topics.initial_stats, run.settings.topics.weights}
    refused_controls = [d for d in run.outputs.dead if d["source_topic"] in controls]
    assert refused_controls
    # Read whole (KafkaRecordBytes), a refused control message says where it was.
    where = {(d["source_topic"], d["partition"], d["offset"]) for d in refused_controls}
    assert len(where) == len(refused_controls)
    assert all(d["partition"] is not None and d["offset"] >= 0 for d in refused_controls)
    assert set(reasons) <= set(run.scenario.bad) | {"late"}, reasons


def test_the_job_serves_its_counters_to_prometheus(unbounded_run: Run) -> None:
    names = unbounded_run.job_metrics
    assert any(name.endswith("ticks_read") for name in names), sorted(names)
    assert names["flink_taskmanager_job_task_operator_streamfolio_ticks_read"] > 0
    # The portfolio step's progress, from Flink's own operator metrics (Grafana's lag panel).
    watermark = "portfolio_statistics.flink_taskmanager_job_task_operator_currentOutputWatermark"
    assert names[watermark] >= START, sorted(names)


def test_statistics_and_metrics_equal_the_replay_bar_for_bar(unbounded_run: Run) -> None:
    assert len(unbounded_run.outputs.stats["p1"]) > 150
    assert len(unbounded_run.outputs.stats["p2"]) > 70
    assert_equals_replay(unbounded_run.outputs, unbounded_run.expected)


def test_the_reseed_and_the_weights_change_take_effect_at_their_timestamps(
    unbounded_run: Run,
) -> None:
    p1 = unbounded_run.outputs.stats["p1"]
    before = [s for s in p1 if s["timestamp"] <= RESEED_AT]
    after = [s for s in p1 if s["timestamp"] > RESEED_AT]
    assert after[0]["count"] == 51  # the prior's 50 observations and this bar
    assert before[-1]["count"] > 51
    metrics = unbounded_run.outputs.metrics["p2"]
    changed = next(i for i, m in enumerate(metrics) if m["weights"] == NEW_WEIGHTS)
    assert metrics[changed]["timestamp"] == REWEIGHT_AT
    assert all(m["timestamp"] < REWEIGHT_AT for m in metrics[:changed])
    assert all(m["weights"] == NEW_WEIGHTS for m in metrics[changed:])


def test_late_and_malformed_messages_are_dead_lettered_where_they_were_read(
    unbounded_run: Run,
) -> None:
    assert sum(unbounded_run.scenario.bad.values()) > 2_000
    assert len(unbounded_run.scenario.late) == 2 * len(LATE_BARS)
    assert_dead_letters(unbounded_run)


def test_parallelism_two_with_a_bounded_source_equals_the_replay(bounded_run: Run) -> None:
    assert_equals_replay(bounded_run.outputs, bounded_run.expected)
    assert_dead_letters(bounded_run)


def test_kill_and_resume_from_the_latest_checkpoint_loses_and_repeats_nothing(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    settings, config = settings_for(
        kafka_broker, tmp_path, "resume", parallelism=1, delivery="exactly-once"
    )
    scenario = build_scenario(settings, seed=11)
    expected = replay(settings, scenario)
    # Killed while the bars after HALF are being emitted, the re-seed not yet in effect.
    cut = len(scenario.rest) // 3
    produce(settings, scenario.opening)
    outputs = Outputs(settings)
    job = JobProcess(config, tmp_path / "job.log")
    try:
        outputs.wait_for(lambda: outputs.last_stats_time("p1") > START + 60_000, job, "output")
        produce(settings, scenario.controls)
        time.sleep(PAUSE_S)
        produce(settings, scenario.rest[:cut])
        produced = time.time()
        outputs.wait_for(
            lambda: _checkpointed_since(tmp_path / "checkpoints", produced),
            job,
            "a checkpoint after the last produce",
        )
    finally:
        job.kill()
    produce(settings, [*scenario.rest[cut:], *scenario.closing])
    job = JobProcess(config, tmp_path / "job2.log", "--from-checkpoint", "latest")
    try:
        outputs.wait_for(complete(outputs, expected), job, "every bar after the restart")
        outputs.poll(3.0)
    finally:
        job.kill()
        outputs.close()
    assert_equals_replay(outputs, expected)
    assert Counter(d["reason"] for d in outputs.dead) == Counter()
