"""Exchange trading calendar: sessions, holidays and the number of bars in a year.

Pure: stdlib only (``zoneinfo`` for the exchange's clock) and :mod:`streamfolio.errors`, so the
analytics core, the replay and the poller all agree on when the market is open and on the
annualisation factor ``periods_per_year``.

The Casablanca Stock Exchange (:data:`CSE`) trades Monday to Friday in zone ``Africa/Casablanca``
(UTC+1, UTC+0 during Ramadan). Continuous trading runs from 09:30 to 15:20, then the closing call
prints the day's closing trades at 15:30, so a session is modelled as ``[09:30, 15:30)`` local time.
During Ramadan the exchange trades shorter hours (to 13:30); that is a configuration override of
``session_open``/``session_close``, not something this module guesses.

Holidays: fixed-date public holidays repeat every year (:data:`CSE_ANNUAL_HOLIDAYS`); lunar ones
(Aïd al-Fitr, Aïd al-Adha, 1 Muharram, Mawlid) are set by moon sighting, so only the dates seen in
the saved market data are built in (:data:`CSE_HOLIDAYS`, 2023-04 to 2026-09). Later lunar holidays
must come from configuration (``exchange.extra_holidays``) through
:meth:`ExchangeCalendar.with_holidays`.

>>> import datetime as dt
>>> is_trading_day(dt.date(2026, 9, 30)), is_trading_day(dt.date(2026, 9, 17))  # 17th: cancelled
(True, False)
>>> periods_per_year(60)
88560.0
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
from collections.abc import Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streamfolio.errors import ConfigError

__all__ = [
    "CSE",
    "CSE_ANNUAL_HOLIDAYS",
    "CSE_HOLIDAYS",
    "CalendarError",
    "ExchangeCalendar",
    "is_session_open",
    "is_trading_day",
    "next_session_open",
    "parse_hhmm",
    "periods_per_year",
    "session_bounds",
]

DAY_SECONDS = 86_400
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# The day-of-week cycle of epoch-aligned multi-day bars starts on 1970-01-01, a Thursday.
_EPOCH_WEEKDAY = 3
# Bars overlapping a session are averaged over the weekdays of one full year so that a UTC offset
# that changes during the year (Ramadan, DST elsewhere) is weighted by how long it lasts.
_REFERENCE_YEAR = 2025
# Longest run of closed days next_session_open searches through before giving up.
_MAX_CLOSED_DAYS = 400


class CalendarError(ConfigError, ValueError):
    """An exchange calendar setting is invalid: a time, the time zone, the weekend, a bar size.

    ``key`` names the setting (``exchange.timezone``, ``bar_seconds``, …). The message is the
    problem alone, as before: the configuration that built the calendar adds where it was set.
    Also a ``ValueError``, so the configuration's validators report it as they did.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.args = (problem,)


def parse_hhmm(text: str) -> dt.time:
    """Parse a local wall-clock time written ``"HH:MM"`` (24-hour clock).

    >>> parse_hhmm("09:30")
    datetime.time(9, 30)
    >>> parse_hhmm("9h30")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamfolio.core.calendar.CalendarError: time '9h30' is not of the form HH:MM ...
    """
    hours, sep, minutes = text.partition(":")
    if sep and len(hours) == 2 and len(minutes) == 2 and hours.isdigit() and minutes.isdigit():
        h, m = int(hours), int(minutes)
        if h < 24 and m < 60:
            return dt.time(h, m)
    raise CalendarError(
        "exchange.session_open/session_close",
        f'time {text!r} is not of the form HH:MM (e.g. "09:30")',
    )


