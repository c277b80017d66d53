"""Daily history of the Gen 2 site: stock bars, index closes, and merging overlapping windows.

:func:`parse_stock_history` reads one ``stock-historical`` page into :class:`DailyBar` values,
:func:`parse_index_history` reads ``indices/historical`` into :class:`IndexBar` values, and
:func:`merge_daily_bars` sorts, de-duplicates and drops the placeholder rows the API lists for
cancelled sessions. All are pure functions of the body.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo

from streamfolio.core.calendar import CSE, ExchangeCalendar, is_trading_day
from streamfolio.errors import DataError
from streamfolio.feeds.cse.endpoints import (
    BASE_URL,
    GEN2_INDEX_HISTORY_PATH,
    GEN2_STOCK_HISTORY_PATH,
)
from streamfolio.feeds.cse.errors import CseSourceError
from streamfolio.feeds.cse.parsing import (
    decode_json,
    expect_object,
    expect_rows,
    local_date,
    object_rows,
    read_epoch_ms,
    read_number,
    read_positive,
    read_price,
    read_text,
    require_fields,
    shorten,
)

logger = logging.getLogger(__name__)

_DMY_RE: Final = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_ISO_DATE_RE: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


@dataclass(frozen=True, slots=True)
class DailyBar:
    """One session of one stock from the Gen 2 history (prices MAD, unadjusted).

    ``volume`` is shares traded, ``value`` MAD traded, ``trades`` the number of trades.
    :attr:`traded` is False for a session without a trade: the API then gives no open and zero
    volume, and ``close`` is the previous close.
    """

    ticker: str
    session: dt.date
    open: float | None
    high: float | None
    low: float | None
    close: float
    volume: float | None = None
    value: float | None = None
    trades: int | None = None
    market_cap: float | None = None

    @property
    def traded(self) -> bool:
        """Whether the stock traded in this session (an open, and a volume that is not 0)."""
        return self.open is not None and self.volume != 0


@dataclass(frozen=True, slots=True)
class IndexBar:
    """One session's close of an index (``code`` such as ``MASI``), with its high and low."""

    code: str
    session: dt.date
    close: float
    high: float | None = None
    low: float | None = None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One ``stock-historical`` response: the server's row count, the bars, skipped rows."""

    total_count: int
    bars: tuple[DailyBar, ...]
    skipped: tuple[str, ...] = ()


def _session_date(row: Mapping[str, Any], zone: ZoneInfo) -> dt.date:
    """The session date of a history row: ``seance`` as written, else ``timestamp`` locally.

    The ``timestamp`` is local midnight in epoch ms, so it must be read in the exchange's zone,
    never in UTC (where it is the previous day at 23:00 most of the year).
    """
    seance = row.get("seance")
    if isinstance(seance, str) and seance.strip():
        text = seance.strip()
        if m := _DMY_RE.match(text):
            return dt.date(int(m[3]), int(m[2]), int(m[1]))
        if m := _ISO_DATE_RE.match(text):
            return dt.date(int(m[1]), int(m[2]), int(m[3]))
        raise ValueError(f"seance {seance!r} is neither DD/MM/YYYY nor YYYY-MM-DD")
    raw = row.get("timestamp")
    stamp = read_epoch_ms(raw)
    if stamp is None:
        if raw is None:
            raise ValueError("row has neither a seance date nor a timestamp")
        raise ValueError(f"timestamp {shorten(raw)} is not an epoch time in 1970..9999")
    return local_date(stamp, zone)


