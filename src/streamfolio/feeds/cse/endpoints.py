"""Where the exchange's website answers, and how much of an answer is read.

The base URL and the paths of the Gen 2 and Gen 1 endpoints (``shared/research/cse-data.md``
§1), the index history's periods, and the limits on untrusted answers: body size, JSON nesting
and redirects per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, TypeAlias

Api: TypeAlias = Literal["gen2", "gen1"]

BASE_URL: Final = "https://www.casablanca-bourse.com"

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