@dataclasses.dataclass(frozen=True)
class ExchangeCalendar:
    """When an exchange trades.

    Parameters
    ----------
    name
        Short name, for messages.
    timezone
        IANA zone of the exchange clock; session times are local to it.
    session_open, session_close
        Local time of the first trade and of the closing trades; a session is ``[open, close)``.
    weekend
        Days without sessions, as :meth:`datetime.date.weekday` numbers (Monday 0 … Sunday 6).
    holidays
        Dated days without a session (public holidays, cancelled sessions).
    annual_holidays
        ``(month, day)`` pairs without a session in every year.
    trading_days_per_year
        Sessions in a year, the annualisation factor of daily bars. The CSE had 246 sessions in
        2024 and 247 in 2025 (weekdays less the holidays in :data:`CSE_HOLIDAYS`); the default
        246 is their mean rounded down, 0.2 % away from either year, well within the noise of any
        annualised estimate.

    >>> CSE.session_seconds
    21600
    >>> CSE.with_holidays([dt.date(2026, 11, 20)]).holidays - CSE.holidays
    frozenset({datetime.date(2026, 11, 20)})
    """

    name: str = "CSE"
    timezone: str = "Africa/Casablanca"
    session_open: dt.time = dt.time(9, 30)
    session_close: dt.time = dt.time(15, 30)
    weekend: frozenset[int] = frozenset({5, 6})
    holidays: frozenset[dt.date] = frozenset()
    annual_holidays: frozenset[tuple[int, int]] = frozenset()
    trading_days_per_year: float = 246.0

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise CalendarError(
                "exchange.timezone", f"unknown time zone {self.timezone!r}"
            ) from exc
        if not self.session_open < self.session_close:
            raise CalendarError(
                "exchange.session_open",
                f"session_open {self.session_open} must be before session_close "
                f"{self.session_close}",
            )
        if not self.weekend <= set(range(7)) or len(self.weekend) == 7:
            raise CalendarError(
                "exchange.weekend",
                f"weekend {sorted(self.weekend)} must be 0-6 and leave a weekday",
            )
        if not (
            0 < self.trading_days_per_year <= 366 and math.isfinite(self.trading_days_per_year)
        ):
            raise CalendarError(
                "exchange.trading_days_per_year",
                f"trading_days_per_year {self.trading_days_per_year} not in (0, 366]",
            )

    @property
    def zone(self) -> ZoneInfo:
        """The exchange's time zone (``ZoneInfo`` caches instances, so this is cheap)."""
        return ZoneInfo(self.timezone)

    @property
    def session_seconds(self) -> int:
        """Length of a session in seconds, on a day without a clock change."""
        start = self.session_open.hour * 3600 + self.session_open.minute * 60
        end = self.session_close.hour * 3600 + self.session_close.minute * 60
        return end - start + self.session_close.second - self.session_open.second

    def with_holidays(self, extra: Iterable[dt.date]) -> ExchangeCalendar:
        """A copy with ``extra`` dates added to :attr:`holidays`."""
        return dataclasses.replace(self, holidays=self.holidays | frozenset(extra))


def _dates(text: str) -> frozenset[dt.date]:
    return frozenset(dt.date.fromisoformat(d) for d in text.split())


CSE_ANNUAL_HOLIDAYS: frozenset[tuple[int, int]] = frozenset(
    {(1, 1), (1, 11), (1, 14), (5, 1), (7, 30), (8, 14), (8, 20), (8, 21), (11, 6), (11, 18)}
)
"""Fixed-date Moroccan public holidays: New Year, Independence Manifesto, Amazigh New Year (from
2024), Labour Day, Throne Day, Oued Eddahab, Revolution of the King and the People, Youth Day,
Green March, Independence Day (``shared/research/cse-data.md`` §3)."""

CSE_HOLIDAYS: frozenset[dt.date] = _dates(
    # Weekdays without a session in the saved daily files. Up to 2023-10 from ATW.csv alone (the
    # only file that old); from 2023-11 all 11 files agree (cse-data.md §3).
    """
    2023-04-24 2023-05-01 2023-06-29 2023-06-30 2023-07-19 2023-08-14 2023-08-21 2023-09-28
    2023-09-29 2023-11-06
    2024-01-01 2024-01-11 2024-04-10 2024-04-11 2024-04-12 2024-05-01 2024-06-17 2024-06-18
    2024-07-30 2024-08-14 2024-08-20 2024-08-21 2024-09-16 2024-09-17 2024-11-06 2024-11-18
    2025-01-01 2025-01-14 2025-03-31 2025-04-01 2025-05-01 2025-06-09 2025-06-27 2025-07-30
    2025-08-14 2025-08-20 2025-08-21 2025-09-05 2025-11-06 2025-11-18
    2026-01-01 2026-01-14 2026-03-20 2026-03-23 2026-05-01 2026-05-27 2026-05-28 2026-05-29
    2026-06-17 2026-07-30 2026-08-14 2026-08-20 2026-08-21 2026-08-25 2026-08-26
    2026-09-17
    """
    # 2026-09-17: the session was stopped by a technical incident and all its trades annulled.
)
"""Dated CSE days without a session, 2023-04 to 2026-09, lunar holidays included."""

