"""What a report shows, read from the history database: :class:`ReportData` and :func:`load_report`.

:func:`load_report` reads one portfolio's metrics, weight changes (the first being those in force
at the start of the range) and rebalancer decisions between two times; with no metrics there it
raises :class:`ReportError`, saying which portfolios, or which times, do have some. The page is
drawn from it by :mod:`streamfolio.store.report` (charts: :mod:`streamfolio.store.report_charts`).

>>> from streamfolio.store.schema import open_store
>>> load_report(open_store("sqlite://"), "p1")
Traceback (most recent call last):
...
streamfolio.store.report_data.ReportError: portfolio 'p1' has no metrics in sqlite://; \
the database has no metrics at all: is `streamfolio store` running?
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from streamfolio.store import queries
from streamfolio.store.queries import Database
from streamfolio.store.records import MetricsRow, RebalanceRow, TimeLike, WeightsRow, epoch_ms
from streamfolio.store.schema import StoreError, safe_url

__all__ = ["REBALANCE", "ReportData", "ReportError", "load_report"]

REBALANCE: Final = "rebalance"
"""The decision of a rebalance event that changed the weights (the others are holds)."""


class ReportError(StoreError):
    """A report cannot be made (no data for the portfolio in the range, a bad time zone...)."""


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything one report shows, read from the history database."""

    portfolio_id: str
    start_ms: int | None
    end_ms: int | None
    metrics: list[MetricsRow]
    weights: list[WeightsRow]
    """Weight changes in the range, the first one being those in force at its start."""
    events: list[RebalanceRow]
    threshold: float | None
    """Sharpe threshold to draw when the metrics do not carry one."""
    source: str
    """The database, password masked."""


def _utc_text(timestamp_ms: int) -> str:
    instant = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=timestamp_ms)
    return instant.isoformat().replace("+00:00", "Z")


def load_report(
    db: Database,
    portfolio_id: str,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    threshold: float | None = None,
) -> ReportData:
    """Read what the report of ``portfolio_id`` between ``start`` and ``end`` shows.

    Raises :class:`ReportError` when the portfolio has no metrics there, saying which
    portfolios, or which times, do have some.
    """
    start_ms = None if start is None else epoch_ms(start)
    end_ms = None if end is None else epoch_ms(end, end=True)
    engine = queries.engine_of(db)
    source = safe_url(engine.url)
    metrics = queries.metrics_between(engine, portfolio_id, start_ms, end_ms)
    if not metrics:
        raise ReportError(_no_data(engine, portfolio_id, start_ms, end_ms, source))
    weights = queries.weights_history(engine, portfolio_id, start_ms, end_ms)
    first_ms = metrics[0].timestamp_ms if start_ms is None else start_ms
    if not weights or weights[0].timestamp_ms > first_ms:
        before = queries.weights_at(engine, portfolio_id, first_ms)
        if before is not None:
            weights.insert(0, before)
    events = queries.rebalances(engine, portfolio_id, start_ms, end_ms)
    return ReportData(portfolio_id, start_ms, end_ms, metrics, weights, events, threshold, source)


def _no_data(
    db: Database, portfolio_id: str, start_ms: int | None, end_ms: int | None, source: str
) -> str:
    if start_ms is None and end_ms is None:
        where = ""
    else:
        lo = "the beginning" if start_ms is None else _utc_text(start_ms)
        hi = "the end" if end_ms is None else _utc_text(end_ms)
        where = f" between {lo} and {hi}"
    message = f"portfolio {portfolio_id!r} has no metrics{where} in {source}"
    span = queries.metrics_span(db, portfolio_id)
    if span is not None:
        first, last = (t.isoformat().replace("+00:00", "Z") for t in span)
        return message + f"; its metrics run from {first} to {last}"
    known = [m.portfolio_id for m in queries.latest_metrics(db)]
    if known:
        return message + f"; portfolios with metrics: {', '.join(known)}"
    return message + "; the database has no metrics at all: is `streamfolio store` running?"
