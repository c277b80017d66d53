"""Hostile answers from the exchange (issue #11): the client raises only its source error, rejects
bad rows with a reason, refuses redirects away from HTTPS or the configured host, and stops
reading at the size cap; the poller and the feed carry on with the next, good board."""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from streamfolio.core.calendar import CSE
from streamfolio.errors import SourceError
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
from streamfolio.feeds.cse_feed import cse_ticks
from streamfolio.feeds.run import FeedOptions
from streamfolio.messages import PriceTick

FIXTURES = Path(__file__).parents[1] / "fixtures" / "cse"
GOOD_PAGE = (FIXTURES / "live-market-actions_2026-10-09_excerpt.html").read_bytes()
GOOD_GEN1 = (FIXTURES / "gen1_dashboard-ticker_strings.json").read_bytes()
REASONS = {"missing_field", "bad_price", "bad_time", "bad_row"}
SESSION = {"status": "open", "timestamp": 1791543600, "time": {"h": 11, "m": 58, "s": 50}}
# 10 AM on the fixture's session day (2026-10-09), Casablanca time (UTC+1): the market is open.
OPEN_S = 1791536400.0


# --------------------------------------------------------------------------------------------
# Bodies


def raw(text: str) -> bytes:
    return text.encode()


def gen2(actions: object, session: object = None, **top: object) -> bytes:
    """A Gen 2 settings JSON (the form the page's script holds) with these rows and session."""
    live = {"actions": actions, "session": SESSION if session is None else session}
    return json.dumps({"live_market": live, **top}).encode()


def row2(symbol: object = "ATW", price: object = "670,10", **more: object) -> dict[str, object]:
    return {"symbol": symbol, "dernierCours": price, "nbTransactions": 43, "quantite": 1830} | more


def gen1(values: object) -> bytes:
    return json.dumps({"data": {"values": values}}).encode()


def row1(
    ticker: object = "ATW", price: object = "612,50", time: object = "2025-06-20T14:59:32"
) -> dict[str, object]:
    return {"ticker": ticker, "field_cours_courant": price, "field_last_traded_time": time}


def history(items: object) -> bytes:
    return json.dumps({"totalCount": 1, "items": items}).encode()


def index(items: object) -> bytes:
    return json.dumps({"items": items}).encode()