CSE = ExchangeCalendar(holidays=CSE_HOLIDAYS, annual_holidays=CSE_ANNUAL_HOLIDAYS)
"""The Casablanca Stock Exchange with the holidays known up to 2026-09."""


def _to_local(when: int | dt.datetime, calendar: ExchangeCalendar) -> dt.datetime:
    if isinstance(when, dt.datetime):
        # SEMANTICS §1: a time without an offset is exchange-local time.
        if when.tzinfo is None:
            return when.replace(tzinfo=calendar.zone)
        return when.astimezone(calendar.zone)
    return (_EPOCH + dt.timedelta(milliseconds=when)).astimezone(calendar.zone)


def is_trading_day(day: dt.date, calendar: ExchangeCalendar = CSE) -> bool:
    """Whether the exchange holds a session on local date ``day``.

    >>> is_trading_day(dt.date(2026, 9, 26))  # a Saturday
    False
    >>> is_trading_day(dt.date(2027, 11, 18))  # Independence Day, a fixed-date holiday
    False
    >>> is_trading_day(dt.date(2027, 11, 17))
    True
    """
    return (
        day.weekday() not in calendar.weekend
        and day not in calendar.holidays
        and (day.month, day.day) not in calendar.annual_holidays
    )


def session_bounds(
    day: dt.date, calendar: ExchangeCalendar = CSE
) -> tuple[dt.datetime, dt.datetime]:
    """Open and close of the session on ``day``, aware datetimes in the exchange's zone.

    The result does not say whether ``day`` has a session: see :func:`is_trading_day`.

    >>> [t.isoformat() for t in session_bounds(dt.date(2026, 2, 25))]  # Ramadan: UTC+0
    ['2026-02-25T09:30:00+00:00', '2026-02-25T15:30:00+00:00']
    """
    zone = calendar.zone
    return (
        dt.datetime.combine(day, calendar.session_open, tzinfo=zone),
        dt.datetime.combine(day, calendar.session_close, tzinfo=zone),
    )


def is_session_open(when: int | dt.datetime, calendar: ExchangeCalendar = CSE) -> bool:
    """Whether a session is running at ``when``: epoch milliseconds UTC, or a datetime.

    A naive datetime is exchange-local time (``SEMANTICS.md`` §1). The session is the half-open
    interval ``[session_open, session_close)``; the closing call's trades print up to a minute after
    the close, so a poller that wants them should keep polling briefly after this turns false.

    >>> is_session_open(dt.datetime(2026, 9, 30, 9, 30))
    True
    >>> is_session_open(dt.datetime(2026, 9, 30, 15, 30))
    False
    >>> is_session_open(1_790_767_800_000)  # 2026-09-30T11:30Z = 12:30 in Casablanca
    True
    """
    local = _to_local(when, calendar)
    return (
        is_trading_day(local.date(), calendar)
        and calendar.session_open <= local.time() < calendar.session_close
    )


def next_session_open(now: int | dt.datetime, calendar: ExchangeCalendar = CSE) -> dt.datetime:
    """The first session open at or after ``now``, as an aware datetime in the exchange's zone.

    During a session this is the next day's open; :func:`is_session_open` tells the two apart.

    >>> next_session_open(dt.datetime(2026, 9, 16, 16, 0)).isoformat()  # 17th: cancelled
    '2026-09-18T09:30:00+01:00'
    >>> next_session_open(dt.datetime(2026, 9, 30, 9, 30)).isoformat()
    '2026-09-30T09:30:00+01:00'
    """
    local = _to_local(now, calendar)
    day = local.date()
    for _ in range(_MAX_CLOSED_DAYS):
        if is_trading_day(day, calendar):
            opening = session_bounds(day, calendar)[0]
            if opening >= local:
                return opening
        day += dt.timedelta(days=1)
    raise CalendarError(
        "exchange", f"{calendar.name} has no session in the {_MAX_CLOSED_DAYS} days from {day}"
    )


