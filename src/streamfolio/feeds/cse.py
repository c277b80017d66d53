"""Casablanca Stock Exchange website client: live board, daily history, index history, poller.

The exchange publishes no market-data API; its website's pages call JSON endpoints of their own,
and this module calls the same ones (``shared/research/cse-data.md`` §1):

- **Gen 2** (the current site, from about August 2026), base ``https://www.casablanca-bourse.com``:
  the live board is the page ``/live-market/actions``, whose ``drupal-settings-json`` script holds
  every listed share (no JSON endpoint for live quotes is known); daily bars come from
  ``/api/boursenova/stock-historical`` and index closes from
  ``/api/boursenova/indices/historical``.
- **Gen 1** (the Next.js site the reference project used, dead since about October 2026):
  ``/api/proxy/fr/api/bourse/dashboard/ticker``, a JSON board of ``field_*`` quotes that map to the
  reference's ``BourseData`` record. Selected with ``CseClient(api="gen1")``; only the live board
  exists for it here.

Everything that reads a response is a pure function over the body (:func:`parse_live_board_gen2`,
:func:`parse_live_board_gen1`, :func:`parse_stock_history`, :func:`parse_index_history`), so the
tests run on recorded responses. :class:`CseClient` adds the HTTP side: an injectable transport
(an ``httpx.Client`` or any callable), timeouts, retries with exponential back-off, and TLS with the
intermediate certificate the server omits (:func:`ssl_context`). :class:`CsePoller` polls the live
board during sessions and turns new trades into :class:`~streamfolio.messages.PriceTick` values.

Event times (``SEMANTICS.md`` §1): a Gen 1 quote carries its last traded time, local
``Africa/Casablanca`` time unless it has an offset. A Gen 2 board row has no trade time at all, so
its quotes are stamped with the board's own clock (``live_market.session``) and a new trade is
recognised by a changed price or trade count. The Gen 2 page says its prices are delayed by 15
minutes; the board's clock is not, and no delay is subtracted (nothing documents it precisely).

Errors: HTTP 4xx, TLS failures, timeouts after the last retry and unreadable payloads raise
:class:`CseSourceError` (a :class:`~streamfolio.errors.SourceError`) naming the URL and the
problem. A single bad row is not an error: it comes back as a :class:`Reject` to dead-letter.
The answers are not trusted: the parsers raise nothing but :class:`CseSourceError` for any body
(wrong JSON types, numbers out of range, nesting deeper than :data:`MAX_JSON_DEPTH`), a body is
read up to :data:`MAX_BODY_BYTES` only, and a redirect is followed only to HTTPS on the
configured host (at most :data:`MAX_REDIRECTS` of them).

>>> board = parse_live_board_gen1({"data": {"values": [{"ticker": "ATW",
...     "field_cours_courant": "612,50", "field_last_traded_time": "2025-06-20T14:59:32"}]}})
>>> board.quotes[0].to_price_tick()  # doctest: +NORMALIZE_WHITESPACE
PriceTick(ticker='ATW', price=612.5, event_time=1750427972000, volume=None, source='cse',
          sequence=None)
"""

from __future__ import annotations

import csv
import datetime as dt
import errno
import http
import json
import logging
import math
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import urlencode, urljoin, urlsplit
from zoneinfo import ZoneInfo

import httpx

from streamfolio.core.calendar import (
    CSE,
    ExchangeCalendar,
    is_trading_day,
    next_session_open,
    session_bounds,
)
from streamfolio.errors import DataError, SourceError
from streamfolio.messages import (
    BOURSE_FIELDS,
    DeadLetter,
    PriceTick,
    parse_event_time,
    parse_price,
    price_tick_from_bourse,
)

__all__ = [
    "BASE_URL",
    "INDEX_PERIODS",
    "INTERMEDIATE_CA_NAME",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_REDIRECTS",
    "Api",
    "BoardSnapshot",
    "CseClient",
    "CsePoller",
    "CseQuote",
    "CseSourceError",
    "DailyBar",
    "HistoryPage",
    "HttpRequest",
    "HttpResponse",
    "HttpxTransport",
    "IndexBar",
    "PollResult",
    "Reject",
    "Transport",
    "intermediate_ca_path",
    "merge_daily_bars",
    "parse_index_history",
    "parse_live_board_gen1",
    "parse_live_board_gen2",
    "parse_stock_history",
    "ssl_context",
    "write_history_csv",
]

logger = logging.getLogger(__name__)

Api: TypeAlias = Literal["gen2", "gen1"]
ErrorKind: TypeAlias = Literal["http", "tls", "timeout", "connection", "payload", "layout"]

BASE_URL: Final = "https://www.casablanca-bourse.com"
INTERMEDIATE_CA_NAME: Final = "Sectigo Public Server Authentication CA DV R36"
"""Common name of the intermediate certificate the exchange's server does not send."""

GEN2_LIVE_PATH: Final = "/live-market/actions"
GEN2_STOCK_HISTORY_PATH: Final = "/api/boursenova/stock-historical"
GEN2_INDEX_HISTORY_PATH: Final = "/api/boursenova/indices/historical"
GEN1_BOARD_PATH: Final = "/api/proxy/fr/api/bourse/dashboard/ticker"
# The reference's query: the equities board ("marché actions") of the cash market.
GEN1_BOARD_PARAMS: Final[Mapping[str, str]] = {"marche": "59", "class[0]": "25"}

INDEX_PERIODS: Final = ("1m", "3m", "6m", "1y", "3y")
"""The ``period`` values the Gen 2 index history accepts (about 3 years at most)."""

MAX_BODY_BYTES: Final = 8 * 1024 * 1024
"""Largest answer read, in bytes (8 MiB): the biggest real ones (the live page, a 1000-row history
page) are a few hundred KiB, so more is not an answer to read but a fault or an attack on memory.
A larger body is a ``payload`` :class:`CseSourceError`; reading stops at the cap."""

MAX_REDIRECTS: Final = 5
"""Redirects followed per request (to HTTPS on the configured host only; others are refused)."""

MAX_JSON_DEPTH: Final = 64
"""Deepest nesting of arrays and objects accepted in a JSON answer (the real ones nest 5 deep):
deeper JSON would exhaust the parser's or the row code's recursion, so it is a ``payload`` error."""

