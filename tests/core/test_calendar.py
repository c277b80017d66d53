"""The exchange calendar: holidays against the real data, sessions, bars per year."""

from __future__ import annotations

import csv
import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from streamfolio.core.calendar import (
    CSE,
    CSE_HOLIDAYS,
    CalendarError,
    ExchangeCalendar,
    is_session_open,
    is_trading_day,
    next_session_open,
    parse_hhmm,
    periods_per_year,
    session_bounds,
)
from streamfolio.errors import ConfigError

DAILY = Path(__file__).parents[2] / "src" / "streamfolio" / "data" / "cse" / "daily"
CASABLANCA = CSE.zone


def session_dates(ticker: str) -> set[dt.date]:
    with (DAILY / f"{ticker}.csv").open(newline="") as f:
        return {dt.date.fromisoformat(row["date"]) for row in csv.DictReader(f)}


def weekdays(start: dt.date, end: dt.date) -> list[dt.date]:
    days = (start + dt.timedelta(n) for n in range((end - start).days + 1))
    return [d for d in days if d.weekday() < 5]


def test_calendar_reproduces_the_sessions_in_the_data() -> None:
    # ATW has the longest history and trades every session; the calendar must agree day by day.
    sessions = session_dates("ATW")
    for day in weekdays(dt.date(2023, 4, 3), dt.date(2026, 9, 30)):
        assert is_trading_day(day) == (day in sessions), day


def test_sessions_per_year() -> None:
    for year, expected in ((2024, 246), (2025, 247)):
        days = weekdays(dt.date(year, 1, 1), dt.date(year, 12, 31))
        assert sum(map(is_trading_day, days)) == expected
    assert CSE.trading_days_per_year == 246


def test_cancelled_session_and_weekend() -> None:
    assert dt.date(2026, 9, 17) in CSE_HOLIDAYS
    assert not is_trading_day(dt.date(2026, 9, 19))
    assert not is_trading_day(dt.date(2026, 9, 20))


def test_extra_holidays() -> None:
    eid = dt.date(2027, 3, 10)
    assert is_trading_day(eid)
    assert not is_trading_day(eid, CSE.with_holidays([eid]))


@pytest.mark.parametrize(
    ("bar_seconds", "expected"),
    [
        (1, 21_600 * 246),
        (60, 360 * 246),
        (300, 72 * 246),
        (900, 24 * 246),
        (1800, 12 * 246),
        (2700, 9 * 246),  # 45-minute bars: the session straddles 9 epoch-aligned bars
        (3600, 7 * 246),  # 08:00–09:00 UTC holds 09:30–10:00 local
        (21_600, 2 * 246),  # 6-hour bars: the session crosses 12:00 UTC
        (43_200, 2 * 246),
        (86_400, 246),
        (2 * 86_400, 156),
        (7 * 86_400, 52),
        (14 * 86_400, 26),
    ],
)
def test_periods_per_year(bar_seconds: int, expected: float) -> None:
    assert periods_per_year(bar_seconds) == pytest.approx(expected, rel=1e-12)


def test_periods_per_year_uses_the_calendar() -> None:
    ramadan = ExchangeCalendar(
        session_open=dt.time(10), session_close=dt.time(13, 30), trading_days_per_year=250
    )
    assert periods_per_year(60, ramadan) == 210 * 250


@pytest.mark.parametrize("bar_seconds", [0, -60, 7, 25_200, 86_400 + 1])
def test_periods_per_year_rejects_bars_that_do_not_tile_a_day(bar_seconds: int) -> None:
    with pytest.raises(CalendarError, match="bar_seconds"):
        periods_per_year(bar_seconds)


def test_session_open_boundaries() -> None:
    day = dt.date(2026, 9, 30)
    opening, closing = session_bounds(day)
    assert is_session_open(opening)
    assert not is_session_open(opening - dt.timedelta(microseconds=1))
    assert is_session_open(closing - dt.timedelta(milliseconds=1))
    assert not is_session_open(closing)
    as_ms = int(opening.timestamp() * 1000)
    assert is_session_open(as_ms) and not is_session_open(as_ms - 1)


def test_session_in_ramadan_is_utc() -> None:
    opening = dt.datetime(2026, 2, 25, 9, 30, tzinfo=dt.UTC)  # Morocco is on UTC+0 then
    assert is_session_open(opening)
    assert not is_session_open(opening - dt.timedelta(seconds=1))


def test_naive_datetimes_are_exchange_local() -> None:
    assert is_session_open(dt.datetime(2026, 9, 30, 15, 29))
    assert not is_session_open(dt.datetime(2026, 9, 30, 15, 29, tzinfo=dt.UTC))  # 16:29 local


def test_no_session_on_holidays() -> None:
    assert not is_session_open(dt.datetime(2026, 9, 17, 11, 0))


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (dt.datetime(2026, 9, 30, 8, 0), dt.datetime(2026, 9, 30, 9, 30)),
        (dt.datetime(2026, 9, 30, 12, 0), dt.datetime(2026, 10, 1, 9, 30)),
        (dt.datetime(2026, 10, 2, 16, 0), dt.datetime(2026, 10, 5, 9, 30)),  # Friday evening
        (dt.datetime(2026, 8, 19, 16, 0), dt.datetime(2026, 8, 24, 9, 30)),  # 20, 21 holidays
        (dt.datetime(2026, 8, 24, 16, 0), dt.datetime(2026, 8, 27, 9, 30)),  # 25, 26 holidays
    ],
)
def test_next_session_open(now: dt.datetime, expected: dt.datetime) -> None:
    result = next_session_open(now)
    assert result == expected.replace(tzinfo=CASABLANCA)
    assert result.tzinfo is not None


def test_next_session_open_from_epoch_ms() -> None:
    friday_evening = int(dt.datetime(2026, 10, 2, 17, tzinfo=dt.UTC).timestamp() * 1000)
    assert next_session_open(friday_evening).isoformat() == "2026-10-05T09:30:00+01:00"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"session_open": dt.time(16)}, "must be before"),
        ({"weekend": frozenset(range(7))}, "leave a weekday"),
        ({"trading_days_per_year": 0}, "trading_days_per_year"),
    ],
)
def test_invalid_calendars(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(CalendarError, match=message) as caught:
        ExchangeCalendar(**kwargs)  # type: ignore[arg-type]
    # A configuration error, and still the ValueError that pydantic validators turn into theirs.
    assert isinstance(caught.value, ConfigError)
    assert isinstance(caught.value, ValueError)
    assert caught.value.key.startswith("exchange.")


@pytest.mark.parametrize("text", ["9:30", "09:30:00", "24:00", "09:60", "ab:cd", ""])
def test_parse_hhmm_rejects(text: str) -> None:
    with pytest.raises(CalendarError, match="HH:MM"):
        parse_hhmm(text)


def test_calendar_is_pure() -> None:
    # Only what the calendar itself imports counts: the package root may import more.
    code = (
        "import sys, streamfolio; before = set(sys.modules); import streamfolio.core.calendar; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print(sorted(new & {'pydantic', 'yaml', 'pandas', 'confluent_kafka', 'pyflink'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(Path(__file__).parents[2] / "src")},
    )
    assert out.stdout.strip() == "[]"
