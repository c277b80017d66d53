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
from streamfolio.errors import UsageError


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


# -- the continuous tick simulator (feed --source sim) ----------------------------------------

SIM_DAY_SECONDS = 86_400
"""Simulated time runs continuously and every simulated day is one trading day, so a daily
statistic spreads over 86,400 simulated seconds and a weekly one over five such days."""
SIM_WEEK_SECONDS = 5 * SIM_DAY_SECONDS


@dataclass(frozen=True, slots=True)
class Calibration:
    """Mean and covariance of log returns **per second**, and starting prices, per ticker."""

    tickers: tuple[str, ...]
    mean_per_second: FloatArray
    covariance_per_second: FloatArray
    start_prices: FloatArray


def daily_calibration(
    tickers: Sequence[str],
    daily_covariance: ArrayLike,
    *,
    annual_drift: float,
    trading_days_per_year: float,
    start_prices: Sequence[float],
) -> Calibration:
    """Calibrate from the covariance of daily log returns (e.g. the bundled CSE history).

    >>> c = daily_calibration(["A"], [[4e-4]], annual_drift=0.25, trading_days_per_year=250,
    ...                       start_prices=[100.0])
    >>> round(float(c.covariance_per_second[0, 0]) * SIM_DAY_SECONDS, 6)
    0.0004
    >>> round(float(c.mean_per_second[0]) * SIM_DAY_SECONDS * 250, 6)
    0.25
    """
    cov = np.asarray(daily_covariance, dtype=np.float64) / SIM_DAY_SECONDS
    mean = np.full(len(tickers), annual_drift / (trading_days_per_year * SIM_DAY_SECONDS))
    return Calibration(tuple(tickers), mean, cov, np.asarray(start_prices, dtype=np.float64))


def reference_calibration(
    covariance_by_ticker: dict[str, dict[str, float]],
    *,
    annual_drift: float = 0.0,
    start_prices: dict[str, float] | None = None,
    weeks_per_year: float = 52.0,
) -> Calibration:
    """Calibrate from the reference project's weekly log10 covariance (``covariance.json``).

    Log10 variances become natural-log ones with a factor ``(ln 10)²``; weekly becomes per
    simulated second over five simulated days. The drift is an annual log return for every ticker.

    >>> c = reference_calibration({"A": {"A": 1e-4}}, annual_drift=0.0)
    >>> float(c.covariance_per_second[0, 0] * SIM_WEEK_SECONDS / 1e-4)  # (ln 10)^2
    5.301898110478399
    """
    tickers = tuple(covariance_by_ticker)
    cov = np.array([[covariance_by_ticker[a][b] for b in tickers] for a in tickers])
    cov = cov * np.log(10.0) ** 2 / SIM_WEEK_SECONDS
    seconds_per_year = weeks_per_year * SIM_WEEK_SECONDS
    mean = np.full(len(tickers), annual_drift / seconds_per_year)
    prices = np.array([(start_prices or {}).get(t, 100.0) for t in tickers], dtype=np.float64)
    return Calibration(tickers, mean, cov, prices)


@dataclass(frozen=True, slots=True)
class Disorder:
    """Out-of-order and late ticks, for testing event-time handling.

    A share ``out_of_order`` of ticks is stamped up to ``bound_ms`` earlier than its place in
    the stream (within the watermark bound: never late); a share ``late`` is stamped
    ``late_by_ms`` earlier (beyond the bound: late once its bar is final).
    """

    out_of_order: float = 0.0
    bound_ms: int = 0
    late: float = 0.0
    late_by_ms: int = 0


