"""One portfolio's streaming state: return vectors → statistics → metrics (SEMANTICS §4–§6).

:class:`PortfolioMonitor` is what both engines drive, the offline replay and the Flink job's keyed
operator, so they compute the same numbers by construction. It takes already-closed bars (see
:mod:`streamfolio.core.returns`), initial statistics, and weights; it gives ``PortfolioStats`` and
``PortfolioMetrics`` records as plain dicts with the schemas' field names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamfolio.core.metrics import PortfolioPerformance, portfolio_performance
from streamfolio.core.moments import (
    EstimatorKind,
    OnlineMoments,
    moments_from_state,
    moments_from_stats_record,
    new_moments,
    stats_record,
)
from streamfolio.core.returns import BarReturns, PortfolioReturns, bar_end_ms
from streamfolio.core.types import FloatArray

WEIGHT_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class PortfolioSpec:
    """What the streaming engines need to know of a configured portfolio."""

    portfolio_id: str
    tickers: tuple[str, ...]
    bar_ms: int
    periods_per_year: float
    risk_free_rate: float = 0.0
    estimator: EstimatorKind = "welford"
    half_life_bars: float | None = None
    sharpe_threshold: float | None = None
    bounds: tuple[tuple[float, float], ...] | None = None
    """Per ticker (in ``tickers`` order) the ``(lo, hi)`` its weight must lie in; None: long-only
    within [0, 1]."""

    def keeps_moments_of(self, old: PortfolioSpec) -> bool:
        """Whether a portfolio redefined from ``old`` to this keeps its statistics: the same
        tickers in the same order, bar size and estimator. Otherwise its moments mean
        something else and it starts again from new initial statistics; a changed threshold,
        risk-free rate, bounds or annualisation only changes the metrics from then on.

        >>> a = PortfolioSpec("p", ("A", "B"), 60_000, 252.0)
        >>> PortfolioSpec("p", ("A", "B"), 60_000, 252.0, sharpe_threshold=1.0).keeps_moments_of(a)
        True
        >>> PortfolioSpec("p", ("A", "B", "C"), 60_000, 252.0).keeps_moments_of(a)
        False
        """
        return (self.tickers, self.bar_ms, self.estimator, self.half_life_bars) == (
            old.tickers,
            old.bar_ms,
            old.estimator,
            old.half_life_bars,
        )


def check_weights(
    tickers: Sequence[str],
    weights: Mapping[str, float],
    bounds: Sequence[tuple[float, float]] | None = None,
) -> str | None:
    """Why ``weights`` do not fit a portfolio of ``tickers``, or None when they do.

    They must name exactly the tickers, be finite, sum to 1, and each lie within its
    ``bounds`` (default: long-only, [0, 1]), all within :data:`WEIGHT_SUM_TOLERANCE`.

    >>> check_weights(["A", "B"], {"A": 0.5, "B": 0.5}) is None
    True
    >>> check_weights(["A", "B"], {"A": 0.5, "C": 0.5})
    'weights do not cover the portfolio: missing B; unexpected C'
    >>> check_weights(["A", "B"], {"A": 0.7, "B": 0.5})
    'weights sum to 1.2, not 1 (tolerance 1e-06)'
    >>> check_weights(["A", "B"], {"A": 5, "B": -4})
    'weight of A is 5, outside its bounds [0, 1]'
    >>> check_weights(["A", "B"], {"A": 0.5, "B": 0.5}, bounds=[(0, 0.4), (0, 1)])
    'weight of A is 0.5, outside its bounds [0, 0.4]'
    """
    missing = [t for t in tickers if t not in weights]
    extra = [t for t in weights if t not in set(tickers)]
    if missing or extra:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if extra:
            parts.append("unexpected " + ", ".join(extra))
        return "weights do not cover the portfolio: " + "; ".join(parts)
    bad = [t for t in tickers if not math.isfinite(weights[t])]
    if bad:
        return "weights are not finite for " + ", ".join(bad)
    total = math.fsum(weights[t] for t in tickers)
    if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
        return f"weights sum to {total:.12g}, not 1 (tolerance {WEIGHT_SUM_TOLERANCE:g})"
    intervals = bounds if bounds is not None else [(0.0, 1.0)] * len(tickers)
    for ticker, (lo, hi) in zip(tickers, intervals, strict=True):
        w = weights[ticker]
        if not lo - WEIGHT_SUM_TOLERANCE <= w <= hi + WEIGHT_SUM_TOLERANCE:
            return f"weight of {ticker} is {w:.12g}, outside its bounds [{lo:g}, {hi:g}]"
    return None


class PortfolioMonitor:
    """Statistics and metrics of one portfolio, updated bar by bar.

    Examples
    --------
    >>> spec = PortfolioSpec("p", ("A", "B"), bar_ms=60_000, periods_per_year=252)
    >>> m = PortfolioMonitor(spec)
    >>> m.set_weights({"A": 0.5, "B": 0.5}, timestamp_ms=0) is None
    True
    >>> from streamfolio.core.returns import BarReturns
    >>> m.on_bar(BarReturns(0, {"A": 10.0, "B": 20.0}, {})) is None        # warm-up
    True
    >>> for k, (ra, rb) in enumerate([(0.01, 0.0), (-0.02, 0.01), (0.03, -0.01)], start=1):
    ...     stats = m.on_bar(BarReturns(k, {"A": 1.0, "B": 1.0}, {"A": ra, "B": rb}))
    >>> stats["count"], stats["timestamp"]
    (3, 240000)
    >>> metrics = m.metrics()
    >>> round(metrics["sharpRatio"], 3)
    6.928
    >>> m.metrics() is None          # unchanged since last emitted
    True
    """

    def __init__(self, spec: PortfolioSpec) -> None:
        self.spec = spec
        self.returns = PortfolioReturns(spec.tickers)
        self.moments: OnlineMoments = new_moments(
            len(spec.tickers), spec.estimator, spec.half_life_bars
        )
        self.weights: FloatArray | None = None
        self.weights_timestamp_ms = 0
        self.stats_timestamp_ms = 0
        self.seed_timestamp_ms: int | None = None
        """Timestamp of the initial statistics in force (None: not seeded)."""
        self._last_metrics: tuple[float, ...] | None = None

    # -- inputs -------------------------------------------------------------------------------

    def seed(self, record: Mapping[str, Any]) -> str | None:
        """Replace the statistics with an initial-statistics record (the prior; SEMANTICS §5).

        Returns why it was refused: a record not newer than the one in force (a duplicate or a
        replay of an old one) would throw away every bar counted since. The record itself must
        already be valid for the portfolio (:func:`streamfolio.intake.stats_problem`).
        """
        timestamp = int(record.get("timestamp", 0))
        if self.seed_timestamp_ms is not None and timestamp <= self.seed_timestamp_ms:
            return (
                f"initial statistics stamped {timestamp} are not newer than those in force "
                f"(stamped {self.seed_timestamp_ms})"
            )
        _, self.moments = moments_from_stats_record(
            record,
            self.spec.tickers,
            kind=self.spec.estimator,
            half_life_bars=self.spec.half_life_bars,
        )
        self.stats_timestamp_ms = timestamp
        self.seed_timestamp_ms = timestamp
        return None

    def set_weights(self, weights: Mapping[str, float], timestamp_ms: int) -> str | None:
        """Adopt new weights; returns the reason they were refused (previous weights stay):
        they do not fit the portfolio, or are older than the weights in force (a replayed old
        record). Equal stamps are accepted: the rebalancer answers metrics stamped T with
        weights stamped T, and a duplicate changes nothing."""
        problem = check_weights(self.spec.tickers, weights, self.spec.bounds)
        if problem is not None:
            return problem
        if self.weights is not None and timestamp_ms < self.weights_timestamp_ms:
            return (
                f"weights stamped {timestamp_ms} are older than those in force "
                f"(stamped {self.weights_timestamp_ms})"
            )
        self.weights = np.array([weights[t] for t in self.spec.tickers], dtype=np.float64)
        self.weights_timestamp_ms = int(timestamp_ms)
        return None

    def on_bar(self, bar: BarReturns) -> dict[str, Any] | None:
        """Feed one closed bar; returns the updated statistics record when it made a vector."""
        return self.stats() if self.take_bar(bar) else None

    def take_bar(self, bar: BarReturns) -> bool:
        """Feed one closed bar; whether it made a vector (the statistics changed). For a caller
        that does not want the statistics record of every bar (:meth:`stats` makes it)."""
        vector = self.returns.on_bar(bar)
        if vector is None:
            return False
        self.moments.update(vector)
        self.stats_timestamp_ms = bar_end_ms(bar.index, self.spec.bar_ms)
        return True

    # -- outputs ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The current ``PortfolioStats`` record."""
        return stats_record(
            self.moments, self.spec.portfolio_id, self.spec.tickers, self.stats_timestamp_ms
        )

    def performance(self) -> PortfolioPerformance | None:
        """Metrics of the current weights, or None while undefined (no weights or zero risk)."""
        if self.weights is None or self.moments.n == 0:
            return None
        perf = portfolio_performance(
            self.weights,
            self.moments.mean,
            self.moments.covariance,
            periods_per_year=self.spec.periods_per_year,
            risk_free_rate=self.spec.risk_free_rate,
        )
        return perf if perf.is_defined else None

    def metrics(self) -> dict[str, Any] | None:
        """The ``PortfolioMetrics`` record if it differs from the last one returned, else None."""
        perf = self.performance()
        if perf is None or self.weights is None:
            return None
        key = (perf.expected_return, perf.risk, perf.sharpe, *self.weights.tolist())
        if self._last_metrics is not None and _same_figures(key, self._last_metrics):
            return None
        self._last_metrics = key
        return {
            "portfolioId": self.spec.portfolio_id,
            "risk": perf.risk,
            "expectedReturn": perf.expected_return,
            "sharpRatio": perf.sharpe,
            "timestamp": max(self.stats_timestamp_ms, self.weights_timestamp_ms),
            "count": self.moments.n,
            "meanReturn": perf.mean_return,
            "variance": perf.variance,
            "periodsPerYear": perf.periods_per_year,
            "riskFreeRate": perf.risk_free_rate,
            "weights": dict(zip(self.spec.tickers, self.weights.tolist(), strict=True)),
            "statsTimestamp": self.stats_timestamp_ms,
            "sharpeThreshold": self.spec.sharpe_threshold,
        }

    # -- checkpointing ------------------------------------------------------------------------

    def to_state(self, *, arrays: bool = False) -> dict[str, Any]:
        """Exact state as plain values, for Flink keyed state (``arrays``: the estimator's
        matrix as a float64 array rather than nested lists, for a writer that packs it)."""
        return {
            "moments": self.moments.to_state(arrays=arrays),
            "waiting_for": list(self.returns.waiting_for),
            "weights": None if self.weights is None else self.weights.tolist(),
            "weights_timestamp_ms": self.weights_timestamp_ms,
            "stats_timestamp_ms": self.stats_timestamp_ms,
            "seed_timestamp_ms": self.seed_timestamp_ms,
            "last_metrics": None if self._last_metrics is None else list(self._last_metrics),
        }

    @classmethod
    def from_state(cls, spec: PortfolioSpec, state: Mapping[str, Any]) -> PortfolioMonitor:
        monitor = cls(spec)
        monitor.moments = moments_from_state(state["moments"])
        waiting = set(state["waiting_for"])
        monitor.returns = PortfolioReturns(
            spec.tickers, seen=[t for t in spec.tickers if t not in waiting]
        )
        weights = state["weights"]
        monitor.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        monitor.weights_timestamp_ms = int(state["weights_timestamp_ms"])
        monitor.stats_timestamp_ms = int(state["stats_timestamp_ms"])
        seeded = state.get("seed_timestamp_ms")  # absent in states saved before it existed
        monitor.seed_timestamp_ms = None if seeded is None else int(seeded)
        last = state["last_metrics"]
        monitor._last_metrics = None if last is None else tuple(float(v) for v in last)
        return monitor


_FIGURE_RTOL = 1e-12
"""Figures closer than this (relative) are the same: only the last bits of a float differ when
the arithmetic's order does (a state restored by a later version computes risk in another
order than the one that emitted the last metrics), and that is no change of the portfolio."""


def _same_figures(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two metrics keys are equal up to float rounding.

    >>> _same_figures((0.6484066560065098, 0.4), (0.6484066560065099, 0.4))
    True
    >>> _same_figures((0.64840665600, 0.4), (0.64840665601, 0.4)), _same_figures((1.0,), (1.0, 2.0))
    (False, False)
    """
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=_FIGURE_RTOL, abs_tol=0.0) for x, y in zip(a, b, strict=True)
    )