GOOD_ROW2 = row2()
GOOD_ROW1 = row1()
HUGE_INT = "1" + "0" * 400  # JSON allows it; float() of it overflows
DEEP = b"[" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000
TOO_BIG = b" " * cse.MAX_BODY_BYTES + b"{}"
NOT_UTF8 = b'{"data": {"values": [{"ticker": "AT\xff\xfeW"}]}}'
TRUNCATED_GEN1 = GOOD_GEN1[: len(GOOD_GEN1) // 2]
TRUNCATED_PAGE = GOOD_PAGE[: GOOD_PAGE.index(b'"session"') + 20]  # the settings end mid-way


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


# --------------------------------------------------------------------------------------------
# The table: a parser, a body, and what must come out of it


Parse = Callable[[bytes], object]
PARSERS: dict[str, Parse] = {
    "gen2": cse.parse_live_board_gen2,
    "gen1": cse.parse_live_board_gen1,
    "history": cse.parse_stock_history,
    "index": cse.parse_index_history,
}


@dataclass(frozen=True)
class Case:
    """``error``: the message the source error must contain (``kind`` if given); else the
    answer is read and ``rejects`` lists the (reason, ticker) pairs, ``quotes`` the tickers."""

    id: str
    parser: str
    body: bytes
    error: str | None = None
    kind: str | None = None
    rejects: tuple[tuple[str, str | None], ...] = ()
    quotes: tuple[str, ...] = ()


CASES = [
    # rows, or whole lists, that are numbers, strings or null
    Case(
        "gen1 data is a list of numbers",
        "gen1",
        raw('{"data": [1, 2, 3]}'),
        "none of the 3 rows",
        "payload",
    ),
    Case("gen1 values are numbers", "gen1", gen1([1, 2, 3]), "none of the 3 rows", "payload"),
    Case("gen1 values are null", "gen1", gen1([None]), "is an object", "payload"),
    Case("gen2 actions are strings", "gen2", gen2(["ATW", "BCP"]), "none of the 2 rows", "payload"),
    Case("history items are numbers", "history", history([1, 2]), "none of the 2 rows", "payload"),
    Case("index items are numbers", "index", index([1, 2]), "none of the 2 rows", "payload"),
    Case(
        "gen2 stray number, string and null rows",
        "gen2",
        gen2([GOOD_ROW2, 1, "x", None]),
        rejects=(("bad_row", None),) * 3,
        quotes=("ATW",),
    ),
    Case(
        "gen1 stray rows",
        "gen1",
        gen1([GOOD_ROW1, 7, "x", None, []]),
        rejects=(("bad_row", None),) * 4,
        quotes=("ATW",),
    ),
    Case(
        "gen2 actions is a number",
        "gen2",
        gen2(5),
        "expected a list at live_market.actions",
        "payload",
    ),
    Case(
        "gen2 live_market is a string",
        "gen2",
        raw('{"live_market": "x"}'),
        "JSON object",
        "payload",
    ),
    Case("gen1 values is a string", "gen1", gen1("x"), "expected a list at data.values", "payload"),
    # fields of the wrong type inside a row: rejected, with the existing reasons
    Case(
        "gen2 symbol and price of the wrong types",
        "gen2",
        gen2([row2(symbol=5), row2(symbol=["ATW"]), row2(price={"x": 1}), row2("BCP", [1])]),
        rejects=(
            ("missing_field", None),
            ("missing_field", None),
            ("bad_price", "ATW"),
            ("bad_price", "BCP"),
        ),
    ),
    Case(
        "gen1 price and time of the wrong types",
        "gen1",
        gen1([row1(price=[1]), row1("BCP", time={"h": 1}), row1("IAM", time=12.5)]),
        rejects=(("bad_price", "ATW"), ("bad_time", "BCP"), ("bad_time", "IAM")),
    ),
    # numbers out of range: per row, never an OverflowError
    Case(
        "gen2 prices: 0, negative, NaN, inf, huge integer, 'NaN'",
        "gen2",
        raw(
            '{"live_market": {"session": {"timestamp": 1791543600}, "actions": ['
            '{"symbol": "A", "dernierCours": 0}, {"symbol": "B", "dernierCours": -3},'
            '{"symbol": "C", "dernierCours": NaN}, {"symbol": "D", "dernierCours": Infinity},'
            f'{{"symbol": "E", "dernierCours": {HUGE_INT}}},'
            '{"symbol": "F", "dernierCours": "NaN"},'
            '{"symbol": "G", "dernierCours": 1e400}, {"symbol": "ATW", "dernierCours": 1e20}]}}'
        ),
        rejects=tuple(("bad_price", t) for t in "ABCDEFG"),
        quotes=("ATW",),
    ),
    Case(
        "gen2 counts and clock out of range are dropped, not fatal",
        "gen2",
        gen2(
            [row2(quantite=HUGE_INT, nbTransactions=-1e308, volume=float("inf"))],
            {"timestamp": 1791543600, "time": {"h": 1e30, "m": -1e30, "s": "NaN"}},
        ),
        quotes=("ATW",),
    ),
    Case(
        "gen1 trade times 1e20, -1e20, 'NaN' and the year 10000",
        "gen1",
        gen1(
            [
                row1("A", time=1e20),
                row1("B", time=-1e20),
                row1("C", time="NaN"),
                row1("D", time="10000-01-01T00:00:00"),
                row1("E", time="9999-12-31T23:59:59-12:00"),
                GOOD_ROW1,
            ]
        ),
        rejects=tuple(("bad_time", t) for t in "ABCDE"),
        quotes=("ATW",),
    ),
    Case(
        "gen2 board timestamp 1e20",
        "gen2",
        gen2([GOOD_ROW2], {"timestamp": 1e20}),
        "no usable timestamp",
        "payload",
    ),
    Case(
        "gen2 board timestamp -1e20",
        "gen2",
        gen2([GOOD_ROW2], {"timestamp": -1e20}),
        "no usable timestamp",
        "payload",
    ),
    Case(
        "gen2 board timestamp 'NaN'",
        "gen2",
        gen2([GOOD_ROW2], {"timestamp": "NaN"}),
        "no usable timestamp",
        "payload",
    ),
    Case(
        "gen2 board timestamp a huge integer",
        "gen2",
        gen2([GOOD_ROW2], {"timestamp": 10**400}),
        "no usable timestamp",
        "payload",
    ),
    # deep nesting, truncation, bytes that are not UTF-8, a huge body
    Case("100000 levels of [", "gen1", DEEP, "nested too deep", "payload"),
    Case("100000 levels of {", "history", DEEP_OBJECT, "nested too deep", "payload"),
    Case(
        "100000 levels of [ in the page's script",
        "gen2",
        b'<script data-drupal-selector="drupal-settings-json">' + DEEP + b"</script>",
        "nested too deep",
        "payload",
    ),
    Case(
        "a row nested 200 deep",
        "gen2",
        gen2([row2(achat=nested(200))]),
        "nested too deep",
        "payload",
    ),
    Case(
        "a row nested 900 deep",
        "index",
        b'{"items": [{"seance": ' + b"[" * 900 + b"1" + b"]" * 900 + b"}]}",
        "nested too deep",
        "payload",
    ),
    Case("truncated JSON", "gen1", TRUNCATED_GEN1, "not JSON", "payload"),
    Case("truncated page", "gen2", TRUNCATED_PAGE, "drupal-settings-json", "payload"),
    Case("not UTF-8", "gen1", NOT_UTF8, "not JSON", "payload"),
    Case("not UTF-8 history", "history", b"\xff\xfe\x00{" * 10, "not JSON", "payload"),
    Case(
        "a body over the cap",
        "gen1",
        TOO_BIG,
        f"answer larger than {cse.MAX_BODY_BYTES} bytes",
        "payload",
    ),
    Case("a page over the cap", "gen2", b"<html>" + TOO_BIG, "answer larger than", "payload"),
    Case(
        "unclosed script tags", "gen2", b"<script data-x " * 2000, "drupal-settings-json", "payload"
    ),
    Case(
        "closed script tags", "gen2", b"<script data-x>" * 2000, "drupal-settings-json", "payload"
    ),
    # the wrong top-level type
    *(
        Case(f"{parser} top level {text}", parser, raw(text), "JSON object", "payload")
        for parser in ("gen1", "history")
        for text in ("[]", "5", '"x"', "null", "true")
    ),
    Case("index top level null", "index", raw("null"), "JSON object", "payload"),
    Case("gen2 top level a list", "gen2", raw("[1]"), "drupal-settings-json", "payload"),
    Case("gen2 empty body", "gen2", b"", "drupal-settings-json", "payload"),
    # missing keys: the layout error, as before
    Case("gen1 empty object", "gen1", raw("{}"), '{"data": {"values"', "layout"),
    Case("history empty object", "history", raw("{}"), '"items"', "layout"),
    Case("gen2 empty object", "gen2", raw("{}"), "no live_market.actions", "layout"),
    Case(
        "gen2 session without a timestamp",
        "gen2",
        gen2([GOOD_ROW2], {"status": "open"}),
        "no usable timestamp",
        "layout",
    ),
    Case(
        "rows missing keys",
        "gen1",
        gen1([GOOD_ROW1, {"ticker": "BCP"}, {"field_cours_courant": "1"}]),
        rejects=(("missing_field", "BCP"), ("missing_field", None)),
        quotes=("ATW",),
    ),
    # duplicated instruments: the first row counts, the others are rejects
    Case(
        "gen2 duplicated instrument",
        "gen2",
        gen2([GOOD_ROW2, row2("ATW  ", "700"), row2("BCP", "0"), row2("BCP", "300")]),
        rejects=(("bad_row", "ATW"), ("bad_price", "BCP"), ("bad_row", "BCP")),
        quotes=("ATW",),
    ),
    Case(
        "gen1 duplicated instrument",
        "gen1",
        gen1([GOOD_ROW1, row1(price="1"), row1("BCP")]),
        rejects=(("bad_row", "ATW"),),
        quotes=("ATW", "BCP"),
    ),
]


def outcome(parser: str, body: bytes) -> object:
    """The parser's answer, or its :class:`CseSourceError`; any other exception fails the test."""
    try:
        return PARSERS[parser](body)
    except CseSourceError as exc:
        return exc


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_answer_is_a_source_error_or_rejected_rows(case: Case) -> None:
    result = outcome(case.parser, case.body)
    if case.error is not None:
        assert isinstance(result, CseSourceError) and isinstance(result, SourceError), result
        assert case.error in str(result)
        assert case.kind is None or result.kind == case.kind
        assert len(str(result)) < 1000, "the message quotes the answer, never all of it"
        return
    assert isinstance(result, BoardSnapshot), result
    assert [(r.reason, r.ticker) for r in result.rejects] == list(case.rejects)
    assert all(r.reason in REASONS and r.detail for r in result.rejects)
    assert [q.ticker for q in result.quotes] == list(case.quotes)
    for quote in result.quotes:  # every quote the parser lets through makes a valid tick
        assert isinstance(quote.to_price_tick(volume=quote.cum_shares), PriceTick)


def test_a_page_of_unclosed_script_tags_is_refused() -> None:
    """The old single regular expression backtracked quadratically: about a minute for this
    page; reading tag by tag it is milliseconds (no timing asserted: the test would hang)."""
    page = b"<html>" + b"<script data-x " * 10_000 + b"<script data-y>" * 10_000
    with pytest.raises(CseSourceError, match="drupal-settings-json"):
        cse.parse_live_board_gen2(page)


def test_duplicate_rejects_say_why() -> None:
    board = cse.parse_live_board_gen2(gen2([GOOD_ROW2, row2("ATW", "700")]))
    assert board.quotes[0].price == 670.1, "the first row counts"
    assert "duplicate row: ATW is listed earlier" in board.rejects[0].detail
    assert json.loads(board.rejects[0].payload)["dernierCours"] == "700"


def test_history_rows_with_timestamps_out_of_range_are_skipped_with_the_reason() -> None:
    rows = [
        {"dernierCours": 600, "timestamp": 1e20},
        {"dernierCours": 600, "timestamp": -1e20},
        {"dernierCours": 600, "timestamp": "NaN"},
        {"dernierCours": 600, "seance": 17},
        {"dernierCours": int(HUGE_INT), "seance": "08/10/2026"},
        {"dernierCours": 600, "seance": "08/10/2026", "nbTransactions": 1e300},
    ]
    page = cse.parse_stock_history(history(rows), ticker="ATW")
    assert [bar.close for bar in page.bars] == [600.0]
    assert len(page.skipped) == 5
    assert "timestamp 1e+20 is not an epoch time in 1970..9999" in page.skipped[0]
    assert "price is a number too large" in page.skipped[4]
    bars = cse.parse_index_history(index([{"seance": "30/09/2026", "valeur": 1}, 5, None]))
    assert [bar.close for bar in bars] == [1.0]


# --------------------------------------------------------------------------------------------
# The poller and the feed carry on


class Answers:
    """A transport answering each request with the next body (the last one repeats)."""

    def __init__(self, *bodies: bytes) -> None:
        self.bodies = deque(bodies)
        self.requests: list[HttpRequest] = []

    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        body = self.bodies[0] if len(self.bodies) == 1 else self.bodies.popleft()
        return HttpResponse(200, body, {"Content-Type": "text/html"})


POLLER_CASES = [c for c in CASES if c.parser in ("gen1", "gen2")]


@pytest.mark.parametrize("case", POLLER_CASES, ids=[c.id for c in POLLER_CASES])
def test_the_poller_publishes_the_next_good_board_after_a_hostile_one(case: Case) -> None:
    api: cse.Api = cast(cse.Api, case.parser)
    good = GOOD_PAGE if api == "gen2" else GOOD_GEN1
    client = CseClient(Answers(case.body, good), api=api, retries=0, sleep=lambda _: None)
    poller = CsePoller(client, market_hours_only=False, sleep=lambda _: None)
    before: tuple[PriceTick, ...] = ()
    try:
        first = poller.poll_once()
    except CseSourceError:
        pass
    else:
        assert all(r.reason in REASONS for r in first.rejects)
        before = first.ticks
    after = poller.poll_once().ticks
    # What a fresh poller makes of the good board: each tick is published now, or was already
    # (the hostile board carried the same trade, which is then not repeated).
    expected = CsePoller(CseClient(Answers(good), api=api), market_hours_only=False).poll_once()
    assert expected.ticks and all(t in after or t in before for t in expected.ticks)


def test_the_iterating_poller_logs_a_hostile_board_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="streamfolio.feeds.cse")
    sleeps: list[float] = []
    for body in (DEEP, gen2(5), TRUNCATED_PAGE, gen2([GOOD_ROW2], {"timestamp": 1e20}), TOO_BIG):
        client = CseClient(Answers(body, GOOD_PAGE), retries=0, sleep=sleeps.append)
        poller = CsePoller(
            client, ["ATW", "BCP"], market_hours_only=False, sleep=sleeps.append, max_polls=2
        )
        items = list(poller)
        assert [i.ticker for i in items if isinstance(i, PriceTick)] == ["ATW", "BCP"]
    assert caplog.text.count("poll 1 failed (1 in a row)") == 5


