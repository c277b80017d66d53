"""Message dataclasses: their validation and records (the BourseData conversion is in
test_bourse.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from streamfolio.errors import SchemaError
from streamfolio.messages import (
    DeadLetter,
    PortfolioMetrics,
    PortfolioStats,
    PriceTick,
    RebalanceEvent,
    Weights,
)
from streamfolio.serde import codec_for


def stats_record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "timestamp": 60_000,
        "portfolio_id": "p1",
        "meanReturns": {"ATW": 1e-3, "IAM": 2e-3},
        "covarianceMatrix": {"ATW": {"ATW": 4e-4, "IAM": 1e-4}, "IAM": {"ATW": 1e-4, "IAM": 9e-4}},
        "tickers": ["ATW", "IAM"],
    }
    record.update(changes)
    return record


# --- PriceTick ------------------------------------------------------------------------------


def test_price_tick_record_round_trip_and_defaults() -> None:
    tick = PriceTick.from_record({"ticker": "ATW", "price": 612.5, "event_time": 1})
    assert tick == PriceTick("ATW", 612.5, 1, None, "unknown", None)
    assert PriceTick.from_record(tick.to_record()) == tick


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"price": math.nan}, "PriceTick.price is not finite: nan"),
        ({"price": math.inf}, "PriceTick.price is not finite: inf"),
        ({"price": 0.0}, "PriceTick.price must be > 0, got 0.0"),
        ({"price": -1.0}, "PriceTick.price must be > 0"),
        ({"price": "1"}, "PriceTick.price must be a number, got str"),
        ({"ticker": ""}, "PriceTick.ticker must not be empty"),
        ({"event_time": -1}, "PriceTick.event_time is not an epoch-millisecond time"),
        ({"event_time": 1.5}, "PriceTick.event_time must be an integer, got float"),
        ({"volume": -2.0}, "PriceTick.volume must be >= 0.0"),
        ({"volume": math.nan}, "PriceTick.volume is not finite"),
        ({"sequence": "3"}, "PriceTick.sequence must be an integer"),
    ],
)
def test_price_tick_rejects_bad_values(changes: dict[str, Any], reason: str) -> None:
    record = {"ticker": "ATW", "price": 1.0, "event_time": 0, **changes}
    with pytest.raises(SchemaError) as info:
        PriceTick.from_record(record)
    assert info.value.reason.startswith(reason)


def test_missing_field_names_the_field() -> None:
    with pytest.raises(SchemaError, match=r"PriceTick record has no field 'price'"):
        PriceTick.from_record({"ticker": "ATW", "event_time": 0})
    with pytest.raises(SchemaError, match=r"Weights record has no field 'weights'"):
        Weights.from_record({"timestamp": 0, "portfolio_id": "p"})
    with pytest.raises(SchemaError, match=r"PortfolioStats record has no field 'portfolio_id'"):
        PortfolioStats.from_record({k: v for k, v in stats_record().items() if k != "portfolio_id"})
    with pytest.raises(SchemaError, match=r"PortfolioMetrics record has no field 'sharpRatio'"):
        PortfolioMetrics.from_record({"portfolioId": "p", "risk": 0.1, "expectedReturn": 0.0})
    with pytest.raises(SchemaError, match=r"RebalanceEvent record has no field 'event_id'"):
        record = RebalanceEvent("p", 1, "", "hold", {}, {}, 0.0, 0.0, 0.0, 0.0, 0.0, "").to_record()
        del record["event_id"]
        RebalanceEvent.from_record(record)
    with pytest.raises(SchemaError, match=r"DeadLetter record has no field 'payload'"):
        DeadLetter.from_record({"reason": "x", "detail": "", "source_topic": "t"})


# --- Weights --------------------------------------------------------------------------------


def test_weights_keep_insertion_order_and_are_copied() -> None:
    raw = {"IAM": 0.4, "ATW": 0.6}
    weights = Weights("p1", 5, raw)
    raw["ATW"] = 0.0
    assert list(weights.weights.items()) == [("IAM", 0.4), ("ATW", 0.6)]
    assert Weights.from_record(weights.to_record()) == weights


@pytest.mark.parametrize(
    ("weights", "reason"),
    [
        ({"ATW": math.nan}, "Weights.weights['ATW'] is not finite"),
        ({}, "Weights.weights must not be empty"),
        ({"": 1.0}, "Weights.weights key must not be empty"),
        ([("ATW", 1.0)], "Weights.weights must be a mapping"),
    ],
)
def test_weights_reject_bad_maps(weights: Any, reason: str) -> None:
    with pytest.raises(SchemaError, match=reason.replace("[", "\\[")):
        Weights("p1", 0, weights)


# --- PortfolioStats -------------------------------------------------------------------------


def test_stats_arrays_round_trip() -> None:
    cov = np.array([[4e-4, 1e-4], [1e-4, 9e-4]])
    stats = PortfolioStats.from_arrays("p1", 0, ["ATW", "IAM"], np.array([1e-3, 2e-3]), cov)
    np.testing.assert_array_equal(stats.covariance_matrix(), cov)
    np.testing.assert_array_equal(stats.mean_vector(), [1e-3, 2e-3])
    assert stats.covariance_matrix().dtype == np.float64
    assert PortfolioStats.from_record(stats.to_record()) == stats


def test_stats_tickers_order_wins_over_map_order() -> None:
    record = stats_record(tickers=["IAM", "ATW"])
    stats = PortfolioStats.from_record(record)
    assert stats.tickers == ("IAM", "ATW")
    assert stats.mean == (2e-3, 1e-3)
    assert stats.covariance == ((9e-4, 1e-4), (1e-4, 4e-4))
    assert list(stats.to_record()["meanReturns"]) == ["IAM", "ATW"]


def test_packed_stats_are_the_same_statistics_through_the_codec() -> None:
    rng = np.random.default_rng(7)
    a = rng.normal(size=(5, 5))
    stats = PortfolioStats.from_arrays(
        "p1", 9, list("VWXYZ"), rng.normal(size=5), a @ a.T, count=40, bar_seconds=60
    )
    codec = codec_for("PortfolioStats")
    packed = codec.encode(stats.to_record("packed"))
    assert PortfolioStats.from_record(codec.decode(packed)) == stats
    assert len(packed) < len(codec.encode(stats.to_record()))
    # The upper triangle, row by row; nothing in the maps.
    record = codec.decode(packed)
    assert record["packed_covariance"][:5] == list(stats.covariance[0])
    assert record["meanReturns"] == record["covarianceMatrix"] == {}


def packed_record(**changes: Any) -> dict[str, Any]:
    return (
        stats_record(
            meanReturns={},
            covarianceMatrix={},
            packed_means=[1e-3, 2e-3],
            packed_covariance=[4e-4, 1e-4, 9e-4],
        )
        | changes
    )


def test_packed_stats_follow_their_tickers_order() -> None:
    stats = PortfolioStats.from_record(packed_record())
    assert stats.mean == (1e-3, 2e-3)
    assert stats.covariance == ((4e-4, 1e-4), (1e-4, 9e-4))
    assert PortfolioStats.from_record(stats.to_record("packed")) == stats


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"meanReturns": {"ATW": 1e-3, "IAM": 2e-3}},
            "PortfolioStats has both maps (meanReturns, covarianceMatrix) and packed arrays",
        ),
        ({"tickers": []}, "PortfolioStats.tickers must name the tickers of packed statistics"),
        ({"packed_means": [1e-3]}, "PortfolioStats.packed_means has 1 values for 2 tickers"),
        (
            {"packed_covariance": [4e-4, 1e-4, 9e-4, 0.0]},
            "PortfolioStats.packed_covariance has 4 values; the upper triangle of 2 tickers has 3",
        ),
        ({"packed_means": []}, "PortfolioStats.packed_means has 0 values for 2 tickers"),
        ({"packed_covariance": [4e-4, "x", 9e-4]}, "PortfolioStats.packed_covariance[1] must be"),
        ({"packed_covariance": [-4e-4, 0.0, 9e-4]}, "PortfolioStats.covariance['ATW']['ATW'] is a"),
        ({"packed_means": [math.nan, 0.0]}, "PortfolioStats.mean['ATW'] is not finite"),
        ({"tickers": ["ATW", "ATW"]}, "PortfolioStats.tickers has duplicates"),
    ],
)
def test_packed_stats_reject_inconsistent_records(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(SchemaError) as info:
        PortfolioStats.from_record(packed_record(**changes))
    assert info.value.reason.startswith(reason), info.value.reason


def test_stats_accept_huge_entries_without_overflow_warnings() -> None:
    cov = [[1e300, 1e300], [1e300, 1e300]]
    assert PortfolioStats.from_arrays("p", 0, ["A", "B"], [0.0, 0.0], cov).covariance[0][1] == 1e300


def test_stats_accept_round_off_asymmetry() -> None:
    cov = stats_record()["covarianceMatrix"]
    cov["IAM"]["ATW"] = 1e-4 * (1 + 1e-14)
    assert PortfolioStats.from_record(stats_record(covarianceMatrix=cov)).count == 0


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"meanReturns": {"ATW": 1e-3}},
            "PortfolioStats.meanReturns does not match the tickers: missing ['IAM'], extra []",
        ),
        (
            {"tickers": ["ATW", "IAM", "BCP"]},
            "PortfolioStats.meanReturns does not match the tickers: missing ['BCP']",
        ),
        (
            {"covarianceMatrix": {"ATW": {"ATW": 4e-4, "IAM": 1e-4}}},
            "PortfolioStats.covarianceMatrix does not match the tickers: missing ['IAM']",
        ),
        (
            {"covarianceMatrix": {"ATW": {"ATW": 4e-4}, "IAM": {"ATW": 1e-4, "IAM": 9e-4}}},
            "PortfolioStats.covarianceMatrix['ATW'] does not match the tickers: missing ['IAM']",
        ),
        (
            {
                "covarianceMatrix": {
                    "ATW": {"ATW": 4e-4, "IAM": 1e-4},
                    "IAM": {"ATW": 1.1e-4, "IAM": 9e-4},
                }
            },
            "PortfolioStats.covariance is not symmetric: ['IAM']['ATW']=0.00011",
        ),
        (
            {"meanReturns": {"ATW": math.nan, "IAM": 0.0}},
            "PortfolioStats.mean['ATW'] is not finite",
        ),
        (
            {
                "covarianceMatrix": {
                    "ATW": {"ATW": math.inf, "IAM": 0.0},
                    "IAM": {"ATW": 0.0, "IAM": 1.0},
                }
            },
            "PortfolioStats.covariance['ATW']['ATW'] is not finite: inf",
        ),
        (
            {
                "covarianceMatrix": {
                    "ATW": {"ATW": -1.0, "IAM": 0.0},
                    "IAM": {"ATW": 0.0, "IAM": 1.0},
                }
            },
            "PortfolioStats.covariance['ATW']['ATW'] is a negative variance",
        ),
        ({"tickers": ["ATW", "ATW"]}, "PortfolioStats.tickers has duplicates"),
        ({"meanReturns": {}, "covarianceMatrix": {}, "tickers": []}, "PortfolioStats.tickers must"),
        ({"estimator": "ewm"}, "PortfolioStats.half_life_bars is required by the ewm estimator"),
        ({"half_life_bars": 10.0}, "PortfolioStats.half_life_bars must be null for the welford"),
        ({"estimator": "ewm", "half_life_bars": 0.0}, "PortfolioStats.half_life_bars must be > 0"),
        ({"estimator": "kalman"}, "PortfolioStats.estimator must be 'welford' or 'ewm'"),
        ({"kind": "final"}, "PortfolioStats.kind must be 'initial' or 'updated'"),
        ({"count": -1}, "PortfolioStats.count must be >= 0"),
        ({"bar_seconds": 0}, "PortfolioStats.bar_seconds must be >= 1"),
        ({"portfolio_id": ""}, "PortfolioStats.portfolio_id must not be empty"),
        (
            {"meanReturns": [1.0, 2.0]},
            "PortfolioStats meanReturns and covarianceMatrix must be maps",
        ),
    ],
)
def test_stats_reject_inconsistent_records(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(SchemaError) as info:
        PortfolioStats.from_record(stats_record(**changes))
    assert info.value.reason.startswith(reason), info.value.reason


def test_stats_from_arrays_checks_shapes() -> None:
    with pytest.raises(SchemaError, match=r"is not 2x2"):
        PortfolioStats.from_arrays("p", 0, ["A", "B"], [0.0, 0.0], [[1.0, 0.0]])
    with pytest.raises(SchemaError, match=r"needs a vector and a matrix"):
        PortfolioStats.from_arrays("p", 0, ["A"], [[0.0]], [[1.0]])
    with pytest.raises(SchemaError, match=r"has 1 values for 2 tickers"):
        PortfolioStats.from_arrays("p", 0, ["A", "B"], [0.0], np.eye(2))


# --- PortfolioMetrics, RebalanceEvent, DeadLetter -------------------------------------------


def test_metrics_map_reference_spellings() -> None:
    metrics = PortfolioMetrics("p1", 0.2, 0.1, 0.5, 7, weights={"ATW": 1.0})
    record = metrics.to_record()
    assert (record["portfolioId"], record["expectedReturn"], record["sharpRatio"]) == (
        "p1",
        0.1,
        0.5,
    )
    assert PortfolioMetrics.from_record(record) == metrics


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"sharpRatio": math.nan}, "PortfolioMetrics.sharpe_ratio is not finite"),
        ({"risk": -0.1}, "PortfolioMetrics.risk must be >= 0.0"),
        ({"variance": math.inf}, "PortfolioMetrics.variance is not finite"),
        ({"weights": {"ATW": math.inf}}, "PortfolioMetrics.weights['ATW'] is not finite"),
        ({"sharpeThreshold": math.nan}, "PortfolioMetrics.sharpe_threshold is not finite"),
    ],
)
def test_metrics_reject_non_finite(changes: dict[str, Any], reason: str) -> None:
    record = PortfolioMetrics("p1", 0.2, 0.1, 0.5, 7).to_record() | changes
    with pytest.raises(SchemaError) as info:
        PortfolioMetrics.from_record(record)
    assert info.value.reason.startswith(reason)


def test_rebalance_event_id_is_deterministic() -> None:
    args = ("p1", 99, "why", "hold_infeasible", {"A": 1.0}, {"A": 1.0}, 0.1, 0.1, 0.0, 0.1, 0.0, "")
    first, second = RebalanceEvent(*args), RebalanceEvent(*args)
    assert first.event_id == second.event_id == "p1@99" == RebalanceEvent.make_event_id("p1", 99)
    assert RebalanceEvent.from_record(first.to_record()) == first
    assert RebalanceEvent(*args, event_id="custom").event_id == "custom"
    with pytest.raises(SchemaError, match=r"RebalanceEvent.turnover must be >= 0.0"):
        RebalanceEvent(*args[:10], -0.5, "")


def test_dead_letter_keeps_payload_bytes() -> None:
    payload = bytes(range(256))
    letter = DeadLetter("undecodable", "x", "t", bytearray(payload), 1, "feed")  # type: ignore[arg-type]
    assert letter.payload == payload and type(letter.payload) is bytes
    codec = codec_for("DeadLetter")
    assert DeadLetter.from_record(codec.decode(codec.encode(letter.to_record()))) == letter
    with pytest.raises(SchemaError, match=r"DeadLetter.payload must be bytes, got str"):
        DeadLetter("x", "", "t", "text", 1, "feed")  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match=r"DeadLetter.reason must not be empty"):
        DeadLetter("", "", "t", b"", 1, "feed")
