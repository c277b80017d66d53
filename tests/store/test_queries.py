"""The questions users ask of the history: rows and frames over a small two-portfolio history."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from streamfolio.errors import DataError
from streamfolio.messages import PortfolioMetrics, PortfolioStats, RebalanceEvent, Weights
from streamfolio.store import queries
from streamfolio.store.records import epoch_ms
from streamfolio.store.schema import StoreError, open_store
from streamfolio.store.writer import StoreWriter

T0 = 1_790_845_200_000  # 2026-10-01T09:00:00Z
MINUTE = 60_000
DAY = 86_400_000


def _metrics(pid: str, t: int, sharpe: float) -> PortfolioMetrics:
    return PortfolioMetrics(
        pid, 0.2, 0.1 + sharpe / 10, sharpe, t, count=10, weights={"ATW": 1.0}, sharpe_threshold=0.4
    )


def _event(pid: str, t: int, decision: str) -> RebalanceEvent:
    return RebalanceEvent(
        pid, t, "below threshold", decision, {"ATW": 0.5, "BCP": 0.5}, {"ATW": 0.6, "BCP": 0.4},
        0.3, 0.5, 0.1, 0.2, 0.2, "optimal",
    )  # fmt: skip


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """banks: metrics every minute for 30 minutes on 1 and 2 October; portf1: 3 on 1 October."""
    engine = open_store(f"sqlite:///{tmp_path_factory.mktemp('q')}/history.db")
    history: list[object] = []
    for day in (0, 1):
        for i in range(30):
            history.append(_metrics("banks", T0 + day * DAY + i * MINUTE, 0.5 + i / 100))
    history += [_metrics("portf1", T0 + i * MINUTE, 1.0 + i) for i in range(3)]
    history += [
        Weights("banks", T0 - DAY, {"ATW": 0.5, "BCP": 0.5}, "initial", "config"),
        Weights("banks", T0 + 10 * MINUTE, {"ATW": 0.6, "BCP": 0.4}, "rebalance", "rebalancer"),
        Weights("banks", T0 + DAY, {"ATW": 0.7, "BOA": 0.3}, "manual", "operator"),
        Weights("portf1", T0, {"IAM": 1.0}, "initial", "config"),
    ]
    history += [
        _event("banks", T0 + 10 * MINUTE, "rebalance"),
        _event("banks", T0 + 20 * MINUTE, "hold_no_improvement"),
        _event("portf1", T0 + 5 * MINUTE, "rebalance"),
    ]
    history += [
        PortfolioStats.from_arrays(
            "banks", T0 + i * MINUTE, ["ATW", "BCP"], [1e-4, 2e-4], [[4e-4, 1e-4], [1e-4, 9e-4]],
            count=20 + i, kind=kind,
        )
        for i, kind in ((0, "initial"), (1, "updated"), (2, "updated"))
    ]  # fmt: skip
    StoreWriter(engine).write(history)  # type: ignore[arg-type]
    yield engine
    engine.dispose()


def test_epoch_ms_reads_every_way_of_writing_a_time() -> None:
    assert epoch_ms("2026-10-01T09:00:00Z") == T0
    assert epoch_ms("2026-10-01T10:00:00+01:00") == T0
    assert epoch_ms("2026-10-01 09:00") == T0, "no offset: UTC"
    assert epoch_ms(dt.datetime(2026, 10, 1, 9)) == T0
    assert epoch_ms(dt.datetime(2026, 10, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == T0
    assert epoch_ms(pd.Timestamp("2026-10-01T09:00Z")) == T0
    assert epoch_ms(T0) == T0
    assert epoch_ms(dt.date(2026, 10, 1)) == T0 - 9 * 3_600_000
    assert epoch_ms("2026-10-01", end=True) == T0 + 15 * 3_600_000 - 1
    with pytest.raises(DataError, match="not an ISO-8601"):
        epoch_ms("01/10/2026")
    with pytest.raises(TypeError):
        epoch_ms(True)


def test_portfolio_ids_lists_every_portfolio_stored(db: Engine) -> None:
    assert queries.portfolio_ids(db) == ["banks", "portf1"]


def test_metrics_between_two_times_is_inclusive_and_ordered(db: Engine) -> None:
    rows = queries.metrics_between(db, "banks", T0 + 5 * MINUTE, "2026-10-01T09:09Z")
    assert [r.timestamp_ms for r in rows] == [T0 + i * MINUTE for i in range(5, 10)]
    assert rows[0].time == dt.datetime(2026, 10, 1, 9, 5, tzinfo=dt.UTC)
    assert rows[0].sharpe_ratio == pytest.approx(0.55) and rows[0].weights == {"ATW": 1.0}
    assert rows[0].sharpe_threshold == 0.4 and rows[0].observations == 10


def test_a_bare_end_date_covers_that_whole_day(db: Engine) -> None:
    assert len(queries.metrics_between(db, "banks", "2026-10-01", "2026-10-01")) == 30
    assert len(queries.metrics_between(db, "banks", "2026-10-02")) == 30
    assert len(queries.metrics_between(db, "banks")) == 60
    assert queries.metrics_between(db, "banks", "2026-10-03") == []
    assert queries.metrics_between(db, "nobody") == []


def test_latest_metrics_has_one_row_per_portfolio(db: Engine) -> None:
    latest = queries.latest_metrics(db)
    assert [(r.portfolio_id, r.timestamp_ms) for r in latest] == [
        ("banks", T0 + DAY + 29 * MINUTE),
        ("portf1", T0 + 2 * MINUTE),
    ]


def test_metrics_span(db: Engine) -> None:
    first, last = queries.metrics_span(db, "portf1") or (None, None)
    assert first == dt.datetime(2026, 10, 1, 9, tzinfo=dt.UTC)
    assert last == dt.datetime(2026, 10, 1, 9, 2, tzinfo=dt.UTC)
    assert queries.metrics_span(db, "nobody") is None


def test_weights_history_and_the_weights_in_force_at_a_time(db: Engine) -> None:
    history = queries.weights_history(db, "banks")
    assert [(w.reason, w.source) for w in history] == [
        ("initial", "config"),
        ("rebalance", "rebalancer"),
        ("manual", "operator"),
    ]
    in_range = queries.weights_history(db, "banks", "2026-10-01", "2026-10-01")
    assert [w.weights for w in in_range] == [{"ATW": 0.6, "BCP": 0.4}]
    at = queries.weights_at(db, "banks", T0 + 5 * MINUTE)
    assert (
        at is not None
        and at.reason == "initial"
        and at.time < dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    )
    exact = queries.weights_at(db, "banks", T0 + 10 * MINUTE)
    assert exact is not None and exact.reason == "rebalance"
    assert queries.weights_at(db, "banks", T0 - 2 * DAY) is None


def test_rebalances_of_all_portfolios_or_one(db: Engine) -> None:
    every = queries.rebalances(db)
    assert [(e.portfolio_id, e.decision) for e in every] == [
        ("portf1", "rebalance"),
        ("banks", "rebalance"),
        ("banks", "hold_no_improvement"),
    ]
    banks = queries.rebalances(db, "banks", decisions=["rebalance"])
    assert len(banks) == 1
    (done,) = banks
    assert done.event_id == f"banks@{T0 + 10 * MINUTE}"
    assert (done.sharpe_before, done.sharpe_after, done.turnover) == (0.3, 0.5, 0.2)
    assert done.new_weights == {"ATW": 0.6, "BCP": 0.4}
    assert queries.rebalances(db, "banks", T0 + 15 * MINUTE)[0].decision == "hold_no_improvement"


def test_statistics_between_by_kind(db: Engine) -> None:
    every = queries.statistics_between(db, "banks")
    assert [(s.kind, s.observations) for s in every] == [
        ("initial", 20),
        ("updated", 21),
        ("updated", 22),
    ]
    updated = queries.statistics_between(db, "banks", kind="updated")
    assert len(updated) == 2
    assert updated[0].covariance["ATW"]["BCP"] == 1e-4 and updated[0].tickers == ["ATW", "BCP"]


def test_row_counts(db: Engine) -> None:
    assert queries.row_counts(db) == {
        "metrics": 63,
        "statistics": 3,
        "weights": 4,
        "rebalance_events": 3,
        "portfolio_definitions": 0,
    }


def test_frames_are_indexed_by_utc_time(db: Engine) -> None:
    metrics = queries.metrics_frame(db, "banks", "2026-10-02")
    assert len(metrics) == 30 and str(metrics.index.tz) == "UTC" and metrics.index.name == "time"
    assert metrics["sharpe_ratio"].iloc[0] == pytest.approx(0.5)
    assert {"expected_return", "risk", "sharpe_threshold", "observations"} <= set(metrics.columns)

    weights = queries.weights_frame(db, "banks")
    assert list(weights.columns) == ["ATW", "BCP", "BOA"]
    assert weights.loc[pd.Timestamp(T0 + DAY, unit="ms", tz="UTC")].to_list() == [0.7, 0.0, 0.3]
    assert weights.sum(axis=1).to_list() == pytest.approx([1.0, 1.0, 1.0])

    events = queries.rebalances_frame(db, "banks")
    assert list(events["decision"]) == ["rebalance", "hold_no_improvement"]
    assert events.index[0] == pd.Timestamp(T0 + 10 * MINUTE, unit="ms", tz="UTC")

    empty = queries.metrics_frame(db, "nobody")
    assert empty.empty and "sharpe_ratio" in empty.columns


def test_a_database_url_works_in_place_of_an_engine(db: Engine) -> None:
    url = db.url.render_as_string(hide_password=False)
    assert queries.portfolio_ids(url) == ["banks", "portf1"]


def test_a_missing_database_is_an_error_not_an_empty_answer(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no history database"):
        queries.latest_metrics(f"sqlite:///{tmp_path}/missing.db")
