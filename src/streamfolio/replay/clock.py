"""The replay's event-time bookkeeping: bars being filled, partitions and their progress.

:class:`Closes` keeps one bar's closes independent of how partitions interleave,
:class:`BarClock` the open bars and return chains of one bar size, :class:`Partition` what was
read from one partition of the prices topic. :func:`partition_ids` and :func:`wall_clock_ms`
give the engine its partitions and its default clock.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field

from streamfolio.core.returns import ReturnChain
from streamfolio.replay.records import ReplayError

DEFAULT_MAX_FUTURE_SKEW_MS = 300_000
"""How far beyond the wall clock an event time may be before its record is refused (5 min)."""


Rank = tuple[int, int, int]
"""A tick's place among equal event times: (event time, partition, offset or read position)."""


class Closes:
    """The closes of one bar: per ticker the tick of greatest (event time, partition, offset).

    Unlike :class:`~streamfolio.core.returns.BarCloses` (read order breaks ties) this ranks ticks
    of equal event time from different partitions by partition, so the close does not depend on
    how the partitions were interleaved.

    >>> bar = Closes()
    >>> bar.offer("A", (1_000, 1, 5), 10.0)
    >>> bar.offer("A", (1_000, 0, 9), 11.0)     # same time, lower partition: not the close
    >>> bar.offer("A", (1_000, 1, 6), 12.0)     # same time and partition, later offset: the close
    >>> bar.closes
    {'A': 12.0}
    """

    __slots__ = ("_latest",)

    def __init__(self) -> None:
        self._latest: dict[str, tuple[Rank, float]] = {}

    def offer(self, ticker: str, rank: Rank, price: float) -> None:
        current = self._latest.get(ticker)
        if current is None or rank >= current[0]:
            self._latest[ticker] = (rank, price)

    @property
    def closes(self) -> dict[str, float]:
        """Ticker → close, in ticker order (the order of arrival depends on the interleaving)."""
        return {ticker: self._latest[ticker][1] for ticker in sorted(self._latest)}


@dataclass(slots=True)
class BarClock:
    """Open bars of one bar size, and the return chains of its tickers."""

    bar_ms: int
    open_bars: dict[int, Closes] = field(default_factory=dict)
    chains: dict[str, ReturnChain] = field(default_factory=dict)


@dataclass(slots=True)
class Partition:
    """What the engine knows of one partition of the prices topic."""

    greatest: int | None = None  # greatest event time read (ticks and heartbeats), None: nothing
    read: int = 0  # records read: the read position when the caller gives no offsets


def wall_clock_ms() -> int:
    """Milliseconds since the epoch by the system clock: the default ``now_ms`` of the engine."""
    return time.time_ns() // 1_000_000


def partition_ids(partitions: int | Collection[int]) -> tuple[int, ...]:
    """The partition ids of a count (``range(n)``) or a collection of ids, sorted.

    >>> partition_ids(3), partition_ids({2, 0})
    ((0, 1, 2), (0, 2))
    """
    ids = (
        tuple(range(partitions)) if isinstance(partitions, int) else tuple(sorted(set(partitions)))
    )
    if not ids:
        raise ReplayError("the prices topic has at least one partition")
    if any(p < 0 for p in ids):
        raise ReplayError(f"partition ids are not negative: {list(ids)}")
    return ids
