"""Tests of the exchange website client and poller, offline, on recorded and hand-made responses."""

from __future__ import annotations

import csv
import datetime as dt
import errno
import hashlib
import json
import logging
import ssl
import warnings
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import httpx
import pytest

from streamfolio.core.calendar import CSE, is_trading_day
from streamfolio.errors import SourceError, UsageError
from streamfolio.feeds import cse
from streamfolio.feeds.cse import (
    BoardSnapshot,
    CseClient,
    CsePoller,
    CseSourceError,
    HttpRequest,
    HttpResponse,
    Reject,
)
from streamfolio.feeds.history import read_history
from streamfolio.messages import BOURSE_FIELDS, PriceTick, price_tick_from_bourse

FIXTURES = Path(__file__).parents[1] / "fixtures" / "cse"
ZONE = ZoneInfo("Africa/Casablanca")
LOGGER = "streamfolio.feeds.cse"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def local_s(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> float:
    """Epoch seconds of a wall-clock time in Casablanca."""
    return dt.datetime(year, month, day, hour, minute, sec, tzinfo=ZONE).timestamp()


def local_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> int:
    return int(local_s(year, month, day, hour, minute, sec) * 1000)


def rdn(name: Any) -> dict[str, str]:
    """A subject or issuer of ``SSLContext.get_ca_certs()`` as a plain dict."""
    return {key: value for ((key, value),) in name}


# --------------------------------------------------------------------------------------------
# Test doubles


class Recorded:
    """A transport answering from queues of responses (or exceptions) per path."""

    def __init__(self, routes: dict[str, list[HttpResponse | BaseException | bytes]]) -> None:
        self.routes = {path: deque(items) for path, items in routes.items()}
        self.requests: list[HttpRequest] = []

    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        path = request.url.removeprefix(cse.BASE_URL)
        queue = self.routes[path]
        item = queue[0] if len(queue) == 1 else queue.popleft()  # the last answer repeats
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, bytes):
            return HttpResponse(200, item, {"Content-Type": "application/json"})
        return item


class FakeTime:
    """A clock and a sleep that moves it: nothing in these tests waits for real."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_client(
    transport: Callable[[HttpRequest], HttpResponse], **options: Any
) -> tuple[CseClient, list[float]]:
    sleeps: list[float] = []
    return CseClient(transport, sleep=sleeps.append, **options), sleeps


def tls_failure() -> httpx.ConnectError:
    """What httpx raises when the server's chain does not verify: ConnectError from ssl."""
    try:
        raise ssl.SSLCertVerificationError(
            1,
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local "
            "issuer certificate (_ssl.c:1006)",
        )
    except ssl.SSLError as exc:
        try:
            raise httpx.ConnectError(str(exc)) from exc
        except httpx.ConnectError as wrapped:
            return wrapped


# --------------------------------------------------------------------------------------------
# Gen 2 live board


def test_real_gen2_board_excerpt() -> None:
    board = cse.parse_live_board_gen2(fixture("live-market-actions_2026-10-09_excerpt.html"))
    assert board.api == "gen2" and board.session_status == "open" and not board.rejects
    # session.time 11:58:50 is local time on the date of session.timestamp (2026-10-09, UTC+1)
    assert board.board_time == local_ms(2026, 10, 9, 11, 58, 50)
    quotes = {q.ticker: q for q in board.quotes}
    assert sorted(quotes) == sorted(
        ["ADI", "AKT", "ATW", "BCP", "BOA", "CTM", "DIS", "MUT", "NEJ", "RIS", "SAM"]
    )
    atw = quotes["ATW"]
    assert (atw.price, atw.cum_shares, atw.cum_value, atw.cum_trades) == (
        670.1,
        1830.0,
        1230406.1,
        43.0,
    )
    assert (atw.open, atw.high, atw.low, atw.reference, atw.bid, atw.ask) == (
        670.0,
        676.0,
        670.0,
        670.0,
        670.1,
        675.0,
    )
    assert atw.last_trade_time is None and atw.event_time == board.board_time
    assert atw.session_date == dt.date(2026, 10, 9)
    # NT (not traded) and S (suspended) rows carry the previous close: not trades
    assert {t for t, q in quotes.items() if not q.traded} == {"CTM", "DIS", "NEJ", "SAM"}
    tick = atw.to_price_tick()
    assert tick == PriceTick("ATW", 670.1, board.board_time, None, "cse", None)


def test_gen2_numbers_as_strings_padded_symbols_and_rejects() -> None:
    board = cse.parse_live_board_gen2(fixture("live-market-actions_strings.json"))
    quotes = {q.ticker: q for q in board.quotes}
    assert set(quotes) == {"ATW", "IAM"}  # "ATW  " stripped
    assert (quotes["ATW"].price, quotes["ATW"].cum_shares, quotes["ATW"].cum_value) == (
        670.1,
        1830.0,
        1230406.1,
    )
    assert quotes["IAM"].cum_trades == 88.0
    reasons = [(r.reason, r.ticker) for r in board.rejects]
    assert reasons == [
        ("bad_price", "ZZA"),
        ("bad_price", "ZZB"),
        ("missing_field", None),
        ("missing_field", "ZZD"),
    ]
    assert "not positive" in board.rejects[0].detail
    assert json.loads(board.rejects[0].payload)["symbol"] == "ZZA"


