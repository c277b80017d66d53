"""The history as the queries return it: typed rows, and the points in time they accept.

A time (:data:`TimeLike`) is a :class:`~datetime.datetime` (naive means UTC), a
:class:`~datetime.date`, an ISO-8601 string (``"2026-10-01"``, ``"2026-10-01T09:30:00Z"``,
``"2026-10-01T10:30+01:00"``) or epoch milliseconds; :func:`epoch_ms` reads any of them, a bare
date as an *end* bound meaning the whole of that day (UTC). Each stored message comes back as one
frozen row (:class:`MetricsRow`, :class:`StatisticsRow`, :class:`WeightsRow`,
:class:`RebalanceRow`) whose ``time`` is timezone-aware UTC. The functions that read them are in
:mod:`streamfolio.store.queries`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any, Final, TypeAlias

from sqlalchemy.engine import RowMapping

from streamfolio.errors import DataError

__all__ = [
    "MetricsRow",
    "RebalanceRow",
    "StatisticsRow",
    "TimeLike",
    "WeightsRow",
    "build_row",
    "epoch_ms",
    "utc",
]

TimeLike: TypeAlias = dt.datetime | dt.date | str | int
"""A point in time: datetime (naive = UTC), date, ISO-8601 text, or epoch milliseconds."""

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS: Final = dt.timedelta(milliseconds=1)
_DAY_MS: Final = 86_400_000


def utc(timestamp_ms: int) -> dt.datetime:
    """Epoch milliseconds as a timezone-aware UTC datetime (exact: no float on the way)."""
    return _EPOCH + timestamp_ms * _MS


def epoch_ms(value: TimeLike, *, end: bool = False) -> int:
    """``value`` as epoch milliseconds UTC.

    ``end=True`` reads a bare date as the last millisecond of that day, so an inclusive end bound
    of ``2026-10-01`` covers the whole of 1 October.

    >>> epoch_ms("1970-01-02"), epoch_ms("1970-01-02", end=True)
    (86400000, 172799999)
    >>> epoch_ms("1970-01-01T01:00:00+01:00"), epoch_ms(dt.datetime(1970, 1, 1, 0, 0, 1))
    (0, 1000)
    >>> epoch_ms("yesterday")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamfolio.errors.DataError: 'yesterday' is not an ISO-8601 date or time (e.g. 2026-10-01 ...)
    """
    if isinstance(value, bool):
        raise TypeError("a time cannot be a bool")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:  # YYYY-MM-DD
                return epoch_ms(dt.date.fromisoformat(text), end=end)
            value = dt.datetime.fromisoformat(text)
        except ValueError:
            raise DataError(
                f"{value!r} is not an ISO-8601 date or time (e.g. 2026-10-01 or 2026-10-01T09:30Z)"
            ) from None
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return (aware - _EPOCH) // _MS
    day = (value - _EPOCH.date()).days * _DAY_MS
    return day + _DAY_MS - 1 if end else day


@dataclass(frozen=True, slots=True)
class MetricsRow:
    """One stored :class:`~streamfolio.messages.PortfolioMetrics` (annualised figures)."""

    portfolio_id: str
    timestamp_ms: int
    expected_return: float
    risk: float
    sharpe_ratio: float
    sharpe_threshold: float | None
    observations: int
    mean_return: float
    variance: float
    periods_per_year: float
    risk_free_rate: float
    stats_timestamp_ms: int
    weights: dict[str, float]

    @property
    def time(self) -> dt.datetime:
        """The event time, UTC."""
        return utc(self.timestamp_ms)


@dataclass(frozen=True, slots=True)
class StatisticsRow:
    """One stored :class:`~streamfolio.messages.PortfolioStats` (per-bar log-return moments)."""

    portfolio_id: str
    timestamp_ms: int
    kind: str
    observations: int
    estimator: str
    half_life_bars: float | None
    bar_seconds: int | None
    tickers: list[str]
    mean: dict[str, float]
    covariance: dict[str, dict[str, float]]

    @property
    def time(self) -> dt.datetime:
        """The event time, UTC."""
        return utc(self.timestamp_ms)


@dataclass(frozen=True, slots=True)
class WeightsRow:
    """One stored :class:`~streamfolio.messages.Weights`: in force from ``time`` on."""

    portfolio_id: str
    timestamp_ms: int
    weights: dict[str, float]
    reason: str
    source: str

    @property
    def time(self) -> dt.datetime:
        """When the weights take effect, UTC."""
        return utc(self.timestamp_ms)


@dataclass(frozen=True, slots=True)
class RebalanceRow:
    """One stored :class:`~streamfolio.messages.RebalanceEvent`: a decision and its reasons."""

    event_id: str
    portfolio_id: str
    timestamp_ms: int
    decision: str
    reason: str
    old_weights: dict[str, float]
    new_weights: dict[str, float]
    sharpe_before: float
    sharpe_after: float
    expected_return_after: float
    risk_after: float
    turnover: float
    optimizer_status: str

    @property
    def time(self) -> dt.datetime:
        """The event time of the metrics that triggered the decision, UTC."""
        return utc(self.timestamp_ms)


def build_row(cls: type[Any], mapping: RowMapping) -> Any:
    """The row of type ``cls`` from a database row (its columns named as the fields)."""
    return cls(**{f.name: mapping[f.name] for f in fields(cls)})
