"""The backtest's data: ticks read once, split in time, and the closes a strategy trades at.

The split is the no-look-ahead boundary. Everything stamped before ``start_ms`` may inform the
initial state (statistics and weights, as ``streamfolio init`` computes them); the engine and the
accounting see only each ticker's last close before the start (to chain the first return, and
to value the first holdings) and the ticks from the start on.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from streamfolio.core.returns import bar_index
from streamfolio.core.types import FloatArray
from streamfolio.errors import DataError
from streamfolio.feeds.history import read_history
from streamfolio.replay import Tick

__all__ = [
    "ClosePanel",
    "IntArray",
    "close_panel",
    "read_ticks",
    "split_start_ms",
    "ticks_from_start",
    "write_rows",
]

IntArray: TypeAlias = npt.NDArray[np.int64]
"""Bar indices and epoch milliseconds."""


def read_ticks(path: Path, known: set[str] | None = None) -> list[Tick]:
    """The rows of a tick or close file (``time,ticker,price[,volume]``), in event-time order.

    The sort is stable, so ticks of equal time keep the file's order (the later one is the
    close, as in the engine).
    """
    history = read_history(path, known_tickers=known, ticks=True)
    ticks = [
        Tick(int(t), str(s), float(p))
        for t, s, p in zip(history.times_ms, history.tickers, history.prices, strict=True)
    ]
    ticks.sort(key=lambda tick: tick.event_time_ms)
    return ticks


def split_start_ms(
    ticks: Sequence[Tick], *, start: dt.date | None, split: float, timezone: str
) -> int:
    """The backtest's first instant: midnight of ``start`` in ``timezone``, or else the day
    that leaves the fraction ``split`` of the file's trading days before it.

    >>> day = 86_400_000
    >>> ticks = [Tick(d * day + 50_000_000, "A", 1.0) for d in range(10)]
    >>> split_start_ms(ticks, start=None, split=0.3, timezone="UTC") // day
    3
    >>> split_start_ms(ticks, start=dt.date(1970, 1, 6), split=0.3, timezone="UTC") // day
    5
    """
    zone = ZoneInfo(timezone)
    if start is not None:
        midnight = dt.datetime.combine(start, dt.time(0, 0), tzinfo=zone)
        return int(midnight.timestamp() * 1000)
    if not 0.0 < split < 1.0:
        raise DataError(f"--split {split} must be strictly between 0 and 1")
    days = sorted({_local_date(t.event_time_ms, zone) for t in ticks})
    if len(days) < 4:
        raise DataError(f"the prices hold {len(days)} trading days; a backtest needs more")
    first = days[min(max(int(len(days) * split), 1), len(days) - 1)]
    midnight = dt.datetime.combine(first, dt.time(0, 0), tzinfo=zone)
    return int(midnight.timestamp() * 1000)


def _local_date(time_ms: int, zone: ZoneInfo) -> dt.date:
    return dt.datetime.fromtimestamp(time_ms / 1000, tz=zone).date()


def ticks_from_start(ticks: Sequence[Tick], start_ms: int, tickers: set[str]) -> list[Tick]:
    """Each of ``tickers``' last tick before ``start_ms``, then every tick from it on."""
    last_before: dict[str, Tick] = {}
    after: list[Tick] = []
    for tick in ticks:
        if tick.ticker not in tickers:
            continue
        if tick.event_time_ms < start_ms:
            last_before[tick.ticker] = tick
        else:
            after.append(tick)
    before = sorted(last_before.values(), key=lambda t: t.event_time_ms)
    return [*before, *after]


def write_rows(ticks: Sequence[Tick], path: Path) -> int:
    """Write ticks as a history file (``time,ticker,price``) that ``read_history`` reads back."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "ticker", "price"])
        for tick in ticks:
            stamp = dt.datetime.fromtimestamp(tick.event_time_ms / 1000, tz=dt.UTC)
            writer.writerow(
                [stamp.isoformat(timespec="milliseconds"), tick.ticker, repr(tick.price)]
            )
    return len(ticks)


@dataclass(frozen=True, slots=True)
class ClosePanel:
    """Closes of a portfolio's tickers at every bar where one of them traded, forward-filled.

    Row 0 is the last bar before the backtest's start (the holdings are bought at its close).
    """

    tickers: tuple[str, ...]
    bars: IntArray
    """Bar index ``k`` of each row (``[k·bar_ms, (k+1)·bar_ms)``)."""
    bar_ms: int
    closes: FloatArray

    @property
    def times_ms(self) -> IntArray:
        """Each row's bar end, the time the engine stamps that bar's decisions with."""
        ends: IntArray = (self.bars + 1) * self.bar_ms
        return ends

    def row_of_bar(self) -> dict[int, int]:
        """Bar index → row."""
        return {int(k): i for i, k in enumerate(self.bars)}


def close_panel(ticks: Sequence[Tick], tickers: Sequence[str], bar_ms: int) -> ClosePanel:
    """The closes of ``tickers`` per bar (the last tick in event time, ties: the later one),
    forward-filled; rows before every ticker has a close are dropped.

    >>> ticks = [Tick(0, "A", 10), Tick(500, "B", 5), Tick(1_500, "A", 11), Tick(2_100, "A", 12)]
    >>> panel = close_panel(ticks, ["A", "B"], 1_000)
    >>> panel.bars.tolist(), panel.closes.tolist()
    ([0, 1, 2], [[10.0, 5.0], [11.0, 5.0], [12.0, 5.0]])
    """
    column = {t: j for j, t in enumerate(tickers)}
    rows: dict[int, dict[int, float]] = {}
    for tick in sorted(ticks, key=lambda t: t.event_time_ms):
        j = column.get(tick.ticker)
        if j is not None:
            rows.setdefault(bar_index(tick.event_time_ms, bar_ms), {})[j] = tick.price
    bars = sorted(rows)
    closes = np.full((len(bars), len(tickers)), np.nan)
    current = np.full(len(tickers), np.nan)
    for i, k in enumerate(bars):
        for j, price in rows[k].items():
            current[j] = price
        closes[i] = current
    complete = np.flatnonzero(np.all(np.isfinite(closes), axis=1))
    if complete.size < 2:
        raise DataError(
            f"fewer than two bars with a close for every one of {', '.join(tickers)} "
            "from the backtest's start"
        )
    first = int(complete[0])
    return ClosePanel(
        tuple(tickers), np.asarray(bars[first:], dtype=np.int64), bar_ms, closes[first:]
    )
