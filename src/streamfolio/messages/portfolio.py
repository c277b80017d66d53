"""A portfolio's messages: target :class:`Weights`, :class:`PortfolioStats` and
:class:`PortfolioMetrics`.

``PortfolioStats`` and ``PortfolioMetrics`` keep the reference's wire spellings
(``meanReturns``, ``sharpRatio``...) in ``FIELDS`` and ``to_record``/``from_record`` only.

>>> w = Weights("p1", 0, {"ATW": 1.0})
>>> Weights.from_record(w.to_record()) == w
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self, TypeAlias

import numpy as np
import numpy.typing as npt

from streamfolio.core.moments import StatsLayout, from_upper_triangle, upper_triangle
from streamfolio.core.types import FloatArray
from streamfolio.messages.checks import (
    check_covariance,
    check_int,
    check_number,
    check_text,
    check_timestamp,
    fail,
    missing_field,
    same_keys,
    set_field,
    weight_map,
)

__all__ = ["Estimator", "PortfolioMetrics", "PortfolioStats", "StatsKind", "Weights"]

Estimator: TypeAlias = Literal["welford", "ewm"]
StatsKind: TypeAlias = Literal["initial", "updated"]


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
        check_text("Weights.portfolio_id", self.portfolio_id, empty=False)
        check_timestamp("Weights.timestamp", self.timestamp)
        set_field(self, "weights", weight_map("Weights.weights", self.weights, empty=False))
        check_text("Weights.reason", self.reason)
        check_text("Weights.source", self.source)

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
            raise missing_field(cls, exc) from None


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

    Packed (``flink.stats_layout: packed``), the same statistics as arrays in ``tickers`` order:

    >>> packed = s.to_record("packed")
    >>> packed["packed_covariance"], packed["covarianceMatrix"]
    ([0.0004, 0.0001, 0.0009], {})
    >>> PortfolioStats.from_record(packed) == s
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
    PACKED_FIELDS: ClassVar[Mapping[str, str]] = {
        "mean": "packed_means",
        "covariance": "packed_covariance",
    }
    """Where the packed layout carries ``mean`` and ``covariance`` instead."""

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
        check_text(f"{w}.portfolio_id", self.portfolio_id, empty=False)
        check_timestamp(f"{w}.timestamp", self.timestamp)
        tickers = tuple(self.tickers)
        for t in tickers:
            check_text(f"{w}.tickers item", t, empty=False)
        if not tickers:
            fail(f"{w}.tickers", "must not be empty")
        if len(set(tickers)) != len(tickers):
            fail(f"{w}.tickers", f"has duplicates: {list(tickers)}")
        n = len(tickers)
        mean = tuple(self.mean)
        if len(mean) != n:
            fail(f"{w}.mean", f"has {len(mean)} values for {n} tickers")
        for t, m in zip(tickers, mean, strict=True):
            if type(m) is not float or not math.isfinite(m):  # the message is built only here
                check_number(f"{w}.mean[{t!r}]", m)
        cov = tuple(tuple(row) for row in self.covariance)
        if len(cov) != n or any(len(row) != n for row in cov):
            fail(f"{w}.covariance", f"is not {n}x{n} (one row and column per ticker)")
        matrix = check_covariance(w, tickers, cov)
        set_field(self, "tickers", tickers)
        set_field(self, "mean", tuple(float(m) for m in mean))
        set_field(self, "covariance", tuple(tuple(row) for row in matrix.tolist()))
        check_int(f"{w}.count", self.count, minimum=0)
        if self.estimator not in ("welford", "ewm"):
            fail(f"{w}.estimator", f"must be 'welford' or 'ewm', got {self.estimator!r}")
        if self.estimator == "ewm":
            if self.half_life_bars is None:
                fail(f"{w}.half_life_bars", "is required by the ewm estimator")
            check_number(f"{w}.half_life_bars", self.half_life_bars)
            if not self.half_life_bars > 0:
                fail(f"{w}.half_life_bars", f"must be > 0, got {self.half_life_bars!r}")
        elif self.half_life_bars is not None:
            fail(f"{w}.half_life_bars", "must be null for the welford estimator")
        if self.bar_seconds is not None:
            check_int(f"{w}.bar_seconds", self.bar_seconds, minimum=1)
        if self.kind not in ("initial", "updated"):
            fail(f"{w}.kind", f"must be 'initial' or 'updated', got {self.kind!r}")

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
            fail("PortfolioStats", f"needs a vector and a matrix, got {mu.shape}, {sigma.shape}")
        rows = tuple(tuple(row) for row in sigma.tolist())
        return cls(portfolio_id, timestamp, tuple(tickers), tuple(mu.tolist()), rows, **options)

    def mean_vector(self) -> FloatArray:
        """``mean`` as a float64 vector (a new array)."""
        return np.array(self.mean, dtype=np.float64)

    def covariance_matrix(self) -> FloatArray:
        """``covariance`` as a float64 matrix (a new array)."""
        return np.array(self.covariance, dtype=np.float64).reshape(len(self.tickers), -1)

    def to_record(self, layout: StatsLayout = "maps") -> dict[str, Any]:
        """The Avro record (schema ``PortfolioStats``) in either layout; maps are filled in
        ``tickers`` order."""
        tickers = self.tickers
        if layout == "packed":
            mean: dict[str, Any] = {}
            covariance: dict[str, Any] = {}
            packed_means = list(self.mean)
            packed_covariance = upper_triangle(self.covariance_matrix()).tolist()
        else:
            mean = dict(zip(tickers, self.mean, strict=True))
            covariance = {
                t: dict(zip(tickers, row, strict=True))
                for t, row in zip(tickers, self.covariance, strict=True)
            }
            packed_means, packed_covariance = [], []
        return {
            "timestamp": self.timestamp,
            "portfolio_id": self.portfolio_id,
            "meanReturns": mean,
            "covarianceMatrix": covariance,
            "count": self.count,
            "estimator": self.estimator,
            "half_life_bars": self.half_life_bars,
            "tickers": list(tickers),
            "bar_seconds": self.bar_seconds,
            "kind": self.kind,
            "packed_means": packed_means,
            "packed_covariance": packed_covariance,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Build from an Avro record in either layout; raises
        :class:`~streamfolio.errors.SchemaError`.

        An empty ``tickers`` (reference producers) takes the order of ``meanReturns``.
        """
        try:
            means = record["meanReturns"]
            cov = record["covarianceMatrix"]
            tickers = tuple(record.get("tickers") or ())
            portfolio_id, timestamp = record["portfolio_id"], record["timestamp"]
        except KeyError as exc:
            raise missing_field(cls, exc) from None
        if not isinstance(means, Mapping) or not isinstance(cov, Mapping):
            fail("PortfolioStats", "meanReturns and covarianceMatrix must be maps")
        packed = record.get("packed_means") or record.get("packed_covariance")
        if packed:
            if means or cov:
                fail(
                    "PortfolioStats",
                    "has both maps (meanReturns, covarianceMatrix) and packed arrays "
                    "(packed_means, packed_covariance); a record carries one layout",
                )
            mean, rows = _packed_moments(tickers, record)
        else:
            if not tickers:
                tickers = tuple(means)
            if len(set(tickers)) != len(tickers):
                fail("PortfolioStats.tickers", f"has duplicates: {list(tickers)}")
            same_keys("PortfolioStats.meanReturns", means, tickers)
            same_keys("PortfolioStats.covarianceMatrix", cov, tickers)
            matrix = []
            for t in tickers:
                row = cov[t]
                if not isinstance(row, Mapping):
                    fail(f"PortfolioStats.covarianceMatrix[{t!r}]", "must be a map")
                same_keys(f"PortfolioStats.covarianceMatrix[{t!r}]", row, tickers)
                matrix.append(tuple(row[u] for u in tickers))
            mean, rows = tuple(means[t] for t in tickers), tuple(matrix)
        return cls(
            portfolio_id,
            timestamp,
            tickers,
            mean,
            rows,
            count=record.get("count", 0),
            estimator=record.get("estimator", "welford"),
            half_life_bars=record.get("half_life_bars"),
            bar_seconds=record.get("bar_seconds"),
            kind=record.get("kind", "initial"),
        )


