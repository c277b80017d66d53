"""Trust nothing that arrives (issue #11): the rebalancer and its memory under hostile records.

Every record the rebalancer reads goes through :class:`~streamfolio.intake.Intake`. The service
(metrics and updated statistics) dead-letters what it refuses with the reason, and nothing else
changes: no queued metrics, no cached statistics, no memory, no decision. The memory (weights,
rebalance events, initial statistics) is only a reader of its topics: a refused record changes
nothing and is counted by reason, never dead-lettered (it is read again at every start).

No broker: the service runs with a fake transactional producer and is fed fake messages, as its
consumer would feed it; the memory is fed through its :class:`MemoryReader`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamfolio.config import Settings, settings_from_mapping
from streamfolio.core.metrics import portfolio_performance
from streamfolio.intake import Intake
from streamfolio.messages import (
    DeadLetter,
    PortfolioMetrics,
    PortfolioStats,
    Weights,
)
from streamfolio.rebalancer import join as join_module
from streamfolio.rebalancer.decider import Decider
from streamfolio.rebalancer.follower import MemoryReader, MemoryRole
from streamfolio.rebalancer.join import MAX_PENDING_METRICS
from streamfolio.rebalancer.memory import Memory
from streamfolio.rebalancer.notify import Notifier
from streamfolio.rebalancer.service import RebalancerService
from streamfolio.serde import codec_for

TICKERS = ("AAA", "BBB")
Q = 252.0
COV = np.eye(2) * 1e-4
GOOD = (0.001, -0.0002)  # AAA a winner, BBB a loser: MOSTLY_BBB is far below the threshold
MOSTLY_BBB = {"AAA": 0.2, "BBB": 0.8}
T0 = 1_790_845_200_000  # 2026-10-01 09:00 UTC
MINUTE = 60_000
NOW = T0 + 24 * 60 * MINUTE  # the wall clock of these tests: a day later
YEAR_9999 = 253_370_764_800_000  # 9999-01-01
FAR_PAST = 1  # 1970-01-01, one millisecond in
METRICS_TOPIC = "t.metrics"
STATS_TOPIC = "t.stats"


def make_settings() -> Settings:
    return settings_from_mapping(
        {
            "topics": {"metrics": METRICS_TOPIC, "updated_stats": STATS_TOPIC},
            "portfolios": [
                {
                    "id": "p",
                    "owner": "ana",
                    "tickers": list(TICKERS),
                    "weights": {"AAA": 0.5, "BBB": 0.5},
                    "periods_per_year": Q,
                    "risk_free_rate": 0.0,
                    "gamma": 0.0,
                    "bounds": {"max": 0.9},
                    "policy": {
                        "sharpe_threshold": 1.0,
                        "band": 0.1,
                        "cooldown_seconds": 60,
                        "min_improvement": 0.05,
                        "max_turnover": 1.0,
                        "min_observations": 20,
                    },
                }
            ],
        }
    )


SETTINGS = make_settings()


def intake() -> Intake:
    return Intake.from_settings(SETTINGS, clock=lambda: NOW)


# ------------------------------------------------------------------------------ the records


def stats_at(ts: int, pid: str = "p", kind: str = "updated") -> PortfolioStats:
    return PortfolioStats.from_arrays(pid, ts, TICKERS, GOOD, COV, count=100, kind=kind)


def metrics_of(
    stats: PortfolioStats, weights: Mapping[str, float] = MOSTLY_BBB, ts: int | None = None
) -> PortfolioMetrics:
    w = np.array([weights[t] for t in TICKERS])
    perf = portfolio_performance(w, stats.mean_vector(), COV, periods_per_year=Q)
    return PortfolioMetrics(
        stats.portfolio_id,
        risk=perf.risk,
        expected_return=perf.expected_return,
        sharpe_ratio=perf.sharpe,
        timestamp=stats.timestamp if ts is None else ts,
        count=stats.count,
        weights=dict(weights),
        stats_timestamp=stats.timestamp,
    )


def encode(schema: str, record: Mapping[str, Any]) -> bytes:
    return codec_for(schema).encode(dict(record))


def changed(record: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    return {**record, **changes}


METRICS = metrics_of(stats_at(T0)).to_record()
STATS = stats_at(T0).to_record()
WEIGHTS = Weights("p", T0, MOSTLY_BBB, reason="manual", source="manual").to_record()
SEED = stats_at(T0 - 30 * MINUTE, kind="initial").to_record()
HUGE_WEIGHTS = {f"T{i:05d}": 1e-4 for i in range(10_000)}


def _event_record() -> dict[str, Any]:
    stats = stats_at(T0)
    outcome = Decider(SETTINGS, intake=intake()).decide(
        metrics_of(stats), stats, Memory({"p": TICKERS}).view("p")
    )
    assert outcome.event is not None
    return outcome.event.to_record()


EVENT = _event_record()


def non_finite(record: Mapping[str, Any], *fields: str) -> list[tuple[str, dict[str, Any]]]:
    """``record`` with each of ``fields`` NaN, then +inf, then -inf."""
    return [
        (f"{name}={value}", changed(record, **{name: value}))
        for name in fields
        for value in (math.nan, math.inf, -math.inf)
    ]


def non_finite_map(record: Mapping[str, Any], name: str) -> list[tuple[str, dict[str, Any]]]:
    """``record`` with the map ``name``'s first entry NaN, +inf, -inf."""
    first = next(iter(record[name]))
    return [
        (f"{name}[{first}]={value}", changed(record, **{name: {**record[name], first: value}}))
        for value in (math.nan, math.inf, -math.inf)
    ]


