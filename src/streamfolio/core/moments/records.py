"""Making estimators: empty, from a prior, from a saved state, and to/from ``PortfolioStats``.

:func:`new_moments` and :func:`moments_from_prior` pick the estimator by its kind
(``"welford"`` or ``"ewm"``); :func:`moments_from_state` inverts ``to_state``; :func:`stats_record`
and :func:`moments_from_stats_record` convert to and from the ``PortfolioStats`` record
(``meanReturns``, ``covarianceMatrix``, ``count``, …) losslessly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streamfolio.core.moments.estimators import (
    EstimatorKind,
    EWMoments,
    MissingTickersError,
    MomentsError,
    OnlineMoments,
    WelfordMoments,
)
from streamfolio.core.types import ArrayLike


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
    moments: OnlineMoments, portfolio_id: str, tickers: Sequence[str], timestamp_ms: int
) -> dict[str, Any]:
    """The ``PortfolioStats`` record (schema field names) of an estimator's current state."""
    if len(tickers) != moments.n_assets:
        raise MomentsError(f"{len(tickers)} tickers for {moments.n_assets} assets")
    mean = moments.mean.tolist()
    cov = moments.covariance.tolist()
    return {
        "timestamp": int(timestamp_ms),
        "portfolio_id": portfolio_id,
        "meanReturns": dict(zip(tickers, mean, strict=True)),
        "covarianceMatrix": {
            t: dict(zip(tickers, row, strict=True)) for t, row in zip(tickers, cov, strict=True)
        },
        "count": moments.n,
        "estimator": moments.kind,
        "half_life_bars": getattr(moments, "half_life_bars", None),
        "tickers": list(tickers),
    }


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
    means: Mapping[str, float] = record["meanReturns"]
    covs: Mapping[str, Mapping[str, float]] = record["covarianceMatrix"]
    order = tuple(tickers) if tickers is not None else tuple(record.get("tickers") or means)
    missing = [t for t in order if t not in means or t not in covs]
    if missing:
        raise MissingTickersError(f"statistics have no entry for tickers {missing}")
    mu = np.array([means[t] for t in order], dtype=np.float64)
    sigma = np.array([[covs[a][b] for b in order] for a in order], dtype=np.float64)
    n0 = count if count is not None else int(record.get("count") or 2)
    chosen: EstimatorKind = kind or record.get("estimator") or "welford"
    half_life = half_life_bars if half_life_bars is not None else record.get("half_life_bars")
    return order, moments_from_prior(mu, sigma, n0, chosen, half_life)