class FakePublisher:
    def __init__(self) -> None:
        self.rejected: list[tuple[str, str, bytes]] = []

    def reject(self, reason: str, detail: str, payload: bytes) -> None:
        self.rejected.append((reason, detail, payload))


def test_the_feed_dead_letters_bad_rows_and_publishes_after_a_hostile_board() -> None:
    settings = SimpleNamespace(
        portfolios=[SimpleNamespace(tickers=("ATW", "BCP"))],
        exchange=SimpleNamespace(calendar=lambda: CSE),
    )
    hostile = [DEEP, gen2([row2("ATW", "671"), 1, row2("BCP", "NaN")]), GOOD_PAGE]
    client = CseClient(Answers(*hostile), retries=0, sleep=lambda _: None)
    publisher = FakePublisher()
    ticks = cse_ticks(
        cast(Any, settings),
        FeedOptions(source="cse", interval_s=0.001, all_hours=True),
        cast(Any, publisher),
        lambda _: None,
        client=client,
        max_polls=3,
    )
    published = list(ticks)
    assert [(ticker, price) for _, ticker, price in published] == [
        ("ATW", 671.0),  # the second board's good row
        ("ATW", 670.1),  # the recorded board: ATW moved, BCP is new
        ("BCP", 242.5),
    ]
    assert [reason for reason, _, _ in publisher.rejected] == ["bad_row", "bad_price"]


