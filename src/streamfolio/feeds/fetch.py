"""``streamfolio fetch-history``: daily closes and index levels from the exchange, for ``init``.

Writes the two files ``streamfolio init --history … --index …`` reads, in the layout of the
bundled ones (``time,ticker,price,volume``, the session close in the exchange's zone).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamfolio.feeds.cse.client import CseClient
from streamfolio.feeds.cse.history import DailyBar
from streamfolio.feeds.cse.history_csv import write_history_csv


@dataclass(frozen=True, slots=True)
class FetchedHistory:
    history_rows: int
    index_rows: int
    per_ticker: dict[str, int]


def fetch_history(
    client: CseClient,
    tickers: Sequence[str],
    history_out: Path,
    index_out: Path | None,
    *,
    start: dt.date | None = None,
    index_code: str = "MASI",
    progress: Callable[[str], None] = lambda _: None,
) -> FetchedHistory:
    """Fetch each ticker's daily bars (and the index) and write them as history files."""
    bars: list[DailyBar] = []
    per_ticker: dict[str, int] = {}
    for ticker in tickers:
        got = client.stock_history(ticker, start=start)
        per_ticker[ticker] = len(got)
        bars.extend(got)
        progress(f"{ticker}: {len(got)} sessions")
    # The history reader wants rows in time order, and tickers in a stable order within a time.
    bars.sort(key=lambda b: (b.session, b.ticker))
    history_rows = write_history_csv(bars, history_out, calendar=client.calendar)
    index_rows = 0
    if index_out is not None:
        levels = client.index_history(index_code, "3y")
        index_rows = write_history_csv(levels, index_out, calendar=client.calendar)
        progress(f"{index_code}: {index_rows} sessions")
    return FetchedHistory(history_rows, index_rows, per_ticker)
