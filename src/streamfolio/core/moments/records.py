"""Making estimators: empty, from a prior, from a saved state, and to/from ``PortfolioStats``.

:func:`new_moments` and :func:`moments_from_prior` pick the estimator by its kind
(``"welford"`` or ``"ewm"``); :func:`moments_from_state` inverts ``to_state``; :func:`stats_record`
and :func:`moments_from_stats_record` convert to and from the ``PortfolioStats`` record
(``meanReturns``, ``covarianceMatrix``, ``count``, …) losslessly, in either of its layouts:
the reference's nested maps, or packed arrays (the means, and the covariance's upper triangle
row by row, in ``tickers`` order; :func:`upper_triangle`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from streamfolio.core.moments.estimators import (
    EstimatorKind,
    EWMoments,
    MissingTickersError,
    MomentsError,
    OnlineMoments,
    WelfordMoments,
)
from streamfolio.core.types import ArrayLike, FloatArray

StatsLayout: TypeAlias = Literal["maps", "packed"]
"""How a ``PortfolioStats`` record carries the moments: ``maps`` (the reference's
``meanReturns`` and ``covarianceMatrix``, ticker -> value) or ``packed`` (``packed_means`` and
``packed_covariance``, arrays in ``tickers`` order: 2 kB instead of 5 kB for 20 tickers)."""

_TRIANGLES: dict[int, tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]] = {}
"""Per size n, the rows and columns of the upper triangle (made once)."""


def _triangle(n: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    cached = _TRIANGLES.get(n)
    if cached is None:
        cached = _TRIANGLES[n] = np.triu_indices(n)
    return cached


def upper_triangle(matrix: FloatArray) -> FloatArray:
    """The entries on and above the diagonal, row by row: ``n(n+1)/2`` values, all a symmetric
    matrix holds (of the last two axes, so a stack of matrices gives one row each).

    >>> upper_triangle(np.array([[1.0, 2.0], [2.0, 3.0]])).tolist()
    [1.0, 2.0, 3.0]
    """
    rows, columns = _triangle(matrix.shape[-1])
    result: FloatArray = matrix[..., rows, columns]
    return result


def from_upper_triangle(values: ArrayLike, n: int) -> FloatArray:
    """The symmetric ``n x n`` matrix whose :func:`upper_triangle` is ``values``.

    >>> from_upper_triangle([1.0, 2.0, 3.0], 2).tolist()
    [[1.0, 2.0], [2.0, 3.0]]
    """
    upper = np.asarray(values, dtype=np.float64)
    if upper.shape != (n * (n + 1) // 2,):
        raise MomentsError(
            f"{upper.size} values are not the upper triangle of {n} tickers "
            f"({n * (n + 1) // 2} values)"
        )
    rows, columns = _triangle(n)
    matrix = np.empty((n, n), dtype=np.float64)
    matrix[rows, columns] = upper
    matrix[columns, rows] = upper
    return matrix


def new_moments(
    n_assets: int, kind: EstimatorKind = "welford", half_life_bars: float | None = None
) -> OnlineMoments:
    """An empty estimator of the given kind."""
    if kind == "welford":
        return WelfordMoments(n_assets)
    if kind == "ewm":
        if half_life_bars is None:
            raise MomentsError("the ewm estimator needs half_life_bars")
        return EWMoments(n_assets, half_life_bars)
    raise MomentsError(f"unknown estimator kind {kind!r}; use 'welford' or 'ewm'")


def moments_from_prior(
    mean: ArrayLike,
    covariance: ArrayLike,
    count: int,
    kind: EstimatorKind = "welford",
    half_life_bars: float | None = None,
) -> OnlineMoments:
    """An estimator seeded with a prior (SEMANTICS §5: ``n = n0, μ = μ0, M2 = Σ0·(n0 − 1)``)."""
    if kind == "welford":
        return WelfordMoments.from_prior(mean, covariance, count)
    if kind == "ewm":
        if half_life_bars is None:
            raise MomentsError("the ewm estimator needs half_life_bars")
        return EWMoments.from_prior(mean, covariance, count, half_life_bars)
    raise MomentsError(f"unknown estimator kind {kind!r}; use 'welford' or 'ewm'")


def moments_from_state(state: Mapping[str, Any]) -> OnlineMoments:
    """Inverse of ``to_state`` for either estimator."""
    if state["kind"] == "welford":
        return WelfordMoments.from_state(state)
    if state["kind"] == "ewm":
        return EWMoments.from_state(state)
    raise MomentsError(f"unknown estimator kind {state['kind']!r}")


def stats_record(
    moments: OnlineMoments,
    portfolio_id: str,
    tickers: Sequence[str],
    timestamp_ms: int,
    layout: StatsLayout = "maps",
) -> dict[str, Any]:
    """The ``PortfolioStats`` record (schema field names) of an estimator's current state."""
    if len(tickers) != moments.n_assets:
        raise MomentsError(f"{len(tickers)} tickers for {moments.n_assets} assets")
    mean = moments.mean.tolist()
    if layout == "packed":
        maps: dict[str, Any] = {"meanReturns": {}, "covarianceMatrix": {}}
        packed = {
            "packed_means": mean,
            "packed_covariance": upper_triangle(moments.covariance).tolist(),
        }
    else:
        cov = moments.covariance.tolist()
        maps = {
            "meanReturns": dict(zip(tickers, mean, strict=True)),
            "covarianceMatrix": {
                t: dict(zip(tickers, row, strict=True)) for t, row in zip(tickers, cov, strict=True)
            },
        }
        packed = {"packed_means": [], "packed_covariance": []}
    return {
        "timestamp": int(timestamp_ms),
        "portfolio_id": portfolio_id,
        **maps,
        "count": moments.n,
        "estimator": moments.kind,
        "half_life_bars": getattr(moments, "half_life_bars", None),
        "tickers": list(tickers),
        **packed,
    }