_USER_AGENT: Final = "Mozilla/5.0 (compatible; streamfolio/0.1; market-data client)"
_JSON_ACCEPT: Final = "application/json, text/plain, */*"
_HTML_ACCEPT: Final = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"
_GEN2_HEADERS: Final[Mapping[str, str]] = {
    "User-Agent": _USER_AGENT,
    "Accept-Language": "fr-FR,fr;q=0.9",
    "Referer": f"{BASE_URL}/market-data/cours",
}
_GEN1_HEADERS: Final[Mapping[str, str]] = {
    "User-Agent": _USER_AGENT,
    "Accept-Language": "fr-FR,fr;q=0.9",
    "Content-Type": "application/vnd.api+json",
    "Referer": f"{BASE_URL}/fr/live-market/marche-actions-groupement",
}
_GEN1_ACCEPT: Final = "application/vnd.api+json, application/json;q=0.9"

# A year is ~250 sessions, so one page of 1000 rows holds a window; more pages are a safeguard.
_PAGE_SIZE: Final = 1000
_MAX_PAGES: Final = 20
# About 3 years of history exist; 12 windows of 360 days stop a runaway loop with room to spare.
_MAX_WINDOWS: Final = 12
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# 9999-12-30T23:59:59.999Z, as in streamfolio.messages: any zone's local date of it still exists.
_MAX_EPOCH_MS: Final = 253_402_214_399_999
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_ONE_MS: Final = dt.timedelta(milliseconds=1)
_NUMBER_RE: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_SPACES: Final = str.maketrans("", "", " \u00a0\u202f\t")
_NO_VALUE: Final = frozenset({"", "-", "--", "null", "none", "n/a", "na", "nan"})
_DMY_RE: Final = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_ISO_DATE_RE: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
# The settings script is found tag by tag (_settings_script), not by one regular expression over
# the page, which backtracks quadratically on a hostile page full of unclosed <script tags.
_SCRIPT_OPEN_RE: Final = re.compile(r"<script\b", re.I)
_SCRIPT_CLOSE_RE: Final = re.compile(r"</script>", re.I)
_SETTINGS_ATTR_RE: Final = re.compile(
    r"\bdata-drupal-selector\s*=\s*[\"']drupal-settings-json[\"']", re.I
)
_NETWORK_ERRNOS: Final = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.ETIMEDOUT}
)
# Gen 2 row status: T traded, NT not traded today, S suspended (the page's legend).
_UNTRADED_STATUS: Final = frozenset({"NT", "S"})


# --------------------------------------------------------------------------------------------
# Errors


class CseSourceError(SourceError):
    """The exchange's website failed, or answered something this client cannot read.

    ``kind`` says which: ``http`` (``status`` set), ``tls``, ``timeout``, ``connection``,
    ``payload`` (not the expected JSON/HTML) or ``layout`` (readable, but a field the client
    needs is gone: the API changed). :attr:`permanent` errors will not go away by retrying.

    >>> error = CseSourceError("https://x/y", "HTTP 404 Not Found", kind="http", status=404)
    >>> str(error), error.permanent
    ('https://x/y: HTTP 404 Not Found', True)
    """

    def __init__(
        self, url: str, problem: str, *, kind: ErrorKind, status: int | None = None
    ) -> None:
        self.url = url
        self.problem = problem
        self.kind: ErrorKind = kind
        self.status = status
        super().__init__(f"{url}: {problem}")

    @property
    def permanent(self) -> bool:
        """Whether retrying later cannot help: TLS, a changed layout, HTTP 3xx/4xx but 408/429."""
        if self.kind in ("tls", "layout"):
            return True
        return (
            self.kind == "http"
            and self.status is not None
            and self.status < 500
            and not _retryable_status(self.status)
        )


def _retryable_status(status: int) -> bool:
    # 408 Request Timeout and 429 Too Many Requests are the server asking to try again later.
    return status >= 500 or status in (408, 429)


# --------------------------------------------------------------------------------------------
# TLS


def intermediate_ca_path() -> Path:
    """The shipped PEM of the intermediate certificate the server omits (see its README).

    >>> intermediate_ca_path().name
    'sectigo-dv-r36.pem'
    """
    pem = resources.files("streamfolio").joinpath("feeds", "certs", "sectigo-dv-r36.pem")
    return Path(str(pem))