def cov_with(value: float) -> dict[str, dict[str, float]]:
    cov = copy.deepcopy(STATS["covarianceMatrix"])
    cov["AAA"]["BBB"] = value
    cov["BBB"]["AAA"] = value
    return cov


# ----------------------------------------------------------------- the service, without Kafka


@dataclass
class FakeMessage:
    """What :meth:`confluent_kafka.Consumer.consume` hands the service."""

    _topic: str
    _value: bytes | None
    _key: bytes | None
    _offset: int
    _partition: int = 0

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


@dataclass
class FakeProducer:
    """A transactional producer that keeps what it is given."""

    produced: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)

    def begin_transaction(self) -> None:
        pass

    def produce(self, topic: str, value: bytes, key: bytes | None = None, **_: Any) -> None:
        self.produced.append((topic, value, key))

    def poll(self, _timeout: float = 0) -> int:
        return 0


class Harness:
    """A :class:`RebalancerService` fed messages by hand; the memory knows the weights in force
    (``MOSTLY_BBB``, stamped a minute before ``T0``)."""

    def __init__(self) -> None:
        self.service = RebalancerService(
            SETTINGS, instance="test", notifier=Notifier(send=lambda _: True), clock=lambda: NOW
        )
        self.producer = FakeProducer()
        self.service._txn.producer = cast(Any, self.producer)
        self.reader = MemoryReader(self.service.memory, self.service.decider.intake)
        self.offsets = {METRICS_TOPIC: 0, STATS_TOPIC: 0}
        weights = Weights("p", T0 - MINUTE, MOSTLY_BBB, reason="initial", source="config")
        assert self.reader.read("weights", encode("Weights", weights.to_record()), b"p")

    def feed(self, topic: str, value: bytes | None, key: bytes | None = b"p") -> None:
        offset = self.offsets[topic]
        self.offsets[topic] += 1
        self.service._on_message(cast(Any, FakeMessage(topic, value, key, offset)))
        self.service._batch.process_ready()

    def metrics(self, record: Mapping[str, Any], key: bytes | None = b"p") -> None:
        self.feed(METRICS_TOPIC, encode("PortfolioMetrics", record), key)

    def stats(self, record: Mapping[str, Any], key: bytes | None = b"p") -> None:
        self.feed(STATS_TOPIC, encode("PortfolioStats", record), key)

    def state(self) -> tuple[Any, ...]:
        """Everything a record may change: queues, cached statistics, memory, decisions."""
        svc = self.service
        return (
            {pid: [item.metrics for item in q] for pid, q in svc._batch.join.pending.items() if q},
            {pid: sorted(cache) for pid, cache in svc._batch.join.stats_cache.items() if cache},
            svc.memory.view("p"),
            svc.memory.committed("p"),
            self.decisions(),
        )

    def dead_letters(self) -> list[DeadLetter]:
        dead = SETTINGS.topics.dead_letter
        return [
            DeadLetter.from_record(codec_for("DeadLetter").decode(value))
            for topic, value, _ in self.producer.produced
            if topic == dead
        ]

    def decisions(self) -> list[dict[str, Any]]:
        events = SETTINGS.topics.rebalance_events
        return [
            codec_for("RebalanceEvent").decode(value)
            for topic, value, _ in self.producer.produced
            if topic == events
        ]


