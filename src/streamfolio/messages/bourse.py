"""The reference's ``BourseData`` quote (28 strings) and its conversion to and from
:class:`~streamfolio.messages.PriceTick`, with the exchange's text formats for times and prices.

The quote stays a plain ``dict[str, str]``; :func:`price_tick_from_bourse` and
:func:`bourse_from_price_tick` convert, :func:`parse_event_time` and :func:`parse_price` read
its fields (SEMANTICS.md §1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from functools import cache
from typing import Final
from zoneinfo import ZoneInfo

from streamfolio.errors import DataError
from streamfolio.messages.checks import EPOCH, MAX_EPOCH_MS, ONE_MS
from streamfolio.messages.prices import PriceTick

__all__ = [
    "BOURSE_FIELDS",
    "EXCHANGE_TIMEZONE",
    "bourse_from_price_tick",
    "parse_event_time",
    "parse_price",
    "price_tick_from_bourse",
]

EXCHANGE_TIMEZONE: Final = "Africa/Casablanca"
"""Zone of the exchange's offset-less local times (UTC+1, UTC+0 during Ramadan)."""

BOURSE_FIELDS: Final[tuple[str, ...]] = (
    "field_date_application",
    "field_closing_price",
    "field_difference",
    "field_var_veille",
    "field_best_ask_size",
    "field_transact_time",
    "field_cours_cloture",
    "field_cours_ajuste",
    "field_cumul_titres_echanges",
    "field_best_bid_size",
    "field_capitalisation",
    "field_opening_price",
    "field_total_trades",
    "field_cours_courant",
    "field_best_ask_price",
    "sous_secteur",
    "ticker",
    "field_instrument_var_year",
    "field_var_pto",
    "field_last_traded_time",
    "label",
    "field_best_bid_price",
    "field_dynamic_reference_price",
    "field_static_reference_price",
    "field_low_price",
    "field_high_price",
    "field_cumul_volume_echange",
    "field_last_traded_price",
)
"""The 28 fields of ``BourseData``, in schema order."""

# The reference writes this when the exchange sent no usable time: it means "unknown", not 1999.
_REFERENCE_NO_TIME: Final = "1999-01-01T00:00:00Z"

_TIME = r"(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?"
_DATE_TIME_RE: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ]" + _TIME)
_TIME_ONLY_RE: Final = re.compile(_TIME)
_ISO_DATE_RE: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[Tt ].*)?")
_DMY_DATE_RE: Final = re.compile(r"(\d{2})/(\d{2})/(\d{4})(?:\s.*)?")
_NUMBER_RE: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_SPACES: Final = str.maketrans("", "", " \u00a0\u202f\t")


@cache
def _exchange_zone() -> ZoneInfo:
    return ZoneInfo(EXCHANGE_TIMEZONE)


