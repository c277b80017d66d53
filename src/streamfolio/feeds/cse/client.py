"""The HTTP client of the exchange's website: retries, redirects, and one method per endpoint.

:class:`CseClient` GETs with timeouts, exponential back-off and a ``Retry-After`` within bounds,
follows redirects only as :func:`~streamfolio.feeds.cse.transport.redirect_target` allows, and
turns each failure into a :class:`~streamfolio.feeds.cse.errors.CseSourceError`. Its endpoint
methods read the live board (Gen 2 or Gen 1), a stock's daily history window by window, and an
index's closes, through the pure parsers of the sibling modules.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import httpx

from streamfolio.core.calendar import CSE, ExchangeCalendar
from streamfolio.feeds.cse.board import BoardSnapshot
from streamfolio.feeds.cse.board_gen1 import parse_live_board_gen1
from streamfolio.feeds.cse.board_gen2 import parse_live_board_gen2
from streamfolio.feeds.cse.endpoints import (
    BASE_URL,
    GEN1_BOARD_PARAMS,
    GEN1_BOARD_PATH,
    GEN2_INDEX_HISTORY_PATH,
    GEN2_LIVE_PATH,
    GEN2_STOCK_HISTORY_PATH,
    INDEX_PERIODS,
    MAX_BODY_BYTES,
    MAX_REDIRECTS,
    Api,
)
from streamfolio.feeds.cse.errors import CseSourceError, retryable_status
from streamfolio.feeds.cse.history import (
    DailyBar,
    IndexBar,
    merge_daily_bars,
    parse_index_history,
    parse_stock_history,
)
from streamfolio.feeds.cse.parsing import decode_json, local_date, read_number
from streamfolio.feeds.cse.tls import ssl_context, tls_problem
from streamfolio.feeds.cse.transport import (
    REDIRECT_STATUSES,
    HttpRequest,
    HttpResponse,
    HttpxTransport,
    Transport,
    classify,
    redirect_target,
    status_problem,
)

logger = logging.getLogger(__name__)

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
                kind = classify(exc)
                if kind is None:
                    raise  # a bug in the transport, not a network failure: let it show
                if kind == "tls":
                    raise CseSourceError(url, tls_problem(exc), kind="tls") from exc
                what = "timed out" if kind == "timeout" else "connection failed"
                error = CseSourceError(url, f"{what} ({type(exc).__name__}: {exc})", kind=kind)
                error.__cause__ = exc
            else:
                if 200 <= response.status < 300:
                    return response
                error = CseSourceError(
                    url, status_problem(response), kind="http", status=response.status
                )
                if not retryable_status(response.status):
                    raise error
                retry_after = read_number(response.header("Retry-After"))
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
            if response.status not in REDIRECT_STATUSES or location is None:
                return response
            if followed == MAX_REDIRECTS:
                raise CseSourceError(
                    url,
                    f"HTTP {response.status}: more than {MAX_REDIRECTS} redirects (the last "
                    f"to {location[:300]!r})",
                    kind="http",
                    status=response.status,
                )
            target = redirect_target(
                self.base_url, request.full_url, location, response.status, url
            )
            logger.info(
                "GET %s: HTTP %d, following the redirect to %s", url, response.status, target
            )
            followed += 1
            request = HttpRequest(target, {}, request.headers, request.timeout_s)
            response = self._transport(request)

    def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET and decode JSON; a body that is not JSON is a ``payload`` error."""
        response = self.get(path, params)
        url = HttpRequest(self.base_url + path, dict(params or {}), {}, 1.0).full_url
        return decode_json(response.body, url)

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
            end = local_date(int(self._clock() * 1000), self.calendar.zone)
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