def test_gen2_empty_board() -> None:
    board = cse.parse_live_board_gen2(fixture("live-market-actions_empty.html"))
    assert board.quotes == () and board.rejects == () and board.session_status == "closed"


def test_gen2_renamed_field_is_a_layout_error_naming_it() -> None:
    with pytest.raises(CseSourceError) as caught:
        cse.parse_live_board_gen2(fixture("live-market-actions_renamed-field.json"), "URL")
    error = caught.value
    assert error.kind == "layout" and error.permanent and isinstance(error, SourceError)
    assert "'dernierCours'" in str(error) and "lastPrice" in str(error)
    assert str(error).startswith("URL: ")


def test_gen2_page_without_settings_or_timestamp() -> None:
    with pytest.raises(CseSourceError, match="drupal-settings-json") as caught:
        cse.parse_live_board_gen2(b"<html><body>Maintenance</body></html>")
    assert caught.value.kind == "payload" and not caught.value.permanent
    no_time = {"live_market": {"actions": [{"symbol": "ATW", "dernierCours": 1}], "session": {}}}
    with pytest.raises(CseSourceError, match=r"no usable timestamp"):
        cse.parse_live_board_gen2(json.dumps(no_time))
    with pytest.raises(CseSourceError, match="not JSON"):
        cse.parse_live_board_gen2(
            b'<script data-drupal-selector="drupal-settings-json">{oops</script>'
        )
    with pytest.raises(CseSourceError, match=r"no live_market\.actions"):
        cse.parse_live_board_gen2(b'{"path": {}}')


def test_gen2_board_time_without_clock_and_in_milliseconds() -> None:
    row = [{"symbol": "ATW", "dernierCours": 600, "nbTransactions": 1}]
    seconds = {"live_market": {"actions": row, "session": {"timestamp": 1791543600}}}
    millis = {"live_market": {"actions": row, "session": {"timestamp": 1791543600000}}}
    assert cse.parse_live_board_gen2(json.dumps(seconds)).board_time == 1791543600000
    assert cse.parse_live_board_gen2(json.dumps(millis)).board_time == 1791543600000


# --------------------------------------------------------------------------------------------
# Gen 1 live board


def test_gen1_board_strings_maps_through_price_tick_from_bourse() -> None:
    board = cse.parse_live_board_gen1(fixture("gen1_dashboard-ticker_strings.json"))
    quotes = {q.ticker: q for q in board.quotes}
    assert list(quotes) == ["ATW", "IAM", "BCP", "MDP"]
    atw = quotes["ATW"]
    assert atw.bourse is not None and set(atw.bourse) == set(BOURSE_FIELDS)
    assert all(isinstance(v, str) for v in atw.bourse.values())
    # the reference's BourseData record gives the same tick as the quote
    assert atw.to_price_tick() == price_tick_from_bourse(atw.bourse)
    assert atw.to_price_tick() == PriceTick(
        "ATW", 612.5, local_ms(2025, 6, 20, 14, 59, 32), source="cse"
    )
    assert atw.event_time == atw.last_trade_time == local_ms(2025, 6, 20, 14, 59, 32)
    assert quotes["IAM"].price == 101.85  # French decimal comma
    assert (atw.cum_shares, atw.cum_value, atw.cum_trades) == (48210.0, 29501234.5, 312.0)
    assert not quotes["MDP"].traded and quotes["MDP"].session_date == dt.date(2025, 6, 19)
    rejects = {r.ticker: r for r in board.rejects}
    assert {t: r.reason for t, r in rejects.items()} == {
        "ZZA": "bad_price",
        "ZZB": "bad_time",
        "ZZC": "missing_field",
    }
    assert "field_cours_courant" in rejects["ZZC"].detail
    assert "20/06/2025 14h00" in rejects["ZZB"].detail


def test_gen1_numbers_as_numbers_give_the_same_ticks() -> None:
    strings = cse.parse_live_board_gen1(fixture("gen1_dashboard-ticker_strings.json"))
    numbers = cse.parse_live_board_gen1(fixture("gen1_dashboard-ticker_numbers.json"))
    assert [q.to_price_tick() for q in numbers.quotes] == [
        q.to_price_tick() for q in strings.quotes
    ]
    atw = numbers.quotes[0]
    assert atw.bourse is not None and atw.bourse["field_cumul_titres_echanges"] == "48210"
    assert atw.cum_shares == 48210.0


def test_gen1_empty_renamed_and_wrong_shape() -> None:
    assert cse.parse_live_board_gen1(fixture("gen1_dashboard-ticker_empty.json")).quotes == ()
    with pytest.raises(CseSourceError) as caught:
        cse.parse_live_board_gen1(fixture("gen1_dashboard-ticker_renamed-field.json"))
    assert caught.value.kind == "layout"
    assert "'field_cours_courant'" in str(caught.value) and "all 3 rows" in str(caught.value)
    with pytest.raises(CseSourceError, match=r'expected \{"data": \{"values"'):
        cse.parse_live_board_gen1({"errors": [{"status": "404"}]})
    with pytest.raises(CseSourceError, match=r"expected a list at data\.values"):
        cse.parse_live_board_gen1({"data": {"values": {"ATW": {}}}})


