"""A seeded, correlated price simulator for demos, tests and load.

Per bar, each ticker's log return is drawn from ``N(μ, Σ)`` (per-bar statistics), split into a
few intra-bar ticks at random event times, so the last tick of the bar carries the close. A
*regime change* switches to other statistics at a given bar: that is how the demo pushes a
portfolio's Sharpe ratio below its threshold.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from streamfolio.core.types import ArrayLike, FloatArray


@dataclass(frozen=True, slots=True)
class Regime:
    """Per-bar mean and covariance of log returns, from bar ``start_bar`` on."""

    start_bar: int
    mean: FloatArray
    covariance: FloatArray


def simulate_ticks(
    tickers: Sequence[str],
    start_prices: ArrayLike,
    regimes: Sequence[Regime],
    *,
    start_ms: int,
    bar_ms: int,
    n_bars: int,
    ticks_per_bar: int = 3,
    seed: int = 0,
) -> Iterator[tuple[int, str, float]]:
    """Yield ``(event_time_ms, ticker, price)`` in event-time order.

    >>> import numpy as np
    >>> r = Regime(0, np.zeros(2), np.eye(2) * 1e-6)
    >>> ticks = list(simulate_ticks(["A", "B"], [100.0, 50.0], [r], start_ms=0, bar_ms=1000,
    ...                             n_bars=2, ticks_per_bar=2, seed=1))
    >>> len(ticks), sorted({t for _, t, _ in ticks})
    (8, ['A', 'B'])
    >>> all(0 <= ms < 2000 for ms, _, _ in ticks)
    True
    """
    rng = np.random.default_rng(seed)
    n = len(tickers)
    prices = np.asarray(start_prices, dtype=np.float64).copy()
    ordered = sorted(regimes, key=lambda r: r.start_bar)
    factors = [np.linalg.cholesky(r.covariance + np.eye(n) * 1e-18) for r in ordered]
    for k in range(n_bars):
        idx = (
            max(i for i, r in enumerate(ordered) if r.start_bar <= k)
            if k >= ordered[0].start_bar
            else 0
        )
        bar_return = ordered[idx].mean + factors[idx] @ rng.standard_normal(n)
        bar_start = start_ms + k * bar_ms
        batch: list[tuple[int, str, float]] = []
        for i, ticker in enumerate(tickers):
            times = np.sort(rng.integers(0, bar_ms, size=ticks_per_bar))
            # Random split of the bar's return into intra-bar steps that add up to it exactly.
            cuts = np.sort(rng.random(ticks_per_bar - 1))
            shares = np.diff(np.concatenate(([0.0], cuts, [1.0])))
            path = prices[i] * np.exp(np.cumsum(shares * bar_return[i]))
            path[-1] = prices[i] * np.exp(bar_return[i])
            for t, p in zip(times, path, strict=True):
                batch.append((bar_start + int(t), ticker, float(round(p, 6))))
            prices[i] = path[-1]
        batch.sort(key=lambda tick: tick[0])
        yield from batch