# Records for the service: (case, topic, value bytes, key, the dead letter's reason).
Case = tuple[str, str, bytes, bytes | None, str]


def _metrics_cases() -> list[Case]:
    good = encode("PortfolioMetrics", METRICS)
    cases: list[Case] = [
        ("truncated", METRICS_TOPIC, good[: len(good) // 2], b"p", "undecodable"),
        ("last byte cut", METRICS_TOPIC, good[:-1], b"p", "undecodable"),
        ("trailing bytes", METRICS_TOPIC, good + b"\x00", b"p", "undecodable"),
        ("empty", METRICS_TOPIC, b"", b"p", "undecodable"),
        ("a weights record", METRICS_TOPIC, encode("Weights", WEIGHTS), b"p", "undecodable"),
        ("a stats record", METRICS_TOPIC, encode("PortfolioStats", STATS), b"p", "undecodable"),
        ("wrong key", METRICS_TOPIC, good, b"q", "key_mismatch"),
        ("null key", METRICS_TOPIC, good, None, "key_mismatch"),
    ]
    records: list[tuple[str, dict[str, Any], bytes | None, str]] = [
        *(
            (name, record, b"p", "invalid_metrics")
            for name, record in non_finite(
                METRICS,
                "risk",
                "expectedReturn",
                "sharpRatio",
                "meanReturn",
                "variance",
                "periodsPerYear",
                "riskFreeRate",
                "sharpeThreshold",
            )
            + non_finite_map(METRICS, "weights")
        ),
        ("negative risk", changed(METRICS, risk=-0.1), b"p", "invalid_metrics"),
        ("negative count", changed(METRICS, count=-1), b"p", "invalid_metrics"),
        ("unknown portfolio", changed(METRICS, portfolioId="zz"), b"zz", "unknown_portfolio"),
        ("stamped 9999", changed(METRICS, timestamp=YEAR_9999), b"p", "future"),
        ("statistics of 9999", changed(METRICS, statsTimestamp=YEAR_9999), b"p", "future"),
        ("no statsTimestamp", changed(METRICS, statsTimestamp=0), b"p", "invalid_metrics"),
        (
            "leveraged weights",
            changed(METRICS, weights={"AAA": 5.0, "BBB": -4.0}),
            b"p",
            "invalid_metrics",
        ),
        (
            "outside the bounds",
            changed(METRICS, weights={"AAA": 0.95, "BBB": 0.05}),
            b"p",
            "invalid_metrics",
        ),
        ("weights of one ticker", changed(METRICS, weights={"AAA": 1.0}), b"p", "invalid_metrics"),
        ("10,000 weights", changed(METRICS, weights=HUGE_WEIGHTS), b"p", "invalid_metrics"),
    ]
    for name, record, key, reason in records:
        cases.append((name, METRICS_TOPIC, encode("PortfolioMetrics", record), key, reason))
    return cases


def _stats_cases() -> list[Case]:
    good = encode("PortfolioStats", STATS)
    cases: list[Case] = [
        ("truncated", STATS_TOPIC, good[: len(good) // 2], b"p", "undecodable"),
        ("last byte cut", STATS_TOPIC, good[:-1], b"p", "undecodable"),
        ("empty", STATS_TOPIC, b"", b"p", "undecodable"),
        ("a metrics record", STATS_TOPIC, encode("PortfolioMetrics", METRICS), b"p", "undecodable"),
        ("wrong key", STATS_TOPIC, good, b"q", "key_mismatch"),
        ("null key", STATS_TOPIC, good, None, "key_mismatch"),
    ]
    huge_mean = {**{t: 0.0 for t in HUGE_WEIGHTS}, **STATS["meanReturns"]}
    records: list[tuple[str, dict[str, Any], bytes | None, str]] = [
        *((name, r, b"p", "invalid_stats") for name, r in non_finite_map(STATS, "meanReturns")),
        *(
            (
                f"covariance {value}",
                changed(STATS, covarianceMatrix=cov_with(value)),
                b"p",
                "invalid_stats",
            )
            for value in (math.nan, math.inf, -math.inf)
        ),
        (
            "negative variance",
            changed(
                STATS,
                covarianceMatrix={
                    "AAA": {"AAA": -1e-4, "BBB": 0.0},
                    "BBB": {"AAA": 0.0, "BBB": 1e-4},
                },
            ),
            b"p",
            "invalid_stats",
        ),
        (
            "asymmetric covariance",
            changed(
                STATS,
                covarianceMatrix={
                    "AAA": {"AAA": 1e-4, "BBB": 1e-5},
                    "BBB": {"AAA": 0.0, "BBB": 1e-4},
                },
            ),
            b"p",
            "invalid_stats",
        ),
        ("negative count", changed(STATS, count=-1), b"p", "invalid_stats"),
        ("unknown portfolio", changed(STATS, portfolio_id="zz"), b"zz", "unknown_portfolio"),
        ("stamped 9999", changed(STATS, timestamp=YEAR_9999), b"p", "future"),
        (
            "other tickers",
            stats_at(T0).to_record()
            | {
                "tickers": ["AAA", "CCC"],
                "meanReturns": {"AAA": 0.0, "CCC": 0.0},
                "covarianceMatrix": {
                    "AAA": {"AAA": 1.0, "CCC": 0.0},
                    "CCC": {"AAA": 0.0, "CCC": 1.0},
                },
            },
            b"p",
            "invalid_stats",
        ),
        ("5-minute bars", changed(STATS, bar_seconds=300), b"p", "invalid_stats"),
        ("10,000 means", changed(STATS, meanReturns=huge_mean), b"p", "invalid_stats"),
    ]
    for name, record, key, reason in records:
        cases.append((name, STATS_TOPIC, encode("PortfolioStats", record), key, reason))
    return cases


SERVICE_CASES = _metrics_cases() + _stats_cases()


@pytest.mark.parametrize(
    ("topic", "value", "key", "reason"),
    [case[1:] for case in SERVICE_CASES],
    ids=[f"{case[1].split('.')[1]}: {case[0]}" for case in SERVICE_CASES],
)
def test_a_hostile_record_is_dead_lettered_and_changes_nothing(
    topic: str, value: bytes, key: bytes | None, reason: str
) -> None:
    run = Harness()
    run.stats(stats_at(T0 - MINUTE).to_record())  # statistics waiting for their metrics
    before = run.state()
    run.feed(topic, value, key)
    assert run.state() == before
    (letter,) = run.dead_letters()
    assert letter.reason == reason, letter.detail
    assert letter.component == "rebalancer" and letter.source_topic == topic
    assert letter.payload == value and letter.key == key
    assert letter.offset == run.offsets[topic] - 1 and letter.partition == 0
    assert run.service._batch.dead_letters == {reason: 1}
    # ...and the service carries on: a good pair still decides.
    run.metrics(METRICS)
    run.stats(STATS)
    assert [e["decision"] for e in run.decisions()] == ["rebalance"]


def test_a_record_read_again_after_a_restart_is_not_dead_lettered_twice() -> None:
    run = Harness()
    run.service._offsets.processed[(METRICS_TOPIC, 0)] = 1  # offset 0 was read by the group before
    run.feed(METRICS_TOPIC, b"\x00garbage")
    assert run.dead_letters() == []
    run.feed(METRICS_TOPIC, b"\x00garbage")  # offset 1: new
    assert [d.reason for d in run.dead_letters()] == ["undecodable"]


def test_duplicated_and_replayed_metrics_are_decided_once() -> None:
    run = Harness()
    run.stats(STATS)
    run.metrics(METRICS)
    assert [e["decision"] for e in run.decisions()] == ["rebalance"]
    after = run.state()
    for _ in range(3):  # the same record again, and the statistics again
        run.metrics(METRICS)
        run.stats(STATS)
    assert run.state() == after
    assert run.service._batch.counts["already_decided"] == 3
    assert run.dead_letters() == []


def test_metrics_stamped_in_the_far_past_decide_nothing() -> None:
    """The job stamps metrics no earlier than the weights they were computed with: weights
    published in answer to older metrics would be ignored by the job (stale)."""
    run = Harness()
    run.stats(STATS)
    before = run.service.memory.view("p")
    run.metrics(metrics_of(stats_at(T0), ts=FAR_PAST).to_record())
    assert run.decisions() == [] and run.dead_letters() == []
    assert run.service.memory.view("p") == before
    assert run.service._batch.counts["stale"] == 1
    run.metrics(METRICS)  # the real one still decides
    assert [e["decision"] for e in run.decisions()] == ["rebalance"]


def test_metrics_naming_statistics_of_1970_wait_only_until_later_ones_arrive() -> None:
    run = Harness()
    run.metrics(changed(METRICS, statsTimestamp=FAR_PAST, timestamp=T0 - 1))
    assert len(run.service._batch.join.pending["p"]) == 1
    run.stats(STATS)
    run.metrics(METRICS)
    assert [d.reason for d in run.dead_letters()] == ["stats_missing"]
    assert [e["decision"] for e in run.decisions()] == ["rebalance"]
    assert not run.service._batch.join.pending["p"]


def test_metrics_whose_statistics_never_come_wait_in_a_bounded_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(join_module, "MAX_PENDING_METRICS", 8)
    run = Harness()
    lost = [metrics_of(stats_at(T0 + i * MINUTE)).to_record() for i in range(20)]
    for record in lost:  # the statistics topic is silent
        run.metrics(record)
    queue = run.service._batch.join.pending["p"]
    assert len(queue) == 8, "never more than the bound"
    assert [m.timestamp for m in (item.metrics for item in queue)] == [
        r["timestamp"] for r in lost[-8:]
    ]
    dead = run.dead_letters()
    assert [d.reason for d in dead] == ["stats_missing"] * 12
    assert [d.offset for d in dead] == list(range(12)), "the oldest first"
    assert "later metrics records waited behind it" in dead[0].detail
    # The committable offset moves past them: the oldest still waiting is offset 12.
    (offset,) = [tp for tp in run.service._safe_offsets() if tp.topic == METRICS_TOPIC]
    assert offset.offset == 12


def test_the_real_bound_holds_too() -> None:
    run = Harness()
    value = encode("PortfolioMetrics", METRICS)
    for i in range(MAX_PENDING_METRICS + 100):
        record = changed(METRICS, timestamp=T0 + i, statsTimestamp=T0 + i)
        value = encode("PortfolioMetrics", record)
        run.service._on_message(cast(Any, FakeMessage(METRICS_TOPIC, value, b"p", i)))
        if i % 500 == 0:
            run.service._batch.process_ready()
    run.service._batch.process_ready()
    assert len(run.service._batch.join.pending["p"]) == MAX_PENDING_METRICS
    assert len(run.dead_letters()) == 100


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    topic=st.sampled_from([METRICS_TOPIC, STATS_TOPIC]),
    value=st.one_of(
        st.binary(max_size=300),
        # a valid record with bytes flipped or cut: decodes further before it fails
        st.tuples(
            st.sampled_from([encode("PortfolioMetrics", METRICS), encode("PortfolioStats", STATS)]),
            st.integers(0, 400),
            st.binary(max_size=8),
        ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]) :]),
    ),
    key=st.one_of(st.none(), st.sampled_from([b"p", b"q", b"", b"\xff"]), st.binary(max_size=8)),
)
def test_random_bytes_never_raise_and_never_decide(
    topic: str, value: bytes, key: bytes | None
) -> None:
    run = Harness()
    run.feed(topic, value, key)
    assert run.decisions() == []
    dead = run.dead_letters()
    queued = sum(len(q) for q in run.service._batch.join.pending.values())
    cached = sum(len(c) for c in run.service._batch.join.stats_cache.values())
    assert len(dead) + queued + cached == 1, "each record is kept or dead-lettered"


