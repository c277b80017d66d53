"""The live-board poller: new trades as ticks, during the exchange's sessions.

:class:`CsePoller` polls :meth:`CseClient.live_board
<streamfolio.feeds.cse.client.CseClient.live_board>` every ``interval_s`` (only from a session's
open to shortly after its close, unless told otherwise), keeps per ticker the last trade it
emitted, and yields a :class:`~streamfolio.messages.PriceTick` for each new one and a
:class:`~streamfolio.feeds.cse.board.Reject` for each bad row.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from streamfolio.core.calendar import (
    CSE,
    ExchangeCalendar,
    is_trading_day,
    next_session_open,
    session_bounds,
)
from streamfolio.errors import UsageError
from streamfolio.feeds.cse.board import BoardSnapshot, CseQuote, Reject
from streamfolio.feeds.cse.client import CseClient
from streamfolio.feeds.cse.errors import CseSourceError
from streamfolio.feeds.cse.parsing import local_date
from streamfolio.messages import PriceTick
from streamfolio.observability.metrics import FEED_POLL_ERRORS, FEED_POLL_SECONDS

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll produced: new ticks and rejected rows (to dead-letter)."""

    ticks: tuple[PriceTick, ...]
    rejects: tuple[Reject, ...]
    snapshot: BoardSnapshot | None = None


@dataclass(slots=True)
class _Seen:
    """Per ticker: the last emitted trade and the last cumulative figures seen."""

    key: tuple[object, ...]
    session_date: dt.date
    emitted_shares: float | None
    cumulative: tuple[float | None, float | None, float | None]


