"""Casablanca Stock Exchange website client: live board, daily history, index history, poller.

The exchange publishes no market-data API; its website's pages call JSON endpoints of their own,
and this package calls the same ones (``shared/research/cse-data.md`` §1):

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

The modules, from the wire up (each imports only those above it):

- :mod:`~streamfolio.feeds.cse.errors`: :class:`CseSourceError` and its kinds;
- :mod:`~streamfolio.feeds.cse.endpoints`: base URL, endpoint paths, limits on answers;
- :mod:`~streamfolio.feeds.cse.tls`: the verifying TLS context (certificate in ``feeds/certs``);
- :mod:`~streamfolio.feeds.cse.transport`: requests, responses, transports, the redirect policy;
- :mod:`~streamfolio.feeds.cse.parsing`: reading untrusted JSON values;
- :mod:`~streamfolio.feeds.cse.board`, :mod:`~streamfolio.feeds.cse.board_gen2`,
  :mod:`~streamfolio.feeds.cse.board_gen1`: the live board's values and its two parsers;
- :mod:`~streamfolio.feeds.cse.history`: daily bars and index closes;
- :mod:`~streamfolio.feeds.cse.history_csv`: history files for ``streamfolio init``;
- :mod:`~streamfolio.feeds.cse.client`: :class:`CseClient` (retries, redirects, endpoints);
- :mod:`~streamfolio.feeds.cse.poller`: :class:`CsePoller`.

>>> board = parse_live_board_gen1({"data": {"values": [{"ticker": "ATW",
...     "field_cours_courant": "612,50", "field_last_traded_time": "2025-06-20T14:59:32"}]}})
>>> board.quotes[0].to_price_tick()  # doctest: +NORMALIZE_WHITESPACE
PriceTick(ticker='ATW', price=612.5, event_time=1750427972000, volume=None, source='cse',
          sequence=None)
"""

from __future__ import annotations

from streamfolio.feeds.cse.board import BoardSnapshot, CseQuote, Reject
from streamfolio.feeds.cse.board_gen1 import parse_live_board_gen1
from streamfolio.feeds.cse.board_gen2 import parse_live_board_gen2
from streamfolio.feeds.cse.client import CseClient
from streamfolio.feeds.cse.endpoints import (
    BASE_URL,
    GEN1_BOARD_PARAMS,
    GEN1_BOARD_PATH,
    GEN2_INDEX_HISTORY_PATH,
    GEN2_LIVE_PATH,
    GEN2_STOCK_HISTORY_PATH,
    INDEX_PERIODS,
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    MAX_REDIRECTS,
    Api,
)
from streamfolio.feeds.cse.errors import CseSourceError, ErrorKind
from streamfolio.feeds.cse.history import (
    DailyBar,
    HistoryPage,
    IndexBar,
    merge_daily_bars,
    parse_index_history,
    parse_stock_history,
)
from streamfolio.feeds.cse.history_csv import write_history_csv
from streamfolio.feeds.cse.poller import CsePoller, PollResult
from streamfolio.feeds.cse.tls import INTERMEDIATE_CA_NAME, intermediate_ca_path, ssl_context
from streamfolio.feeds.cse.transport import HttpRequest, HttpResponse, HttpxTransport, Transport

__all__ = [
    "BASE_URL",
    "GEN1_BOARD_PARAMS",
    "GEN1_BOARD_PATH",
    "GEN2_INDEX_HISTORY_PATH",
    "GEN2_LIVE_PATH",
    "GEN2_STOCK_HISTORY_PATH",
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
    "ErrorKind",
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