class TickSimulator:
    """A seeded stream of correlated ticks in event time, generated in vectorised blocks.

    The latent log prices follow a Brownian motion with the calibration's per-second mean and
    covariance; ticks visit the tickers round-robin, ``rate`` ticks per second of event time.
    ``regimes`` maps an event-time offset (seconds from the start) to a new per-second mean,
    which is how the demo pushes a Sharpe ratio below its threshold.

    >>> import numpy as np
    >>> c = Calibration(("A", "B"), np.zeros(2), np.eye(2) * 1e-8, np.array([10.0, 20.0]))
    >>> sim = TickSimulator(c, rate=4.0, start_ms=0, seed=1)
    >>> [(t, s) for t, s, _ in sim.take(4)]
    [(0, 'A'), (250, 'B'), (500, 'A'), (750, 'B')]
    >>> sim2 = TickSimulator(c, rate=4.0, start_ms=0, seed=1)
    >>> [p for *_, p in sim2.take(4)] == [p for *_, p in TickSimulator(c, 4.0, 0, seed=1).take(4)]
    True
    """

    def __init__(
        self,
        calibration: Calibration,
        rate: float,
        start_ms: int,
        *,
        seed: int = 0,
        regimes: dict[float, FloatArray] | None = None,
        disorder: Disorder | None = None,
        block: int = 8192,
    ) -> None:
        if rate <= 0:
            raise UsageError(f"rate must be positive, got {rate}")
        self.calibration = calibration
        self.rate = float(rate)
        self.start_ms = int(start_ms)
        self._rng = np.random.default_rng(seed)
        n = len(calibration.tickers)
        self._factor = np.linalg.cholesky(calibration.covariance_per_second + np.eye(n) * 1e-30)
        self._log_prices = np.log(calibration.start_prices).astype(np.float64)
        self._regimes = sorted((regimes or {}).items())
        self._disorder = disorder or Disorder()
        self._block = block
        self._emitted = 0

    @property
    def emitted(self) -> int:
        return self._emitted

    def nominal_time(self, index: int) -> int:
        """Event time of the ``index``-th tick (from 0) before any :class:`Disorder` shift.

        The same arithmetic as :meth:`blocks`, so it agrees with the ticks to the millisecond.

        >>> import numpy as np
        >>> c = Calibration(("A",), np.zeros(1), np.eye(1) * 1e-8, np.array([10.0]))
        >>> TickSimulator(c, rate=3.0, start_ms=1000).nominal_time(2)
        1666
        """
        dt = 1.0 / self.rate
        return self.start_ms + int(np.floor(np.int64(index) * dt * 1000.0))

    def earliest_from(self, index: int) -> int:
        """A lower bound on the event time of tick ``index`` and of every tick after it.

        Nominal times never decrease; a :class:`Disorder` stamps a tick at most ``bound_ms``
        (out of order) plus ``late_by_ms`` (late) earlier. A feed's heartbeats promise this.

        >>> import numpy as np
        >>> c = Calibration(("A",), np.zeros(1), np.eye(1) * 1e-8, np.array([10.0]))
        >>> sim = TickSimulator(c, 4.0, 0, disorder=Disorder(0.1, 300, 0.01, 5000))
        >>> sim.nominal_time(40), sim.earliest_from(40)
        (10000, 4700)
        """
        d = self._disorder
        slack = d.bound_ms if d.out_of_order > 0 else 0
        slack += d.late_by_ms if d.late > 0 else 0
        return self.nominal_time(index) - max(0, slack)

    def _means(self, seconds: FloatArray) -> FloatArray:
        """Per-second means for each step (columns), switching regime at its start time."""
        means = np.repeat(self.calibration.mean_per_second[:, None], len(seconds), axis=1)
        for start, regime_mean in self._regimes:
            means[:, seconds >= start] = regime_mean[:, None]
        return means

    def blocks(self) -> Iterator[list[tuple[int, str, float]]]:
        """Endless blocks of ticks, each in stream order."""
        tickers = self.calibration.tickers
        n = len(tickers)
        dt = 1.0 / self.rate
        while True:
            b = self._block
            index = np.arange(self._emitted, self._emitted + b)
            times = self.start_ms + np.floor(index * dt * 1000.0).astype(np.int64)
            which = index % n
            drift = self._means(index * dt) * dt
            # Only the ticked asset's latent price is observed, but all of them move each step.
            noise = self._factor @ self._rng.standard_normal((n, b))
            steps = noise * np.sqrt(dt) + drift
            paths = self._log_prices[:, None] + np.cumsum(steps, axis=1)
            self._log_prices = paths[:, -1].copy()
            prices = np.exp(paths[which, np.arange(b)])
            stamps = times.copy()
            d = self._disorder
            if d.out_of_order > 0 and d.bound_ms > 0:
                shifted = self._rng.random(b) < d.out_of_order
                stamps[shifted] -= self._rng.integers(0, d.bound_ms, size=int(shifted.sum()))
            if d.late > 0 and d.late_by_ms > 0:
                late = self._rng.random(b) < d.late
                stamps[late] -= d.late_by_ms
            self._emitted += b
            yield [
                (int(t), tickers[i], float(p))
                for t, i, p in zip(
                    stamps.tolist(), which.tolist(), np.round(prices, 4).tolist(), strict=True
                )
            ]

    def take(self, count: int) -> list[tuple[int, str, float]]:
        """The first ``count`` ticks of a fresh simulator (for tests and bounded runs).

        The rest of the last block is dropped, so call it once; streams use :meth:`blocks`.
        """
        out: list[tuple[int, str, float]] = []
        for block in self.blocks():
            out.extend(block)
            if len(out) >= count:
                break
        return out[:count]


def crash_regime(
    calibration: Calibration, crashed: Sequence[str], annual_drift: float
) -> FloatArray:
    """Per-second means where ``crashed`` tickers drift at ``annual_drift`` and others keep theirs.

    >>> import numpy as np
    >>> c = Calibration(("A", "B"), np.array([1.0, 1.0]), np.eye(2), np.ones(2))
    >>> crash_regime(c, ["B"], -0.5 * 246 * SIM_DAY_SECONDS).tolist()
    [1.0, -0.5]
    """
    mean = calibration.mean_per_second.copy()
    per_second = annual_drift / (246 * SIM_DAY_SECONDS)
    for i, ticker in enumerate(calibration.tickers):
        if ticker in crashed:
            mean[i] = per_second
    return mean
