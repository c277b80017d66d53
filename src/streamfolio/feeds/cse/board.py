"""What one read of the live board gives: quotes, rejected rows, and the snapshot holding them.

A :class:`CseQuote` is one instrument with a valid price and event time; it becomes a
:class:`~streamfolio.messages.PriceTick`. A :class:`Reject` is a row that cannot, kept as JSON
bytes to dead-letter. Both board generations (:mod:`~streamfolio.feeds.cse.board_gen2`,
:mod:`~streamfolio.feeds.cse.board_gen1`) return a :class:`BoardSnapshot` of them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from streamfolio.feeds.cse.endpoints import Api
from streamfolio.feeds.cse.parsing import row_bytes
from streamfolio.messages import DeadLetter, PriceTick, price_tick_from_bourse


@dataclass(frozen=True, slots=True)
class Reject:
    """A board row that cannot become a tick: why, which ticker, and the row as JSON bytes.

    ``reason`` is ``missing_field``, ``bad_price``, ``bad_time`` or ``bad_row``.

    >>> Reject("bad_price", "price '0' is not positive", "ATW", b"{}").to_dead_letter(0).reason
    'bad_price'
    """

    reason: str
    detail: str
    ticker: str | None
    payload: bytes
    url: str = ""

    def to_dead_letter(
        self, timestamp: int, *, component: str = "feeds.cse", source_topic: str = ""
    ) -> DeadLetter:
        """The dead letter for this row; ``timestamp`` is when it was rejected (epoch ms)."""
        where = f" ({self.url})" if self.url else ""
        return DeadLetter(
            self.reason,
            f"{self.ticker or '?'}: {self.detail}{where}",
            source_topic,
            self.payload,
            timestamp,
            component,
            key=self.ticker.encode() if self.ticker else None,
        )


@dataclass(frozen=True, slots=True)
class CseQuote:
    """One instrument on the live board, with a valid price and event time.

    ``event_time`` is epoch ms UTC: the last traded time (Gen 1) or the board's clock (Gen 2,
    which has no trade time; ``last_trade_time`` is then None). ``traded`` is False when the stock
    has not traded in the current session (its price is then the previous close, not a trade).
    Cumulative fields are for the session: shares, value in MAD, number of trades. ``bourse`` is
    the Gen 1 quote as a reference ``BourseData`` record (28 strings).
    """

    ticker: str
    price: float
    event_time: int
    session_date: dt.date
    api: Api
    traded: bool = True
    last_trade_time: int | None = None
    cum_shares: float | None = None
    cum_value: float | None = None
    cum_trades: float | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    reference: float | None = None
    bid: float | None = None
    ask: float | None = None
    bourse: Mapping[str, str] | None = field(default=None, compare=False, repr=False)

    @property
    def trade_key(self) -> tuple[object, ...]:
        """What identifies the last trade: equal keys on two polls mean no new trade.

        With a trade time, (time, price); without one (Gen 2), (price, trades, shares), since
        the board's clock moves on every poll whether or not anything traded.
        """
        if self.last_trade_time is not None:
            return ("time", self.last_trade_time, self.price)
        return ("cumulative", self.price, self.cum_trades, self.cum_shares)

    def to_price_tick(self, *, volume: float | None = None, source: str = "cse") -> PriceTick:
        """The :class:`~streamfolio.messages.PriceTick` of this quote.

        A Gen 1 quote goes through :func:`~streamfolio.messages.price_tick_from_bourse`, as the
        reference's records do. ``volume`` is the shares traded since the previous tick, if known.
        """
        if self.bourse is not None:
            tick = price_tick_from_bourse(self.bourse, source=source)
            return tick if volume is None else replace(tick, volume=float(volume))
        return PriceTick(
            self.ticker,
            self.price,
            self.event_time,
            None if volume is None else float(volume),
            source,
            None,
        )


@dataclass(frozen=True, slots=True)
class BoardSnapshot:
    """One read of the live board: valid quotes, rejected rows, and the session as reported."""

    url: str
    api: Api
    quotes: tuple[CseQuote, ...] = ()
    rejects: tuple[Reject, ...] = ()
    session_status: str | None = None
    board_time: int | None = None


def duplicate_reject(ticker: str, row: Mapping[str, Any], url: str) -> Reject:
    """A later row of a ticker already on the board: which of two prices is the trade is
    unknowable, so only the first row counts (whatever became of it) and the others are rejects."""
    detail = f"duplicate row: {ticker} is listed earlier on the board"
    return Reject("bad_row", detail, ticker, row_bytes(row), url)
