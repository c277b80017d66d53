"""The streaming job for real: Kafka broker + PyFlink MiniCluster, checked against the replay.

One scenario (two portfolios sharing tickers, 1 s and 2 s bars, Welford and EW, ticks out of
order within the bound, tickers that skip bars, initial statistics, weights, a re-seed and a
weights change mid-stream) is produced to fresh topics for each run, and each run's updated
statistics and metrics must equal :class:`~streamfolio.replay.ReplayEngine`'s, bar for bar, to
1e-12 relative:

* ``unbounded_run`` (parallelism 1): produced in phases so that late ticks are late for certain
  (they are sent only once the job has emitted the bars they belong to), with a few thousand
  malformed messages mixed in; a sentinel tick of an unknown ticker in every partition finally
  moves the watermark past every bar.
* ``bounded_run`` (parallelism 2): everything produced up front, the source bounded to the end
  offsets at start, so the end of input closes every bar as the replay's flush does.
* ``test_kill_and_resume...``: exactly-once delivery, ``kill -9`` of the job mid-stream, restart
  from the latest retained checkpoint; a ``read_committed`` reader sees every bar exactly once.

Why the replay and the job agree on lateness: the job's watermark is a minimum over partitions
of what it has read, never above the replay's (greatest event time produced so far − bound − 1),
so a tick the replay accepts is never late in the job; and a tick sent after the job emitted its
bar is late in both.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from streamfolio.config import Settings, settings_from_mapping
from streamfolio.core.moments import moments_from_prior, stats_record
from streamfolio.feeds.simulate import Regime, simulate_ticks
from streamfolio.kafka.admin import KEEP_FOREVER, ensure_topics, topic_specs
from streamfolio.portfolios import portfolio_spec
from streamfolio.replay import ControlKind, ReplayEngine, ReplayEvent, ReplayPortfolio, Tick
from streamfolio.serde import codec_for

if TYPE_CHECKING:
    from conftest import KafkaBroker  # tests/integration/conftest.py

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("flink_jars")]

ROOT = Path(__file__).resolve().parents[2]
# PyFlink's thread mode hangs at start-up about once in thirty runs (docs/flink.md, caveats);
# a red run for that says nothing about the code, so the tests' jobs use process mode.
FLINK_TEST_ENV = {**os.environ, "STREAMFOLIO_FLINK_PYTHON_MODE": "process"}
START = 1_750_000_000_000  # a multiple of both bar sizes
N_BARS = 200
BOUND_MS = 1_000
IDLENESS_MS = 2_000
TICKERS = ("AAA", "BBB", "CCC", "DDD")
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
LATE_BARS = range(40, 80, 3)  # bars of the 1 s clock whose ticks are sent again, late
JOB_TIMEOUT = 300.0  # generous: a busy 2-core CI machine starts JVMs slowly


# ----------------------------------------------------------------------------- the scenario


@dataclass(frozen=True)
class Message:
    """One Kafka message to produce, and what the replay makes of it."""

    role: str
    value: bytes
    key: bytes | None
    timestamp_ms: int
    tick: Tick | None = None
    control: tuple[ControlKind, dict[str, Any]] | None = None
    partition: int | None = None


@dataclass
class Scenario:
    phases: list[list[Message]]
    late: set[tuple[str, int]] = field(default_factory=set)
    bad: Counter[str] = field(default_factory=Counter)


def _tick_message(tick: Tick) -> Message:
    value = codec_for("PriceTick").encode(
        {"ticker": tick.ticker, "price": tick.price, "event_time": tick.event_time_ms}
    )
    return Message("prices", value, tick.ticker.encode(), tick.event_time_ms, tick=tick)


def _control_message(kind: ControlKind, record: dict[str, Any]) -> Message:
    schema, role = (
        ("PortfolioStats", "initial_stats") if kind == "stats" else ("Weights", "weights")
    )
    value = codec_for(schema).encode(record)
    key = str(record["portfolio_id"]).encode()
    return Message(role, value, key, int(record["timestamp"]), control=(kind, record))


def _stats(portfolio: dict[str, Any], timestamp: int, scale: float) -> dict[str, Any]:
    n = len(portfolio["tickers"])
    mean = np.linspace(-2e-4, 3e-4, n) * scale
    cov = (np.full((n, n), 2e-5) + np.diag(np.linspace(1e-4, 3e-4, n))) * scale
    estimator = portfolio.get("estimator", {"kind": "welford"})
    moments = moments_from_prior(
        mean, cov, 50, kind=estimator["kind"], half_life_bars=estimator.get("half_life_bars")
    )
    record = stats_record(moments, portfolio["id"], portfolio["tickers"], timestamp)
    return record | {"kind": "initial"}


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


def _shuffled(ticks: Sequence[Tick], rng: np.random.Generator) -> list[Tick]:
    """Out of order within the bound: each tick arrives at its time + U[0, bound)."""
    arrival = np.array([t.event_time_ms for t in ticks]) + rng.uniform(0, BOUND_MS, len(ticks))
    return [ticks[i] for i in np.argsort(arrival, kind="stable")]


def _malformed(rng: np.random.Generator, timestamp: int, bad: Counter[str]) -> Message:
    """A bad prices message stamped no later than what was sent before it (so it cannot move
    the watermark past the replay's)."""
    choice = int(rng.integers(0, 5))
    tick = codec_for("PriceTick")
    if choice == 0:
        bad["undecodable"] += 1
        value = rng.bytes(int(rng.integers(1, 40)))
        # Garbage that happens to decode as a PriceTick would be "invalid" or worse; make sure.
        value = b"\xff\xff\xff\xff\xff" + value
    elif choice == 1:
        bad["invalid"] += 1
        value = tick.encode({"ticker": "AAA", "price": math.nan, "event_time": timestamp})
    elif choice == 2:
        bad["invalid"] += 1
        value = tick.encode(
            {"ticker": "BBB", "price": -1.0 * rng.random(), "event_time": timestamp}
        )
    elif choice == 3:
        bad["invalid"] += 1
        value = tick.encode({"ticker": "CCC", "price": 0.0, "event_time": timestamp})
    else:
        bad["unknown_ticker"] += 1
        value = tick.encode({"ticker": "ZZZ", "price": 1.0, "event_time": timestamp})
    return Message("prices", value, b"bad", timestamp)


def build_scenario(seed: int = 7, *, malformed: int = 0, late: bool = False) -> Scenario:
    """Phase 1: state and the first half of the ticks; phase 2: a re-seed, a weights change,
    (late ticks), the second half; phase 3: sentinels that close every bar."""
    rng = np.random.default_rng(seed)
    ticks = _ticks(seed)
    half = START + N_BARS // 2 * 1_000
    first = _shuffled([t for t in ticks if t.event_time_ms < half], rng)
    second = _shuffled([t for t in ticks if t.event_time_ms >= half], rng)
    scenario = Scenario([[], [], []])
    p1 = PORTFOLIOS[0]
    phase1 = scenario.phases[0]
    for portfolio in PORTFOLIOS:
        phase1.append(_control_message("stats", _stats(portfolio, START, 1.0)))
        phase1.append(
            _control_message(
                "weights",
                {
                    "timestamp": START,
                    "portfolio_id": portfolio["id"],
                    "weights": portfolio["weights"],
                },
            )
        )
    if malformed:
        bad_weights = [
            {
                "timestamp": START + 5,
                "portfolio_id": "p1",
                "weights": {"AAA": 0.9, "BBB": 0.3, "CCC": 0.1},
            },
            {"timestamp": START + 5, "portfolio_id": "p2", "weights": {"BBB": 1.0}},
            {
                "timestamp": START + 5,
                "portfolio_id": "p2",
                "weights": {"BBB": 0.5, "CCC": math.nan, "DDD": 0.5},
            },
        ]
        for record in bad_weights:
            phase1.append(_control_message("weights", record))
        scenario.bad["invalid_weights"] += len(bad_weights)
        phase1.append(
            _control_message(
                "weights", {"timestamp": START, "portfolio_id": "nope", "weights": {"X": 1.0}}
            )
        )
        scenario.bad["unknown_portfolio"] += 1
        phase1.append(Message("weights", b"\xff\x00garbage", b"p1", START))
        scenario.bad["undecodable"] += 1
    goods = [_tick_message(t) for t in first]
    per_good = malformed / (len(first) + len(second)) if malformed else 0.0
    latest = START

    def mix(messages: list[Message], goods: list[Message]) -> None:
        nonlocal latest
        for message in goods:
            messages.append(message)
            latest = max(latest, message.timestamp_ms)
            for _ in range(int(rng.poisson(per_good))):
                messages.append(_malformed(rng, message.timestamp_ms, scenario.bad))

    mix(phase1, goods)
    phase2 = scenario.phases[1]
    phase2.append(_control_message("stats", _stats(p1, RESEED_AT, 1.5)))
    phase2.append(
        _control_message(
            "weights",
            {
                "timestamp": REWEIGHT_AT,
                "portfolio_id": "p2",
                "weights": {"BBB": 0.5, "CCC": 0.25, "DDD": 0.25},
            },
        )
    )
    if late:
        for k in LATE_BARS:
            for ticker in ("AAA", "DDD"):
                stale = Tick(START + k * 1_000 + 500 + (ticker == "DDD"), ticker, 1e3 + k)
                phase2.append(_tick_message(stale))
                scenario.late.add((ticker, stale.event_time_ms))
    mix(phase2, [_tick_message(t) for t in second])
    end = latest + 1_000_000
    sentinel = codec_for("PriceTick").encode({"ticker": "ZZZ", "price": 1.0, "event_time": end})
    scenario.phases[2] = [Message("prices", sentinel, b"ZZZ", end, partition=p) for p in range(3)]
    return scenario


def replay(settings: Settings, scenario: Scenario) -> dict[str, list[ReplayEvent]]:
    """The replay's events for the scenario's messages in production order, by kind."""
    specs = [portfolio_spec(p, settings.exchange) for p in settings.portfolios]
    engine = ReplayEngine(
        [ReplayPortfolio(spec) for spec in specs],
        max_out_of_orderness_ms=settings.flink.max_out_of_orderness_ms,
    )
    events: list[ReplayEvent] = []
    for phase in scenario.phases:
        for message in phase:
            if message.tick is not None and message.tick.ticker != "ZZZ":
                events.extend(engine.on_tick(message.tick))
            elif message.control is not None:
                events.extend(engine.control(*message.control))
    events.extend(engine.flush())
    by_kind: dict[str, list[ReplayEvent]] = {}
    for event in events:
        by_kind.setdefault(event.kind, []).append(event)
    return by_kind


# ------------------------------------------------------------------------ Kafka and the job


def run_settings(broker: KafkaBroker, tmp: Path, token: str, **flink: Any) -> tuple[Settings, Path]:
    """The broker's settings with fresh topics (suffixed ``token``), the scenario's portfolios
    and ``flink`` overrides; written to a YAML file for the job process."""
    data = yaml.safe_load(broker.config_path.read_text(encoding="utf-8"))
    data["topics"] = {role: f"{name}-{token}" for role, name in data["topics"].items()}
    data["portfolios"] = PORTFOLIOS
    data["flink"] = {
        **data.get("flink", {}),
        "max_out_of_orderness_ms": BOUND_MS,
        "idleness_ms": IDLENESS_MS,
        "checkpoint_interval_ms": 1_000,
        "checkpoint_dir": str(tmp / "checkpoints"),
        "starting_offsets": "earliest",
        **flink,
    }
    settings = settings_from_mapping(data)
    path = tmp / f"{token}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    # The scenario's event times are in 2025: with the broker's time-based retention (7 days,
    # judged on record timestamps) its records would be deleted at the next retention check.
    specs = [
        replace(spec, configs={**spec.configs, **KEEP_FOREVER}) for spec in topic_specs(settings)
    ]
    ensure_topics(broker.bootstrap, specs)
    return settings, path


def produce(settings: Settings, messages: Sequence[Message]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "enable.idempotence": True,
            "linger.ms": 5,
        }
    )
    for m in messages:
        extra: dict[str, Any] = {} if m.partition is None else {"partition": m.partition}
        while True:
            try:
                producer.produce(
                    getattr(settings.topics, m.role),
                    value=m.value,
                    key=m.key,
                    timestamp=m.timestamp_ms,
                    **extra,
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0


class KeepAlive:
    """Sends an unknown-ticker tick to every prices partition, stamped with the greatest event
    time produced so far, each time it is called.

    Between phases the test waits for the job; a partition that receives nothing for the
    idleness timeout is then idle, and when data arrives again it holds the watermark back only
    from its first record read, so the other partitions' records could briefly drive the
    watermark past its ticks. Keeping every partition busy rules that out; being stamped no
    later than what was sent, these ticks cannot move the watermark past the replay's. They are
    dead-lettered (``unknown_ticker``) and counted in ``sent``.
    """

    def __init__(self, settings: Settings, scenario: Scenario) -> None:
        self.settings = settings
        self.scenario = scenario
        self.timestamp = max(m.timestamp_ms for m in scenario.phases[0] if m.role == "prices")
        self.value = codec_for("PriceTick").encode(
            {"ticker": "ZZZ", "price": 1.0, "event_time": self.timestamp}
        )

    def __call__(self) -> None:
        produce(
            self.settings,
            [
                Message("prices", self.value, b"ZZZ", self.timestamp, partition=p)
                for p in range(self.settings.kafka.partitions)
            ],
        )
        self.scenario.bad["unknown_ticker"] += self.settings.kafka.partitions


class Outputs:
    """Everything the job wrote to its output topics so far (read_committed), decoded."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka.bootstrap_servers,
                "group.id": f"test-{settings.topics.metrics}-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        topics = [
            settings.topics.updated_stats,
            settings.topics.metrics,
            settings.topics.dead_letter,
        ]
        self.consumer.assign(
            [TopicPartition(t, p, -2) for t in topics for p in range(settings.kafka.partitions)]
        )
        self.stats: dict[str, list[dict[str, Any]]] = {}
        self.metrics: dict[str, list[dict[str, Any]]] = {}
        self.dead: list[dict[str, Any]] = []

    def poll(self, seconds: float = 0.5) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.consumer.poll(0.1)
            if message is None or message.error() is not None:
                continue
            topic, value, key = message.topic(), message.value(), message.key()
            if topic == self.settings.topics.updated_stats:
                record = codec_for("PortfolioStats").decode(value)
                assert key == record["portfolio_id"].encode()
                self.stats.setdefault(record["portfolio_id"], []).append(record)
            elif topic == self.settings.topics.metrics:
                record = codec_for("PortfolioMetrics").decode(value)
                assert key == record["portfolioId"].encode()
                self.metrics.setdefault(record["portfolioId"], []).append(record)
            else:
                assert key is None
                self.dead.append(codec_for("DeadLetter").decode(value))

    def wait_for(
        self,
        condition: Callable[[], bool],
        job: JobProcess,
        what: str,
        every_poll: Callable[[], None] | None = None,
    ) -> None:
        deadline = time.monotonic() + JOB_TIMEOUT
        while not condition():
            job.check_alive()
            assert time.monotonic() < deadline, (
                f"timed out waiting for {what}; have {self.summary()}; log: {job.log_tail()}"
            )
            if every_poll is not None:
                every_poll()
            self.poll()

    def summary(self) -> str:
        """Counts of what was read, for failure messages."""
        stats = {k: (len(v), v[-1]["timestamp"]) for k, v in self.stats.items()}
        metrics = {k: len(v) for k, v in self.metrics.items()}
        dead = Counter(d["reason"] for d in self.dead)
        return f"stats {stats}, metrics {metrics}, dead letters {dict(dead)}"

    def last_stats_time(self, portfolio_id: str) -> int:
        records = self.stats.get(portfolio_id, [])
        return records[-1]["timestamp"] if records else 0

    def close(self) -> None:
        self.consumer.close()


class JobProcess:
    """``python -m streamfolio.flink.job`` in its own process group (JVM included)."""

    def __init__(self, config: Path, log: Path, *args: str) -> None:
        self.log = log
        self._out = log.open("ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamfolio.flink.job", "--config", str(config), *args],
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=FLINK_TEST_ENV,
        )

    def check_alive(self) -> None:
        code = self.proc.poll()
        assert code is None or code == 0, f"job exited with {code}: {self.log_tail()}"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(line for line in text if "WARN" not in line)[-6000:] or "(empty)"

    def wait(self, timeout: float = JOB_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"job still running after {timeout} s: {self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL the whole process group: the Python client and the MiniCluster JVM."""
        # The group may outlive its leader (a JVM left behind): kill it whatever the leader did.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._out.close()


# ------------------------------------------------------------------------------- comparison


def assert_matches_replay(outputs: Outputs, expected: dict[str, list[ReplayEvent]]) -> None:
    for kind, got in (("stats", outputs.stats), ("metrics", outputs.metrics)):
        want: dict[str, list[dict[str, Any]]] = {}
        for event in expected.get(kind, []):
            want.setdefault(event.key, []).append(dict(event.record))
        assert sorted(got) == sorted(want), kind
        for portfolio_id, records in want.items():
            flink = got[portfolio_id]
            assert [r["timestamp"] for r in flink] == [r["timestamp"] for r in records], (
                kind,
                portfolio_id,
            )
            for ours, theirs in zip(flink, records, strict=True):
                if kind == "stats":
                    _assert_stats_equal(ours, theirs)
                else:
                    _assert_metrics_equal(ours, theirs)


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-12 * max(abs(a), abs(b))


def _assert_stats_equal(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert ours["count"] == theirs["count"]
    assert ours["estimator"] == theirs["estimator"]
    assert ours["tickers"] == theirs["tickers"]
    assert ours["kind"] == "updated"
    for t in theirs["tickers"]:
        assert _close(ours["meanReturns"][t], theirs["meanReturns"][t]), (t, ours, theirs)
        for u in theirs["tickers"]:
            assert _close(ours["covarianceMatrix"][t][u], theirs["covarianceMatrix"][t][u])


def _assert_metrics_equal(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    for name in ("count", "statsTimestamp", "weights", "periodsPerYear", "riskFreeRate"):
        assert ours[name] == theirs[name], name
    for name in ("risk", "expectedReturn", "sharpRatio", "meanReturn", "variance"):
        assert _close(ours[name], theirs[name]), (name, ours[name], theirs[name])


def _complete(outputs: Outputs, expected: dict[str, list[ReplayEvent]]) -> Callable[[], bool]:
    counts = Counter((e.kind, e.key) for kind in ("stats", "metrics") for e in expected[kind])

    def done() -> bool:
        have = Counter(
            {("stats", k): len(v) for k, v in outputs.stats.items()}
            | {("metrics", k): len(v) for k, v in outputs.metrics.items()}
        )
        return all(have[key] >= n for key, n in counts.items())

    return done


# ------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    settings: Settings
    scenario: Scenario
    expected: dict[str, list[ReplayEvent]]
    outputs: Outputs
    seconds: float


@pytest.fixture(scope="module")
def unbounded_run(
    kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    """Parallelism 1, at-least-once, phased production with late and malformed messages."""
    tmp = tmp_path_factory.mktemp("flink-unbounded")
    settings, config = run_settings(kafka_broker, tmp, "unbounded", parallelism=1)
    scenario = build_scenario(malformed=3_000, late=True)
    expected = replay(settings, scenario)
    produce(settings, scenario.phases[0])
    outputs = Outputs(settings)
    job = JobProcess(config, tmp / "job.log")
    try:
        # The late ticks belong to bars the job has emitted, so its watermark is past them.
        last_late = START + (max(LATE_BARS) + 1) * 1_000
        keep_alive = KeepAlive(settings, scenario)
        outputs.wait_for(
            lambda: outputs.last_stats_time("p1") > last_late + 4_000,
            job,
            "phase 1",
            every_poll=keep_alive,
        )
        controls, rest = scenario.phases[1][:2], scenario.phases[1][2:]
        produce(settings, controls)
        # Controls are read by their own sources; give them a moment before the ticks that pass
        # their timestamps, so they are placed among the bars rather than applied on arrival.
        for _ in range(3):
            keep_alive()
            time.sleep(0.5)
        produce(settings, rest)
        produce(settings, scenario.phases[2])
        outputs.wait_for(_complete(outputs, expected), job, "every bar")
        outputs.poll(2.0)  # anything extra would show up now
        seconds = time.monotonic() - job.started
    finally:
        job.kill()  # before the other runs start: 2 cores
        outputs.close()
    yield Run(settings, scenario, expected, outputs, seconds)


@pytest.fixture(scope="module")
def bounded_run(
    kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    """Parallelism 2, everything produced first, source bounded at the end offsets."""
    tmp = tmp_path_factory.mktemp("flink-bounded")
    settings, config = run_settings(kafka_broker, tmp, "bounded", parallelism=2)
    scenario = build_scenario(malformed=500)
    scenario.phases[2] = []  # the end of input closes the bars, no sentinel needed
    expected = replay(settings, scenario)
    for phase in scenario.phases:
        produce(settings, phase)
    outputs = Outputs(settings)
    job = JobProcess(config, tmp / "job.log", "--bounded")
    try:
        assert job.wait() == 0, job.log_tail()
        seconds = time.monotonic() - job.started
        outputs.wait_for(_complete(outputs, expected), job, "every bar")
        outputs.poll(1.0)
    finally:
        job.kill()
        outputs.close()
    yield Run(settings, scenario, expected, outputs, seconds)


def test_statistics_and_metrics_equal_the_replay_bar_for_bar(unbounded_run: Run) -> None:
    assert len(unbounded_run.outputs.stats["p1"]) > 150
    assert len(unbounded_run.outputs.stats["p2"]) > 70
    assert_matches_replay(unbounded_run.outputs, unbounded_run.expected)


def test_the_reseed_and_the_weights_change_take_effect_at_their_timestamps(
    unbounded_run: Run,
) -> None:
    p1 = unbounded_run.outputs.stats["p1"]
    before = [s for s in p1 if s["timestamp"] <= RESEED_AT]
    after = [s for s in p1 if s["timestamp"] > RESEED_AT]
    assert after[0]["count"] == 51  # the prior's 50 observations and this bar
    assert before[-1]["count"] > 51
    weights = [m["weights"] for m in unbounded_run.outputs.metrics["p2"]]
    assert weights[-1] == {"BBB": 0.5, "CCC": 0.25, "DDD": 0.25}


def test_late_ticks_are_dead_lettered_and_change_nothing(unbounded_run: Run) -> None:
    late = [d for d in unbounded_run.outputs.dead if d["reason"] == "late"]
    ticks = {
        (r["ticker"], r["event_time"])
        for r in (codec_for("PriceTick").decode(d["payload"]) for d in late)
    }
    assert ticks == unbounded_run.scenario.late
    replay_late = {
        (e.record["ticker"], e.record["event_time"])
        for e in unbounded_run.expected["dead_letter"]
        if e.record["reason"] == "late"
    }
    assert replay_late == ticks
    assert all(d["component"] == "job" for d in late)
    # Where each was read: its partition, offset and key (the ticker).
    for letter in late:
        tick = codec_for("PriceTick").decode(letter["payload"])
        assert letter["partition"] is not None and letter["offset"] is not None
        assert letter["key"] == tick["ticker"].encode()


def test_malformed_messages_are_dead_lettered_with_reasons(unbounded_run: Run) -> None:
    reasons = Counter(d["reason"] for d in unbounded_run.outputs.dead)
    expected = unbounded_run.scenario.bad + Counter(unknown_ticker=3)  # + the sentinels
    assert sum(unbounded_run.scenario.bad.values()) > 2_000
    assert {r: reasons[r] for r in expected} == dict(expected)
    assert reasons["late"] == len(unbounded_run.scenario.late)
    assert set(reasons) == set(expected) | {"late"}


def test_parallelism_two_with_a_bounded_source_equals_the_replay(bounded_run: Run) -> None:
    assert_matches_replay(bounded_run.outputs, bounded_run.expected)
    reasons = Counter(d["reason"] for d in bounded_run.outputs.dead)
    assert reasons == bounded_run.scenario.bad


def test_kill_and_resume_from_the_latest_checkpoint_loses_and_repeats_nothing(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    settings, config = run_settings(
        kafka_broker, tmp_path, "resume", parallelism=1, delivery="exactly-once"
    )
    scenario = build_scenario(seed=11)
    expected = replay(settings, scenario)
    produce(settings, scenario.phases[0])
    outputs = Outputs(settings)
    # Every partition kept busy, as in the unbounded run (see KeepAlive): once the backlog is
    # read, idle partitions stop the watermark, and in process mode (these tests) the last
    # bars' results may then wait for the next input.
    keep_alive = KeepAlive(settings, scenario)
    job = JobProcess(config, tmp_path / "job.log")
    try:
        outputs.wait_for(
            lambda: outputs.last_stats_time("p1") > START + 60_000,
            job,
            "output",
            every_poll=keep_alive,
        )
        time.sleep(1.5)  # and one more checkpoint
    finally:
        job.kill()
    checkpoints = list((tmp_path / "checkpoints").glob("*/chk-*/_metadata"))
    assert checkpoints, "no checkpoint retained"
    produce(settings, scenario.phases[1])
    produce(settings, scenario.phases[2])
    job = JobProcess(config, tmp_path / "job2.log", "--from-checkpoint", "latest")
    try:
        outputs.wait_for(
            _complete(outputs, expected), job, "every bar after the restart", every_poll=keep_alive
        )
        outputs.poll(3.0)
        assert_matches_replay(outputs, expected)
    finally:
        job.kill()
        outputs.close()