# --------------------------------------------------------------------------------------------
# Daily and index history


def test_real_stock_history_drops_the_cancelled_session() -> None:
    page = cse.parse_stock_history(fixture("stock-historical_ATW_2026-09-08_2026-10-08.json"))
    assert page.total_count == 23 and len(page.bars) == 23 and page.skipped == ()
    assert {bar.ticker for bar in page.bars} == {"ATW"}  # "ATW  " stripped
    placeholder = next(b for b in page.bars if b.session == dt.date(2026, 9, 17))
    assert not placeholder.traded and placeholder.volume == 0
    bars = cse.merge_daily_bars(page.bars)
    sessions = [bar.session for bar in bars]
    assert len(bars) == 22 and dt.date(2026, 9, 17) not in sessions
    assert sessions == sorted(sessions) and sessions[0] == dt.date(2026, 9, 8)
    last = bars[-1]
    assert (last.session, last.open, last.high, last.low, last.close) == (
        dt.date(2026, 10, 8),
        680.0,
        680.0,
        670.0,
        670.0,
    )
    assert (last.volume, last.value, last.trades, last.market_cap) == (
        49319.0,
        33070916.7,
        113,
        144144362130.0,
    )
    # The session date is seance, not the UTC date of the timestamp (the previous day at 23:00)
    assert all(bar.traded for bar in bars)


def test_stock_history_strings_special_rows(caplog: pytest.LogCaptureFixture) -> None:
    page = cse.parse_stock_history(fixture("stock-historical_MDP_strings.json"), ticker="MDP")
    assert len(page.skipped) == 1 and "n/a" in page.skipped[0]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        bars = cse.merge_daily_bars(page.bars)
    days = [bar.session.day for bar in bars]
    # 6th: a public holiday; 9th: a placeholder repeating the 8th; 1st: unreadable close
    assert days == [2, 3, 7, 8, 10]
    by_day = {bar.session.day: bar for bar in bars}
    assert not by_day[7].traded and by_day[7].close == 22.14
    assert by_day[10].open == 21.74 and by_day[10].volume == 2344.0
    assert by_day[10].value == 51270.12
    assert by_day[2].close == 22.1  # dated by its timestamp, read in Africa/Casablanca
    assert "placeholder" in caplog.text and "2023-11-09" in caplog.text


def test_merge_prefers_traded_duplicates_and_keeps_trades_on_calendar_holidays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    untraded = cse.DailyBar("ATW", dt.date(2026, 9, 16), None, None, None, 697.7, 0)
    traded = cse.DailyBar("ATW", dt.date(2026, 9, 16), 698.0, 700.0, 693.1, 697.7, 23984)
    on_holiday = cse.DailyBar("ATW", dt.date(2026, 9, 17), 698.0, 700.0, 693.1, 699.0, 10)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        merged = cse.merge_daily_bars([untraded, traded, on_holiday])
    assert merged == [traded, on_holiday]
    assert "calendar has no session" in caplog.text


def test_empty_history_page() -> None:
    page = cse.parse_stock_history(fixture("stock-historical_empty.json"))
    assert page.total_count == 0 and page.bars == ()
    with pytest.raises(CseSourceError, match="'dernierCours'"):
        cse.parse_stock_history({"totalCount": 1, "items": [{"seance": "08/10/2026", "c": 1}]})


def test_index_history() -> None:
    bars = cse.parse_index_history(fixture("indices-historical_MASI.json"))
    assert [b.session.day for b in bars] == [24, 25, 28, 29, 30]
    assert bars[2].close == 17648.8955  # a French-formatted string
    assert bars[-1].close == 17733.0593 and bars[-1].code == "MASI"
    msi20 = cse.parse_index_history(fixture("indices-historical_MASI.json"), code="MSI20")
    assert {b.close for b in msi20} == {1234.5}
    with pytest.raises(CseSourceError, match="'valeur' of index 'MADEX'"):
        cse.parse_index_history(fixture("indices-historical_MASI.json"), code="MADEX")


def test_write_history_csv_reads_back_with_read_history(tmp_path: Path) -> None:
    page = cse.parse_stock_history(fixture("stock-historical_MDP_strings.json"), ticker="MDP")
    bars = cse.merge_daily_bars(page.bars)
    masi = cse.parse_index_history(fixture("indices-historical_MASI.json"))
    path = tmp_path / "history.csv"
    assert cse.write_history_csv([*bars, *masi], path) == 4 + 5  # the untraded 7th is left out
    with path.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["time", "ticker", "price", "volume"]
    assert rows[1] == ["2023-11-02T15:30:00+01:00", "MDP", "22.1", "1026"]
    assert rows[-1] == ["2026-09-30T15:30:00+01:00", "MASI", "17733.0593", ""]
    history = read_history(path)
    assert history.symbols == ("MASI", "MDP") and len(history) == 9