def parse_stock_history(
    payload: str | bytes | Mapping[str, Any],
    url: str = BASE_URL + GEN2_STOCK_HISTORY_PATH,
    *,
    ticker: str | None = None,
    calendar: ExchangeCalendar = CSE,
) -> HistoryPage:
    """Read one ``stock-historical`` response: ``{"totalCount": n, "items": [...]}``.

    Rows: ``seance`` (``DD/MM/YYYY``), ``symbol`` (right-padded with spaces, stripped here),
    ``ouverture``, ``plusHaut``, ``plusBas``, ``dernierCours`` (close), ``titresEchanges``
    (shares), ``volumeEchanges`` (MAD), ``nbTransactions``, ``capitalisation``; numbers may be
    JSON numbers or text. Bars are returned as given (newest first); :func:`merge_daily_bars`
    sorts, de-duplicates and drops placeholder rows. A row without a usable date or close is
    skipped with its reason in :attr:`HistoryPage.skipped`.

    >>> page = parse_stock_history({"totalCount": 1, "items": [{"seance": "08/10/2026",
    ...     "symbol": "ATW  ", "ouverture": 680, "dernierCours": "670", "plusHaut": 680,
    ...     "plusBas": 670, "titresEchanges": 49319, "nbTransactions": 113}]})
    >>> bar = page.bars[0]
    >>> bar.ticker, bar.session.isoformat(), bar.close, bar.volume, bar.trades, bar.traded
    ('ATW', '2026-10-08', 670.0, 49319.0, 113, True)
    """
    data = expect_object(decode_json(payload, url), '{"totalCount": n, "items": [...]}', url)
    if "items" not in data:
        raise CseSourceError(
            url,
            'expected {"totalCount": n, "items": [...]} (stock-historical), got '
            f"{shorten(data, 120)}",
            kind="layout",
        )
    rows = expect_rows(data["items"], "items", url)
    require_fields(rows, [("dernierCours",), ("seance", "timestamp")], "items", url)
    total = read_number(data.get("totalCount"))
    bars: list[DailyBar] = []
    skipped: list[str] = []
    for row in rows:
        if not isinstance(row, Mapping):
            skipped.append(f"not an object: {shorten(row, 180)}")
            continue
        symbol = read_text(row.get("symbol")) or (ticker or "")
        try:
            session = _session_date(row, calendar.zone)
            raw_close = row.get("dernierCours")
            if raw_close is None:
                raise ValueError("no close (dernierCours is null)")
            close = read_price(raw_close)
        except (ValueError, DataError) as exc:
            reason = exc.reason if isinstance(exc, DataError) else str(exc)
            seance = row.get("seance", "")
            shown = seance[:40] if isinstance(seance, str) else shorten(seance, 40)
            skipped.append(f"{symbol or '?'} {shown}: {reason}")
            continue
        if ticker and symbol and symbol.upper() != ticker.upper():
            skipped.append(f"{symbol} {session}: not the requested ticker {ticker}")
            continue
        trades = read_number(row.get("nbTransactions"))
        bars.append(
            DailyBar(
                ticker=symbol or (ticker or ""),
                session=session,
                open=read_positive(row.get("ouverture")),
                high=read_positive(row.get("plusHaut")),
                low=read_positive(row.get("plusBas")),
                close=close,
                volume=read_number(row.get("titresEchanges")),
                value=read_number(row.get("volumeEchanges")),
                trades=None if trades is None else int(trades),
                market_cap=read_number(row.get("capitalisation")),
            )
        )
    for reason in skipped:
        logger.warning("%s: skipped history row: %s", url, reason)
    return HistoryPage(int(total) if total is not None else len(rows), tuple(bars), tuple(skipped))