# --------------------------------------------------------------------------------------------
# Redirects and the size cap, through the transport seam


def redirect(status: int, location: str) -> HttpResponse:
    return HttpResponse(status, b"moved", {"Location": location})


class Routes:
    """A transport answering by full URL (query included), recording what was asked."""

    def __init__(self, routes: dict[str, HttpResponse]) -> None:
        self.routes = routes
        self.asked: list[str] = []

    def __call__(self, request: HttpRequest) -> HttpResponse:
        self.asked.append(request.full_url)
        return self.routes[request.full_url]


LIVE = cse.BASE_URL + cse.GEN2_LIVE_PATH


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        ("http://www.casablanca-bourse.com/live-market/actions", "leaves HTTPS for http"),
        ("https://evil.example/live-market/actions", "another host"),
        ("//evil.example/live-market/actions", "another host"),
        ("https://www.casablanca-bourse.com@evil.example/", "another host"),
        ("https://www.casablanca-bourse.com:8443/x", "another host"),
        ("https://casablanca-bourse.com/x", "another host"),
        ("ftp://www.casablanca-bourse.com/x", "leaves HTTPS for ftp"),
        ("https://www.casablanca-bourse.com:99999/x", "not a valid URL"),
        ("https://[::1/x", "not a valid URL"),
    ],
)
def test_a_redirect_away_from_https_or_the_host_is_refused(location: str, problem: str) -> None:
    transport = Routes({LIVE: redirect(302, location)})
    sleeps: list[float] = []
    client = CseClient(transport, sleep=sleeps.append)
    with pytest.raises(CseSourceError) as caught:
        client.live_board()
    error = caught.value
    assert error.kind == "http" and error.status == 302 and error.permanent
    assert "HTTP 302 Found" in str(error) and repr(location) in str(error) and problem in str(error)
    assert transport.asked == [LIVE] and sleeps == [], "nothing is fetched from the Location"