def stats_arrays(
    record: Mapping[str, Any], tickers: Sequence[str] | None = None
) -> tuple[tuple[str, ...], FloatArray, FloatArray]:
    """``(tickers, mean, covariance)`` of a ``PortfolioStats`` record in either layout, in the
    order of ``tickers`` (default: the record's ``tickers``, else its ``meanReturns`` order).

    >>> stats_arrays({"meanReturns": {}, "covarianceMatrix": {}, "tickers": ["A", "B"],
    ...               "packed_means": [1.0, 2.0], "packed_covariance": [4.0, 1.0, 9.0]},
    ...              ["B", "A"])[2].tolist()
    [[9.0, 1.0], [1.0, 4.0]]
    """
    packed = record.get("packed_means")
    if packed:
        names = tuple(record.get("tickers") or ())
        if len(names) != len(packed):
            raise MomentsError(f"{len(packed)} packed means for {len(names)} tickers")
        order = tuple(tickers) if tickers is not None else names
        missing = [t for t in order if t not in names]
        if missing:
            raise MissingTickersError(f"statistics have no entry for tickers {missing}")
        at = [names.index(t) for t in order]
        mu = np.asarray(packed, dtype=np.float64)[at]
        sigma = from_upper_triangle(record.get("packed_covariance") or (), len(names))
        return order, mu, sigma[np.ix_(at, at)]
    means: Mapping[str, float] = record["meanReturns"]
    covs: Mapping[str, Mapping[str, float]] = record["covarianceMatrix"]
    order = tuple(tickers) if tickers is not None else tuple(record.get("tickers") or means)
    missing = [t for t in order if t not in means or t not in covs]
    if missing:
        raise MissingTickersError(f"statistics have no entry for tickers {missing}")
    mu = np.array([means[t] for t in order], dtype=np.float64)
    sigma = np.array([[covs[a][b] for b in order] for a in order], dtype=np.float64)
    return order, mu, sigma


def moments_from_stats_record(
    record: Mapping[str, Any],
    tickers: Sequence[str] | None = None,
    *,
    kind: EstimatorKind | None = None,
    half_life_bars: float | None = None,
    count: int | None = None,
) -> tuple[tuple[str, ...], OnlineMoments]:
    """Seed an estimator from a ``PortfolioStats`` record; returns ``(tickers, estimator)``.

    ``tickers`` picks the order (default: the record's ``tickers``, else its ``meanReturns``
    order). ``kind``, ``half_life_bars`` and ``count`` override the record's own (a reference
    record carries none of them; its count then defaults to 2 so that the covariance survives).
    """
    order, mu, sigma = stats_arrays(record, tickers)
    n0 = count if count is not None else int(record.get("count") or 2)
    chosen: EstimatorKind = kind or record.get("estimator") or "welford"
    half_life = half_life_bars if half_life_bars is not None else record.get("half_life_bars")
    return order, moments_from_prior(mu, sigma, n0, chosen, half_life)