# --------------------------------------------------------------------------------------------
# Client: requests, windows, retries, errors


def test_stock_history_walks_back_in_windows_until_an_empty_one() -> None:
    transport = Recorded(
        {
            cse.GEN2_STOCK_HISTORY_PATH: [
                fixture("stock-historical_ATW_2026-09-08_2026-10-08.json"),
                fixture("stock-historical_empty.json"),
            ]
        }
    )
    client, _ = make_client(transport)
    bars = client.stock_history("atw", end=dt.date(2026, 10, 8))
    assert len(bars) == 22
    first, second = (r.params for r in transport.requests)
    assert first["instrument"] == "ATW" and first["market"] == "comptant"
    assert first["type"] == "actions" and first["pageSize"] == "1000"
    assert (first["startDate"], first["endDate"]) == ("2025-10-14", "2026-10-08")
    assert (second["startDate"], second["endDate"]) == ("2024-10-19", "2025-10-13")
    for params in (first, second):
        span = dt.date.fromisoformat(params["endDate"]) - dt.date.fromisoformat(params["startDate"])
        assert span.days + 1 == 360  # the API answers nothing for windows over about a year
    assert transport.requests[0].headers["Referer"].endswith("/market-data/cours")


def test_stock_history_stops_at_start_and_defaults_end_to_local_today() -> None:
    transport = Recorded(
        {cse.GEN2_STOCK_HISTORY_PATH: [fixture("stock-historical_ATW_2026-09-08_2026-10-08.json")]}
    )
    # 2026-10-08T23:30Z is already the 9th... no: Casablanca is UTC+1, so 00:30 on the 9th
    client, _ = make_client(transport, clock=lambda: local_s(2026, 10, 9, 0, 30))
    bars = client.stock_history("ATW", start=dt.date(2026, 1, 1))
    assert len(transport.requests) == 1
    assert transport.requests[0].params["startDate"] == "2026-01-01"
    assert transport.requests[0].params["endDate"] == "2026-10-09"
    assert len(bars) == 22


def test_stock_history_pages_when_the_server_caps_the_page_size() -> None:
    items = json.loads(fixture("stock-historical_ATW_2026-09-08_2026-10-08.json"))["items"]
    page1 = json.dumps({"totalCount": 23, "items": items[:20]}).encode()
    page2 = json.dumps({"totalCount": 23, "items": items[20:]}).encode()
    transport = Recorded({cse.GEN2_STOCK_HISTORY_PATH: [page1, page2, b'{"items": []}']})
    client, _ = make_client(transport)
    bars = client.stock_history("ATW", start=dt.date(2026, 9, 1), end=dt.date(2026, 10, 8))
    assert [r.params["pageNumber"] for r in transport.requests] == ["1", "2"]
    assert len(bars) == 22


def test_http_500_then_success_is_retried_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    transport = Recorded(
        {
            cse.GEN2_LIVE_PATH: [
                HttpResponse(500, b"Internal Server Error"),
                HttpResponse(502, b""),
                HttpResponse(200, fixture("live-market-actions_2026-10-09_excerpt.html")),
            ]
        }
    )
    client, sleeps = make_client(transport, backoff_s=0.5)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        board = client.live_board()
    assert len(board.quotes) == 11 and sleeps == [0.5, 1.0]
    assert "HTTP 500" in caplog.text and "retry 1 of 3" in caplog.text
    assert transport.requests[0].headers["Accept"].startswith("text/html")


def test_http_5xx_gives_up_after_the_retries() -> None:
    transport = Recorded({cse.GEN2_LIVE_PATH: [HttpResponse(503, b"<h1>Service Unavailable</h1>")]})
    client, sleeps = make_client(transport, retries=3, backoff_s=1.0, max_backoff_s=3.0)
    with pytest.raises(CseSourceError) as caught:
        client.live_board()
    error = caught.value
    assert error.kind == "http" and error.status == 503 and not error.permanent
    assert sleeps == [1.0, 2.0, 3.0] and len(transport.requests) == 4
    assert "HTTP 503 Service Unavailable" in str(error) and "gave up after 4" in str(error)
    assert cse.BASE_URL + cse.GEN2_LIVE_PATH in str(error)


def test_http_404_is_a_clear_error_without_retry() -> None:
    transport = Recorded({cse.GEN2_INDEX_HISTORY_PATH: [HttpResponse(404, b"Not found")]})
    client, sleeps = make_client(transport)
    with pytest.raises(CseSourceError) as caught:
        client.index_history("MASI", "1y")
    error = caught.value
    assert error.status == 404 and error.permanent and sleeps == []
    assert str(error).startswith(
        "https://www.casablanca-bourse.com/api/boursenova/indices/historical?code=MASI&period=1y"
    )
    assert "HTTP 404 Not Found" in str(error)