def periods_per_year(bar_seconds: int, calendar: ExchangeCalendar = CSE) -> float:
    """Bars with trades in a year: the ``periods_per_year`` that annualises per-bar statistics.

    Bars are aligned to the Unix epoch (``SEMANTICS.md`` §2), so ``bar_seconds`` must divide a day
    or be a whole number of days:

    - ``bar_seconds`` divides 86 400 (intraday and daily bars): ``trading_days_per_year`` times the
      number of bars that overlap a session, i.e. 360 one-minute bars in 09:30–15:30. A bar that
      overlaps the session only in part counts in full, because the session's first or last
      trades fall in it: hourly bars give 7 per session (08:00–09:00 UTC holds 09:30–10:00 local),
      not 6. Where the count depends on the UTC offset it is averaged over the weekdays of 2025.
    - ``bar_seconds`` is ``k`` days, ``k`` ≥ 2: a year of 52 weeks (364 days) has ``364 / k`` bars,
      of which those holding at least one weekday count; weekly bars give 52.

    Returns are close to close, so bars without trades (the closing call from 15:20 to 15:30, a
    holiday inside a multi-day bar) add nothing; the count is nominal, and a portfolio may set its
    own ``periods_per_year`` instead.

    >>> periods_per_year(60)        # 360 bars a session × 246 sessions
    88560.0
    >>> periods_per_year(300), periods_per_year(3600), periods_per_year(86_400)
    (17712.0, 1722.0, 246.0)
    >>> periods_per_year(7 * 86_400), periods_per_year(2 * 86_400)
    (52.0, 156.0)
    >>> periods_per_year(7 * 3600)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamfolio.core.calendar.CalendarError: bar_seconds 25200 must divide 86400 (a day) or ...
    """
    if bar_seconds <= 0:
        raise CalendarError("bar_seconds", f"bar_seconds {bar_seconds} must be positive")
    if DAY_SECONDS % bar_seconds == 0:
        # The cache key is the fields the count depends on, not the whole calendar and its
        # holiday set, which is hashed on every call otherwise.
        per_session = _bars_per_session(
            bar_seconds,
            calendar.timezone,
            calendar.session_open,
            calendar.session_close,
            calendar.weekend,
        )
        return calendar.trading_days_per_year * per_session
    if bar_seconds % DAY_SECONDS == 0:
        days = bar_seconds // DAY_SECONDS
        return 364 / days * _share_of_bars_with_weekday(days, calendar.weekend)
    raise CalendarError(
        "bar_seconds",
        f"bar_seconds {bar_seconds} must divide {DAY_SECONDS} (a day) or be a whole number of days",
    )


@functools.lru_cache(maxsize=64)
def _bars_per_session(
    bar_seconds: int, timezone: str, opening: dt.time, closing: dt.time, weekend: frozenset[int]
) -> float:
    zone = ZoneInfo(timezone)
    day = dt.date(_REFERENCE_YEAR, 1, 1)
    total = sessions = 0
    while day.year == _REFERENCE_YEAR:
        if day.weekday() not in weekend:
            start = (dt.datetime.combine(day, opening, tzinfo=zone) - _EPOCH).total_seconds()
            end = (dt.datetime.combine(day, closing, tzinfo=zone) - _EPOCH).total_seconds()
            # Bars k with [k·B, (k+1)·B) ∩ [start, end) non-empty.
            total += math.ceil(end / bar_seconds) - math.floor(start / bar_seconds)
            sessions += 1
        day += dt.timedelta(days=1)
    return total / sessions


def _share_of_bars_with_weekday(days: int, weekend: frozenset[int]) -> float:
    # Seven consecutive k-day bars span 7k days, a whole number of weeks: the pattern then repeats.
    with_weekday = sum(
        any((_EPOCH_WEEKDAY + bar * days + d) % 7 not in weekend for d in range(days))
        for bar in range(7)
    )
    return with_weekday / 7
