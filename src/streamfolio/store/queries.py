"""What users ask of the history, one call each: typed rows, or pandas DataFrames.

Every function takes the database as an :class:`~sqlalchemy.engine.Engine` (from
:func:`~streamfolio.store.schema.open_store`) or as a URL string, and times as a
:class:`~datetime.datetime` (naive means UTC), a :class:`~datetime.date`, an ISO-8601 string
(``"2026-10-01"``, ``"2026-10-01T09:30:00Z"``, ``"2026-10-01T10:30+01:00"``) or epoch
milliseconds. Bounds are inclusive; a bare date as the *end* bound includes that whole day (UTC).
Rows and frames come back in time order, times as timezone-aware UTC. The row types and the
reading of times are in :mod:`streamfolio.store.records`.

>>> from streamfolio.messages import PortfolioMetrics
>>> from streamfolio.store.schema import open_store
>>> from streamfolio.store.writer import StoreWriter
>>> db = open_store("sqlite://")
>>> _ = StoreWriter(db).write([
...     PortfolioMetrics("banks", 0.2, 0.1, 0.4, epoch_ms("2026-10-01T09:31Z")),
...     PortfolioMetrics("banks", 0.2, 0.12, 0.5, epoch_ms("2026-10-01T09:32Z")),
... ])
>>> [m.sharpe_ratio for m in metrics_between(db, "banks", "2026-10-01", "2026-10-01")]
[0.4, 0.5]
>>> latest_metrics(db)[0].time.isoformat()
'2026-10-01T09:32:00+00:00'
>>> portfolio_ids(db)
['banks']
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields
from functools import lru_cache
from typing import Any, TypeAlias

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from streamfolio.store import schema
from streamfolio.store.records import (
    MetricsRow,
    RebalanceRow,
    StatisticsRow,
    TimeLike,
    WeightsRow,
    build_row,
    epoch_ms,
    utc,
)
from streamfolio.store.schema import open_store

__all__ = [
    "Database",
    "MetricsRow",
    "RebalanceRow",
    "StatisticsRow",
    "TimeLike",
    "WeightsRow",
    "engine_of",
    "epoch_ms",
    "latest_metrics",
    "metrics_between",
    "metrics_frame",
    "metrics_span",
    "portfolio_ids",
    "rebalances",
    "rebalances_frame",
    "row_counts",
    "statistics_between",
    "weights_at",
    "weights_frame",
    "weights_history",
]

Database: TypeAlias = Engine | str
"""An engine, or the URL of an existing history database."""

# -------------------------------------------------------------------------------------- access


@lru_cache(maxsize=8)
def _engine_for(url: str) -> Engine:
    # One engine (and connection pool) per URL for the life of the process.
    return open_store(url, create=False)


def engine_of(db: Database) -> Engine:
    """The engine of ``db``: itself, or a shared one for a URL (the database must exist)."""
    return _engine_for(db) if isinstance(db, str) else db


def _between(
    table: sa.Table, start: TimeLike | None, end: TimeLike | None
) -> list[sa.ColumnElement[bool]]:
    conditions = []
    if start is not None:
        conditions.append(table.c.timestamp_ms >= epoch_ms(start))
    if end is not None:
        conditions.append(table.c.timestamp_ms <= epoch_ms(end, end=True))
    return conditions


def _rows(db: Database, cls: type[Any], statement: sa.Select[Any]) -> list[Any]:
    with engine_of(db).connect() as connection:
        return [build_row(cls, m) for m in connection.execute(statement).mappings()]


def portfolio_ids(db: Database) -> list[str]:
    """Every portfolio with something stored, sorted."""
    union = sa.union(
        *(sa.select(schema.metadata.tables[t].c.portfolio_id) for t in schema.table_names())
    ).subquery()
    with engine_of(db).connect() as connection:
        return sorted(connection.execute(sa.select(union.c.portfolio_id)).scalars())


def metrics_between(
    db: Database, portfolio_id: str, start: TimeLike | None = None, end: TimeLike | None = None
) -> list[MetricsRow]:
    """A portfolio's metrics from ``start`` to ``end`` (both inclusive; None: unbounded)."""
    m = schema.metrics
    statement = (
        sa.select(m)
        .where(m.c.portfolio_id == portfolio_id, *_between(m, start, end))
        .order_by(m.c.timestamp_ms)
    )
    rows: list[MetricsRow] = _rows(db, MetricsRow, statement)
    return rows


def metrics_span(db: Database, portfolio_id: str) -> tuple[dt.datetime, dt.datetime] | None:
    """Times of a portfolio's first and last stored metrics, or None if it has none."""
    m = schema.metrics
    statement = sa.select(sa.func.min(m.c.timestamp_ms), sa.func.max(m.c.timestamp_ms)).where(
        m.c.portfolio_id == portfolio_id
    )
    with engine_of(db).connect() as connection:
        first, last = connection.execute(statement).one()
    return None if first is None else (utc(int(first)), utc(int(last)))


def latest_metrics(db: Database) -> list[MetricsRow]:
    """The most recent metrics of every portfolio, by portfolio id."""
    m = schema.metrics
    latest = (
        sa.select(m.c.portfolio_id, sa.func.max(m.c.timestamp_ms).label("last"))
        .group_by(m.c.portfolio_id)
        .subquery()
    )
    statement = (
        sa.select(m)
        .join(
            latest,
            sa.and_(m.c.portfolio_id == latest.c.portfolio_id, m.c.timestamp_ms == latest.c.last),
        )
        .order_by(m.c.portfolio_id)
    )
    rows: list[MetricsRow] = _rows(db, MetricsRow, statement)
    return rows