class CsePoller:
    """Poll the live board on a schedule and yield new trades as ticks, bad rows as rejects.

    Iterating yields :class:`~streamfolio.messages.PriceTick` (source ``source``) and
    :class:`Reject` values. With ``market_hours_only`` it polls only from a session's open to
    ``close_grace_s`` after its close (the closing call prints then), on the calendar's trading
    days, and otherwise sleeps until the next open, saying so in the log. Polls start every
    ``interval_s`` seconds (a slow poll delays the next one, it does not pile them up).

    A quote is a new tick only if its trade differs from the last one emitted for the ticker
    (:attr:`CseQuote.trade_key`); quotes of stocks that have not traded in the session are not
    ticks. A tick's ``volume`` is the shares traded since the previous tick of the same session,
    from the cumulative count. A cumulative figure (shares, value, trades) that goes down is
    logged: a new session if the date moved on, otherwise a bad or corrected response.

    A failed poll is logged and the poller carries on; errors that retrying cannot fix (TLS, a
    changed layout, HTTP 4xx) are raised, and so is the ``max_consecutive_failures``-th failure
    in a row if that is set. ``max_polls`` stops the iteration after that many polls.

    ``clock`` returns epoch seconds (``time.time``) and ``sleep`` waits (``time.sleep``); tests
    pass a fake pair. The clock only schedules polls: event times come from the exchange.
    ``tickers`` limits the ticks and rejects to those symbols (None: every listed share).
    """

    def __init__(
        self,
        client: CseClient,
        tickers: Iterable[str] | None = None,
        interval_s: float = 2.0,
        calendar: ExchangeCalendar = CSE,
        market_hours_only: bool = True,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        *,
        close_grace_s: float = 120.0,
        max_polls: int | None = None,
        max_consecutive_failures: int | None = None,
        source: str = "cse",
    ) -> None:
        if not interval_s > 0 or close_grace_s < 0:
            raise UsageError("interval_s must be > 0 and close_grace_s >= 0")
        self.client = client
        self.tickers = None if tickers is None else frozenset(t.strip().upper() for t in tickers)
        self.interval_s = interval_s
        self.calendar = calendar
        self.market_hours_only = market_hours_only
        self.close_grace_s = close_grace_s
        self.max_polls = max_polls
        self.max_consecutive_failures = max_consecutive_failures
        self.source = source
        self._clock = clock
        self._sleep = sleep
        self._seen: dict[str, _Seen] = {}
        self._closed_board_logged: dt.date | None = None

    # -- one poll --------------------------------------------------------------------------

    def poll_once(self) -> PollResult:
        """Read the board once and return what is new (no scheduling, no sleeping)."""
        return self.process(self.client.live_board())

    def process(self, snapshot: BoardSnapshot) -> PollResult:
        """The new ticks and the rejects of ``snapshot``, updating the de-duplication state."""
        wanted = self.tickers
        rejects = tuple(
            r for r in snapshot.rejects if wanted is None or r.ticker is None or r.ticker in wanted
        )
        if snapshot.session_status and snapshot.session_status.lower() not in ("open", "ouverte"):
            self._log_closed_board(snapshot)
        ticks: list[PriceTick] = []
        for quote in snapshot.quotes:
            if (wanted is not None and quote.ticker not in wanted) or not quote.traded:
                continue
            cumulative = (quote.cum_shares, quote.cum_value, quote.cum_trades)
            seen = self._seen.get(quote.ticker)
            if seen is not None:
                self._check_cumulative(quote, seen, cumulative)
                seen.cumulative = cumulative
                if seen.key == quote.trade_key:
                    continue
            volume = None
            if (
                seen is not None
                and seen.session_date == quote.session_date
                and seen.emitted_shares is not None
                and quote.cum_shares is not None
                and quote.cum_shares >= seen.emitted_shares
            ):
                volume = quote.cum_shares - seen.emitted_shares
            ticks.append(quote.to_price_tick(volume=volume, source=self.source))
            self._seen[quote.ticker] = _Seen(
                quote.trade_key, quote.session_date, quote.cum_shares, cumulative
            )
        return PollResult(tuple(ticks), rejects, snapshot)

    def _check_cumulative(
        self,
        quote: CseQuote,
        seen: _Seen,
        cumulative: tuple[float | None, float | None, float | None],
    ) -> None:
        names = ("shares", "value", "trades")
        fell = [
            f"{name} {before:g} -> {after:g}"
            for name, before, after in zip(names, seen.cumulative, cumulative, strict=True)
            if before is not None and after is not None and after < before
        ]
        if not fell:
            return
        if quote.session_date != seen.session_date:
            logger.info(
                "%s: cumulative %s: new session %s",
                quote.ticker,
                ", ".join(fell),
                quote.session_date,
            )
        else:
            logger.warning(
                "%s: cumulative %s within session %s: a bad or corrected response",
                quote.ticker,
                ", ".join(fell),
                quote.session_date,
            )

    def _log_closed_board(self, snapshot: BoardSnapshot) -> None:
        day = (
            local_date(snapshot.board_time, self.calendar.zone)
            if snapshot.board_time is not None
            else None
        )
        if self._closed_board_logged != day or day is None:
            self._closed_board_logged = day
            logger.info(
                "the board reports session status %r (%s): its prices may be the last session's",
                snapshot.session_status,
                day,
            )

    # -- schedule --------------------------------------------------------------------------

    def seconds_until_polling(self, now: float) -> float:
        """0 inside the polling window (open to close + grace on a trading day), else the wait
        until the next session opens, in seconds; ``now`` is epoch seconds."""
        local = dt.datetime.fromtimestamp(now, self.calendar.zone)
        day = local.date()
        if is_trading_day(day, self.calendar):
            opening, closing = session_bounds(day, self.calendar)
            if opening <= local < closing + dt.timedelta(seconds=self.close_grace_s):
                return 0.0
        return max(0.0, next_session_open(local, self.calendar).timestamp() - now)

    def __iter__(self) -> Iterator[PriceTick | Reject]:
        polls = failures = 0
        while self.max_polls is None or polls < self.max_polls:
            now = self._clock()
            if self.market_hours_only:
                wait = self.seconds_until_polling(now)
                if wait > 0:
                    local = dt.datetime.fromtimestamp(now, self.calendar.zone)
                    opens = dt.datetime.fromtimestamp(now + wait, self.calendar.zone)
                    logger.info(
                        "%s closed at %s; sleeping %.0f s until the next session opens at %s",
                        self.calendar.name,
                        local.isoformat(timespec="seconds"),
                        wait,
                        opens.isoformat(timespec="seconds"),
                    )
                    self._sleep(wait)
                    continue
            polls += 1
            try:
                with FEED_POLL_SECONDS.time():
                    result = self.poll_once()
            except CseSourceError as exc:
                FEED_POLL_ERRORS.labels(exc.kind).inc()
                failures += 1
                if exc.permanent or (
                    self.max_consecutive_failures is not None
                    and failures >= self.max_consecutive_failures
                ):
                    raise
                logger.warning("poll %d failed (%d in a row): %s", polls, failures, exc)
            else:
                failures = 0
                yield from result.ticks
                yield from result.rejects
            if self.max_polls is not None and polls >= self.max_polls:
                break
            delay = now + self.interval_s - self._clock()
            if delay > 0:
                self._sleep(delay)