def _parse_offset(text: str) -> timezone:
    if text in ("Z", "z"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"offset {text} out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _parse_date(text: str) -> date:
    text = text.strip()
    if m := _ISO_DATE_RE.fullmatch(text):
        return date(int(m[1]), int(m[2]), int(m[3]))
    if m := _DMY_DATE_RE.fullmatch(text):
        return date(int(m[3]), int(m[2]), int(m[1]))
    raise ValueError(f"date {text!r} is neither YYYY-MM-DD nor DD/MM/YYYY")


def parse_event_time(text: str, *, session_date: str | None = None) -> int:
    """Epoch milliseconds UTC of an exchange time string (SEMANTICS.md §1).

    ``text`` is ``YYYY-MM-DD[T ]HH:MM[:SS[.fff]]`` with an optional ``Z`` or ``±HH[:MM]``, or
    the time alone, which then needs ``session_date`` (``YYYY-MM-DD...`` or ``DD/MM/YYYY``; only
    its date part is used, as written). Without an offset the time is local
    ``Africa/Casablanca`` time; at the Ramadan switches, which fall at night when the exchange is
    closed, an ambiguous or skipped local time resolves with ``fold=0``. Sub-millisecond digits
    are truncated. Raises :class:`~streamfolio.errors.DataError` with the reason.

    >>> parse_event_time("2025-06-20T14:59:32")      # summer: UTC+1
    1750427972000
    >>> parse_event_time("2026-02-25 14:59:32.5")    # Ramadan 2026: UTC+0
    1772031572500
    >>> parse_event_time("14:59:32Z", session_date="2025-06-20T00:00:00Z")
    1750431572000
    """
    if not isinstance(text, str):
        raise DataError(f"event time must be a string, got {type(text).__name__}")
    value = text.strip()
    if value == _REFERENCE_NO_TIME:
        raise DataError(f"event time {value!r} is the reference's placeholder for a missing time")
    try:
        if m := _DATE_TIME_RE.fullmatch(value):
            day = date(int(m[1]), int(m[2]), int(m[3]))
            hour, minute, second, fraction, offset = m.group(4, 5, 6, 7, 8)
        elif m := _TIME_ONLY_RE.fullmatch(value):
            if not session_date:
                raise ValueError("it has no date and no session date was given")
            day = _parse_date(session_date)
            hour, minute, second, fraction, offset = m.group(1, 2, 3, 4, 5)
        else:
            raise ValueError("expected YYYY-MM-DD[T ]HH:MM[:SS[.fff]][Z|±HH:MM] or HH:MM[:SS]")
        micros = int((fraction or "")[:6].ljust(6, "0"))
        zone = _parse_offset(offset) if offset else _exchange_zone()
        moment = datetime(
            day.year, day.month, day.day, int(hour), int(minute), int(second or 0), micros, zone
        )
        millis = (moment - EPOCH) // ONE_MS
    except (ValueError, OverflowError) as exc:
        raise DataError(f"event time {text!r} is unparsable: {exc}") from None
    if not 0 <= millis <= MAX_EPOCH_MS:
        raise DataError(f"event time {text!r} is outside 1970..9999")
    return millis


def parse_price(text: str | float) -> float:
    """A price from the exchange's text; finite and > 0 or :class:`~streamfolio.errors.DataError`.

    Spaces are thousands separators; a lone comma is the decimal point (French style); with both
    ``,`` and ``.`` the last one is the decimal point. JSON numbers are accepted as they are.

    >>> parse_price("612.50"), parse_price("1 234,5"), parse_price("1.234,5"), parse_price(3)
    (612.5, 1234.5, 1234.5, 3.0)
    >>> parse_price("0.0")
    Traceback (most recent call last):
    ...
    streamfolio.errors.DataError: price '0.0' is not positive
    >>> parse_price(10**400)
    Traceback (most recent call last):
    ...
    streamfolio.errors.DataError: price is a number too large to be a price
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise DataError(f"price must be text or a number, got {type(text).__name__}")
    if isinstance(text, str):
        cleaned = text.translate(_SPACES)
        if "," in cleaned:
            if "." in cleaned and cleaned.rfind(".") > cleaned.rfind(","):
                cleaned = cleaned.replace(",", "")
            else:
                cleaned = cleaned.replace(".", "").replace(",", ".")
        if not _NUMBER_RE.fullmatch(cleaned):
            raise DataError(f"price {text!r} is not a number")
        value = float(cleaned)
    else:
        try:
            value = float(text)
        except OverflowError:  # an int beyond float's range (JSON allows it); its repr may fail
            raise DataError("price is a number too large to be a price") from None
    if not math.isfinite(value):
        raise DataError(f"price {text!r} is not finite")
    if value <= 0:
        raise DataError(f"price {text!r} is not positive")
    return value


def price_tick_from_bourse(record: Mapping[str, str], *, source: str = "cse") -> PriceTick:
    """The :class:`PriceTick` of a reference ``BourseData`` quote.

    Price from ``field_cours_courant`` (:func:`parse_price`), event time from
    ``field_last_traded_time`` (:func:`parse_event_time`, with ``field_date_application`` as the
    date of a bare time). ``volume`` stays null: the quote only carries the session's cumulative
    volume, not the trade's. Raises :class:`~streamfolio.errors.DataError` with the reason.

    >>> quote = dict.fromkeys(BOURSE_FIELDS, "") | {"ticker": "ATW",
    ...     "field_cours_courant": "612,50", "field_last_traded_time": "2025-06-20T14:59:32"}
    >>> price_tick_from_bourse(quote)  # doctest: +NORMALIZE_WHITESPACE
    PriceTick(ticker='ATW', price=612.5, event_time=1750427972000, volume=None, source='cse',
              sequence=None)
    """
    try:
        ticker = record["ticker"]
        price_text = record["field_cours_courant"]
        time_text = record["field_last_traded_time"]
    except KeyError as exc:
        raise DataError(f"BourseData record has no field {exc.args[0]!r}") from None
    if not isinstance(ticker, str) or not ticker.strip():
        raise DataError(f"BourseData ticker {ticker!r} is empty")
    ticker = ticker.strip()
    try:
        price = parse_price(price_text)
        event_time = parse_event_time(
            time_text, session_date=record.get("field_date_application") or None
        )
    except DataError as exc:
        raise DataError(f"{ticker}: {exc.reason}") from None
    return PriceTick(ticker, price, event_time, None, source, None)


def bourse_from_price_tick(tick: PriceTick) -> dict[str, str]:
    """A reference ``BourseData`` quote carrying ``tick``; fields it cannot know are ``""``.

    The price goes to ``field_cours_courant`` and ``field_last_traded_price`` (shortest
    round-trip text), the time to ``field_last_traded_time`` as UTC ``...Z`` (the form the
    reference's own producer writes, and exact), the exchange's local date to
    ``field_date_application``.

    >>> quote = bourse_from_price_tick(PriceTick("ATW", 612.5, 1750427972000))
    >>> quote["field_last_traded_time"], quote["field_date_application"]
    ('2025-06-20T13:59:32Z', '2025-06-20')
    >>> price_tick_from_bourse(quote).event_time
    1750427972000
    """
    moment = EPOCH + tick.event_time * ONE_MS
    millis = tick.event_time % 1000
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{millis:03d}Z" if millis else "Z")
    price = repr(float(tick.price))
    quote = dict.fromkeys(BOURSE_FIELDS, "")
    quote.update(
        ticker=tick.ticker,
        field_cours_courant=price,
        field_last_traded_price=price,
        field_last_traded_time=stamp,
        field_date_application=moment.astimezone(_exchange_zone()).date().isoformat(),
    )
    return quote