def test_429_honours_retry_after_within_the_cap() -> None:
    transport = Recorded(
        {
            cse.GEN2_INDEX_HISTORY_PATH: [
                HttpResponse(429, b"", {"retry-after": "7"}),
                fixture("indices-historical_MASI.json"),
            ]
        }
    )
    client, sleeps = make_client(transport, max_backoff_s=5.0)
    assert len(client.index_history()) == 5
    assert sleeps == [5.0]


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("read timed out"), TimeoutError("timed out")],
    ids=["httpx", "builtin"],
)
def test_timeouts_are_retried_then_reported(failure: BaseException) -> None:
    transport = Recorded({cse.GEN2_STOCK_HISTORY_PATH: [failure]})
    client, sleeps = make_client(transport, retries=2, timeout_s=5.0)
    with pytest.raises(CseSourceError) as caught:
        client.stock_history("ATW", end=dt.date(2026, 10, 8))
    assert caught.value.kind == "timeout" and sleeps == [1.0, 2.0]
    assert "timed out" in str(caught.value) and "gave up after 3" in str(caught.value)
    assert transport.requests[0].timeout_s == 5.0
    assert caught.value.__cause__ is failure


def test_connection_error_then_success() -> None:
    transport = Recorded(
        {
            cse.GEN2_STOCK_HISTORY_PATH: [
                httpx.ConnectError("[Errno 111] Connection refused"),
                fixture("stock-historical_ATW_2026-09-08_2026-10-08.json"),
                fixture("stock-historical_empty.json"),
            ]
        }
    )
    client, sleeps = make_client(transport)
    assert len(client.stock_history("ATW", end=dt.date(2026, 10, 8))) == 22
    assert sleeps == [1.0]


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(tls_failure(), id="httpx-ConnectError-from-ssl"),
        pytest.param(
            ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate"),
            id="ssl",
        ),
    ],
)
def test_tls_failure_names_the_certificate_and_is_not_retried(failure: BaseException) -> None:
    transport = Recorded({cse.GEN2_LIVE_PATH: [failure]})
    client, sleeps = make_client(transport)
    with pytest.raises(CseSourceError) as caught:
        client.live_board()
    error = caught.value
    assert error.kind == "tls" and error.permanent and sleeps == [] and len(transport.requests) == 1
    message = str(error)
    assert "certificate" in message and cse.INTERMEDIATE_CA_NAME in message
    assert str(cse.intermediate_ca_path()) in message and "never disabled" in message


def test_malformed_json_and_transport_bugs() -> None:
    html = HttpResponse(200, b"<!DOCTYPE html><html>Maintenance</html>", {})
    client, _ = make_client(Recorded({cse.GEN2_STOCK_HISTORY_PATH: [html]}))
    with pytest.raises(CseSourceError, match="not JSON") as caught:
        client.stock_history("ATW", end=dt.date(2026, 10, 8))
    assert caught.value.kind == "payload" and "stock-historical?instrument=ATW" in str(caught.value)
    # An exception that is not a network failure is a bug: it is not wrapped or retried.
    client, sleeps = make_client(Recorded({cse.GEN2_LIVE_PATH: [KeyError("bug")]}))
    with pytest.raises(KeyError):
        client.live_board()
    assert sleeps == []


def test_network_oserrors_are_retried_but_other_oserrors_are_bugs() -> None:
    unreachable = OSError(errno.ENETUNREACH, "Network is unreachable")
    transport = Recorded({cse.GEN2_LIVE_PATH: [unreachable]})
    client, sleeps = make_client(transport, retries=1)
    with pytest.raises(CseSourceError, match="connection failed") as caught:
        client.live_board()
    assert caught.value.kind == "connection" and sleeps == [1.0]
    client, sleeps = make_client(Recorded({cse.GEN2_LIVE_PATH: [FileNotFoundError("x.json")]}))
    with pytest.raises(FileNotFoundError):
        client.live_board()
    assert sleeps == []


def test_a_redirect_that_is_not_followed_is_permanent() -> None:
    moved = HttpResponse(301, b"", {"Location": "https://example.org/"})
    client, sleeps = make_client(Recorded({cse.GEN2_LIVE_PATH: [moved]}))
    with pytest.raises(CseSourceError, match="HTTP 301 Moved Permanently") as caught:
        client.live_board()
    assert caught.value.permanent and sleeps == []


def test_gen1_board_request() -> None:
    transport = Recorded({cse.GEN1_BOARD_PATH: [fixture("gen1_dashboard-ticker_strings.json")]})
    client, _ = make_client(transport, api="gen1")
    board = client.live_board()
    assert board.api == "gen1" and len(board.quotes) == 4
    request = transport.requests[0]
    assert request.params == {"marche": "59", "class[0]": "25"}
    assert request.headers["Accept"].startswith("application/vnd.api+json")
    assert board.url.endswith("/bourse/dashboard/ticker?marche=59&class%5B0%5D=25")


def test_httpx_client_as_transport() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == cse.GEN2_INDEX_HISTORY_PATH:
            return httpx.Response(200, content=fixture("indices-historical_MASI.json"))
        return httpx.Response(404, text="no such page")

    with httpx.Client(transport=httpx.MockTransport(handler)) as http_client:
        client = CseClient(http_client, sleep=lambda s: None)
        assert [b.close for b in client.index_history("MASI", "1m")][-1] == 17733.0593
        assert seen[0].url.params["code"] == "MASI" and seen[0].url.params["period"] == "1m"
        assert seen[0].headers["accept-language"].startswith("fr-FR")
        with pytest.raises(CseSourceError, match="404"):
            client.stock_history("ATW", end=dt.date(2026, 10, 8))
        client.close()  # does not close a client it was given
        assert not http_client.is_closed