def _packed_moments(
    tickers: tuple[str, ...], record: Mapping[str, Any]
) -> tuple[tuple[Any, ...], tuple[tuple[float, ...], ...]]:
    """The mean and covariance rows of a packed record, checked for shape (and the values for
    type: ``PortfolioStats`` checks the rest)."""
    w = "PortfolioStats"
    means, upper = record.get("packed_means") or (), record.get("packed_covariance") or ()
    if not isinstance(means, Sequence) or not isinstance(upper, Sequence):
        fail(w, "packed_means and packed_covariance must be arrays")
    n = len(tickers)
    if n == 0:
        fail(f"{w}.tickers", "must name the tickers of packed statistics (their order)")
    if len(means) != n:
        fail(f"{w}.packed_means", f"has {len(means)} values for {n} tickers")
    if len(upper) != n * (n + 1) // 2:
        fail(
            f"{w}.packed_covariance",
            f"has {len(upper)} values; the upper triangle of {n} tickers has {n * (n + 1) // 2}",
        )
    for i, value in enumerate(upper):
        if type(value) is not float:  # ints pass; anything else is named
            check_number(f"{w}.packed_covariance[{i}]", value)
    matrix = from_upper_triangle(upper, n)
    return tuple(means), tuple(tuple(row) for row in matrix.tolist())


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
        check_text(f"{w}.portfolio_id", self.portfolio_id, empty=False)
        check_number(f"{w}.risk", self.risk, minimum=0.0)
        check_number(f"{w}.expected_return", self.expected_return)
        check_number(f"{w}.sharpe_ratio", self.sharpe_ratio)
        check_timestamp(f"{w}.timestamp", self.timestamp)
        check_int(f"{w}.count", self.count, minimum=0)
        check_number(f"{w}.mean_return", self.mean_return)
        check_number(f"{w}.variance", self.variance, minimum=0.0)
        check_number(f"{w}.periods_per_year", self.periods_per_year, minimum=0.0)
        check_number(f"{w}.risk_free_rate", self.risk_free_rate)
        set_field(self, "weights", weight_map(f"{w}.weights", self.weights))
        check_timestamp(f"{w}.stats_timestamp", self.stats_timestamp)
        if self.sharpe_threshold is not None:
            check_number(f"{w}.sharpe_threshold", self.sharpe_threshold)

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
            raise missing_field(cls, exc) from None