def test_a_same_host_https_redirect_is_followed_a_bounded_number_of_times() -> None:
    moved = cse.BASE_URL + "/fr/live-market/actions?x=1"
    transport = Routes(
        {LIVE: redirect(301, "/fr/live-market/actions?x=1"), moved: HttpResponse(200, GOOD_PAGE)}
    )
    board = CseClient(transport, sleep=lambda _: None).live_board()
    assert len(board.quotes) == 11 and transport.asked == [LIVE, moved]
    loop = Routes({LIVE: redirect(307, LIVE)})
    with pytest.raises(CseSourceError, match="more than 5 redirects") as caught:
        CseClient(loop, sleep=lambda _: None).live_board()
    assert len(loop.asked) == cse.MAX_REDIRECTS + 1 and caught.value.permanent


def test_a_body_over_the_cap_is_a_payload_error_from_any_transport() -> None:
    sleeps: list[float] = []
    client = CseClient(Routes({LIVE: HttpResponse(200, TOO_BIG)}), sleep=sleeps.append)
    with pytest.raises(CseSourceError, match="answer larger than 8388608 bytes") as caught:
        client.live_board()
    assert caught.value.kind == "payload" and not caught.value.permanent and sleeps == []


def test_httpx_transport_never_follows_redirects_itself() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if (
            request.url.host == "www.casablanca-bourse.com"
            and request.url.path == cse.GEN2_LIVE_PATH
        ):
            return httpx.Response(302, headers={"Location": "http://www.casablanca-bourse.com/x"})
        return httpx.Response(200, content=GOOD_PAGE)

    with (
        httpx.Client(transport=httpx.MockTransport(handler), follow_redirects=True) as http,
        pytest.raises(CseSourceError, match="leaves HTTPS"),
    ):
        CseClient(http, sleep=lambda _: None).live_board()
    assert seen == [LIVE]