def test_default_client_verifies_tls_and_closes() -> None:
    with CseClient() as client:
        assert client._owned is not None
    assert client._owned is None
    with pytest.raises(ValueError, match="gen2"):
        CseClient(api=cast(Any, "gen3"))
    with pytest.raises(ValueError, match="period"):
        CseClient(Recorded({})).index_history("MASI", "5y")


# --------------------------------------------------------------------------------------------
# TLS material


def test_shipped_intermediate_parses_with_the_expected_identity() -> None:
    path = cse.intermediate_ca_path()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(path))
    (cert,) = context.get_ca_certs()
    assert rdn(cert["subject"])["commonName"] == cse.INTERMEDIATE_CA_NAME
    issuer = rdn(cert["issuer"])
    assert issuer == {
        "countryName": "GB",
        "organizationName": "Sectigo Limited",
        "commonName": "Sectigo Public Server Authentication Root R46",
    }
    assert cert["notBefore"] == "Mar 22 00:00:00 2021 GMT"
    assert cert["notAfter"] == "Mar 21 23:59:59 2036 GMT"
    assert ssl.cert_time_to_seconds(cert["notAfter"]) > ssl.cert_time_to_seconds(
        "Nov 24 00:00:00 2026 GMT"
    )
    der = ssl.PEM_cert_to_DER_cert(path.read_text())
    assert hashlib.sha256(der).hexdigest().upper() == (
        "8C54C334B66BA4E426772AF4A3F9136C19A1AEC729FDB28C535C07A5A4EF22E0"
    )


def test_ssl_context_adds_the_intermediate_and_keeps_verification_on() -> None:
    context = cse.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert not context.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    names = {rdn(c["subject"]).get("commonName") for c in context.get_ca_certs()}
    assert cse.INTERMEDIATE_CA_NAME in names
    # the intermediate's issuer is a root of the stores, so the chain can be completed
    assert "Sectigo Public Server Authentication Root R46" in names
    with pytest.raises(SourceError, match="cannot load the CA certificate file"):
        cse.ssl_context("/nonexistent/ca.pem")


def test_real_server_chain_verifies_only_with_the_intermediate() -> None:
    verification = pytest.importorskip("cryptography.x509.verification")
    x509 = pytest.importorskip("cryptography.x509")
    certifi = pytest.importorskip("certifi")
    with warnings.catch_warnings():
        # certifi's bundle holds an old root with a negative serial, which cryptography warns of
        warnings.simplefilter("ignore")
        bundle = x509.load_pem_x509_certificates(Path(certifi.where()).read_bytes())
    roots = [
        c
        for c in bundle
        if "Sectigo Public Server Authentication Root R46" in c.subject.rfc4514_string()
    ]
    leaf = x509.load_pem_x509_certificate(fixture("casablanca-bourse-leaf_2026-06-23.pem"))
    intermediate = x509.load_pem_x509_certificate(cse.intermediate_ca_path().read_bytes())

    def verifier() -> Any:
        return (
            verification.PolicyBuilder()
            .store(verification.Store(roots))
            .time(dt.datetime(2026, 10, 8, tzinfo=dt.UTC))
            .build_server_verifier(x509.DNSName("www.casablanca-bourse.com"))
        )

    chain = verifier().verify(leaf, [intermediate])
    assert [c.subject.rfc4514_string().split(",")[0] for c in chain] == [
        "CN=*.casablanca-bourse.com",
        f"CN={cse.INTERMEDIATE_CA_NAME}",
        "CN=Sectigo Public Server Authentication Root R46",
    ]
    with pytest.raises(verification.VerificationError):
        verifier().verify(leaf, [])  # what the server sends: no intermediate


# --------------------------------------------------------------------------------------------
# Poller


def board_with(changes: dict[str, dict[str, Any]], minute: int = 58) -> bytes:
    """The real board excerpt with some rows changed and the board clock set to 11:`minute`."""
    page = fixture("live-market-actions_2026-10-09_excerpt.html").decode()
    start = page.index('drupal-settings-json">') + len('drupal-settings-json">')
    end = page.index("</script>", start)
    settings = json.loads(page[start:end])
    for row in settings["live_market"]["actions"]:
        row.update(changes.get(row["symbol"], {}))
    settings["live_market"]["session"]["time"]["m"] = minute
    return json.dumps(settings).encode()


def poller_for(
    boards: list[HttpResponse | BaseException | bytes],
    start: float,
    *,
    api: cse.Api = "gen2",
    **options: Any,
) -> tuple[CsePoller, FakeTime, Recorded]:
    path = cse.GEN1_BOARD_PATH if api == "gen1" else cse.GEN2_LIVE_PATH
    transport = Recorded({path: boards})
    fake = FakeTime(start)
    client = CseClient(transport, api=api, sleep=fake.sleep, retries=0)
    options.setdefault("tickers", ["ATW", "BCP", "RIS", "CTM"])
    poller = CsePoller(client, clock=fake.clock, sleep=fake.sleep, **options)
    return poller, fake, transport


