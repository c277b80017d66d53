"""Whether a valid message fits its portfolio: statistics, weights, and control records.

These rules need the portfolio's configuration
(a :class:`~streamfolio.core.portfolio.PortfolioSpec`) but no clock or topic, so
:class:`~streamfolio.intake.Intake`, the replay and the Flink job share them. Each returns why a
message does not fit, or None.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias

import numpy as np

from streamfolio.core.portfolio import PortfolioSpec, check_weights
from streamfolio.errors import SchemaError
from streamfolio.messages import PortfolioStats, Weights

__all__ = [
    "CONTROL_RANK",
    "DEFAULT_COVARIANCE_TOLERANCE",
    "DEFAULT_MAX_STATS_COUNT",
    "ControlKind",
    "control_problem",
    "stats_problem",
    "weights_problem",
]

ControlKind: TypeAlias = Literal["stats", "weights"]
"""A control message: initial statistics (a seed, from the initial-statistics topic) or weights."""

CONTROL_RANK: Final[Mapping[str, int]] = {"stats": 0, "weights": 1}
"""Order of control messages with equal timestamps: a seed before weights, so the metrics emitted
in between do not depend on which topic was read first."""

DEFAULT_MAX_STATS_COUNT: Final = 10_000_000
DEFAULT_COVARIANCE_TOLERANCE: Final = 1e-9


def stats_problem(
    spec: PortfolioSpec,
    stats: PortfolioStats,
    *,
    max_count: int = DEFAULT_MAX_STATS_COUNT,
    covariance_tolerance: float = DEFAULT_COVARIANCE_TOLERANCE,
) -> str | None:
    """Why valid statistics cannot seed ``spec``'s portfolio, or None when they can.

    >>> spec = PortfolioSpec("p", ("A", "B"), bar_ms=60_000, periods_per_year=1)
    >>> ok = PortfolioStats.from_arrays("p", 0, ["B", "A"], [0, 0], [[1, 0], [0, 1]], count=5)
    >>> stats_problem(spec, ok) is None
    True
    >>> stats_problem(spec, PortfolioStats.from_arrays("p", 0, ["A", "B"], [0, 0],
    ...                                                [[1, 2], [2, 1]], count=5))
    'covariance is not positive semi-definite: smallest eigenvalue -1 (tolerance -1e-09)'
    """
    if set(stats.tickers) != set(spec.tickers):
        missing = [t for t in spec.tickers if t not in stats.tickers]
        extra = [t for t in stats.tickers if t not in spec.tickers]
        return f"tickers do not match the portfolio's: missing {missing}, unexpected {extra}"
    if stats.count > max_count:
        return f"count {stats.count} is above validation.max_stats_count {max_count}"
    if stats.estimator != spec.estimator:
        return f"estimator {stats.estimator!r} is not the portfolio's {spec.estimator!r}"
    if spec.estimator == "ewm" and stats.half_life_bars != spec.half_life_bars:
        return (
            f"half_life_bars {stats.half_life_bars!r} is not the portfolio's "
            f"{spec.half_life_bars!r}"
        )
    if stats.bar_seconds is not None and stats.bar_seconds * 1000 != spec.bar_ms:
        return f"bar_seconds {stats.bar_seconds} is not the portfolio's {spec.bar_ms // 1000}"
    cov = stats.covariance_matrix()
    largest = float(np.max(np.diag(cov)))
    smallest = float(np.linalg.eigvalsh(cov)[0])
    if smallest < -covariance_tolerance * largest or (largest == 0.0 and smallest < 0.0):
        return (
            f"covariance is not positive semi-definite: smallest eigenvalue {smallest:.6g} "
            f"(tolerance {-covariance_tolerance * largest:.6g})"
        )
    return None


def weights_problem(spec: PortfolioSpec, weights: Mapping[str, float]) -> str | None:
    """Why weights do not fit ``spec``'s portfolio (tickers, sum, bounds), or None."""
    return check_weights(spec.tickers, weights, spec.bounds)


def control_problem(
    spec: PortfolioSpec,
    kind: ControlKind,
    record: Mapping[str, Any],
    *,
    max_count: int = DEFAULT_MAX_STATS_COUNT,
    covariance_tolerance: float = DEFAULT_COVARIANCE_TOLERANCE,
) -> tuple[str, str] | None:
    """``(reason, detail)`` if a decoded control record cannot apply to ``spec``, else None.

    Checked on arrival, by the replay and the Flink job alike, so a bad message is refused at
    once (dead letter) and never waits for its timestamp.

    >>> spec = PortfolioSpec("p", ("A", "B"), bar_ms=1_000, periods_per_year=252)
    >>> control_problem(spec, "weights", {"portfolio_id": "p", "timestamp": 0,
    ...                                   "weights": {"A": 1.0}})
    ('invalid_weights', 'weights do not cover the portfolio: missing B')
    >>> control_problem(spec, "stats", {"portfolio_id": "p", "timestamp": 0,
    ...                                 "meanReturns": {"A": float("nan")},
    ...                                 "covarianceMatrix": {"A": {"A": 1.0}}})[0]
    'invalid_stats'
    """
    try:
        if kind == "weights":
            problem = weights_problem(spec, Weights.from_record(record).weights)
            return None if problem is None else ("invalid_weights", problem)
        stats = PortfolioStats.from_record(record)
    except SchemaError as exc:
        return f"invalid_{kind}", str(exc)
    problem = stats_problem(
        spec, stats, max_count=max_count, covariance_tolerance=covariance_tolerance
    )
    return None if problem is None else ("invalid_stats", problem)