# -------------------------------------------------------------------------------- the memory

# Records for the memory: (case, role, value bytes, key, the reason it is counted under).
MemoryCase = tuple[str, MemoryRole, bytes, bytes | None, str]

_SCHEMAS: Mapping[MemoryRole, str] = {
    "weights": "Weights",
    "rebalance_events": "RebalanceEvent",
    "initial_stats": "PortfolioStats",
}
_GOOD: Mapping[MemoryRole, dict[str, Any]] = {
    "weights": WEIGHTS,
    "rebalance_events": EVENT,
    "initial_stats": SEED,
}
_INVALID: Mapping[MemoryRole, str] = {
    "weights": "invalid_weights",
    "rebalance_events": "invalid_event",
    "initial_stats": "invalid_stats",
}


def _common_cases(role: MemoryRole) -> list[MemoryCase]:
    schema = _SCHEMAS[role]
    good = encode(schema, _GOOD[role])
    other = encode("DeadLetter", {"reason": "x", "detail": "", "source_topic": "t",
                                  "payload": b"", "timestamp": 0, "component": "c",
                                  "partition": None, "offset": None, "key": None})  # fmt: skip
    pid_field = "portfolio_id"
    return [
        ("truncated", role, good[: len(good) // 2], b"p", "undecodable"),
        ("last byte cut", role, good[:-1], b"p", "undecodable"),
        ("empty", role, b"", b"p", "undecodable"),
        ("a dead letter", role, other, b"p", "undecodable"),
        ("wrong key", role, good, b"q", "key_mismatch"),
        ("null key", role, good, None, "key_mismatch"),
        (
            "unknown portfolio",
            role,
            encode(schema, changed(_GOOD[role], **{pid_field: "zz"})),
            b"zz",
            "unknown_portfolio",
        ),
        (
            "stamped 9999",
            role,
            encode(schema, changed(_GOOD[role], timestamp=YEAR_9999)),
            b"p",
            "future",
        ),
    ]


def _memory_cases() -> list[MemoryCase]:
    cases: list[MemoryCase] = []
    for role in ("weights", "rebalance_events", "initial_stats"):
        cases.extend(_common_cases(cast(MemoryRole, role)))
    invalid: list[tuple[MemoryRole, str, dict[str, Any]]] = [
        *(("weights", n, r) for n, r in non_finite_map(WEIGHTS, "weights")),
        ("weights", "leveraged {A: 5, B: -4}", changed(WEIGHTS, weights={"AAA": 5.0, "BBB": -4.0})),
        ("weights", "outside the bounds", changed(WEIGHTS, weights={"AAA": 0.95, "BBB": 0.05})),
        ("weights", "sum 1.4", changed(WEIGHTS, weights={"AAA": 0.7, "BBB": 0.7})),
        ("weights", "one ticker", changed(WEIGHTS, weights={"AAA": 1.0})),
        ("weights", "10,000 entries", changed(WEIGHTS, weights=HUGE_WEIGHTS)),
        *(
            ("rebalance_events", n, r)
            for n, r in non_finite(
                EVENT,
                "sharpe_before",
                "sharpe_after",
                "expected_return_after",
                "risk_after",
                "turnover",
            )
            + non_finite_map(EVENT, "old_weights")
            + non_finite_map(EVENT, "new_weights")
        ),
        ("rebalance_events", "negative risk", changed(EVENT, risk_after=-0.1)),
        ("rebalance_events", "negative turnover", changed(EVENT, turnover=-0.1)),
        ("rebalance_events", "unknown decision", changed(EVENT, decision="liquidate")),
        *(("initial_stats", n, r) for n, r in non_finite_map(SEED, "meanReturns")),
        *(
            ("initial_stats", f"covariance {v}", changed(SEED, covarianceMatrix=cov_with(v)))
            for v in (math.nan, math.inf, -math.inf)
        ),
        ("initial_stats", "not PSD", changed(SEED, covarianceMatrix=cov_with(1.0))),
        ("initial_stats", "5-minute bars", changed(SEED, bar_seconds=300)),
        ("initial_stats", "count 10^12", changed(SEED, count=10**12)),
    ]
    for role, name, record in invalid:
        cases.append((name, role, encode(_SCHEMAS[role], record), b"p", _INVALID[role]))
    return cases


MEMORY_CASES = _memory_cases()


class MemoryRun:
    """A memory holding a decision (``T0``), weights (``T0``) and a seed, as a reader fills it.
    The portfolio's bounds are [0, 0.9] per ticker."""

    def __init__(self) -> None:
        self.memory = Memory({"p": TICKERS})
        self.reader = MemoryReader(self.memory, intake())
        for role, record in _GOOD.items():
            assert self.read(role, encode(_SCHEMAS[role], record))
        assert self.reader.skipped == {}

    def read(self, role: MemoryRole, value: bytes, key: bytes | None = b"p") -> bool:
        return self.reader.read(role, value, key, topic=role)

    def state(self) -> tuple[Any, ...]:
        return (
            copy.deepcopy(self.memory._committed),
            copy.deepcopy(self.memory._seeds),
            copy.deepcopy(self.memory._staged),
        )


@pytest.mark.parametrize(
    ("role", "value", "key", "reason"),
    [case[1:] for case in MEMORY_CASES],
    ids=[f"{case[1]}: {case[0]}" for case in MEMORY_CASES],
)
def test_a_hostile_record_changes_no_memory_and_is_counted(
    role: MemoryRole, value: bytes, key: bytes | None, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    run = MemoryRun()
    before = run.state()
    assert not run.read(role, value, key)
    assert not run.read(role, value, key)
    assert run.state() == before
    assert run.reader.skipped == {reason: 2}
    logged = [r for r in caplog.records if "memory: ignoring" in r.getMessage()]
    assert len(logged) == 1, "logged once per reason"


def test_the_first_hostile_record_is_refused_too() -> None:
    """A memory that knows nothing yet is not taught anything by a refused record."""
    for _name, role, value, key, reason in MEMORY_CASES:
        memory = Memory({"p": TICKERS})
        reader = MemoryReader(memory, intake())
        assert not reader.read(role, value, key)
        assert reader.skipped == {reason: 1}
        assert memory.committed("p") == Memory({"p": TICKERS}).committed("p")
        assert memory.initial_stats("p", SEED["timestamp"]) is None


def test_weights_older_than_those_held_are_stale_and_equal_ones_change_nothing() -> None:
    run = MemoryRun()
    before = run.state()
    older = changed(WEIGHTS, timestamp=T0 - 1, weights={"AAA": 0.6, "BBB": 0.4})
    assert not run.read("weights", encode("Weights", older))
    far_past = changed(WEIGHTS, timestamp=FAR_PAST, weights={"AAA": 0.6, "BBB": 0.4})
    assert not run.read("weights", encode("Weights", far_past))
    assert run.reader.skipped == {"stale": 2}
    run.read("weights", encode("Weights", WEIGHTS))  # duplicated: the same weights again
    assert run.state() == before
    newer = changed(WEIGHTS, timestamp=T0 + 1, weights={"AAA": 0.6, "BBB": 0.4})
    assert run.read("weights", encode("Weights", newer))
    assert run.memory.committed("p").weights == {"AAA": 0.6, "BBB": 0.4}


def test_events_of_1970_neither_undo_a_decision_nor_make_later_metrics_decided() -> None:
    run = MemoryRun()
    before = run.state()
    old = changed(EVENT, timestamp=FAR_PAST, event_id=f"p@{FAR_PAST}")
    assert not run.read("rebalance_events", encode("RebalanceEvent", old))
    assert not run.read("rebalance_events", encode("RebalanceEvent", EVENT))  # replayed
    assert run.state() == before

    fresh = MemoryRun.__new__(MemoryRun)
    fresh.memory = Memory({"p": TICKERS})
    fresh.reader = MemoryReader(fresh.memory, intake())
    fresh.read("rebalance_events", encode("RebalanceEvent", old))
    later = metrics_of(stats_at(T0))
    assert not Decider.already_decided(later, fresh.memory.view("p"))


def test_an_event_of_9999_does_not_make_every_later_metrics_record_decided() -> None:
    run = Harness()
    future = changed(EVENT, timestamp=YEAR_9999, event_id=f"p@{YEAR_9999}")
    assert not run.reader.read("rebalance_events", encode("RebalanceEvent", future), b"p")
    assert run.reader.skipped == {"future": 1}
    run.stats(STATS)
    run.metrics(METRICS)
    assert [e["decision"] for e in run.decisions()] == ["rebalance"]


def test_leveraged_weights_are_not_what_the_rebalancer_computes_from() -> None:
    run = Harness()
    leveraged = changed(WEIGHTS, timestamp=T0 - 1, weights={"AAA": 5.0, "BBB": -4.0})
    assert not run.reader.read("weights", encode("Weights", leveraged), b"p")
    assert run.service.memory.view("p").weights == MOSTLY_BBB


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    role=st.sampled_from(["weights", "rebalance_events", "initial_stats"]),
    data=st.data(),
    key=st.one_of(st.none(), st.just(b"p"), st.binary(max_size=4)),
)
def test_random_bytes_never_raise_in_the_memory(
    role: MemoryRole, data: st.DataObject, key: bytes | None
) -> None:
    good = encode(_SCHEMAS[role], _GOOD[role])
    value = data.draw(
        st.one_of(
            st.binary(max_size=300),
            st.tuples(st.integers(0, len(good)), st.binary(min_size=1, max_size=8)).map(
                lambda t: good[: t[0]] + t[1] + good[t[0] + len(t[1]) :]
            ),
        )
    )
    run = MemoryRun()
    run.read(role, value, key)  # accepted or counted; never an exception
