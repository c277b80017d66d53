"""Typed, immutable mirrors of the Avro records in :mod:`streamfolio.schemas`.

Each class has ``to_record()`` (a dict in the schema's field names, ready for
:class:`streamfolio.serde.AvroCodec`) and ``from_record()`` (the reverse, validating values that
Avro cannot express: finite numbers, matching tickers, a symmetric covariance). Every instance is
valid: construction runs the same checks and raises :class:`~streamfolio.errors.SchemaError` with
a reason.

``FIELDS`` maps each attribute to its Avro field name; the wire's reference spellings
(``meanReturns``, ``sharpRatio``...) appear only there and in ``to_record``/``from_record``.

Fields that have a default in the schema may be missing from a record given to ``from_record``.

The reference's ``BourseData`` quote stays a plain ``dict[str, str]``;
:func:`price_tick_from_bourse` and :func:`bourse_from_price_tick` convert.

>>> tick = PriceTick("ATW", 612.5, 1750427972000, source="cse")
>>> PriceTick.from_record(tick.to_record()) == tick
True
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from functools import cache
from typing import Any, ClassVar, Final, Literal, NoReturn, Self, TypeAlias
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from streamfolio.core.types import FloatArray
from streamfolio.errors import DataError, SchemaError

__all__ = [
    "BOURSE_FIELDS",
    "EXCHANGE_TIMEZONE",
    "DeadLetter",
    "Estimator",
    "Heartbeat",
    "PortfolioMetrics",
    "PortfolioStats",
    "PriceTick",
    "RebalanceEvent",
    "StatsKind",
    "Weights",
    "bourse_from_price_tick",
    "parse_event_time",
    "parse_price",
    "price_tick_from_bourse",
]

Estimator: TypeAlias = Literal["welford", "ewm"]
StatsKind: TypeAlias = Literal["initial", "updated"]

EXCHANGE_TIMEZONE: Final = "Africa/Casablanca"
"""Zone of the exchange's offset-less local times (UTC+1, UTC+0 during Ramadan)."""

SYMMETRY_TOLERANCE: Final = 1e-12
"""Largest relative asymmetry accepted in a covariance matrix (round-off, not data)."""

# 9999-12-30T23:59:59.999Z: a day short of datetime's range, so any zone's local date still exists
_MAX_EPOCH_MS: Final = 253_402_214_399_999
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


# --------------------------------------------------------------------------------------------
# Validation helpers: each names the message and field, so a dead letter says what was wrong.


def _fail(where: str, problem: str) -> NoReturn:
    raise SchemaError(f"{where} {problem}")