def test_httpx_transport_reports_a_body_that_does_not_decode() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        garbage = httpx.ByteStream(b"not gzip at all")  # a stream: httpx decodes it when read
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, stream=garbage)

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as http,
        pytest.raises(CseSourceError, match="does not decode") as caught,
    ):
        CseClient(http, sleep=lambda _: None).live_board()
    assert caught.value.kind == "payload"


# --------------------------------------------------------------------------------------------
# Redirects and the size cap, on a real local HTTP server


class Site:
    """A local HTTP server: ``routes`` maps a path to (status, headers, body chunks)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], Callable[[], Iterator[bytes]]]] = {}
        self.hits: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes

            def do_GET(self) -> None:
                site.hits.append(self.path)
                status, headers, chunks = site.routes.get(
                    self.path.split("?")[0], (404, {}, lambda: iter([b"no such page"]))
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    for chunk in chunks():
                        self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: what the cap is for

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    home, other = Site(), Site()
    yield home, other
    home.close()
    other.close()


def body(data: bytes) -> Callable[[], Iterator[bytes]]:
    return lambda: iter([data])


def endless(total: int, chunk: int = 64 * 1024) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        for _ in range(0, total, chunk):
            yield b" " * chunk

    return chunks


def test_local_server_redirect_to_another_host_is_refused(sites: tuple[Site, Site]) -> None:
    home, other = sites
    other.routes[cse.GEN2_LIVE_PATH] = (200, {}, body(GOOD_PAGE))
    elsewhere = f"http://localhost:{other.server.server_address[1]}{cse.GEN2_LIVE_PATH}"
    home.routes[cse.GEN2_LIVE_PATH] = (302, {"Location": elsewhere}, body(b""))
    with (
        CseClient(base_url=home.url, retries=0) as client,
        pytest.raises(CseSourceError, match="another host") as caught,
    ):
        client.live_board()
    assert elsewhere in str(caught.value) and other.hits == []


def test_local_server_same_host_redirect_is_followed(sites: tuple[Site, Site]) -> None:
    home, _ = sites
    home.routes[cse.GEN2_LIVE_PATH] = (302, {"Location": "/board?page=1"}, body(b""))
    home.routes["/board"] = (200, {"Content-Type": "text/html"}, body(GOOD_PAGE))
    with CseClient(base_url=home.url, retries=0) as client:
        assert len(client.live_board().quotes) == 11
    assert home.hits == [cse.GEN2_LIVE_PATH, "/board?page=1"], "the Location's query is kept"


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "until-close"])
def test_local_server_redirect_to_an_oversized_body_stops_at_the_cap(
    sites: tuple[Site, Site], declared: bool
) -> None:
    home, _ = sites
    size = cse.MAX_BODY_BYTES + 1024 * 1024
    headers = {"Content-Length": str(size)} if declared else {}
    home.routes[cse.GEN2_LIVE_PATH] = (301, {"Location": "/big"}, body(b""))
    home.routes["/big"] = (200, headers, endless(size))
    too_big = f"answer larger than {cse.MAX_BODY_BYTES}"
    with (
        CseClient(base_url=home.url, retries=0) as client,
        pytest.raises(CseSourceError, match=too_big) as err,
    ):
        client.live_board()
    assert err.value.kind == "payload" and not err.value.permanent


def test_board_snapshot_rejects_are_rejects() -> None:
    """The Reject type the table checks is the one the poller yields (a guard on the import)."""
    from streamfolio.feeds.cse import poller

    assert Reject is poller.Reject
