"""The job's statistics writer gives the codec's bytes exactly (the hot path's shortcut)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfolio.core.moments import (
    EstimatorKind,
    OnlineMoments,
    StatsLayout,
    moments_from_prior,
    stats_record,
)
from streamfolio.flink.stats_encoding import MetricsEncoder, StatsEncoder, StatsHead, avro_long
from streamfolio.serde import codec_for

CODEC = codec_for("PortfolioStats")


def codec_bytes(
    moments: OnlineMoments,
    pid: str,
    tickers: tuple[str, ...],
    timestamp: int,
    bar_seconds: int | None,
    layout: StatsLayout = "maps",
) -> bytes:
    record = stats_record(moments, pid, tickers, timestamp, layout)
    record.update(kind="updated", bar_seconds=bar_seconds)
    return CODEC.encode(record)


@pytest.mark.parametrize("layout", ["maps", "packed"])
@pytest.mark.parametrize(
    ("kind", "half_life", "tickers"),
    [
        ("welford", None, ("AAA",)),
        ("welford", None, tuple(f"T{i:03d}" for i in range(20))),
        ("ewm", 12.5, ("ATW", "BCP", "Ünï", "A" * 70)),  # multi-byte names, a 2-byte length
    ],
)
def test_the_bytes_are_the_codecs(
    kind: EstimatorKind, half_life: float | None, tickers: tuple[str, ...], layout: StatsLayout
) -> None:
    rng = np.random.default_rng(len(tickers))
    n = len(tickers)
    a = rng.normal(size=(n, n))
    moments = moments_from_prior(rng.normal(size=n) * 1e-3, a @ a.T * 1e-4, 57, kind, half_life)
    encoder = StatsEncoder(layout)
    for timestamp, bar_seconds in ((1_700_000_001_000, 1), (-5, None), (2**40, 86_400)):
        head = StatsHead("p-1", tickers, kind, half_life, bar_seconds, "updated")
        got = encoder.encode(head, timestamp, moments.n, moments.mean, moments.covariance)
        assert got == codec_bytes(moments, "p-1", tickers, timestamp, bar_seconds, layout)
        moments.update(rng.normal(size=n) * 1e-2)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False), min_size=4, max_size=4), st.integers(-(2**63), 2**63 - 1)
)
def test_any_doubles_and_longs_are_written_as_the_codec_does(values: list[float], n: int) -> None:
    mean = np.array(values[:2])
    covariance = np.array([[values[2], values[3]], [values[3], values[2]]])
    head = StatsHead("p", ("A", "B"), "welford", None, None, "updated")
    got = StatsEncoder().encode(head, n, n, mean, covariance)
    record = {
        "timestamp": n,
        "portfolio_id": "p",
        "meanReturns": {"A": values[0], "B": values[1]},
        "covarianceMatrix": {
            "A": {"A": values[2], "B": values[3]},
            "B": {"A": values[3], "B": values[2]},
        },
        "count": n,
        "estimator": "welford",
        "half_life_bars": None,
        "tickers": ["A", "B"],
        "bar_seconds": None,
        "kind": "updated",
    }
    assert got == CODEC.encode(record)
    assert CODEC.decode(got)["timestamp"] == n


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(0, 6),
    rows=st.integers(1, 4),
    layout=st.sampled_from(["maps", "packed"]),
    half_life=st.none() | st.floats(0.5, 100.0),
    bar_seconds=st.none() | st.integers(1, 86_400),
    seed=st.integers(0, 2**32 - 1),
)
def test_many_records_at_once_are_each_the_codecs(
    n: int,
    rows: int,
    layout: StatsLayout,
    half_life: float | None,
    bar_seconds: int | None,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    tickers = tuple(f"T{i}" for i in range(n))
    means = rng.normal(size=(rows, n))
    a = rng.normal(size=(rows, n, n))
    covariances = a @ a.transpose(0, 2, 1)
    stamps = rng.integers(-(2**40), 2**40, size=rows)
    counts = rng.integers(0, 2**40, size=rows)
    estimator = "welford" if half_life is None else "ewm"
    heads = [
        StatsHead(f"p{i % 2}", tickers, estimator, half_life, bar_seconds, "updated")
        for i in range(rows)
    ]
    encoder = StatsEncoder(layout)
    got = encoder.encode_many(heads, stamps, counts, means, covariances)
    for i, head in enumerate(heads):
        moments = {
            "meanReturns": dict(zip(tickers, means[i].tolist(), strict=True)),
            "covarianceMatrix": {
                t: dict(zip(tickers, row, strict=True))
                for t, row in zip(tickers, covariances[i].tolist(), strict=True)
            },
            "packed_means": [],
            "packed_covariance": [],
        }
        if layout == "packed":
            moments = {
                "meanReturns": {},
                "covarianceMatrix": {},
                "packed_means": means[i].tolist(),
                "packed_covariance": covariances[i][np.triu_indices(n)].tolist(),
            }
        record = {
            "timestamp": int(stamps[i]),
            "portfolio_id": head.portfolio_id,
            "count": int(counts[i]),
            "estimator": estimator,
            "half_life_bars": half_life,
            "tickers": list(tickers),
            "bar_seconds": bar_seconds,
            "kind": "updated",
            **moments,
        }
        assert got[i] == CODEC.encode(record)


@pytest.mark.parametrize("layout", ["maps", "packed"])
def test_a_portfolio_redefined_gets_its_new_head(layout: StatsLayout) -> None:
    encoder = StatsEncoder(layout)
    moments = moments_from_prior([1e-3, 2e-3, 3e-3], np.diag([1e-4, 4e-4, 9e-4]), 10)
    for tickers, bar_seconds in ((("A", "B", "C"), 1), (("C", "A", "B"), 1), (("C", "A", "B"), 60)):
        head = StatsHead("p", tickers, "welford", None, bar_seconds, "updated")
        got = encoder.encode(head, 7, 10, moments.mean, moments.covariance)
        assert got == codec_bytes(moments, "p", tickers, 7, bar_seconds, layout)


def test_longs_are_zigzag_varints() -> None:
    assert [avro_long(v) for v in (1, -2, 2**63 - 1)] == [
        b"\x02",
        b"\x03",
        b"\xfe" + b"\xff" * 8 + b"\x01",
    ]


_finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=100, deadline=None)
@given(
    pid=st.text(min_size=1, max_size=80),
    tickers=st.lists(st.text(min_size=1, max_size=70), min_size=0, max_size=25, unique=True),
    figures=st.lists(_finite, min_size=7, max_size=7),
    stamps=st.lists(st.integers(-(2**62), 2**62), min_size=3, max_size=3),
    threshold=st.none() | _finite,
    reweighted=st.booleans(),
)
def test_metrics_bytes_are_the_codecs(
    pid: str,
    tickers: list[str],
    figures: list[float],
    stamps: list[int],
    threshold: float | None,
    reweighted: bool,
) -> None:
    encoder = MetricsEncoder()
    weights = [1.0 / (i + 1) for i in range(len(tickers))]
    if reweighted:  # the weights map is cached per portfolio: a change must show
        encoder.encode(pid, tickers, [0.5] * len(tickers), *figures[:3], *stamps[:2],
                       *figures[3:], stamps[2], threshold)  # fmt: skip
    risk, annual, sharpe, mean_return, variance, q, rf = figures
    record = {
        "portfolioId": pid,
        "risk": risk,
        "expectedReturn": annual,
        "sharpRatio": sharpe,
        "timestamp": stamps[0],
        "count": stamps[1],
        "meanReturn": mean_return,
        "variance": variance,
        "periodsPerYear": q,
        "riskFreeRate": rf,
        "weights": dict(zip(tickers, weights, strict=True)),
        "statsTimestamp": stamps[2],
        "sharpeThreshold": threshold,
    }
    got = encoder.encode(pid, tickers, weights, risk, annual, sharpe, stamps[0], stamps[1],
                         mean_return, variance, q, rf, stamps[2], threshold)  # fmt: skip
    assert got == codec_for("PortfolioMetrics").encode(record)