def _check_number(where: str, value: object, *, minimum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(where, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        _fail(where, f"is not finite: {value!r}")
    if minimum is not None and value < minimum:
        _fail(where, f"must be >= {minimum}, got {value!r}")


def _check_int(where: str, value: object, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(where, f"must be an integer, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        _fail(where, f"must be >= {minimum}, got {value!r}")
    return value


def _check_text(where: str, value: object, *, empty: bool = True) -> None:
    if not isinstance(value, str):
        _fail(where, f"must be a string, got {type(value).__name__}")
    if not empty and not value:
        _fail(where, "must not be empty")


def _check_timestamp(where: str, value: object) -> None:
    if not 0 <= _check_int(where, value) <= _MAX_EPOCH_MS:
        _fail(where, f"is not an epoch-millisecond time in 1970..9999: {value!r}")


def _weight_map(where: str, value: object, *, empty: bool = True) -> dict[str, float]:
    if not isinstance(value, Mapping):
        _fail(where, f"must be a mapping of ticker to number, got {type(value).__name__}")
    if not empty and not value:
        _fail(where, "must not be empty")
    for ticker, weight in value.items():
        _check_text(f"{where} key", ticker, empty=False)
        _check_number(f"{where}[{ticker!r}]", weight)
    return dict(value)


def _missing(cls: type, exc: KeyError) -> SchemaError:
    return SchemaError(f"{cls.__name__} record has no field {exc.args[0]!r}")


def _set(obj: object, name: str, value: object) -> None:
    # Frozen dataclasses normalise their inputs in __post_init__ through object.__setattr__.
    object.__setattr__(obj, name, value)


# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PriceTick:
    """One trade: ``price`` of ``ticker`` at ``event_time`` (epoch ms UTC, the trade time).

    >>> PriceTick("ATW", 612.5, 1750427972000).to_record()["source"]
    'unknown'
    >>> PriceTick("ATW", float("nan"), 1750427972000)
    Traceback (most recent call last):
    ...
    streamfolio.errors.SchemaError: PriceTick.price is not finite: nan
    """

    FIELDS: ClassVar[Mapping[str, str]] = {
        "ticker": "ticker",
        "price": "price",
        "event_time": "event_time",
        "volume": "volume",
        "source": "source",
        "sequence": "sequence",
    }

    ticker: str
    price: float
    event_time: int
    volume: float | None = None
    source: str = "unknown"
    sequence: int | None = None

    def __post_init__(self) -> None:
        # Ticks are the hot path: accept the usual well-typed tick with a few cheap tests, and
        # leave everything else to the checks below, which also say what is wrong.
        volume, sequence = self.volume, self.sequence
        if (
            type(self.ticker) is str
            and self.ticker
            and type(self.price) is float
            and 0.0 < self.price < math.inf
            and type(self.event_time) is int
            and 0 <= self.event_time <= _MAX_EPOCH_MS
            and (volume is None or (type(volume) is float and 0.0 <= volume < math.inf))
            and type(self.source) is str
            and (sequence is None or type(sequence) is int)
        ):
            return
        _check_text("PriceTick.ticker", self.ticker, empty=False)
        _check_number("PriceTick.price", self.price)
        if not self.price > 0:
            _fail("PriceTick.price", f"must be > 0, got {self.price!r}")
        _check_timestamp("PriceTick.event_time", self.event_time)
        if self.volume is not None:
            _check_number("PriceTick.volume", self.volume, minimum=0.0)
        _check_text("PriceTick.source", self.source)
        if self.sequence is not None:
            _check_int("PriceTick.sequence", self.sequence)

    def to_record(self) -> dict[str, Any]:
        """The Avro record (schema ``PriceTick``)."""
        return {
            "ticker": self.ticker,
            "price": self.price,
            "event_time": self.event_time,
            "volume": self.volume,
            "source": self.source,
            "sequence": self.sequence,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Build from an Avro record; raises :class:`~streamfolio.errors.SchemaError`."""
        try:
            return cls(
                record["ticker"],
                record["price"],
                record["event_time"],
                record.get("volume"),
                record.get("source", "unknown"),
                record.get("sequence"),
            )
        except KeyError as exc:
            raise _missing(cls, exc) from None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A promise on one partition of the prices topic: no event time older than ``time`` follows.

    It is not a tick and never makes a close; it only moves the partition's watermark while no
    ticks do (SEMANTICS.md §4). On the wire it is not plain Avro but single-object encoding, so
    it can share the topic with ticks: :func:`streamfolio.serde.encode_heartbeat`.

    >>> Heartbeat(1750427972000, "sim").to_record()
    {'time': 1750427972000, 'source': 'sim'}
    >>> Heartbeat(-1)
    Traceback (most recent call last):
    ...
    streamfolio.errors.SchemaError: Heartbeat.time is not an epoch-millisecond time in \
1970..9999: -1
    """

    FIELDS: ClassVar[Mapping[str, str]] = {"time": "time", "source": "source"}

    time: int
    source: str = "unknown"

    def __post_init__(self) -> None:
        _check_timestamp("Heartbeat.time", self.time)
        _check_text("Heartbeat.source", self.source)

    def to_record(self) -> dict[str, Any]:
        """The Avro record (schema ``Heartbeat``)."""
        return {"time": self.time, "source": self.source}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Build from an Avro record; raises :class:`~streamfolio.errors.SchemaError`."""
        try:
            return cls(record["time"], record.get("source", "unknown"))
        except KeyError as exc:
            raise _missing(cls, exc) from None


@dataclass(frozen=True, slots=True)
class Weights:
    """Target weights of a portfolio, ``ticker -> weight`` in insertion order.

    Whether they cover the portfolio's tickers and sum to 1 depends on the portfolio's config, so
    the consumer checks that (SEMANTICS.md §6); here only finiteness is enforced.

    >>> w = Weights("p1", 1750547320037, {"ATW": 0.6, "IAM": 0.4}, reason="initial")
    >>> w.to_record()  # doctest: +NORMALIZE_WHITESPACE
    {'timestamp': 1750547320037, 'portfolio_id': 'p1', 'weights': {'ATW': 0.6, 'IAM': 0.4},
     'reason': 'initial', 'source': ''}
    """

    FIELDS: ClassVar[Mapping[str, str]] = {
        "portfolio_id": "portfolio_id",
        "timestamp": "timestamp",
        "weights": "weights",
        "reason": "reason",
        "source": "source",
    }

    portfolio_id: str
    timestamp: int
    weights: Mapping[str, float]
    reason: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        _check_text("Weights.portfolio_id", self.portfolio_id, empty=False)
        _check_timestamp("Weights.timestamp", self.timestamp)
        _set(self, "weights", _weight_map("Weights.weights", self.weights, empty=False))
        _check_text("Weights.reason", self.reason)
        _check_text("Weights.source", self.source)

    def to_record(self) -> dict[str, Any]:
        """The Avro record (schema ``Weights``, reference ``WeightSchema`` plus two fields)."""
        return {
            "timestamp": self.timestamp,
            "portfolio_id": self.portfolio_id,
            "weights": dict(self.weights),
            "reason": self.reason,
            "source": self.source,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Build from an Avro record; raises :class:`~streamfolio.errors.SchemaError`."""
        try:
            return cls(
                record["portfolio_id"],
                record["timestamp"],
                record["weights"],
                record.get("reason", ""),
                record.get("source", ""),
            )
        except KeyError as exc:
            raise _missing(cls, exc) from None


@dataclass(frozen=True, slots=True)
class PortfolioStats:
    """Mean and covariance of a portfolio's per-bar log returns, in ``tickers`` order.

    ``mean`` and ``covariance`` are tuples (so instances compare with ``==``); use
    :meth:`from_arrays`, :meth:`mean_vector` and :meth:`covariance_matrix` for numpy.

    >>> s = PortfolioStats.from_arrays("p1", 0, ["ATW", "IAM"], [0.001, 0.002],
    ...                                [[4e-4, 1e-4], [1e-4, 9e-4]], count=50)
    >>> s.to_record()["covarianceMatrix"]["IAM"]
    {'ATW': 0.0001, 'IAM': 0.0009}
    >>> PortfolioStats.from_record(s.to_record()) == s
    True
    """

    FIELDS: ClassVar[Mapping[str, str]] = {
        "portfolio_id": "portfolio_id",
        "timestamp": "timestamp",
        "tickers": "tickers",
        "mean": "meanReturns",
        "covariance": "covarianceMatrix",
        "count": "count",
        "estimator": "estimator",
        "half_life_bars": "half_life_bars",
        "bar_seconds": "bar_seconds",
        "kind": "kind",
    }

    portfolio_id: str
    timestamp: int
    tickers: tuple[str, ...]
    mean: tuple[float, ...]
    covariance: tuple[tuple[float, ...], ...]
    count: int = 0
    estimator: Estimator = "welford"
    half_life_bars: float | None = None
    bar_seconds: int | None = None
    kind: StatsKind = "initial"

    def __post_init__(self) -> None:
        w = "PortfolioStats"
        _check_text(f"{w}.portfolio_id", self.portfolio_id, empty=False)
        _check_timestamp(f"{w}.timestamp", self.timestamp)
        tickers = tuple(self.tickers)
        for t in tickers:
            _check_text(f"{w}.tickers item", t, empty=False)
        if not tickers:
            _fail(f"{w}.tickers", "must not be empty")
        if len(set(tickers)) != len(tickers):
            _fail(f"{w}.tickers", f"has duplicates: {list(tickers)}")
        n = len(tickers)
        mean = tuple(self.mean)
        if len(mean) != n:
            _fail(f"{w}.mean", f"has {len(mean)} values for {n} tickers")
        for t, m in zip(tickers, mean, strict=True):
            if type(m) is not float or not math.isfinite(m):  # the message is built only here
                _check_number(f"{w}.mean[{t!r}]", m)
        cov = tuple(tuple(row) for row in self.covariance)
        if len(cov) != n or any(len(row) != n for row in cov):
            _fail(f"{w}.covariance", f"is not {n}x{n} (one row and column per ticker)")
        matrix = _check_covariance(w, tickers, cov)
        _set(self, "tickers", tickers)
        _set(self, "mean", tuple(float(m) for m in mean))
        _set(self, "covariance", tuple(tuple(row) for row in matrix.tolist()))
        _check_int(f"{w}.count", self.count, minimum=0)
        if self.estimator not in ("welford", "ewm"):
            _fail(f"{w}.estimator", f"must be 'welford' or 'ewm', got {self.estimator!r}")
        if self.estimator == "ewm":
            if self.half_life_bars is None:
                _fail(f"{w}.half_life_bars", "is required by the ewm estimator")
            _check_number(f"{w}.half_life_bars", self.half_life_bars)
            if not self.half_life_bars > 0:
                _fail(f"{w}.half_life_bars", f"must be > 0, got {self.half_life_bars!r}")
        elif self.half_life_bars is not None:
            _fail(f"{w}.half_life_bars", "must be null for the welford estimator")
        if self.bar_seconds is not None:
            _check_int(f"{w}.bar_seconds", self.bar_seconds, minimum=1)
        if self.kind not in ("initial", "updated"):
            _fail(f"{w}.kind", f"must be 'initial' or 'updated', got {self.kind!r}")

    @classmethod
    def from_arrays(
        cls,
        portfolio_id: str,
        timestamp: int,
        tickers: Sequence[str],
        mean: npt.ArrayLike,
        covariance: npt.ArrayLike,
        **options: Any,
    ) -> Self:
        """Build from array-likes; ``options`` are the remaining fields (``count=``, ...)."""
        mu = np.asarray(mean, dtype=np.float64)
        sigma = np.asarray(covariance, dtype=np.float64)
        if mu.ndim != 1 or sigma.ndim != 2:
            _fail("PortfolioStats", f"needs a vector and a matrix, got {mu.shape}, {sigma.shape}")
        rows = tuple(tuple(row) for row in sigma.tolist())
        return cls(portfolio_id, timestamp, tuple(tickers), tuple(mu.tolist()), rows, **options)

    def mean_vector(self) -> FloatArray:
        """``mean`` as a float64 vector (a new array)."""
        return np.array(self.mean, dtype=np.float64)

    def covariance_matrix(self) -> FloatArray:
        """``covariance`` as a float64 matrix (a new array)."""
        return np.array(self.covariance, dtype=np.float64).reshape(len(self.tickers), -1)

    def to_record(self) -> dict[str, Any]:
        """The Avro record (schema ``PortfolioStats``); maps are filled in ``tickers`` order."""
        tickers = self.tickers
        return {
            "timestamp": self.timestamp,
            "portfolio_id": self.portfolio_id,
            "meanReturns": dict(zip(tickers, self.mean, strict=True)),
            "covarianceMatrix": {
                t: dict(zip(tickers, row, strict=True))
                for t, row in zip(tickers, self.covariance, strict=True)
            },
            "count": self.count,
            "estimator": self.estimator,
            "half_life_bars": self.half_life_bars,
            "tickers": list(tickers),
            "bar_seconds": self.bar_seconds,
            "kind": self.kind,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Build from an Avro record; raises :class:`~streamfolio.errors.SchemaError`.

        An empty ``tickers`` (reference producers) takes the order of ``meanReturns``.
        """
        try:
            means = record["meanReturns"]
            cov = record["covarianceMatrix"]
            tickers = tuple(record.get("tickers") or ())
            portfolio_id, timestamp = record["portfolio_id"], record["timestamp"]
        except KeyError as exc:
            raise _missing(cls, exc) from None
        if not isinstance(means, Mapping) or not isinstance(cov, Mapping):
            _fail("PortfolioStats", "meanReturns and covarianceMatrix must be maps")
        if not tickers:
            tickers = tuple(means)
        if len(set(tickers)) != len(tickers):
            _fail("PortfolioStats.tickers", f"has duplicates: {list(tickers)}")
        _same_keys("PortfolioStats.meanReturns", means, tickers)
        _same_keys("PortfolioStats.covarianceMatrix", cov, tickers)
        rows = []
        for t in tickers:
            row = cov[t]
            if not isinstance(row, Mapping):
                _fail(f"PortfolioStats.covarianceMatrix[{t!r}]", "must be a map")
            _same_keys(f"PortfolioStats.covarianceMatrix[{t!r}]", row, tickers)
            rows.append(tuple(row[u] for u in tickers))
        return cls(
            portfolio_id,
            timestamp,
            tickers,
            tuple(means[t] for t in tickers),
            tuple(rows),
            count=record.get("count", 0),
            estimator=record.get("estimator", "welford"),
            half_life_bars=record.get("half_life_bars"),
            bar_seconds=record.get("bar_seconds"),
            kind=record.get("kind", "initial"),
        )


def _same_keys(where: str, mapping: Mapping[str, Any], tickers: tuple[str, ...]) -> None:
    keys = set(mapping)
    if keys != set(tickers):
        missing = [t for t in tickers if t not in keys]
        extra = sorted(keys - set(tickers))
        _fail(where, f"does not match the tickers: missing {missing}, extra {extra}")


def _check_covariance(
    where: str, tickers: tuple[str, ...], cov: tuple[tuple[Any, ...], ...]
) -> FloatArray:
    """``cov`` as a float matrix, if finite, with non-negative diagonal and symmetric."""
    for i, row in enumerate(cov):
        for j, c in enumerate(row):
            if type(c) is not float:  # ints pass; anything else is named
                _check_number(f"{where}.covariance[{tickers[i]!r}][{tickers[j]!r}]", c)
    m = np.array(cov, dtype=np.float64)
    for i, j in np.argwhere(~np.isfinite(m))[:1]:
        _fail(
            f"{where}.covariance[{tickers[i]!r}][{tickers[j]!r}]", f"is not finite: {cov[i][j]!r}"
        )
    diagonal = np.diag(m)
    for i in np.flatnonzero(diagonal < 0)[:1]:
        _fail(
            f"{where}.covariance[{tickers[i]!r}][{tickers[i]!r}]",
            f"is a negative variance: {cov[i][i]!r}",
        )
    with np.errstate(over="ignore", invalid="ignore"):  # huge entries: an infinite scale is fine
        # Relative to each pair's own scale, so round-off near zero correlation passes.
        scale = np.maximum(
            np.maximum(np.abs(m), np.abs(m.T)), np.sqrt(np.outer(diagonal, diagonal))
        )
        asymmetric = np.tril(np.abs(m - m.T) > SYMMETRY_TOLERANCE * scale, -1)
    for i, j in np.argwhere(asymmetric)[:1]:
        _fail(
            f"{where}.covariance",
            f"is not symmetric: [{tickers[i]!r}][{tickers[j]!r}]={cov[i][j]!r} "
            f"but [{tickers[j]!r}][{tickers[i]!r}]={cov[j][i]!r}",
        )
    return m


@dataclass(frozen=True, slots=True)
class PortfolioMetrics:
    """Annualised metrics of a portfolio (SEMANTICS.md §6); all numbers finite.

    >>> m = PortfolioMetrics("p1", risk=0.2, expected_return=0.1, sharpe_ratio=0.5, timestamp=0)
    >>> m.to_record()["sharpRatio"]
    0.5
    """

    FIELDS: ClassVar[Mapping[str, str]] = {
        "portfolio_id": "portfolioId",
        "risk": "risk",
        "expected_return": "expectedReturn",
        "sharpe_ratio": "sharpRatio",  # sic: the reference's spelling, kept on the wire only
        "timestamp": "timestamp",
        "count": "count",
        "mean_return": "meanReturn",
        "variance": "variance",
        "periods_per_year": "periodsPerYear",
        "risk_free_rate": "riskFreeRate",
        "weights": "weights",
        "stats_timestamp": "statsTimestamp",
        "sharpe_threshold": "sharpeThreshold",
    }

    portfolio_id: str
    risk: float
    expected_return: float
    sharpe_ratio: float
    timestamp: int
    count: int = 0
    mean_return: float = 0.0
    variance: float = 0.0
    periods_per_year: float = 0.0
    risk_free_rate: float = 0.0
    weights: Mapping[str, float] = field(default_factory=dict)
    stats_timestamp: int = 0
    sharpe_threshold: float | None = None

    def __post_init__(self) -> None:
        w = "PortfolioMetrics"
        _check_text(f"{w}.portfolio_id", self.portfolio_id, empty=False)
        _check_number(f"{w}.risk", self.risk, minimum=0.0)
        _check_number(f"{w}.expected_return", self.expected_return)
        _check_number(f"{w}.sharpe_ratio", self.sharpe_ratio)
        _check_timestamp(f"{w}.timestamp", self.timestamp)
        _check_int(f"{w}.count", self.count, minimum=0)
        _check_number(f"{w}.mean_return", self.mean_return)
        _check_number(f"{w}.variance", self.variance, minimum=0.0)
        _check_number(f"{w}.periods_per_year", self.periods_per_year, minimum=0.0)
        _check_number(f"{w}.risk_free_rate", self.risk_free_rate)
        _set(self, "weights", _weight_map(f"{w}.weights", self.weights))
        _check_timestamp(f"{w}.stats_timestamp", self.stats_timestamp)
        if self.sharpe_threshold is not None:
            _check_number(f"{w}.sharpe_threshold", self.sharpe_threshold)

    def to_record(self) -> dict[str, Any]:
        """The Avro record (schema ``PortfolioMetrics``, reference layout first)."""
        return {wire: getattr(self, attr) for attr, wire in self.FIELDS.items()} | {
            "weights": dict(self.weights)
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Build from an Avro record; raises :class:`~streamfolio.errors.SchemaError`."""
        try:
            return cls(
                record["portfolioId"],
                record["risk"],
                record["expectedReturn"],
                record["sharpRatio"],
                record["timestamp"],
                count=record.get("count", 0),
                mean_return=record.get("meanReturn", 0.0),
                variance=record.get("variance", 0.0),
                periods_per_year=record.get("periodsPerYear", 0.0),
                risk_free_rate=record.get("riskFreeRate", 0.0),
                weights=record.get("weights", {}),
                stats_timestamp=record.get("statsTimestamp", 0),
                sharpe_threshold=record.get("sharpeThreshold"),
            )
        except KeyError as exc:
            raise _missing(cls, exc) from None


@dataclass(frozen=True, slots=True)
class RebalanceEvent:
    """One rebalancer decision, for audit. ``event_id`` defaults to ``portfolio_id@timestamp``.

    >>> e = RebalanceEvent("p1", 1000, "sharpe 0.2 < 0.5", "rebalance", {"ATW": 1.0},
    ...                    {"ATW": 1.0}, 0.2, 0.6, 0.1, 0.15, 0.0, "optimal")
    >>> e.event_id
    'p1@1000'
    """

    FIELDS: ClassVar[Mapping[str, str]] = {
        name: name
        for name in (
            "portfolio_id",
            "timestamp",
            "reason",
            "decision",
            "old_weights",
            "new_weights",
            "sharpe_before",
            "sharpe_after",
            "expected_return_after",
            "risk_after",
            "turnover",
            "optimizer_status",
            "event_id",
        )
    }

    portfolio_id: str
    timestamp: int
    reason: str
    decision: str
    old_weights: Mapping[str, float]
    new_weights: Mapping[str, float]
    sharpe_before: float
    sharpe_after: float
    expected_return_after: float
    risk_after: float
    turnover: float
    optimizer_status: str
    event_id: str = ""

    def __post_init__(self) -> None:
        w = "RebalanceEvent"
        _check_text(f"{w}.portfolio_id", self.portfolio_id, empty=False)
        _check_timestamp(f"{w}.timestamp", self.timestamp)
        _check_text(f"{w}.reason", self.reason)
        _check_text(f"{w}.decision", self.decision, empty=False)
        _set(self, "old_weights", _weight_map(f"{w}.old_weights", self.old_weights))
        _set(self, "new_weights", _weight_map(f"{w}.new_weights", self.new_weights))
        for name in ("sharpe_before", "sharpe_after", "expected_return_after"):
            _check_number(f"{w}.{name}", getattr(self, name))
        _check_number(f"{w}.risk_after", self.risk_after, minimum=0.0)
        _check_number(f"{w}.turnover", self.turnover, minimum=0.0)
        _check_text(f"{w}.optimizer_status", self.optimizer_status)
        _check_text(f"{w}.event_id", self.event_id)
        if not self.event_id:
            _set(self, "event_id", self.make_event_id(self.portfolio_id, self.timestamp))

    @staticmethod
    def make_event_id(portfolio_id: str, timestamp: int) -> str:
        """The deterministic id of the decision for ``portfolio_id`` at ``timestamp``."""
        return f"{portfolio_id}@{timestamp}"

    def to_record(self) -> dict[str, Any]:
        """The Avro record (schema ``RebalanceEvent``)."""
        record = {name: getattr(self, name) for name in self.FIELDS}
        record["old_weights"] = dict(self.old_weights)
        record["new_weights"] = dict(self.new_weights)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Build from an Avro record; raises :class:`~streamfolio.errors.SchemaError`."""
        try:
            return cls(**{name: record[name] for name in cls.FIELDS})
        except KeyError as exc:
            raise _missing(cls, exc) from None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be used: the original bytes plus why and where from.

    >>> d = DeadLetter("late", "bar 7 was final", "intraday-stock-prices", b"\\x06ATW",
    ...                timestamp=0, component="job", partition=3, offset=42)
    >>> DeadLetter.from_record(d.to_record()) == d
    True
    """

    FIELDS: ClassVar[Mapping[str, str]] = {
        name: name
        for name in (
            "reason",
            "detail",
            "source_topic",
            "payload",
            "timestamp",
            "component",
            "partition",
            "offset",
            "key",
        )
    }

    reason: str
    detail: str
    source_topic: str
    payload: bytes
    timestamp: int
    component: str
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = None

    def __post_init__(self) -> None:
        w = "DeadLetter"
        _check_text(f"{w}.reason", self.reason, empty=False)
        _check_text(f"{w}.detail", self.detail)
        _check_text(f"{w}.source_topic", self.source_topic)
        if not isinstance(self.payload, bytes | bytearray | memoryview):
            _fail(f"{w}.payload", f"must be bytes, got {type(self.payload).__name__}")
        _set(self, "payload", bytes(self.payload))
        _check_timestamp(f"{w}.timestamp", self.timestamp)
        _check_text(f"{w}.component", self.component, empty=False)
        if self.partition is not None:
            _check_int(f"{w}.partition", self.partition, minimum=0)
        if self.offset is not None:
            _check_int(f"{w}.offset", self.offset, minimum=0)
        if self.key is not None:
            if not isinstance(self.key, bytes | bytearray | memoryview):
                _fail(f"{w}.key", f"must be bytes or null, got {type(self.key).__name__}")
            _set(self, "key", bytes(self.key))

    def to_record(self) -> dict[str, Any]:
        """The Avro record (schema ``DeadLetter``)."""
        return {
            "reason": self.reason,
            "detail": self.detail,
            "source_topic": self.source_topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key,
            "payload": self.payload,
            "timestamp": self.timestamp,
            "component": self.component,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Build from an Avro record; raises :class:`~streamfolio.errors.SchemaError`."""
        try:
            return cls(
                record["reason"],
                record["detail"],
                record["source_topic"],
                record["payload"],
                record["timestamp"],
                record["component"],
                record.get("partition"),
                record.get("offset"),
                record.get("key"),
            )
        except KeyError as exc:
            raise _missing(cls, exc) from None


# --------------------------------------------------------------------------------------------
# The reference's BourseData quote (28 strings) <-> PriceTick.

BOURSE_FIELDS: Final[tuple[str, ...]] = (
    "field_date_application",
    "field_closing_price",
    "field_difference",
    "field_var_veille",
    "field_best_ask_size",
    "field_transact_time",
    "field_cours_cloture",
    "field_cours_ajuste",
    "field_cumul_titres_echanges",
    "field_best_bid_size",
    "field_capitalisation",
    "field_opening_price",
    "field_total_trades",
    "field_cours_courant",
    "field_best_ask_price",
    "sous_secteur",
    "ticker",
    "field_instrument_var_year",
    "field_var_pto",
    "field_last_traded_time",
    "label",
    "field_best_bid_price",
    "field_dynamic_reference_price",
    "field_static_reference_price",
    "field_low_price",
    "field_high_price",
    "field_cumul_volume_echange",
    "field_last_traded_price",
)
"""The 28 fields of ``BourseData``, in schema order."""

# The reference writes this when the exchange sent no usable time: it means "unknown", not 1999.
_REFERENCE_NO_TIME: Final = "1999-01-01T00:00:00Z"

_TIME = r"(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?"
_DATE_TIME_RE: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ]" + _TIME)
_TIME_ONLY_RE: Final = re.compile(_TIME)
_ISO_DATE_RE: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[Tt ].*)?")
_DMY_DATE_RE: Final = re.compile(r"(\d{2})/(\d{2})/(\d{4})(?:\s.*)?")
_NUMBER_RE: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_SPACES: Final = str.maketrans("", "", " \u00a0\u202f\t")


@cache
def _exchange_zone() -> ZoneInfo:
    return ZoneInfo(EXCHANGE_TIMEZONE)


def _parse_offset(text: str) -> timezone:
    if text in ("Z", "z"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"offset {text} out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _parse_date(text: str) -> date:
    text = text.strip()
    if m := _ISO_DATE_RE.fullmatch(text):
        return date(int(m[1]), int(m[2]), int(m[3]))
    if m := _DMY_DATE_RE.fullmatch(text):
        return date(int(m[3]), int(m[2]), int(m[1]))
    raise ValueError(f"date {text!r} is neither YYYY-MM-DD nor DD/MM/YYYY")


def parse_event_time(text: str, *, session_date: str | None = None) -> int:
    """Epoch milliseconds UTC of an exchange time string (SEMANTICS.md §1).

    ``text`` is ``YYYY-MM-DD[T ]HH:MM[:SS[.fff]]`` with an optional ``Z`` or ``±HH[:MM]``, or
    the time alone, which then needs ``session_date`` (``YYYY-MM-DD...`` or ``DD/MM/YYYY``; only
    its date part is used, as written). Without an offset the time is local
    ``Africa/Casablanca`` time; at the Ramadan switches, which fall at night when the exchange is
    closed, an ambiguous or skipped local time resolves with ``fold=0``. Sub-millisecond digits
    are truncated. Raises :class:`~streamfolio.errors.DataError` with the reason.

    >>> parse_event_time("2025-06-20T14:59:32")      # summer: UTC+1
    1750427972000
    >>> parse_event_time("2026-02-25 14:59:32.5")    # Ramadan 2026: UTC+0
    1772031572500
    >>> parse_event_time("14:59:32Z", session_date="2025-06-20T00:00:00Z")
    1750431572000
    """
    if not isinstance(text, str):
        raise DataError(f"event time must be a string, got {type(text).__name__}")
    value = text.strip()
    if value == _REFERENCE_NO_TIME:
        raise DataError(f"event time {value!r} is the reference's placeholder for a missing time")
    try:
        if m := _DATE_TIME_RE.fullmatch(value):
            day = date(int(m[1]), int(m[2]), int(m[3]))
            hour, minute, second, fraction, offset = m.group(4, 5, 6, 7, 8)
        elif m := _TIME_ONLY_RE.fullmatch(value):
            if not session_date:
                raise ValueError("it has no date and no session date was given")
            day = _parse_date(session_date)
            hour, minute, second, fraction, offset = m.group(1, 2, 3, 4, 5)
        else:
            raise ValueError("expected YYYY-MM-DD[T ]HH:MM[:SS[.fff]][Z|±HH:MM] or HH:MM[:SS]")
        micros = int((fraction or "")[:6].ljust(6, "0"))
        zone = _parse_offset(offset) if offset else _exchange_zone()
        moment = datetime(
            day.year, day.month, day.day, int(hour), int(minute), int(second or 0), micros, zone
        )
        millis = (moment - _EPOCH) // _ONE_MS
    except (ValueError, OverflowError) as exc:
        raise DataError(f"event time {text!r} is unparsable: {exc}") from None
    if not 0 <= millis <= _MAX_EPOCH_MS:
        raise DataError(f"event time {text!r} is outside 1970..9999")
    return millis


def parse_price(text: str | float) -> float:
    """A price from the exchange's text; finite and > 0 or :class:`~streamfolio.errors.DataError`.

    Spaces are thousands separators; a lone comma is the decimal point (French style); with both
    ``,`` and ``.`` the last one is the decimal point. JSON numbers are accepted as they are.

    >>> parse_price("612.50"), parse_price("1 234,5"), parse_price("1.234,5"), parse_price(3)
    (612.5, 1234.5, 1234.5, 3.0)
    >>> parse_price("0.0")
    Traceback (most recent call last):
    ...
    streamfolio.errors.DataError: price '0.0' is not positive
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise DataError(f"price must be text or a number, got {type(text).__name__}")
    if isinstance(text, str):
        cleaned = text.translate(_SPACES)
        if "," in cleaned:
            if "." in cleaned and cleaned.rfind(".") > cleaned.rfind(","):
                cleaned = cleaned.replace(",", "")
            else:
                cleaned = cleaned.replace(".", "").replace(",", ".")
        if not _NUMBER_RE.fullmatch(cleaned):
            raise DataError(f"price {text!r} is not a number")
        value = float(cleaned)
    else:
        value = float(text)
    if not math.isfinite(value):
        raise DataError(f"price {text!r} is not finite")
    if value <= 0:
        raise DataError(f"price {text!r} is not positive")
    return value


def price_tick_from_bourse(record: Mapping[str, str], *, source: str = "cse") -> PriceTick:
    """The :class:`PriceTick` of a reference ``BourseData`` quote.

    Price from ``field_cours_courant`` (:func:`parse_price`), event time from
    ``field_last_traded_time`` (:func:`parse_event_time`, with ``field_date_application`` as the
    date of a bare time). ``volume`` stays null: the quote only carries the session's cumulative
    volume, not the trade's. Raises :class:`~streamfolio.errors.DataError` with the reason.

    >>> quote = dict.fromkeys(BOURSE_FIELDS, "") | {"ticker": "ATW",
    ...     "field_cours_courant": "612,50", "field_last_traded_time": "2025-06-20T14:59:32"}
    >>> price_tick_from_bourse(quote)  # doctest: +NORMALIZE_WHITESPACE
    PriceTick(ticker='ATW', price=612.5, event_time=1750427972000, volume=None, source='cse',
              sequence=None)
    """
    try:
        ticker = record["ticker"]
        price_text = record["field_cours_courant"]
        time_text = record["field_last_traded_time"]
    except KeyError as exc:
        raise DataError(f"BourseData record has no field {exc.args[0]!r}") from None
    if not isinstance(ticker, str) or not ticker.strip():
        raise DataError(f"BourseData ticker {ticker!r} is empty")
    ticker = ticker.strip()
    try:
        price = parse_price(price_text)
        event_time = parse_event_time(
            time_text, session_date=record.get("field_date_application") or None
        )
    except DataError as exc:
        raise DataError(f"{ticker}: {exc.reason}") from None
    return PriceTick(ticker, price, event_time, None, source, None)


def bourse_from_price_tick(tick: PriceTick) -> dict[str, str]:
    """A reference ``BourseData`` quote carrying ``tick``; fields it cannot know are ``""``.

    The price goes to ``field_cours_courant`` and ``field_last_traded_price`` (shortest
    round-trip text), the time to ``field_last_traded_time`` as UTC ``...Z`` (the form the
    reference's own producer writes, and exact), the exchange's local date to
    ``field_date_application``.

    >>> quote = bourse_from_price_tick(PriceTick("ATW", 612.5, 1750427972000))
    >>> quote["field_last_traded_time"], quote["field_date_application"]
    ('2025-06-20T13:59:32Z', '2025-06-20')
    >>> price_tick_from_bourse(quote).event_time
    1750427972000
    """
    moment = _EPOCH + tick.event_time * _ONE_MS
    millis = tick.event_time % 1000
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{millis:03d}Z" if millis else "Z")
    price = repr(float(tick.price))
    quote = dict.fromkeys(BOURSE_FIELDS, "")
    quote.update(
        ticker=tick.ticker,
        field_cours_courant=price,
        field_last_traded_price=price,
        field_last_traded_time=stamp,
        field_date_application=moment.astimezone(_exchange_zone()).date().isoformat(),
    )
    return quote
