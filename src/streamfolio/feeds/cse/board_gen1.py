"""The Gen 1 live board: the JSON ``bourse/dashboard/ticker`` of the retired Next.js site.

Its rows carry the reference project's ``field_*`` names and map to its ``BourseData`` record;
each quote has its last traded time. Dead since about October 2026, kept for
``CseClient(api="gen1")`` and the reference's records. :func:`parse_live_board_gen1` is a pure
function of the body.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from streamfolio.core.calendar import CSE
from streamfolio.errors import DataError
from streamfolio.feeds.cse.board import BoardSnapshot, CseQuote, Reject, duplicate_reject
from streamfolio.feeds.cse.endpoints import BASE_URL, GEN1_BOARD_PATH
from streamfolio.feeds.cse.errors import CseSourceError
from streamfolio.feeds.cse.parsing import (
    decode_json,
    expect_object,
    expect_rows,
    local_date,
    read_count,
    read_positive,
    read_price,
    read_text,
    require_fields,
    row_bytes,
    shorten,
)
from streamfolio.messages import BOURSE_FIELDS, parse_event_time


def _bourse_text(value: object) -> str:
    """A ``BourseData`` string from a raw JSON value.

    The reference replaced arrays with ``"0"``; an empty string says "unknown" without making
    up a number.
    """
    if value is None or isinstance(value, list | dict):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def parse_live_board_gen1(
    payload: str | bytes | Mapping[str, Any],
    url: str = BASE_URL + GEN1_BOARD_PATH,
) -> BoardSnapshot:
    """Read the Gen 1 board ``bourse/dashboard/ticker``: ``{"data": {"values": [...]}}``.

    Each row carries the reference's ``field_*`` names (``reference.md`` §2.1). It becomes a
    ``BourseData`` record (28 strings; numbers, sent as text or as numbers, are written as text)
    and its tick comes from :func:`~streamfolio.messages.price_tick_from_bourse`: price
    ``field_cours_courant``, event time ``field_last_traded_time`` (local time unless it has an
    offset). Rows without ``ticker``, price or time, or with a bad price or time, are rejects.
    """
    data = expect_object(decode_json(payload, url), '{"data": {"values": [...]}}', url)
    values = data.get("data")
    if isinstance(values, Mapping):
        values = values.get("values")
    if values is None:
        raise CseSourceError(
            url,
            f'expected {{"data": {{"values": [...]}}}} (the Gen 1 board), got {shorten(data, 120)}',
            kind="layout",
        )
    rows = expect_rows(values, "data.values", url)
    require_fields(
        rows,
        [("ticker",), ("field_cours_courant",), ("field_last_traded_time",)],
        "data.values",
        url,
    )
    quotes: list[CseQuote] = []
    rejects: list[Reject] = []
    zone = ZoneInfo(CSE.timezone)
    listed: set[str] = set()
    for row in rows:
        if not isinstance(row, Mapping):
            rejects.append(Reject("bad_row", "row is not an object", None, row_bytes(row), url))
            continue
        ticker = read_text(row.get("ticker"))
        if ticker in listed:
            rejects.append(duplicate_reject(ticker, row, url))
            continue
        if ticker:
            listed.add(ticker)
        missing = ["ticker"] if not ticker else []
        missing += [
            name
            for name in ("field_cours_courant", "field_last_traded_time")
            if row.get(name) in (None, "")
        ]
        if missing:
            rejects.append(
                Reject(
                    "missing_field",
                    f"no {', '.join(missing)}",
                    ticker or None,
                    row_bytes(row),
                    url,
                )
            )
            continue
        record = {name: _bourse_text(row.get(name)) for name in BOURSE_FIELDS}
        record["ticker"] = ticker
        try:
            price = read_price(row["field_cours_courant"])
        except DataError as exc:
            rejects.append(Reject("bad_price", exc.reason, ticker, row_bytes(row), url))
            continue
        try:
            event_time = parse_event_time(
                record["field_last_traded_time"],
                session_date=record["field_date_application"] or None,
            )
        except DataError as exc:
            rejects.append(Reject("bad_time", exc.reason, ticker, row_bytes(row), url))
            continue
        trades = read_count(row.get("field_total_trades"))
        quotes.append(
            CseQuote(
                ticker=ticker,
                price=price,
                event_time=event_time,
                session_date=local_date(event_time, zone),
                api="gen1",
                traded=trades is None or trades > 0,
                last_trade_time=event_time,
                cum_shares=read_count(row.get("field_cumul_titres_echanges")),
                cum_value=read_count(row.get("field_cumul_volume_echange")),
                cum_trades=trades,
                open=read_positive(row.get("field_opening_price")),
                high=read_positive(row.get("field_high_price")),
                low=read_positive(row.get("field_low_price")),
                reference=read_positive(row.get("field_static_reference_price")),
                bid=read_positive(row.get("field_best_bid_price")),
                ask=read_positive(row.get("field_best_ask_price")),
                bourse=record,
            )
        )
    return BoardSnapshot(url, "gen1", tuple(quotes), tuple(rejects))