def ssl_context(extra_ca: str | Path | None = None) -> ssl.SSLContext:
    """A verifying TLS context: system roots, certifi's roots, and the missing intermediate.

    ``extra_ca`` is a PEM file of further CA certificates, by default :func:`intermediate_ca_path`.
    Verification is always on (``CERT_REQUIRED`` and host-name checks); the extra certificate only
    completes the server's chain, it is never a trust anchor by itself.

    >>> context = ssl_context()
    >>> context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    True
    """
    path = Path(extra_ca) if extra_ca is not None else intermediate_ca_path()
    context = ssl.create_default_context()
    try:
        import certifi
    except ImportError:  # certifi comes with httpx; without it the system store must do
        pass
    else:
        # The system store may be empty (slim containers); certifi's holds the Sectigo roots.
        context.load_verify_locations(cafile=certifi.where())
    try:
        context.load_verify_locations(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise SourceError(
            f"cannot load the CA certificate file {path}: {exc}. streamfolio ships the "
            f"intermediate '{INTERMEDIATE_CA_NAME}' as {intermediate_ca_path()}; reinstall the "
            "package or pass extra_ca=PATH to a readable PEM file"
        ) from exc
    # Python 3.13 turns partial chains on by default, which would make the intermediate a trust
    # anchor: keep requiring a chain up to a root of the stores.
    context.verify_flags &= ~ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def _ssl_error_in(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _is_certificate_failure(exc: BaseException) -> bool:
    error = _ssl_error_in(exc)
    if isinstance(error, ssl.SSLCertVerificationError):
        return True
    # httpx re-raises ssl errors as ConnectError; the ssl text survives even if the chain doesn't.
    return "CERTIFICATE_VERIFY_FAILED" in str(exc) or (
        error is not None and "CERTIFICATE_VERIFY_FAILED" in str(error)
    )


def _classify(exc: BaseException) -> ErrorKind | None:
    """What a transport exception means, or None for an exception that is a bug, not a failure."""
    if _is_certificate_failure(exc):
        return "tls"
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(
        exc,
        httpx.TransportError | ConnectionError | ssl.SSLError | socket.gaierror | socket.herror,
    ):
        return "connection"
    # Only the network's OSErrors: a FileNotFoundError from a test transport is a bug to show.
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return "connection"
    return None


def _tls_problem(exc: BaseException) -> str:
    cause = _ssl_error_in(exc)
    detail = getattr(cause, "verify_message", None) or str(cause or exc)
    return (
        f"TLS certificate verification failed ({detail}). The exchange's server does not send "
        f"its intermediate certificate '{INTERMEDIATE_CA_NAME}'; CseClient adds the copy shipped "
        f"as {intermediate_ca_path()} when it builds its own HTTP client (a transport you pass in "
        "must use streamfolio.feeds.cse.ssl_context()). If the server's certificate chain "
        "changed, replace that file (see the README next to it) or pass extra_ca=PATH. "
        "Verification is never disabled."
    )


# --------------------------------------------------------------------------------------------
# Transport


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One GET: ``url`` without its query, ``params``, ``headers`` and a timeout in seconds."""

    url: str
    params: Mapping[str, str]
    headers: Mapping[str, str]
    timeout_s: float

    @property
    def full_url(self) -> str:
        """The URL with its query string, for messages.

        >>> HttpRequest("https://x/a", {"b": "1", "c[0]": "2"}, {}, 1.0).full_url
        'https://x/a?b=1&c%5B0%5D=2'
        """
        return f"{self.url}?{urlencode(dict(self.params))}" if self.params else self.url


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A response: status code, raw body, headers (looked up case-insensitively)."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """The value of header ``name``, any case.

        >>> HttpResponse(200, b"", {"Content-Type": "text/html"}).header("content-type")
        'text/html'
        """
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    def text(self) -> str:
        """The body decoded as UTF-8 (the site's encoding); bad bytes become U+FFFD."""
        return self.body.decode("utf-8", errors="replace")


Transport: TypeAlias = Callable[[HttpRequest], HttpResponse]
"""Performs one request. It raises on network failure (timeouts, refused connections, TLS), and
returns any HTTP status without following redirects; :class:`CseClient` decides what a status
means and which redirect to follow. It may raise :class:`CseSourceError` itself (a body over
:data:`MAX_BODY_BYTES`)."""


class HttpxTransport:
    """A :data:`Transport` over an ``httpx.Client`` (which the caller owns and closes).

    It never lets httpx follow a redirect, whatever the client's setting (:class:`CseClient`
    checks where a redirect goes), and streams the body, stopping at ``max_body_bytes``: an
    endless or huge answer costs that much memory at most, not all of it.
    """

    def __init__(self, client: httpx.Client, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.client = client
        self.max_body_bytes = max_body_bytes

    def __call__(self, request: HttpRequest) -> HttpResponse:
        url = request.full_url
        too_big = CseSourceError(
            url, f"answer larger than {self.max_body_bytes} bytes", kind="payload"
        )
        with self.client.stream(
            "GET",
            request.url,
            # None, not {}: an empty mapping would drop the query of a redirect's URL.
            params=dict(request.params) or None,
            headers=dict(request.headers),
            timeout=request.timeout_s,
            follow_redirects=False,
        ) as response:
            declared = response.headers.get("Content-Length", "").strip()
            # Said so up front: read none of it (a length of 19+ digits is over any cap).
            if (
                declared.isascii()
                and declared.isdigit()
                and (len(declared) > 18 or int(declared) > self.max_body_bytes)
            ):
                raise too_big
            chunks: list[bytes] = []
            size = 0
            try:
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise too_big
                    chunks.append(chunk)
            except httpx.DecodingError as exc:  # a Content-Encoding the body does not follow
                raise CseSourceError(
                    url, f"the body does not decode ({exc})", kind="payload"
                ) from exc
            return HttpResponse(response.status_code, b"".join(chunks), dict(response.headers))


# --------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, slots=True)
class Reject:
    """A board row that cannot become a tick: why, which ticker, and the row as JSON bytes.

    ``reason`` is ``missing_field``, ``bad_price``, ``bad_time`` or ``bad_row``.

    >>> Reject("bad_price", "price '0' is not positive", "ATW", b"{}").to_dead_letter(0).reason
    'bad_price'
    """

    reason: str
    detail: str
    ticker: str | None
    payload: bytes
    url: str = ""

    def to_dead_letter(
        self, timestamp: int, *, component: str = "feeds.cse", source_topic: str = ""
    ) -> DeadLetter:
        """The dead letter for this row; ``timestamp`` is when it was rejected (epoch ms)."""
        where = f" ({self.url})" if self.url else ""
        return DeadLetter(
            self.reason,
            f"{self.ticker or '?'}: {self.detail}{where}",
            source_topic,
            self.payload,
            timestamp,
            component,
            key=self.ticker.encode() if self.ticker else None,
        )


@dataclass(frozen=True, slots=True)
class CseQuote:
    """One instrument on the live board, with a valid price and event time.

    ``event_time`` is epoch ms UTC: the last traded time (Gen 1) or the board's clock (Gen 2,
    which has no trade time; ``last_trade_time`` is then None). ``traded`` is False when the stock
    has not traded in the current session (its price is then the previous close, not a trade).
    Cumulative fields are for the session: shares, value in MAD, number of trades. ``bourse`` is
    the Gen 1 quote as a reference ``BourseData`` record (28 strings).
    """

    ticker: str
    price: float
    event_time: int
    session_date: dt.date
    api: Api
    traded: bool = True
    last_trade_time: int | None = None
    cum_shares: float | None = None
    cum_value: float | None = None
    cum_trades: float | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    reference: float | None = None
    bid: float | None = None
    ask: float | None = None
    bourse: Mapping[str, str] | None = field(default=None, compare=False, repr=False)

    @property
    def trade_key(self) -> tuple[object, ...]:
        """What identifies the last trade: equal keys on two polls mean no new trade.

        With a trade time, (time, price); without one (Gen 2), (price, trades, shares), since
        the board's clock moves on every poll whether or not anything traded.
        """
        if self.last_trade_time is not None:
            return ("time", self.last_trade_time, self.price)
        return ("cumulative", self.price, self.cum_trades, self.cum_shares)

    def to_price_tick(self, *, volume: float | None = None, source: str = "cse") -> PriceTick:
        """The :class:`~streamfolio.messages.PriceTick` of this quote.

        A Gen 1 quote goes through :func:`~streamfolio.messages.price_tick_from_bourse`, as the
        reference's records do. ``volume`` is the shares traded since the previous tick, if known.
        """
        if self.bourse is not None:
            tick = price_tick_from_bourse(self.bourse, source=source)
            return tick if volume is None else replace(tick, volume=float(volume))
        return PriceTick(
            self.ticker,
            self.price,
            self.event_time,
            None if volume is None else float(volume),
            source,
            None,
        )


@dataclass(frozen=True, slots=True)
class BoardSnapshot:
    """One read of the live board: valid quotes, rejected rows, and the session as reported."""

    url: str
    api: Api
    quotes: tuple[CseQuote, ...] = ()
    rejects: tuple[Reject, ...] = ()
    session_status: str | None = None
    board_time: int | None = None


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


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll produced: new ticks and rejected rows (to dead-letter)."""

    ticks: tuple[PriceTick, ...]
    rejects: tuple[Reject, ...]
    snapshot: BoardSnapshot | None = None


# --------------------------------------------------------------------------------------------
# Parsing helpers


def _number(value: object) -> float | None:
    """A finite number from a JSON number or text (French or English style), else None.

    >>> _number("1 234,5"), _number(680), _number("-"), _number(None), _number("abc")
    (1234.5, 680.0, None, None, None)
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer of 309 digits or more: JSON allows it
            return None
    elif isinstance(value, str):
        text = value.translate(_SPACES)
        if text.lower() in _NO_VALUE:
            return None
        if "," in text:
            if "." in text and text.rfind(".") > text.rfind(","):
                text = text.replace(",", "")
            else:
                text = text.replace(".", "").replace(",", ".")
        if not _NUMBER_RE.fullmatch(text):
            return None
        number = float(text)
    else:
        return None
    return number if math.isfinite(number) else None


def _positive(value: object) -> float | None:
    number = _number(value)
    return number if number is not None and number > 0 else None


def _count(value: object) -> float | None:
    """A cumulative count (shares, MAD, trades): finite and >= 0, else None.

    A negative count is nonsense, and it would let a tick's volume (a difference of two counts)
    overflow to infinity.
    """
    number = _number(value)
    return number if number is not None and number >= 0 else None


def _price(value: object) -> float:
    """:func:`~streamfolio.messages.parse_price`, with an integer too large for a float (which
    JSON allows) a :class:`~streamfolio.errors.DataError` too, not an ``OverflowError``."""
    try:
        return parse_price(value)  # type: ignore[arg-type]  # parse_price checks the type
    except OverflowError:
        raise DataError("price is a number too large to be a price") from None


def _text(value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Mapping):  # {"fr": ..., "en": ..., "ar": ...}
        return _text(value.get("fr") or value.get("en") or "")
    return ""


def _row_bytes(row: object) -> bytes:
    try:
        return json.dumps(row, ensure_ascii=False, sort_keys=True, default=str).encode()
    except (TypeError, ValueError):
        return repr(row).encode()


def _local_date(epoch_ms: int, zone: ZoneInfo) -> dt.date:
    return (_EPOCH + epoch_ms * _ONE_MS).astimezone(zone).date()


def _epoch_ms(value: object) -> int | None:
    """Epoch milliseconds from a number of seconds or milliseconds (both are seen), or None.

    None also for a time outside 1970..9999, which no date can hold (``1e20`` would overflow).
    """
    number = _number(value)
    if number is None or number < 0:
        return None
    millis = int(number if number > 1e11 else number * 1000)
    return millis if millis <= _MAX_EPOCH_MS else None


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
    stamp = _epoch_ms(raw)
    if stamp is None:
        if raw is None:
            raise ValueError("row has neither a seance date nor a timestamp")
        raise ValueError(f"timestamp {_short(raw)} is not an epoch time in 1970..9999")
    return _local_date(stamp, zone)


def _short(value: object, limit: int = 80) -> str:
    """``value`` as JSON for a message, cut to ``limit`` characters (the answer is untrusted)."""
    return _row_bytes(value)[:limit].decode("utf-8", "replace")


def _require_fields(
    rows: Sequence[Mapping[str, Any]], names: Iterable[Sequence[str]], where: str, url: str
) -> None:
    """Raise a ``layout`` error if every row lacks a field: the API renamed or dropped it.

    Each entry of ``names`` lists acceptable spellings of one field.
    """
    objects = _objects(rows, where, url)
    if not objects:
        return
    for spellings in names:
        if not any(any(name in row for name in spellings) for row in objects):
            shown = " or ".join(repr(n) for n in spellings)
            keys = ", ".join(sorted(str(key) for key in objects[0])[:40])
            raise CseSourceError(
                url,
                f"field {shown} is missing from all {len(rows)} rows of {where}: the API's "
                f"layout changed (the first row has: {keys})",
                kind="layout",
            )


def _objects(rows: Sequence[object], where: str, url: str) -> list[Mapping[str, Any]]:
    """The rows that are JSON objects; a ``payload`` error if there are rows but none is one.

    One stray row is rejected on its own later; a list of nothing but numbers or strings is not
    the board (a garbled or hostile answer), so it fails as a whole, and can be retried.
    """
    objects = [row for row in rows if isinstance(row, Mapping)]
    if rows and not objects:
        raise CseSourceError(
            url,
            f"none of the {len(rows)} rows of {where} is an object (the first is "
            f"{_short(rows[0])})",
            kind="payload",
        )
    return objects


def _decode_json(body: str | bytes | Any, url: str) -> Any:
    """Decode a JSON answer; anything unreadable or nested too deep is a ``payload`` error."""
    if not isinstance(body, str | bytes):
        _check_depth(body, url)
        return body
    _check_size(body, url)
    try:
        data = json.loads(body)
    except RecursionError:
        raise CseSourceError(
            url, f"response is JSON nested too deep (over {MAX_JSON_DEPTH} levels)", kind="payload"
        ) from None
    except ValueError as exc:  # UnicodeDecodeError (not UTF-8) is a ValueError too
        start = body[:80] if isinstance(body, str) else body[:80].decode("utf-8", "replace")
        raise CseSourceError(
            url, f"response is not JSON ({exc}); it starts with {start.strip()!r}", kind="payload"
        ) from None
    _check_depth(data, url)
    return data


def _check_size(body: str | bytes, url: str) -> None:
    """A body over :data:`MAX_BODY_BYTES` is a ``payload`` error, however it reached a parser."""
    if len(body) > MAX_BODY_BYTES:
        raise CseSourceError(url, f"answer larger than {MAX_BODY_BYTES} bytes", kind="payload")


def _check_depth(data: object, url: str) -> None:
    """Raise a ``payload`` error if ``data`` nests deeper than :data:`MAX_JSON_DEPTH`.

    Iterative, so that the check itself cannot overflow the stack; what follows it (the row
    code, ``json.dumps`` of a rejected row) may then recurse safely.
    """
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Mapping):
            children: Iterable[object] = value.values()
        elif isinstance(value, list | tuple):
            children = value
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise CseSourceError(
                url,
                f"response is JSON nested too deep (over {MAX_JSON_DEPTH} levels)",
                kind="payload",
            )
        stack.extend((child, depth + 1) for child in children)


def _expect_object(value: object, what: str, url: str) -> Mapping[str, Any]:
    """``value`` if it is a JSON object; another JSON type is a ``payload`` error (garbled)."""
    if not isinstance(value, Mapping):
        raise CseSourceError(
            url, f"expected a JSON object ({what}), got {type(value).__name__}", kind="payload"
        )
    return value


def _expect_rows(value: object, where: str, url: str) -> list[Any]:
    """The list at ``where``; any other JSON type there is a ``payload`` error (the answer is
    garbled, not a renamed field: a retry may get a good one)."""
    if not isinstance(value, list):
        raise CseSourceError(
            url, f"expected a list at {where}, got {type(value).__name__}", kind="payload"
        )
    return value


# --------------------------------------------------------------------------------------------
# Live board, Gen 2


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
    live = _expect_object(live, "live_market", url)
    if "actions" not in live:
        raise CseSourceError(
            url,
            "no live_market.actions in the page's drupal settings: the page's layout changed "
            f"(top-level keys: {', '.join(sorted(settings)[:20])})",
            kind="layout",
        )
    rows = _expect_rows(live["actions"], "live_market.actions", url)
    session = live.get("session")
    session = session if isinstance(session, Mapping) else {}
    status = _text(session.get("status")) or None
    if not rows:
        return BoardSnapshot(url, "gen2", session_status=status)
    _require_fields(rows, [("symbol",), ("dernierCours",)], "live_market.actions", url)
    board_time = _gen2_board_time(session, calendar.zone)
    if board_time is None:
        # No timestamp at all is the layout changing; one out of range is a garbled answer.
        raise CseSourceError(
            url,
            "live_market.session has no usable timestamp (none, or not an epoch time in "
            "1970..9999), and the rows carry no trade time: cannot date the quotes "
            f"(session: {_short(session, 200)})",
            kind="layout" if session.get("timestamp") is None else "payload",
        )
    session_date = _local_date(board_time, calendar.zone)
    quotes: list[CseQuote] = []
    rejects: list[Reject] = []
    listed: set[str] = set()
    for row in rows:
        if not isinstance(row, Mapping):
            rejects.append(Reject("bad_row", "row is not an object", None, _row_bytes(row), url))
            continue
        ticker = _text(row.get("symbol"))
        if not ticker:
            rejects.append(Reject("missing_field", "no symbol", None, _row_bytes(row), url))
            continue
        if ticker in listed:
            rejects.append(_duplicate(ticker, row, url))
            continue
        listed.add(ticker)
        if row.get("dernierCours") is None:
            rejects.append(
                Reject("missing_field", "no dernierCours (price)", ticker, _row_bytes(row), url)
            )
            continue
        try:
            price = _price(row["dernierCours"])
        except DataError as exc:
            rejects.append(Reject("bad_price", exc.reason, ticker, _row_bytes(row), url))
            continue
        trades = _count(row.get("nbTransactions"))
        shares = _count(row.get("quantite"))
        opening = _positive(row.get("ouverture"))
        statut = _text(row.get("statut")).upper()
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
                cum_value=_count(row.get("volume")),
                cum_trades=trades,
                open=opening,
                high=_positive(row.get("plusHaut")),
                low=_positive(row.get("plusBas")),
                reference=_positive(row.get("reference")),
                bid=_positive(bid.get("prix")) if isinstance(bid, Mapping) else None,
                ask=_positive(ask.get("prix")) if isinstance(ask, Mapping) else None,
            )
        )
    return BoardSnapshot(url, "gen2", tuple(quotes), tuple(rejects), status, board_time)


def _gen2_settings(body: str | bytes, url: str) -> Mapping[str, Any]:
    _check_size(body, url)
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    stripped = text.lstrip()
    if stripped.startswith("{"):  # the settings JSON on its own (a JSON endpoint, a fixture)
        data = _decode_json(stripped, url)
    else:
        script = _settings_script(text)
        if script is None:
            raise CseSourceError(
                url,
                'no <script data-drupal-selector="drupal-settings-json"> in the page (is it '
                f"the live board? it starts with {stripped[:80]!r})",
                kind="payload",
            )
        data = _decode_json(script, url)
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
    stamp = _epoch_ms(session.get("timestamp"))
    if stamp is None:
        return None
    clock = session.get("time")
    if isinstance(clock, Mapping):
        hour, minute = _number(clock.get("h")), _number(clock.get("m"))
        second = _number(clock.get("s")) or 0.0
        if hour is not None and minute is not None:
            day = _local_date(stamp, zone)
            try:
                local = dt.datetime(
                    day.year, day.month, day.day, int(hour), int(minute), int(second), tzinfo=zone
                )
            except (ValueError, OverflowError):  # h=25, or h=1e30 (too big for a C int)
                return stamp
            return (local - _EPOCH) // _ONE_MS
    return stamp


# --------------------------------------------------------------------------------------------
# Live board, Gen 1


def _duplicate(ticker: str, row: Mapping[str, Any], url: str) -> Reject:
    """A later row of a ticker already on the board: which of two prices is the trade is
    unknowable, so only the first row counts (whatever became of it) and the others are rejects."""
    detail = f"duplicate row: {ticker} is listed earlier on the board"
    return Reject("bad_row", detail, ticker, _row_bytes(row), url)


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
    data = _expect_object(_decode_json(payload, url), '{"data": {"values": [...]}}', url)
    values = data.get("data")
    if isinstance(values, Mapping):
        values = values.get("values")
    if values is None:
        raise CseSourceError(
            url,
            f'expected {{"data": {{"values": [...]}}}} (the Gen 1 board), got {_short(data, 120)}',
            kind="layout",
        )
    rows = _expect_rows(values, "data.values", url)
    _require_fields(
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
            rejects.append(Reject("bad_row", "row is not an object", None, _row_bytes(row), url))
            continue
        ticker = _text(row.get("ticker"))
        if ticker in listed:
            rejects.append(_duplicate(ticker, row, url))
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
                    _row_bytes(row),
                    url,
                )
            )
            continue
        record = {name: _bourse_text(row.get(name)) for name in BOURSE_FIELDS}
        record["ticker"] = ticker
        try:
            price = _price(row["field_cours_courant"])
        except DataError as exc:
            rejects.append(Reject("bad_price", exc.reason, ticker, _row_bytes(row), url))
            continue
        try:
            event_time = parse_event_time(
                record["field_last_traded_time"],
                session_date=record["field_date_application"] or None,
            )
        except DataError as exc:
            rejects.append(Reject("bad_time", exc.reason, ticker, _row_bytes(row), url))
            continue
        trades = _count(row.get("field_total_trades"))
        quotes.append(
            CseQuote(
                ticker=ticker,
                price=price,
                event_time=event_time,
                session_date=_local_date(event_time, zone),
                api="gen1",
                traded=trades is None or trades > 0,
                last_trade_time=event_time,
                cum_shares=_count(row.get("field_cumul_titres_echanges")),
                cum_value=_count(row.get("field_cumul_volume_echange")),
                cum_trades=trades,
                open=_positive(row.get("field_opening_price")),
                high=_positive(row.get("field_high_price")),
                low=_positive(row.get("field_low_price")),
                reference=_positive(row.get("field_static_reference_price")),
                bid=_positive(row.get("field_best_bid_price")),
                ask=_positive(row.get("field_best_ask_price")),
                bourse=record,
            )
        )
    return BoardSnapshot(url, "gen1", tuple(quotes), tuple(rejects))


