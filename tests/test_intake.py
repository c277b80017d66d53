"""The intake's verdict on hostile records, for every topic: each is refused with its reason.

Every consumer reads through :class:`~streamfolio.intake.Intake`, so this table is the first
line of the hostile-input suite; the consumers' own tests (job, rebalancer, store, dashboard)
check that a refused record changes no state and where its dead letter goes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfolio.core.portfolio import PortfolioSpec
from streamfolio.intake import REASONS, Intake, Rejected, control_problem, stats_problem
from streamfolio.messages import PortfolioStats
from streamfolio.serde import codec_for

NOW = 1_750_000_000_000
YEAR_9999 = 253_402_214_399_000
SPEC = PortfolioSpec(
    "p1",
    ("ATW", "IAM"),
    bar_ms=60_000,
    periods_per_year=92_000,
    bounds=((0.0, 0.8), (0.0, 0.8)),
)
INTAKE = Intake({"p1": SPEC}, clock=lambda: NOW)


def stats_record(**change: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "timestamp": NOW,
        "portfolio_id": "p1",
        "meanReturns": {"ATW": 1e-4, "IAM": 2e-4},
        "covarianceMatrix": {"ATW": {"ATW": 4e-4, "IAM": 1e-4}, "IAM": {"ATW": 1e-4, "IAM": 9e-4}},
        "count": 50,
        "estimator": "welford",
        "half_life_bars": None,
        "tickers": ["ATW", "IAM"],
        "bar_seconds": 60,
        "kind": "initial",
    }
    record.update(change)
    return record


def weights_record(**change: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "timestamp": NOW,
        "portfolio_id": "p1",
        "weights": {"ATW": 0.5, "IAM": 0.5},
        "reason": "",
        "source": "",
    }
    record.update(change)
    return record


def metrics_record(**change: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "portfolioId": "p1",
        "risk": 0.2,
        "expectedReturn": 0.1,
        "sharpRatio": 0.5,
        "timestamp": NOW,
        "count": 10,
        "meanReturn": 1e-4,
        "variance": 1e-4,
        "periodsPerYear": 92_000.0,
        "riskFreeRate": 0.0,
        "weights": {"ATW": 0.5, "IAM": 0.5},
        "statsTimestamp": NOW,
        "sharpeThreshold": None,
    }
    record.update(change)
    return record


def event_record(**change: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "portfolio_id": "p1",
        "timestamp": NOW,
        "reason": "sharpe below threshold",
        "decision": "rebalance",
        "old_weights": {"ATW": 0.5, "IAM": 0.5},
        "new_weights": {"ATW": 0.6, "IAM": 0.4},
        "sharpe_before": 0.1,
        "sharpe_after": 0.4,
        "expected_return_after": 0.1,
        "risk_after": 0.2,
        "turnover": 0.2,
        "optimizer_status": "optimal",
        "event_id": "p1@1",
    }
    record.update(change)
    return record


def encode(schema: str, record: dict[str, Any]) -> bytes:
    return codec_for(schema).encode(record)


READERS: dict[str, tuple[str, Callable[..., dict[str, Any]], Callable[[bytes, bytes | None], Any]]]
READERS = {
    "initial_stats": ("PortfolioStats", stats_record, INTAKE.initial_stats),
    "updated_stats": ("PortfolioStats", stats_record, INTAKE.updated_stats),
    "weights": ("Weights", weights_record, INTAKE.weights),
    "metrics": ("PortfolioMetrics", metrics_record, INTAKE.metrics),
    "rebalance_events": ("RebalanceEvent", event_record, INTAKE.rebalance_event),
}


def verdict(role: str, value: bytes, key: bytes | None = b"p1") -> str | None:
    try:
        READERS[role][2](value, key)
    except Rejected as refused:
        assert refused.reason in REASONS
        return refused.reason
    return None


@pytest.mark.parametrize("role", list(READERS))
def test_a_good_record_is_accepted(role: str) -> None:
    schema, make, _ = READERS[role]
    assert verdict(role, encode(schema, make())) is None


@pytest.mark.parametrize("role", ["initial_stats", "updated_stats"])
def test_packed_statistics_are_accepted_as_the_same_statistics(role: str) -> None:
    stats = PortfolioStats.from_record(READERS[role][1]())
    assert verdict(role, encode("PortfolioStats", stats.to_record("packed"))) is None


@pytest.mark.parametrize("role", list(READERS))
@pytest.mark.parametrize(
    ("case", "key", "reason"),
    [
        ("truncated", b"p1", "undecodable"),
        ("empty", b"p1", "undecodable"),
        ("other schema", b"p1", "undecodable"),
        ("good", b"p2", "key_mismatch"),
        ("good", None, "key_mismatch"),
        ("unknown id", b"nope", "unknown_portfolio"),
        ("year 9999", b"p1", "future"),
        ("six minutes ahead", b"p1", "future"),
    ],
)
def test_every_topic_refuses_broken_misaddressed_and_future_records(
    role: str, case: str, key: bytes | None, reason: str
) -> None:
    schema, make, _ = READERS[role]
    good = encode(schema, make())
    time_field = "timestamp"
    values = {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "other schema": encode("PriceTick", {"ticker": "ATW", "price": 1.0, "event_time": NOW}),
        "good": good,
        "unknown id": encode(
            schema, make(**{"portfolioId" if role == "metrics" else "portfolio_id": "nope"})
        ),
        "year 9999": encode(schema, make(**{time_field: YEAR_9999})),
        "six minutes ahead": encode(schema, make(**{time_field: NOW + 360_000})),
    }
    assert verdict(role, values[case], key) == reason


NAN_STATS = [
    ("NaN mean", {"meanReturns": {"ATW": math.nan, "IAM": 0.0}}),
    ("inf mean", {"meanReturns": {"ATW": math.inf, "IAM": 0.0}}),
    (
        "NaN covariance",
        {"covarianceMatrix": {"ATW": {"ATW": math.nan, "IAM": 0.0}, "IAM": {"ATW": 0, "IAM": 1}}},
    ),
    (
        "asymmetric",
        {"covarianceMatrix": {"ATW": {"ATW": 1.0, "IAM": 0.5}, "IAM": {"ATW": 0.1, "IAM": 1.0}}},
    ),
    (
        "not positive semi-definite",
        {"covarianceMatrix": {"ATW": {"ATW": 1.0, "IAM": 2.0}, "IAM": {"ATW": 2.0, "IAM": 1.0}}},
    ),
    (
        "negative variance",
        {"covarianceMatrix": {"ATW": {"ATW": -1.0, "IAM": 0.0}, "IAM": {"ATW": 0.0, "IAM": 1.0}}},
    ),
    ("count 2**62", {"count": 2**62}),
    ("negative count", {"count": -1}),
    ("another ticker", {"tickers": ["ATW", "BCP"]}),
    ("another estimator", {"estimator": "ewm", "half_life_bars": 10.0}),
    ("another bar size", {"bar_seconds": 300}),
    ("timestamp before 1970", {"timestamp": -1}),
    ("both layouts", {"packed_means": [0.0, 0.0], "packed_covariance": [1.0, 0.0, 1.0]}),
    (
        "packed, a short triangle",
        {
            "meanReturns": {},
            "covarianceMatrix": {},
            "packed_means": [0.0, 0.0],
            "packed_covariance": [1.0, 0.0],
        },
    ),
    (
        "packed, NaN",
        {
            "meanReturns": {},
            "covarianceMatrix": {},
            "packed_means": [0.0, 0.0],
            "packed_covariance": [1.0, math.nan, 1.0],
        },
    ),
]


@pytest.mark.parametrize(("case", "change"), NAN_STATS, ids=[c for c, _ in NAN_STATS])
def test_initial_statistics_must_fit_their_portfolio(case: str, change: dict[str, Any]) -> None:
    record = stats_record(**change)
    if case == "another ticker":
        record["meanReturns"] = {"ATW": 0.0, "BCP": 0.0}
        record["covarianceMatrix"] = {"ATW": {"ATW": 1.0, "BCP": 0.0}, "BCP": {"ATW": 0, "BCP": 1}}
    assert verdict("initial_stats", encode("PortfolioStats", record)) == "invalid_stats"
    assert control_problem(SPEC, "stats", record) is not None


def test_a_covariance_negative_only_by_round_off_is_accepted() -> None:
    tiny = -1e-20
    stats = PortfolioStats.from_arrays(
        "p1", NOW, ["ATW", "IAM"], [0, 0], [[1e-4, 1e-4 + tiny], [1e-4 + tiny, 1e-4]], count=5
    )
    assert stats_problem(SPEC, stats.__class__(**{**_fields(stats), "bar_seconds": 60})) is None


def _fields(stats: PortfolioStats) -> dict[str, Any]:
    return {name: getattr(stats, name) for name in PortfolioStats.FIELDS}


@pytest.mark.parametrize(
    ("weights", "reason"),
    [
        ({"ATW": 5.0, "IAM": -4.0}, "invalid_weights"),  # sums to 1: leveraged and short
        ({"ATW": 0.9, "IAM": 0.1}, "invalid_weights"),  # above ATW's bound 0.8
        ({"ATW": 0.5, "IAM": 0.6}, "invalid_weights"),
        ({"ATW": 1.0}, "invalid_weights"),
        ({"ATW": math.nan, "IAM": 0.5}, "invalid_weights"),
        ({f"T{i}": 1e-4 for i in range(10_000)}, "invalid_weights"),  # a huge map
    ],
)
def test_weights_must_fit_the_portfolio_and_its_bounds(
    weights: dict[str, float], reason: str
) -> None:
    assert verdict("weights", encode("Weights", weights_record(weights=weights))) == reason


@pytest.mark.parametrize(
    "change",
    [
        {"statsTimestamp": YEAR_9999},
        {"risk": -0.1},
        {"sharpRatio": math.nan},
        {"expectedReturn": math.inf},
        {"weights": {"ATW": 5.0, "IAM": -4.0}},
        {"weights": {"ATW": 1.0}},
    ],
)
def test_metrics_are_refused_when_broken_or_from_the_future(change: dict[str, Any]) -> None:
    assert verdict("metrics", encode("PortfolioMetrics", metrics_record(**change))) in {
        "invalid_metrics",
        "future",
    }


def test_far_past_records_are_accepted_the_consumer_decides_whether_they_are_stale() -> None:
    # History is in the past: a replay of it must pass the intake.
    assert verdict("weights", encode("Weights", weights_record(timestamp=0))) is None


def test_the_clock_check_can_be_turned_off_for_offline_replays() -> None:
    offline = Intake({"p1": SPEC}, max_future_skew_ms=None)
    offline.weights(encode("Weights", weights_record(timestamp=YEAR_9999)), b"p1")


def test_a_dead_letter_keeps_the_payload_and_says_where_it_came_from() -> None:
    value = encode("Weights", weights_record(weights={"ATW": 5.0, "IAM": -4.0}))
    with pytest.raises(Rejected) as info:
        INTAKE.weights(value, b"p1")
    letter = info.value.dead_letter(
        source_topic="Weights", payload=value, component="job", partition=2, offset=7, key=b"p1"
    )
    assert (letter.reason, letter.payload, letter.partition, letter.offset, letter.key) == (
        "invalid_weights",
        value,
        2,
        7,
        b"p1",
    )
    assert "outside its bounds" in letter.detail


@settings(max_examples=300, deadline=None)
@given(
    role=st.sampled_from(sorted(READERS)), value=st.binary(max_size=300), key=st.binary(max_size=8)
)
def test_no_bytes_make_a_reader_raise_anything_but_a_refusal(
    role: str, value: bytes, key: bytes
) -> None:
    verdict(role, value, key)


@settings(max_examples=200, deadline=None)
@given(
    role=st.sampled_from(sorted(READERS)),
    cut=st.integers(min_value=0, max_value=400),
    flip=st.integers(min_value=0, max_value=255),
)
def test_mutated_good_records_are_accepted_or_refused_never_crash(
    role: str, cut: int, flip: int
) -> None:
    schema, make, _ = READERS[role]
    good = bytearray(encode(schema, make()))
    if good:
        good[cut % len(good)] ^= flip
    verdict(role, bytes(good))


def test_a_refusal_of_a_huge_record_keeps_a_short_detail() -> None:
    huge = {f"T{i}": 1e-4 for i in range(10_000)}
    with pytest.raises(Rejected) as info:
        INTAKE.weights(encode("Weights", weights_record(weights=huge)), b"p1")
    assert len(info.value.detail) <= 1000