def test_poller_sleeps_until_the_open_then_polls(caplog: pytest.LogCaptureFixture) -> None:
    poller, fake, transport = poller_for(
        [fixture("live-market-actions_2026-10-09_excerpt.html")],
        local_s(2026, 10, 9, 8, 0),
        max_polls=1,
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        items = list(poller)
    assert fake.sleeps == [5400.0]  # 08:00 -> 09:30 local
    assert len(transport.requests) == 1
    assert (
        "sleeping 5400 s until the next session opens at 2026-10-09T09:30:00+01:00" in caplog.text
    )
    ticks = [i for i in items if isinstance(i, PriceTick)]
    assert sorted(t.ticker for t in ticks) == ["ATW", "BCP", "RIS"]  # CTM did not trade
    assert all(t.source == "cse" for t in ticks)


def test_poller_uses_the_ramadan_offset() -> None:
    # 2026-02-25 is in Ramadan: Casablanca is UTC+0, so 09:30 local is 09:30Z, not 08:30Z
    start = dt.datetime(2026, 2, 25, 8, 0, tzinfo=dt.UTC).timestamp()
    poller, _, _ = poller_for([b"{}"], start, max_polls=1)
    assert poller.seconds_until_polling(start) == 5400.0
    inside = dt.datetime(2026, 2, 25, 9, 0, tzinfo=dt.UTC).timestamp()
    assert poller.seconds_until_polling(inside) == 1800.0
    # the close (15:30 local) plus the 2-minute grace is 15:32Z that day
    assert (
        poller.seconds_until_polling(dt.datetime(2026, 2, 25, 15, 31, tzinfo=dt.UTC).timestamp())
        == 0
    )
    late = dt.datetime(2026, 2, 25, 15, 33, tzinfo=dt.UTC).timestamp()
    tomorrow = dt.datetime(2026, 2, 26, 9, 30, tzinfo=dt.UTC).timestamp()
    assert poller.seconds_until_polling(late) == tomorrow - late


def test_poller_skips_weekends_holidays_and_stops_after_the_grace() -> None:
    poller, _, _ = poller_for([b"{}"], 0.0)
    saturday = local_s(2026, 10, 10, 12, 0)
    assert poller.seconds_until_polling(saturday) == local_s(2026, 10, 12, 9, 30) - saturday
    green_march = local_s(2026, 11, 6, 10, 0)  # a Friday, fixed-date holiday
    assert not is_trading_day(dt.date(2026, 11, 6))
    assert poller.seconds_until_polling(green_march) == local_s(2026, 11, 9, 9, 30) - green_march
    cancelled = local_s(2026, 9, 17, 11, 0)  # the cancelled session, in the calendar
    assert poller.seconds_until_polling(cancelled) == local_s(2026, 9, 18, 9, 30) - cancelled
    assert poller.seconds_until_polling(local_s(2026, 10, 9, 15, 31)) == 0.0  # closing prints
    after = local_s(2026, 10, 9, 15, 33)
    assert poller.seconds_until_polling(after) == local_s(2026, 10, 12, 9, 30) - after
    extra = CsePoller(poller.client, calendar=CSE.with_holidays([dt.date(2026, 10, 12)]))
    assert extra.seconds_until_polling(after) == local_s(2026, 10, 13, 9, 30) - after


def test_poller_market_hours_off_polls_at_night() -> None:
    poller, fake, transport = poller_for(
        [fixture("live-market-actions_2026-10-09_excerpt.html")],
        local_s(2026, 10, 10, 3, 0),
        market_hours_only=False,
        max_polls=2,
    )
    items = list(poller)
    assert len(transport.requests) == 2 and fake.sleeps == [2.0]
    assert len(items) == 3  # the second poll repeats the first: nothing new


def test_poller_deduplicates_and_computes_volume_since_the_last_tick() -> None:
    poller, _, _ = poller_for([b"{}"], 0.0)
    first = poller.process(cse.parse_live_board_gen2(board_with({})))
    assert sorted(t.ticker for t in first.ticks) == ["ATW", "BCP", "RIS"]
    assert all(t.volume is None for t in first.ticks)  # nothing to diff against yet
    # one minute later, nothing traded: the board clock moved, the trades did not
    assert poller.process(cse.parse_live_board_gen2(board_with({}, minute=59))).ticks == ()
    # then ATW trades 70 shares at 671, and BCP trades again at the same price
    changed = board_with(
        {
            "ATW": {"dernierCours": 671, "nbTransactions": 44, "quantite": 1900},
            "BCP": {"nbTransactions": 25, "quantite": 1300},
        },
        minute=59,
    )
    third = poller.process(cse.parse_live_board_gen2(changed))
    ticks = {t.ticker: t for t in third.ticks}
    assert set(ticks) == {"ATW", "BCP"}
    assert ticks["ATW"] == PriceTick("ATW", 671.0, local_ms(2026, 10, 9, 11, 59, 50), 70.0, "cse")
    assert ticks["BCP"].price == 242.5 and ticks["BCP"].volume == 19.0


def test_gen1_dedup_by_last_traded_time_and_price() -> None:
    rows = json.loads(fixture("gen1_dashboard-ticker_strings.json"))["data"]["values"][:3]
    poller, _, _ = poller_for([b"{}"], 0.0, api="gen1", tickers=None)

    def board(**atw: str) -> BoardSnapshot:
        changed = [dict(rows[0], **atw), *rows[1:]]
        return cse.parse_live_board_gen1({"data": {"values": changed}})

    assert len(poller.process(board()).ticks) == 3
    assert poller.process(board()).ticks == ()
    # same time and price but a refreshed best bid: not a new trade
    assert poller.process(board(field_best_bid_price="612.40")).ticks == ()
    later = board(
        field_last_traded_time="2025-06-20T15:01:02",
        field_cours_courant="612.60",
        field_cumul_titres_echanges="48300",
    )
    (tick,) = poller.process(later).ticks
    assert tick == PriceTick("ATW", 612.6, local_ms(2025, 6, 20, 15, 1, 2), 90.0, "cse")


def test_cumulative_decrease_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    poller, _, _ = poller_for([b"{}"], 0.0)
    poller.process(cse.parse_live_board_gen2(board_with({})))
    fewer = board_with({"ATW": {"dernierCours": 671, "nbTransactions": 40, "quantite": 1500}})
    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = poller.process(cse.parse_live_board_gen2(fewer))
    assert "ATW: cumulative shares 1830 -> 1500, trades 43 -> 40 within session 2026-10-09" in (
        caplog.text
    )
    assert [t.volume for t in result.ticks] == [None]  # no volume from a decrease
    caplog.clear()
    next_day = json.loads(board_with({"ATW": {"nbTransactions": 3, "quantite": 100}}))
    next_day["live_market"]["session"]["timestamp"] += 3 * 86400  # Monday 2026-10-12
    with caplog.at_level(logging.INFO, logger=LOGGER):
        poller.process(cse.parse_live_board_gen2(json.dumps(next_day)))
    assert "new session 2026-10-12" in caplog.text and "WARNING" not in caplog.text


def test_poller_yields_rejects_and_keeps_going() -> None:
    bad = board_with({"ATW": {"dernierCours": 0}, "RIS": {"dernierCours": "abc"}})
    poller, _, _ = poller_for(
        [bad, board_with({}, minute=59)],
        local_s(2026, 10, 9, 10, 0),
        max_polls=2,
    )
    items = list(poller)
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [(r.reason, r.ticker) for r in rejects] == [("bad_price", "ATW"), ("bad_price", "RIS")]
    ticks = [i for i in items if isinstance(i, PriceTick)]
    assert [t.ticker for t in ticks] == ["BCP", "ATW", "RIS"]  # the second poll's good rows
    letter = rejects[0].to_dead_letter(1791543600000, source_topic="intraday-stock-prices")
    assert letter.reason == "bad_price" and letter.key == b"ATW"
    assert json.loads(letter.payload)["dernierCours"] == 0
    assert "ATW: price 0 is not positive (https://www.casablanca-bourse.com" in letter.detail


def test_poller_survives_transient_failures_and_raises_permanent_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    poller, fake, _ = poller_for(
        [HttpResponse(500, b"oops"), fixture("live-market-actions_2026-10-09_excerpt.html")],
        local_s(2026, 10, 9, 10, 0),
        max_polls=2,
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        items = list(poller)
    assert len(items) == 3 and "poll 1 failed (1 in a row)" in caplog.text
    assert fake.sleeps == [2.0]
    poller, _, _ = poller_for([HttpResponse(404, b"")], local_s(2026, 10, 9, 10, 0))
    with pytest.raises(CseSourceError, match="404"):
        list(poller)
    poller, _, _ = poller_for(
        [HttpResponse(503, b"")], local_s(2026, 10, 9, 10, 0), max_consecutive_failures=3
    )
    with pytest.raises(CseSourceError, match="503"):
        list(poller)


def test_poller_polls_at_a_fixed_rate() -> None:
    class SlowTransport(Recorded):
        def __call__(self, request: HttpRequest) -> HttpResponse:
            fake.now += 0.75  # each request takes 0.75 s
            return super().__call__(request)

    fake = FakeTime(local_s(2026, 10, 9, 10, 0))
    transport = SlowTransport({cse.GEN2_LIVE_PATH: [board_with({})]})
    client = CseClient(transport, sleep=fake.sleep)
    poller = CsePoller(
        client, ["ATW"], interval_s=2.0, clock=fake.clock, sleep=fake.sleep, max_polls=3
    )
    assert len(list(poller)) == 1
    assert fake.sleeps == [1.25, 1.25]


def test_poller_rejects_bad_settings() -> None:
    client = CseClient(Recorded({}))
    with pytest.raises(UsageError, match="interval_s"):
        CsePoller(client, interval_s=0)