# --------------------------------------------------------------------------------------------
# Daily history (Gen 2)


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
    data = _expect_object(_decode_json(payload, url), '{"totalCount": n, "items": [...]}', url)
    if "items" not in data:
        raise CseSourceError(
            url,
            'expected {"totalCount": n, "items": [...]} (stock-historical), got '
            f"{_short(data, 120)}",
            kind="layout",
        )
    rows = _expect_rows(data["items"], "items", url)
    _require_fields(rows, [("dernierCours",), ("seance", "timestamp")], "items", url)
    total = _number(data.get("totalCount"))
    bars: list[DailyBar] = []
    skipped: list[str] = []
    for row in rows:
        if not isinstance(row, Mapping):
            skipped.append(f"not an object: {_short(row, 180)}")
            continue
        symbol = _text(row.get("symbol")) or (ticker or "")
        try:
            session = _session_date(row, calendar.zone)
            raw_close = row.get("dernierCours")
            if raw_close is None:
                raise ValueError("no close (dernierCours is null)")
            close = _price(raw_close)
        except (ValueError, DataError) as exc:
            reason = exc.reason if isinstance(exc, DataError) else str(exc)
            seance = row.get("seance", "")
            shown = seance[:40] if isinstance(seance, str) else _short(seance, 40)
            skipped.append(f"{symbol or '?'} {shown}: {reason}")
            continue
        if ticker and symbol and symbol.upper() != ticker.upper():
            skipped.append(f"{symbol} {session}: not the requested ticker {ticker}")
            continue
        trades = _number(row.get("nbTransactions"))
        bars.append(
            DailyBar(
                ticker=symbol or (ticker or ""),
                session=session,
                open=_positive(row.get("ouverture")),
                high=_positive(row.get("plusHaut")),
                low=_positive(row.get("plusBas")),
                close=close,
                volume=_number(row.get("titresEchanges")),
                value=_number(row.get("volumeEchanges")),
                trades=None if trades is None else int(trades),
                market_cap=_number(row.get("capitalisation")),
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


# --------------------------------------------------------------------------------------------
# Index history (Gen 2)


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
    data = _decode_json(payload, url)
    if not isinstance(data, list):
        data = _expect_object(data, '{"items": [...]}', url)
    items = data.get("items") if isinstance(data, Mapping) else data
    if items is None:
        raise CseSourceError(
            url,
            f'expected {{"items": [...]}} (indices/historical), got {_short(data, 120)}',
            kind="layout",
        )
    rows = _objects(_expect_rows(items, "items", url), "items", url)
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
        close = _positive(value.get("valeur"))
        if close is None:
            logger.warning("%s: skipped index row %s: no positive close", url, session)
            continue
        bars[session] = IndexBar(
            code, session, close, _positive(value.get("plusHaut")), _positive(value.get("plusBas"))
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


# --------------------------------------------------------------------------------------------
# History files for `streamfolio init`


def write_history_csv(
    bars: Iterable[DailyBar | IndexBar],
    path: str | Path,
    *,
    calendar: ExchangeCalendar = CSE,
) -> int:
    """Write bars as a history file ``time,ticker,price,volume``; return the number of rows.

    This is the layout :func:`streamfolio.feeds.history.read_history` reads (and the bundled
    ``history.csv`` uses): ``time`` is the session's close in the exchange's zone with its UTC
    offset, ``price`` the close, ``volume`` the shares traded (empty for an index). Sessions
    without a trade are left out: their "close" is the previous close, not a trade.
    """
    # (epoch ms, ticker) first, so that rows sort by time and then ticker, as read_history wants.
    rows: list[tuple[int, str, str, str, str]] = []
    for bar in bars:
        if isinstance(bar, DailyBar):
            if not bar.traded:
                continue
            name, volume = bar.ticker, "" if bar.volume is None else _plain(bar.volume)
        else:
            name, volume = bar.code, ""
        close = session_bounds(bar.session, calendar)[1]
        epoch_ms = (close - _EPOCH) // _ONE_MS
        rows.append((epoch_ms, name, close.isoformat(), repr(float(bar.close)), volume))
    rows.sort()
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["time", "ticker", "price", "volume"])
        for _, name, when, price, volume in rows:
            writer.writerow([when, name, price, volume])
    return len(rows)


def _plain(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


# --------------------------------------------------------------------------------------------
# Client


class CseClient:
    """HTTP client of the exchange's website.

    Parameters
    ----------
    transport
        An ``httpx.Client`` (used as is, not closed here), any :data:`Transport` callable (tests
        pass recorded responses), or None: a new ``httpx.Client`` verifying TLS with
        :func:`ssl_context` (``extra_ca``), closed by :meth:`close`.
    api
        ``"gen2"`` (the current site) or ``"gen1"`` (the reference's legacy board) for
        :meth:`live_board`. Histories always use Gen 2: Gen 1 is gone.
    timeout_s
        Per-request timeout.
    retries, backoff_s, max_backoff_s
        Timeouts, connection failures, HTTP 5xx, 408 and 429 are retried ``retries`` times,
        waiting ``backoff_s * 2**n`` seconds (at most ``max_backoff_s``; a ``Retry-After`` header
        may ask for longer, within that bound) through ``sleep``.
    clock
        Epoch seconds, for the default end date of histories (the exchange's local today).
    """

    def __init__(
        self,
        transport: httpx.Client | Transport | None = None,
        *,
        api: Api = "gen2",
        base_url: str = BASE_URL,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        headers: Mapping[str, str] | None = None,
        extra_ca: str | Path | None = None,
        calendar: ExchangeCalendar = CSE,
    ) -> None:
        if api not in ("gen2", "gen1"):
            raise ValueError(f"api must be 'gen2' or 'gen1', got {api!r}")
        if not timeout_s > 0 or retries < 0 or backoff_s < 0 or max_backoff_s < 0:
            raise ValueError("timeout_s must be > 0; retries and back-off times must be >= 0")
        self.api: Api = api
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.calendar = calendar
        self._sleep = sleep
        self._clock = clock
        self._headers = dict(headers or {})
        self._owned: httpx.Client | None = None
        if transport is None:
            # Redirects are followed by get(), which checks where they go, never by httpx.
            self._owned = httpx.Client(verify=ssl_context(extra_ca), follow_redirects=False)
            self._transport: Transport = HttpxTransport(self._owned)
        elif isinstance(transport, httpx.Client):
            self._transport = HttpxTransport(transport)
        else:
            self._transport = transport

    def close(self) -> None:
        """Close the HTTP client this instance created (not one passed in)."""
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> CseClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests --------------------------------------------------------------------------

    def get(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        accept: str = _JSON_ACCEPT,
        gen1: bool = False,
    ) -> HttpResponse:
        """GET ``base_url + path`` with retries; a 2xx response or :class:`CseSourceError`.

        Redirects are followed only to HTTPS on the host of ``base_url`` (the same scheme if
        that is plain HTTP), at most :data:`MAX_REDIRECTS` times: a redirect elsewhere could
        downgrade the connection or hand the feed's data source to another server, so it is a
        permanent ``http`` error naming the ``Location``. A body over :data:`MAX_BODY_BYTES` is
        a ``payload`` error, not retried here (the poller's next poll is the retry).
        """
        headers = {**(_GEN1_HEADERS if gen1 else _GEN2_HEADERS), "Accept": accept}
        headers.update(self._headers)
        request = HttpRequest(self.base_url + path, dict(params or {}), headers, self.timeout_s)
        url = request.full_url
        attempts = self.retries + 1
        error: CseSourceError | None = None
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                response = self._send(request, url)
            except CseSourceError:
                raise  # a refused redirect or an oversized body: retrying at once will not help
            except Exception as exc:
                kind = _classify(exc)
                if kind is None:
                    raise  # a bug in the transport, not a network failure: let it show
                if kind == "tls":
                    raise CseSourceError(url, _tls_problem(exc), kind="tls") from exc
                what = "timed out" if kind == "timeout" else "connection failed"
                error = CseSourceError(url, f"{what} ({type(exc).__name__}: {exc})", kind=kind)
                error.__cause__ = exc
            else:
                if 200 <= response.status < 300:
                    return response
                error = CseSourceError(
                    url, _status_problem(response), kind="http", status=response.status
                )
                if not _retryable_status(response.status):
                    raise error
                retry_after = _number(response.header("Retry-After"))
            if attempt + 1 < attempts:
                delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
                if retry_after is not None:
                    delay = min(self.max_backoff_s, max(delay, retry_after))
                logger.warning(
                    "GET %s failed (%s); retry %d of %d in %.1f s",
                    url,
                    error.problem,
                    attempt + 1,
                    self.retries,
                    delay,
                )
                self._sleep(delay)
        assert error is not None  # the loop ran at least once and did not return
        final = CseSourceError(
            url,
            f"{error.problem}; gave up after {attempts} attempt(s)",
            kind=error.kind,
            status=error.status,
        )
        raise final from error.__cause__

    def _send(self, request: HttpRequest, url: str) -> HttpResponse:
        """One request through the transport, following the redirects :meth:`get` allows."""
        response = self._transport(request)
        followed = 0
        while True:
            if len(response.body) > MAX_BODY_BYTES:  # a transport that read it all anyway
                raise CseSourceError(
                    url, f"answer larger than {MAX_BODY_BYTES} bytes", kind="payload"
                )
            location = response.header("Location")
            if response.status not in _REDIRECT_STATUSES or location is None:
                return response
            if followed == MAX_REDIRECTS:
                raise CseSourceError(
                    url,
                    f"HTTP {response.status}: more than {MAX_REDIRECTS} redirects (the last "
                    f"to {location[:300]!r})",
                    kind="http",
                    status=response.status,
                )
            target = self._redirect_target(request.full_url, location, response.status, url)
            logger.info(
                "GET %s: HTTP %d, following the redirect to %s", url, response.status, target
            )
            followed += 1
            request = HttpRequest(target, {}, request.headers, request.timeout_s)
            response = self._transport(request)

    def _redirect_target(self, current: str, location: str, status: int, url: str) -> str:
        """The absolute URL a redirect leads to, if it stays on HTTPS and the configured host."""
        base = urlsplit(self.base_url)
        problem = None
        try:
            target = urljoin(current, location.strip())
            parts = urlsplit(target)
            schemes = {"https", base.scheme}  # plain HTTP only if base_url is (a test server)
            if parts.scheme not in schemes:
                problem = f"it leaves HTTPS for {parts.scheme or 'no scheme'}"
            elif (parts.hostname or "").lower() != (base.hostname or "").lower() or (
                _port(parts.scheme, parts.port) != _port(base.scheme, base.port)
            ):
                problem = f"it leads to another host than the configured {base.netloc}"
        except ValueError as exc:  # an unparsable Location (a bad port, a broken IPv6 address)
            target, problem = location, f"it is not a valid URL ({exc})"
        if problem is None:
            return target
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "redirect"
        raise CseSourceError(
            url,
            f"HTTP {status} {phrase} to {location[:300]!r} refused: {problem}",
            kind="http",
            status=status,
        )

    def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET and decode JSON; a body that is not JSON is a ``payload`` error."""
        response = self.get(path, params)
        url = HttpRequest(self.base_url + path, dict(params or {}), {}, 1.0).full_url
        return _decode_json(response.body, url)

    # -- endpoints -------------------------------------------------------------------------

    def live_board(self) -> BoardSnapshot:
        """Read the live board of all listed shares (Gen 2 page, or the Gen 1 JSON board)."""
        if self.api == "gen1":
            response = self.get(GEN1_BOARD_PATH, GEN1_BOARD_PARAMS, accept=_GEN1_ACCEPT, gen1=True)
            url = HttpRequest(self.base_url + GEN1_BOARD_PATH, GEN1_BOARD_PARAMS, {}, 1).full_url
            return parse_live_board_gen1(response.body, url)
        response = self.get(GEN2_LIVE_PATH, accept=_HTML_ACCEPT)
        return parse_live_board_gen2(
            response.body, self.base_url + GEN2_LIVE_PATH, calendar=self.calendar
        )

    def stock_history(
        self,
        ticker: str,
        start: dt.date | None = None,
        end: dt.date | None = None,
        *,
        window_days: int = 360,
    ) -> list[DailyBar]:
        """Daily bars of ``ticker`` from ``start`` to ``end`` (inclusive), oldest first.

        The API answers at most about a year per request (a longer window returns nothing), so
        this walks back from ``end`` (default: the exchange's local today) in windows of
        ``window_days``, stops at ``start`` or at the first empty window (history goes back about
        3 years; ``start=None`` takes all of it), and merges with :func:`merge_daily_bars`.
        """
        if not 1 <= window_days <= 366:
            raise ValueError(f"window_days must be 1..366 (the API's limit), got {window_days}")
        symbol = ticker.strip().upper()
        if end is None:
            end = _local_date(int(self._clock() * 1000), self.calendar.zone)
        collected: list[DailyBar] = []
        high = end
        for _ in range(_MAX_WINDOWS):
            if start is not None and high < start:
                break
            low = high - dt.timedelta(days=window_days - 1)
            if start is not None:
                low = max(low, start)
            window = self._history_window(symbol, low, high)
            if not window:
                break
            collected.extend(window)
            high = low - dt.timedelta(days=1)
        bars = merge_daily_bars(collected, self.calendar)
        if not bars:
            logger.warning("no daily history for %s between %s and %s", symbol, start, end)
        return bars

    def _history_window(self, ticker: str, low: dt.date, high: dt.date) -> list[DailyBar]:
        bars: list[DailyBar] = []
        received = 0
        for page_number in range(1, _MAX_PAGES + 1):
            params = {
                "instrument": ticker,
                "market": "comptant",
                "type": "actions",
                "startDate": low.isoformat(),
                "endDate": high.isoformat(),
                "pageNumber": str(page_number),
                "pageSize": str(_PAGE_SIZE),
            }
            url = HttpRequest(self.base_url + GEN2_STOCK_HISTORY_PATH, params, {}, 1).full_url
            page = parse_stock_history(
                self.get_json(GEN2_STOCK_HISTORY_PATH, params),
                url,
                ticker=ticker,
                calendar=self.calendar,
            )
            bars.extend(page.bars)
            # Count rows, not pages: the server may cap pageSize below what was asked.
            received += len(page.bars) + len(page.skipped)
            if not page.bars or received >= page.total_count:
                break
        return bars

    def index_history(self, code: str = "MASI", period: str = "3y") -> list[IndexBar]:
        """Daily closes of an index (``MASI``, ``MSI20``...) over ``period``, oldest first.

        ``period`` is one of :data:`INDEX_PERIODS` (``1m`` to ``3y``, the longest the API has).
        """
        if period not in INDEX_PERIODS:
            raise ValueError(f"period must be one of {', '.join(INDEX_PERIODS)}, got {period!r}")
        params = {"code": code, "period": period}
        url = HttpRequest(self.base_url + GEN2_INDEX_HISTORY_PATH, params, {}, 1).full_url
        return parse_index_history(
            self.get_json(GEN2_INDEX_HISTORY_PATH, params),
            url,
            code=code,
            calendar=self.calendar,
        )


def _port(scheme: str, port: int | None) -> int | None:
    return port if port is not None else {"https": 443, "http": 80}.get(scheme)


def _status_problem(response: HttpResponse) -> str:
    try:
        phrase = http.HTTPStatus(response.status).phrase
    except ValueError:
        phrase = "unknown status"
    snippet = " ".join(response.body[:800].decode("utf-8", "replace")[:200].split())
    return f"HTTP {response.status} {phrase}" + (f" ({snippet})" if snippet else "")


# --------------------------------------------------------------------------------------------
# Poller


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
            raise ValueError("interval_s must be > 0 and close_grace_s >= 0")
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
            _local_date(snapshot.board_time, self.calendar.zone)
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
                result = self.poll_once()
            except CseSourceError as exc:
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