def statistics_between(
    db: Database,
    portfolio_id: str,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    kind: str | None = None,
) -> list[StatisticsRow]:
    """A portfolio's stored statistics from ``start`` to ``end``, of ``kind`` if given."""
    s = schema.statistics
    conditions = [s.c.portfolio_id == portfolio_id, *_between(s, start, end)]
    if kind is not None:
        conditions.append(s.c.kind == kind)
    statement = sa.select(s).where(*conditions).order_by(s.c.timestamp_ms, s.c.kind)
    rows: list[StatisticsRow] = _rows(db, StatisticsRow, statement)
    return rows


def weights_history(
    db: Database, portfolio_id: str, start: TimeLike | None = None, end: TimeLike | None = None
) -> list[WeightsRow]:
    """The weights a portfolio was given from ``start`` to ``end``, each from its time on.

    Weights set before ``start`` and still in force at ``start`` are not included: see
    :func:`weights_at`.
    """
    w = schema.weights
    statement = (
        sa.select(w)
        .where(w.c.portfolio_id == portfolio_id, *_between(w, start, end))
        .order_by(w.c.timestamp_ms)
    )
    rows: list[WeightsRow] = _rows(db, WeightsRow, statement)
    return rows


def weights_at(db: Database, portfolio_id: str, when: TimeLike) -> WeightsRow | None:
    """The weights in force at ``when``: the last set at or before it (None if none was)."""
    w = schema.weights
    statement = (
        sa.select(w)
        .where(w.c.portfolio_id == portfolio_id, w.c.timestamp_ms <= epoch_ms(when))
        .order_by(w.c.timestamp_ms.desc())
        .limit(1)
    )
    rows: list[WeightsRow] = _rows(db, WeightsRow, statement)
    return rows[0] if rows else None


def rebalances(
    db: Database,
    portfolio_id: str | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    decisions: Iterable[str] | None = None,
) -> list[RebalanceRow]:
    """Rebalancer decisions, of one portfolio or all, optionally only some ``decisions``
    (e.g. ``["rebalance"]`` leaves out the holds)."""
    r = schema.rebalance_events
    conditions = _between(r, start, end)
    if portfolio_id is not None:
        conditions.append(r.c.portfolio_id == portfolio_id)
    if decisions is not None:
        conditions.append(r.c.decision.in_(list(decisions)))
    statement = sa.select(r).where(*conditions).order_by(r.c.timestamp_ms, r.c.portfolio_id)
    rows: list[RebalanceRow] = _rows(db, RebalanceRow, statement)
    return rows


def row_counts(db: Database) -> dict[str, int]:
    """Rows stored per history table."""
    with engine_of(db).connect() as connection:
        return {
            name: int(
                connection.execute(
                    sa.select(sa.func.count()).select_from(schema.metadata.tables[name])
                ).scalar_one()
            )
            for name in schema.table_names()
        }


# -------------------------------------------------------------------------------------- frames


def _time_index(timestamps_ms: Sequence[int]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(list(timestamps_ms), unit="ms", utc=True), name="time")


def metrics_frame(
    db: Database, portfolio_id: str, start: TimeLike | None = None, end: TimeLike | None = None
) -> pd.DataFrame:
    """:func:`metrics_between` as a frame indexed by UTC time (weights left out).

    >>> from streamfolio.store.schema import open_store
    >>> list(metrics_frame(open_store("sqlite://"), "none").columns)[:3]
    ['expected_return', 'risk', 'sharpe_ratio']
    """
    rows = metrics_between(db, portfolio_id, start, end)
    columns = [
        f.name
        for f in fields(MetricsRow)
        if f.name not in ("portfolio_id", "timestamp_ms", "weights")
    ]
    data = [[getattr(r, c) for c in columns] for r in rows]
    frame = pd.DataFrame(data, columns=columns, index=_time_index([r.timestamp_ms for r in rows]))
    frame["sharpe_threshold"] = frame["sharpe_threshold"].astype("float64")
    return frame


def weights_frame(
    db: Database, portfolio_id: str, start: TimeLike | None = None, end: TimeLike | None = None
) -> pd.DataFrame:
    """:func:`weights_history` as a frame: one row per change (UTC time), one column per ticker
    (0 where a record has no weight for it), tickers in order of first appearance."""
    rows = weights_history(db, portfolio_id, start, end)
    tickers: dict[str, None] = {}
    for row in rows:
        tickers.update(dict.fromkeys(row.weights))
    data = [[row.weights.get(t, 0.0) for t in tickers] for row in rows]
    index = _time_index([r.timestamp_ms for r in rows])
    return pd.DataFrame(data, columns=list(tickers), index=index, dtype="float64")


def rebalances_frame(
    db: Database,
    portfolio_id: str | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    decisions: Iterable[str] | None = None,
) -> pd.DataFrame:
    """:func:`rebalances` as a frame indexed by UTC time (weights as dict columns)."""
    rows = rebalances(db, portfolio_id, start, end, decisions=decisions)
    columns = [f.name for f in fields(RebalanceRow) if f.name != "timestamp_ms"]
    records = [{c: v for c, v in asdict(r).items() if c != "timestamp_ms"} for r in rows]
    index = _time_index([r.timestamp_ms for r in rows])
    return pd.DataFrame.from_records(records, columns=columns, index=index)
