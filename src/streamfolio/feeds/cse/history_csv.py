"""History files for ``streamfolio init``: daily bars written as ``time,ticker,price,volume``.

The layout :func:`streamfolio.feeds.history.read_history` reads, as the bundled ``history.csv``
uses; ``streamfolio fetch-history`` (:mod:`streamfolio.feeds.fetch`) writes it with
:func:`write_history_csv`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from streamfolio.core.calendar import CSE, ExchangeCalendar, session_bounds
from streamfolio.feeds.cse.history import DailyBar, IndexBar
from streamfolio.feeds.cse.parsing import EPOCH, ONE_MS


def write_history_csv(
    bars: Iterable[DailyBar | IndexBar],
    path: str | Path,
    *,
    calendar: ExchangeCalendar = CSE,
) -> int:
    """Write bars as a history file ``time,ticker,price,volume``; return the number of rows.

    This is the layout :func:`streamfolio.feeds.history.read_history` reads (and the bundled
    ``history.csv`` uses): ``time`` is the session's close in the exchange's zone with its UTC
    offset, ``price`` the close, ``volume`` the shares traded (empty for an index). Sessions
    without a trade are left out: their "close" is the previous close, not a trade.
    """
    # (epoch ms, ticker) first, so that rows sort by time and then ticker, as read_history wants.
    rows: list[tuple[int, str, str, str, str]] = []
    for bar in bars:
        if isinstance(bar, DailyBar):
            if not bar.traded:
                continue
            name, volume = bar.ticker, "" if bar.volume is None else _plain(bar.volume)
        else:
            name, volume = bar.code, ""
        close = session_bounds(bar.session, calendar)[1]
        epoch_ms = (close - EPOCH) // ONE_MS
        rows.append((epoch_ms, name, close.isoformat(), repr(float(bar.close)), volume))
    rows.sort()
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["time", "ticker", "price", "volume"])
        for _, name, when, price, volume in rows:
            writer.writerow([when, name, price, volume])
    return len(rows)


def _plain(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)