def merge_daily_bars(bars: Iterable[DailyBar], calendar: ExchangeCalendar = CSE) -> list[DailyBar]:
    """Sort by (ticker, session), keep one bar per session, and drop rows that are not sessions.

    Duplicates (overlapping windows) keep the traded bar, else the first seen. A row without a
    trade is dropped when the calendar has no session that day (the cancelled session of
    2026-09-17, which the API still lists), or when it repeats the previous session's close,
    high and low: the API fills a cancelled session that way, while a real day without a trade
    has no high or low. Other untraded rows stay, with ``traded`` False. A traded row on a day the
    calendar calls closed is kept and logged: the exchange knows better than the calendar.

    >>> day = lambda d, o, c, v: DailyBar("ATW", dt.date(2026, 9, d), o, 700.0, 693.1, c, v)
    >>> merged = merge_daily_bars([day(18, 700.0, 680.5, 72617), day(17, None, 697.7, 0),
    ...                            day(16, 698.0, 697.7, 23984), day(16, 698.0, 697.7, 23984)])
    >>> [bar.session.day for bar in merged]
    [16, 18]
    """
    unique: dict[tuple[str, dt.date], DailyBar] = {}
    for bar in bars:
        key = (bar.ticker, bar.session)
        kept = unique.get(key)
        if kept is None or (bar.traded and not kept.traded):
            unique[key] = bar
    merged: list[DailyBar] = []
    previous: DailyBar | None = None
    for key in sorted(unique):
        bar = unique[key]
        if previous is not None and previous.ticker != bar.ticker:
            previous = None
        if not bar.traded:
            if not is_trading_day(bar.session, calendar):
                logger.info(
                    "%s %s: dropped a row without trades on a day with no session",
                    bar.ticker,
                    bar.session,
                )
                continue
            if (
                previous is not None
                and bar.high is not None
                and bar.low is not None
                and (bar.close, bar.high, bar.low) == (previous.close, previous.high, previous.low)
            ):
                logger.warning(
                    "%s %s: dropped a placeholder row repeating the session of %s (a cancelled "
                    "session?)",
                    bar.ticker,
                    bar.session,
                    previous.session,
                )
                continue
        elif not is_trading_day(bar.session, calendar):
            logger.warning(
                "%s %s: the calendar has no session that day but the exchange reports trades; "
                "kept (add the day to the calendar's sessions?)",
                bar.ticker,
                bar.session,
            )
        merged.append(bar)
        previous = bar
    return merged


def parse_index_history(
    payload: str | bytes | Mapping[str, Any],
    url: str = BASE_URL + GEN2_INDEX_HISTORY_PATH,
    *,
    code: str = "MASI",
    calendar: ExchangeCalendar = CSE,
) -> list[IndexBar]:
    """Read ``indices/historical``: ``items[] {seance, indices: {CODE: {valeur, ...}}}``.

    The close is ``indices[code].valeur`` (or a ``valeur`` on the item itself). Rows are returned
    oldest first, one per session; rows without a date or a positive close are skipped (logged).

    >>> bars = parse_index_history({"totalCount": 1, "items": [{"seance": "30/09/2026",
    ...     "indices": {"MASI": {"code": "MASI", "valeur": "18 601,42", "plusHaut": 18650.1,
    ...     "plusBas": 18500}}}]})
    >>> bars[0].session.isoformat(), bars[0].close, bars[0].low
    ('2026-09-30', 18601.42, 18500.0)
    """
    data = decode_json(payload, url)
    if not isinstance(data, list):
        data = expect_object(data, '{"items": [...]}', url)
    items = data.get("items") if isinstance(data, Mapping) else data
    if items is None:
        raise CseSourceError(
            url,
            f'expected {{"items": [...]}} (indices/historical), got {shorten(data, 120)}',
            kind="layout",
        )
    rows = object_rows(expect_rows(items, "items", url), "items", url)
    values = [_index_values(row, code) for row in rows]
    if rows and not any("valeur" in v for v in values):
        raise CseSourceError(
            url,
            f"field 'valeur' of index {code!r} is missing from all {len(rows)} rows of items "
            "(expected items[].indices."
            f"{code}.valeur): the API's layout changed, or {code} is not an index code",
            kind="layout",
        )
    bars: dict[dt.date, IndexBar] = {}
    for row, value in zip(rows, values, strict=True):
        try:
            session = _session_date(row, calendar.zone)
        except ValueError as exc:
            logger.warning("%s: skipped index row: %s", url, exc)
            continue
        close = read_positive(value.get("valeur"))
        if close is None:
            logger.warning("%s: skipped index row %s: no positive close", url, session)
            continue
        bars[session] = IndexBar(
            code,
            session,
            close,
            read_positive(value.get("plusHaut")),
            read_positive(value.get("plusBas")),
        )
    return [bars[day] for day in sorted(bars)]


def _index_values(row: Mapping[str, Any], code: str) -> Mapping[str, Any]:
    indices = row.get("indices")
    if isinstance(indices, Mapping):
        for key, value in indices.items():
            if str(key).strip().upper() == code.upper() and isinstance(value, Mapping):
                return value
        return {}
    return row
