"""BourseData <-> PriceTick (:mod:`streamfolio.messages.bourse`): the exchange's time and price
texts, and the reference quote's conversion both ways.

The tests/fixtures/bourse_data_*.json quotes are hand-made in the reference's BourseData shape (28
string fields), not recorded from the exchange: one raw local-time quote, one normalised by the
reference's producer (``...Z``), one with a bare time and French decimals, one with the reference's
placeholder time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamfolio.errors import DataError
from streamfolio.messages import (
    BOURSE_FIELDS,
    PriceTick,
    bourse_from_price_tick,
    parse_event_time,
    parse_price,
    price_tick_from_bourse,
)
from streamfolio.serde import codec_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def quote(name: str) -> dict[str, str]:
    loaded: dict[str, str] = json.loads((FIXTURES / f"bourse_data_{name}.json").read_text("utf-8"))
    return loaded


def utc_ms(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()) * 1000


# --- BourseData -> PriceTick ----------------------------------------------------------------


def test_local_summer_time_is_utc_plus_one() -> None:
    tick = price_tick_from_bourse(quote("atw_local"))
    assert tick == PriceTick("ATW", 612.5, utc_ms(2025, 6, 20, 13, 59, 32), None, "cse", None)


def test_reference_utc_time_is_taken_as_written() -> None:
    tick = price_tick_from_bourse(quote("iam_reference_utc"), source="replay")
    assert (tick.ticker, tick.price, tick.source) == ("IAM", 119.3, "replay")
    assert tick.event_time == utc_ms(2026, 2, 25, 10, 15, 30)


def test_bare_time_uses_the_session_date_and_french_decimals() -> None:
    tick = price_tick_from_bourse(quote("bcp_time_only"))
    assert (tick.ticker, tick.price) == ("BCP", 284.5)
    # 2026-02-26 is in Ramadan 2026, when Morocco is on UTC+0.
    assert tick.event_time == utc_ms(2026, 2, 26, 11, 2, 5) + 250


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-20T14:59:32", utc_ms(2025, 6, 20, 13, 59, 32)),  # summer, UTC+1
        ("2026-01-15 10:00:00", utc_ms(2026, 1, 15, 9, 0, 0)),  # winter, UTC+1
        ("2026-02-25T10:00:00", utc_ms(2026, 2, 25, 10, 0, 0)),  # Ramadan 2026, UTC+0
        ("2026-03-25T10:00:00", utc_ms(2026, 3, 25, 9, 0, 0)),  # after Ramadan, UTC+1 again
        ("2025-06-20T14:59:32.123456789", utc_ms(2025, 6, 20, 13, 59, 32) + 123),
        ("2025-06-20T14:59:32,5", utc_ms(2025, 6, 20, 13, 59, 32) + 500),
        ("2025-06-20T14:59", utc_ms(2025, 6, 20, 13, 59, 0)),
        ("2025-06-20T14:59:32Z", utc_ms(2025, 6, 20, 14, 59, 32)),
        ("2025-06-20T14:59:32+01:00", utc_ms(2025, 6, 20, 13, 59, 32)),
        ("2025-06-20T14:59:32+0100", utc_ms(2025, 6, 20, 13, 59, 32)),
        ("2025-06-20T14:59:32-02", utc_ms(2025, 6, 20, 16, 59, 32)),
        ("  2025-06-20T14:59:32  ", utc_ms(2025, 6, 20, 13, 59, 32)),
    ],
)
def test_event_time_formats(text: str, expected: int) -> None:
    assert parse_event_time(text) == expected


@pytest.mark.parametrize(
    ("session_date", "expected"),
    [
        ("2025-06-20", utc_ms(2025, 6, 20, 13, 59, 32)),
        ("2025-06-20T00:00:00Z", utc_ms(2025, 6, 20, 13, 59, 32)),
        ("20/06/2025", utc_ms(2025, 6, 20, 13, 59, 32)),
    ],
)
def test_bare_time_session_dates(session_date: str, expected: int) -> None:
    assert parse_event_time("14:59:32", session_date=session_date) == expected


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("field_cours_courant", "abc", "ATW: price 'abc' is not a number"),
        ("field_cours_courant", "", "ATW: price '' is not a number"),
        ("field_cours_courant", "-", "ATW: price '-' is not a number"),
        ("field_cours_courant", "0", "ATW: price '0' is not positive"),
        ("field_cours_courant", "-12.5", "ATW: price '-12.5' is not positive"),
        ("field_cours_courant", "nan", "ATW: price 'nan' is not a number"),
        ("field_cours_courant", "inf", "ATW: price 'inf' is not a number"),
        ("field_cours_courant", "1e999", "ATW: price '1e999' is not finite"),
        ("field_cours_courant", "1,2,3", "ATW: price '1,2,3' is not a number"),
        ("field_last_traded_time", "", "ATW: event time '' is unparsable"),
        ("field_last_traded_time", "0", "ATW: event time '0' is unparsable"),
        ("field_last_traded_time", "2025-06-20", "ATW: event time '2025-06-20' is unparsable"),
        (
            "field_last_traded_time",
            "2025-02-30T10:00:00",
            "ATW: event time '2025-02-30T10:00:00' is",
        ),
        (
            "field_last_traded_time",
            "2025-06-20T25:00:00",
            "ATW: event time '2025-06-20T25:00:00' is",
        ),
        ("field_last_traded_time", "2025-06-20T10:00:00+25:00", "ATW: event time"),
        (
            "field_last_traded_time",
            "1969-12-31T23:00:00Z",
            "ATW: event time '1969-12-31T23:00:00Z' is ",
        ),
        (
            "field_last_traded_time",
            "1999-01-01T00:00:00Z",
            "ATW: event time '1999-01-01T00:00:00Z' is the reference's placeholder",
        ),
        ("ticker", "  ", "BourseData ticker '  ' is empty"),
    ],
)
def test_bad_bourse_values_are_data_errors(field: str, value: str, reason: str) -> None:
    record = quote("atw_local") | {field: value}
    with pytest.raises(DataError) as info:
        price_tick_from_bourse(record)
    assert info.value.reason.startswith(reason), info.value.reason


def test_bare_time_without_a_session_date_is_a_data_error() -> None:
    record = quote("bcp_time_only") | {"field_date_application": ""}
    with pytest.raises(DataError, match=r"it has no date and no session date was given"):
        price_tick_from_bourse(record)
    record = quote("bcp_time_only") | {"field_date_application": "2026/02/26"}
    with pytest.raises(DataError, match=r"neither YYYY-MM-DD nor DD/MM/YYYY"):
        price_tick_from_bourse(record)


def test_reference_placeholder_fixture_is_rejected() -> None:
    with pytest.raises(DataError, match=r"placeholder for a missing time"):
        price_tick_from_bourse(quote("reference_placeholder"))


def test_missing_bourse_field_is_a_data_error() -> None:
    record = {k: v for k, v in quote("atw_local").items() if k != "field_cours_courant"}
    with pytest.raises(DataError, match=r"BourseData record has no field 'field_cours_courant'"):
        price_tick_from_bourse(record)


def test_non_string_inputs() -> None:
    assert parse_price(12) == 12.0
    with pytest.raises(DataError, match=r"price must be text or a number, got NoneType"):
        parse_price(None)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"event time must be a string, got int"):
        parse_event_time(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "value"),
    [("612.50", 612.5), ("1 234,5", 1234.5), ("1\u202f234,50", 1234.5), ("1,234.5", 1234.5),
     ("1.234.567,8", 1234567.8), ("+3", 3.0), (".5", 0.5), ("1e-05", 1e-05), ("1e+16", 1e16)],
)  # fmt: skip
def test_price_formats(text: str, value: float) -> None:
    assert parse_price(text) == value


@pytest.mark.parametrize("number", [10**400, -(10**400), 2**1024])
def test_an_integer_beyond_float_range_is_a_data_error(number: int) -> None:
    # JSON allows such integers; float() would raise OverflowError (and their repr may fail).
    with pytest.raises(DataError, match=r"^price is a number too large to be a price$"):
        parse_price(number)


# --- PriceTick -> BourseData ----------------------------------------------------------------


def test_bourse_from_price_tick_fills_all_fields_and_round_trips() -> None:
    tick = PriceTick("ATW", 612.5, utc_ms(2026, 2, 25, 23, 30, 0) + 7, 10.0, "sim", 3)
    record = bourse_from_price_tick(tick)
    assert list(record) == list(BOURSE_FIELDS)
    assert all(isinstance(v, str) for v in record.values())
    assert record["field_last_traded_time"] == "2026-02-25T23:30:00.007Z"
    # 23:30 UTC is still 25 February in Casablanca during Ramadan (UTC+0) ...
    assert record["field_date_application"] == "2026-02-25"
    # ... and already 26 February on UTC+1.
    summer = bourse_from_price_tick(PriceTick("ATW", 1.0, utc_ms(2025, 6, 20, 23, 30, 0)))
    assert summer["field_date_application"] == "2025-06-21"
    assert record["field_opening_price"] == ""
    back = price_tick_from_bourse(
        codec_for("BourseData").decode(codec_for("BourseData").encode(record)), source="sim"
    )
    assert (back.ticker, back.price, back.event_time) == (tick.ticker, tick.price, tick.event_time)
