"""Bars and log returns, as ``SEMANTICS.md`` §2–§4 define them.

A bar is a tumbling event-time window of ``bar_ms`` milliseconds aligned to the Unix epoch. The
close of a ticker in a bar is its tick with the greatest event time (ties: the one offered last).
Returns chain close to close: ``r = ln(close / previous close)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from streamfolio.core.types import ArrayLike, FloatArray


def bar_index(event_time_ms: int, bar_ms: int) -> int:
    """Index k of the bar ``[k·bar_ms, (k+1)·bar_ms)`` holding ``event_time_ms``.

    >>> bar_index(59_999, 60_000), bar_index(60_000, 60_000), bar_index(-1, 60_000)
    (0, 1, -1)
    """
    return event_time_ms // bar_ms


def bar_end_ms(index: int, bar_ms: int) -> int:
    """End (exclusive) of bar ``index``, in epoch milliseconds; stamps the bar's statistics.

    >>> bar_end_ms(3, 60_000)
    240000
    """
    return (index + 1) * bar_ms


def log_return(previous_close: float, close: float) -> float:
    """``ln(close / previous_close)``.

    >>> round(log_return(100.0, 110.0), 6)
    0.09531
    """
    return math.log(close / previous_close)


def log_returns(closes: ArrayLike) -> FloatArray:
    """Log returns of consecutive closes along the first axis (one row fewer).

    >>> log_returns([100.0, 110.0, 99.0]).round(4).tolist()
    [0.0953, -0.1054]
    """
    prices = np.asarray(closes, dtype=np.float64)
    result: FloatArray = np.diff(np.log(prices), axis=0)
    return result


class BarCloses:
    """The closes of one bar, built tick by tick.

    A later offer with an equal event time wins, matching "among ticks with equal event time,
    the one read last".

    >>> bar = BarCloses()
    >>> bar.offer("ATW", 1_000, 500.0)
    >>> bar.offer("ATW", 900, 499.0)      # earlier in event time: not the close
    >>> bar.offer("ATW", 1_000, 501.0)    # same time, read later: the close
    >>> bar.closes
    {'ATW': 501.0}
    """

    __slots__ = ("_latest",)

    def __init__(self) -> None:
        self._latest: dict[str, tuple[int, float]] = {}

    def offer(self, ticker: str, event_time_ms: int, price: float) -> None:
        current = self._latest.get(ticker)
        if current is None or event_time_ms >= current[0]:
            self._latest[ticker] = (event_time_ms, price)

    @property
    def closes(self) -> dict[str, float]:
        """Ticker → close price, in the order tickers first appeared."""
        return {ticker: price for ticker, (_, price) in self._latest.items()}

    def __len__(self) -> int:
        return len(self._latest)


class ReturnChain:
    """Chains one ticker's closes into log returns; the first close yields none.

    >>> chain = ReturnChain()
    >>> chain.update(100.0) is None
    True
    >>> round(chain.update(105.0), 6)
    0.04879
    >>> chain.last_close
    105.0
    """

    __slots__ = ("_last_close",)

    def __init__(self, last_close: float | None = None) -> None:
        self._last_close = last_close

    @property
    def last_close(self) -> float | None:
        return self._last_close

    def update(self, close: float) -> float | None:
        previous, self._last_close = self._last_close, close
        return None if previous is None else log_return(previous, close)


@dataclass(frozen=True, slots=True)
class BarReturns:
    """What one bar brought for a set of tickers: their closes and, where chained, returns."""

    index: int
    closes: Mapping[str, float]
    returns: Mapping[str, float]


def chain_bar(
    chains: dict[str, ReturnChain], index: int, closes: Mapping[str, float]
) -> BarReturns:
    """Advance each ticker's chain with its close in bar ``index``; new tickers start a chain."""
    returns: dict[str, float] = {}
    for ticker, close in closes.items():
        chain = chains.setdefault(ticker, ReturnChain())
        value = chain.update(close)
        if value is not None:
            returns[ticker] = value
    return BarReturns(index=index, closes=dict(closes), returns=returns)


class PortfolioReturns:
    """Assembles a portfolio's return vectors from per-ticker bar returns (SEMANTICS §4).

    Warm-up lasts up to and including the bar in which the last ticker has its first close;
    afterwards each bar with at least one return gives a vector, 0 for tickers that did not trade.

    >>> pr = PortfolioReturns(["A", "B"])
    >>> pr.on_bar(BarReturns(0, {"A": 10.0}, {})) is None
    True
    >>> pr.on_bar(BarReturns(1, {"A": 11.0, "B": 5.0}, {"A": 0.1})) is None   # B's first close
    True
    >>> pr.warmed_up
    True
    >>> pr.on_bar(BarReturns(2, {"B": 5.5}, {"B": 0.2})).tolist()
    [0.0, 0.2]
    """

    __slots__ = ("_index", "_seen", "tickers", "warmed_up")

    def __init__(self, tickers: Sequence[str], *, seen: Iterable[str] = ()) -> None:
        self.tickers: tuple[str, ...] = tuple(tickers)
        self._index = {ticker: i for i, ticker in enumerate(self.tickers)}
        self._seen: set[str] = {t for t in seen if t in self._index}
        self.warmed_up = len(self._seen) == len(self.tickers)

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """Tickers that have not had a close yet."""
        return tuple(t for t in self.tickers if t not in self._seen)

    def on_bar(self, bar: BarReturns) -> FloatArray | None:
        if not self.warmed_up:
            self._seen.update(t for t in bar.closes if t in self._index)
            self.warmed_up = len(self._seen) == len(self.tickers)
            return None
        vector = np.zeros(len(self.tickers))
        traded = False
        for ticker, value in bar.returns.items():
            i = self._index.get(ticker)
            if i is not None:
                vector[i] = value
                traded = True
        return vector if traded else None


def iter_bars(
    ticks: Iterable[tuple[int, str, float]], bar_ms: int
) -> Iterable[tuple[int, dict[str, float]]]:
    """Group time-ordered ``(event_time_ms, ticker, price)`` ticks into ``(bar index, closes)``.

    Only for ticks already in event-time order; the replay engine handles disorder and lateness.

    >>> list(iter_bars([(0, "A", 1.0), (10, "A", 2.0), (60_000, "A", 3.0)], 60_000))
    [(0, {'A': 2.0}), (1, {'A': 3.0})]
    """
    current: int | None = None
    bar = BarCloses()
    for event_time_ms, ticker, price in ticks:
        k = bar_index(event_time_ms, bar_ms)
        if current is not None and k != current:
            yield current, bar.closes
            bar = BarCloses()
        current = k
        bar.offer(ticker, event_time_ms, price)
    if current is not None and len(bar):
        yield current, bar.closes
