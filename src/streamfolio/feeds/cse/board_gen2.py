"""The Gen 2 live board: the ``/live-market/actions`` page of the current site.

The page has no JSON endpoint for live quotes; its ``drupal-settings-json`` script holds every
listed share and the board's clock. Its rows carry no trade time, so every quote is stamped with
that clock (``SEMANTICS.md`` §1). :func:`parse_live_board_gen2` is a pure function of the body.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any, Final
from zoneinfo import ZoneInfo

from streamfolio.core.calendar import CSE, ExchangeCalendar
from streamfolio.errors import DataError
from streamfolio.feeds.cse.board import BoardSnapshot, CseQuote, Reject, duplicate_reject
from streamfolio.feeds.cse.endpoints import BASE_URL, GEN2_LIVE_PATH
from streamfolio.feeds.cse.errors import CseSourceError
from streamfolio.feeds.cse.parsing import (
    EPOCH,
    ONE_MS,
    check_size,
    decode_json,
    expect_object,
    expect_rows,
    local_date,
    read_count,
    read_epoch_ms,
    read_number,
    read_positive,
    read_price,
    read_text,
    require_fields,
    row_bytes,
    shorten,
)

# The settings script is found tag by tag (_settings_script), not by one regular expression over
# the page, which backtracks quadratically on a hostile page full of unclosed <script tags.
_SCRIPT_OPEN_RE: Final = re.compile(r"<script\b", re.I)
_SCRIPT_CLOSE_RE: Final = re.compile(r"</script>", re.I)
_SETTINGS_ATTR_RE: Final = re.compile(
    r"\bdata-drupal-selector\s*=\s*[\"']drupal-settings-json[\"']", re.I
)
# Gen 2 row status: T traded, NT not traded today, S suspended (the page's legend).
_UNTRADED_STATUS: Final = frozenset({"NT", "S"})


def parse_live_board_gen2(
    body: str | bytes, url: str = BASE_URL + GEN2_LIVE_PATH, *, calendar: ExchangeCalendar = CSE
) -> BoardSnapshot:
    """Read the Gen 2 live board: the ``/live-market/actions`` page, or its settings JSON.

    The page's ``<script data-drupal-selector="drupal-settings-json">`` holds
    ``live_market.actions`` (one row per share: ``symbol``, ``dernierCours``, ``quantite``
    shares, ``volume`` MAD, ``nbTransactions``, ``ouverture``, ``plusHaut``, ``plusBas``,
    ``reference``, ``statut``, ``achat``/``vente``...) and ``live_market.session``
    (``status``, ``timestamp`` epoch seconds, ``time`` ``{h, m, s}``). Rows have no trade time:
    every quote gets the board's time, ``session.time`` read as local time on the date of
    ``session.timestamp`` (or that timestamp itself when ``time`` is absent). Numbers may be
    JSON numbers or text. A row without ``symbol`` or with a price that is missing, not positive
    or not finite is a :class:`Reject`.

    >>> page = ('<script type="application/json" data-drupal-selector="drupal-settings-json">'
    ...         '{"live_market": {"actions": [{"symbol": "ATW  ", "dernierCours": "670,1", '
    ...         '"nbTransactions": 43, "quantite": 1830}], "session": {"status": "open", '
    ...         '"timestamp": 1791543600, "time": {"h": 11, "m": 58, "s": 50}}}}</script>')
    >>> quote = parse_live_board_gen2(page).quotes[0]
    >>> quote.ticker, quote.price, quote.event_time, quote.session_date.isoformat()
    ('ATW', 670.1, 1791543530000, '2026-10-09')
    """
    settings = _gen2_settings(body, url)
    live = settings.get("live_market") if "live_market" in settings else settings
    live = expect_object(live, "live_market", url)
    if "actions" not in live:
        raise CseSourceError(
            url,
            "no live_market.actions in the page's drupal settings: the page's layout changed "
            f"(top-level keys: {', '.join(sorted(settings)[:20])})",
            kind="layout",
        )
    rows = expect_rows(live["actions"], "live_market.actions", url)
    session = live.get("session")
    session = session if isinstance(session, Mapping) else {}
    status = read_text(session.get("status")) or None
    if not rows:
        return BoardSnapshot(url, "gen2", session_status=status)
    require_fields(rows, [("symbol",), ("dernierCours",)], "live_market.actions", url)
    board_time = _gen2_board_time(session, calendar.zone)
    if board_time is None:
        # No timestamp at all is the layout changing; one out of range is a garbled answer.
        raise CseSourceError(
            url,
            "live_market.session has no usable timestamp (none, or not an epoch time in "
            "1970..9999), and the rows carry no trade time: cannot date the quotes "
            f"(session: {shorten(session, 200)})",
            kind="layout" if session.get("timestamp") is None else "payload",
        )
    session_date = local_date(board_time, calendar.zone)
    quotes: list[CseQuote] = []
    rejects: list[Reject] = []
    listed: set[str] = set()
    for row in rows:
        if not isinstance(row, Mapping):
            rejects.append(Reject("bad_row", "row is not an object", None, row_bytes(row), url))
            continue
        ticker = read_text(row.get("symbol"))
        if not ticker:
            rejects.append(Reject("missing_field", "no symbol", None, row_bytes(row), url))
            continue
        if ticker in listed:
            rejects.append(duplicate_reject(ticker, row, url))
            continue
        listed.add(ticker)
        if row.get("dernierCours") is None:
            rejects.append(
                Reject("missing_field", "no dernierCours (price)", ticker, row_bytes(row), url)
            )
            continue
        try:
            price = read_price(row["dernierCours"])
        except DataError as exc:
            rejects.append(Reject("bad_price", exc.reason, ticker, row_bytes(row), url))
            continue
        trades = read_count(row.get("nbTransactions"))
        shares = read_count(row.get("quantite"))
        opening = read_positive(row.get("ouverture"))
        statut = read_text(row.get("statut")).upper()
        if statut in _UNTRADED_STATUS:
            traded = False
        elif trades is not None:
            traded = trades > 0
        elif shares is not None:
            traded = shares > 0
        else:
            traded = opening is not None or statut == "T"
        bid, ask = row.get("achat"), row.get("vente")
        quotes.append(
            CseQuote(
                ticker=ticker,
                price=price,
                event_time=board_time,
                session_date=session_date,
                api="gen2",
                traded=traded,
                cum_shares=shares,
                cum_value=read_count(row.get("volume")),
                cum_trades=trades,
                open=opening,
                high=read_positive(row.get("plusHaut")),
                low=read_positive(row.get("plusBas")),
                reference=read_positive(row.get("reference")),
                bid=read_positive(bid.get("prix")) if isinstance(bid, Mapping) else None,
                ask=read_positive(ask.get("prix")) if isinstance(ask, Mapping) else None,
            )
        )
    return BoardSnapshot(url, "gen2", tuple(quotes), tuple(rejects), status, board_time)


def _gen2_settings(body: str | bytes, url: str) -> Mapping[str, Any]:
    check_size(body, url)
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    stripped = text.lstrip()
    if stripped.startswith("{"):  # the settings JSON on its own (a JSON endpoint, a fixture)
        data = decode_json(stripped, url)
    else:
        script = _settings_script(text)
        if script is None:
            raise CseSourceError(
                url,
                'no <script data-drupal-selector="drupal-settings-json"> in the page (is it '
                f"the live board? it starts with {stripped[:80]!r})",
                kind="payload",
            )
        data = decode_json(script, url)
    if not isinstance(data, Mapping):
        raise CseSourceError(url, "the drupal settings are not a JSON object", kind="payload")
    return data


def _settings_script(page: str) -> str | None:
    """The text of the page's ``drupal-settings-json`` script, or None; linear in the page.

    Tags do not nest, so each ``<script`` tag is read up to its ``>`` once: a page of unclosed
    tags costs one pass, where a single regular expression would backtrack quadratically.
    """
    position = 0
    while (opening := _SCRIPT_OPEN_RE.search(page, position)) is not None:
        end = page.find(">", opening.end())
        if end < 0:
            return None
        if _SETTINGS_ATTR_RE.search(page, opening.end(), end):
            closing = _SCRIPT_CLOSE_RE.search(page, end + 1)
            return None if closing is None else page[end + 1 : closing.start()]
        position = end + 1
    return None


def _gen2_board_time(session: Mapping[str, Any], zone: ZoneInfo) -> int | None:
    stamp = read_epoch_ms(session.get("timestamp"))
    if stamp is None:
        return None
    clock = session.get("time")
    if isinstance(clock, Mapping):
        hour, minute = read_number(clock.get("h")), read_number(clock.get("m"))
        second = read_number(clock.get("s")) or 0.0
        if hour is not None and minute is not None:
            day = local_date(stamp, zone)
            try:
                local = dt.datetime(
                    day.year, day.month, day.day, int(hour), int(minute), int(second), tzinfo=zone
                )
            except (ValueError, OverflowError):  # h=25, or h=1e30 (too big for a C int)
                return stamp
            return (local - EPOCH) // ONE_MS
    return stamp
