"""Price histories in the long CSV layout ``time,ticker,price[,volume]``.

One row per trade (or per daily close), oldest first, with a header naming exactly those columns
in any order. ``time`` is ISO-8601; with ``Z`` or an offset it is taken as written, without one it
is exchange-local time (``SEMANTICS.md`` §1), ``Africa/Casablanca`` unless told otherwise, which is
UTC+0 during Ramadan. ``price`` is positive and finite; ``volume`` (shares, optional) is finite and
not negative, or empty. Rows must not go back in time, and a ticker appears at most once per time.

The package bundles real Casablanca Stock Exchange closes (2023-04 to 2026-09, 11 stocks) and the
MASI index, for demos and tests; see ``streamfolio/data/cse/README.md``.

>>> history = read_history(bundled_history_path())
>>> history.symbols
('ADI', 'AKT', 'ATW', 'BCP', 'BOA', 'IAM', 'IMO', 'MDP', 'MUT', 'RIS', 'TGC')
>>> next(history.iter_ticks())
Tick(time_ms=1680535800000, ticker='ATW', price=400.0, volume=150.0)
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from streamfolio.core.types import FloatArray
from streamfolio.errors import DataError

__all__ = [
    "COLUMNS",
    "PriceHistory",
    "Tick",
    "bundled_history_path",
    "bundled_index_path",
    "read_history",
]

COLUMNS = ("time", "ticker", "price")
"""Required columns; ``volume`` is the one optional column."""
_OPTIONAL = ("volume",)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NAIVE_EPOCH = dt.datetime(1970, 1, 1)
_ONE_MS = dt.timedelta(milliseconds=1)
_INF = math.inf
_TIME_HINT = "expected ISO-8601 such as 2026-09-30T15:30:00+01:00"

IntArray = npt.NDArray[np.int64]


class Tick(NamedTuple):
    """One row of a history: event time (epoch ms UTC), ticker, price (MAD), volume (shares)."""

    time_ms: int
    ticker: str
    price: float
    volume: float


@dataclass(frozen=True, eq=False)
class PriceHistory:
    """Ticks in file (= time) order, as parallel read-only arrays.

    ``volumes`` is NaN where the file gives none. ``source`` names the file, for messages.
    """

    times_ms: IntArray
    tickers: npt.NDArray[np.str_]
    prices: FloatArray
    volumes: FloatArray
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.times_ms)
        if not len(self.tickers) == len(self.prices) == len(self.volumes) == n:
            raise ValueError("times_ms, tickers, prices and volumes must have the same length")
        for array in (self.times_ms, self.tickers, self.prices, self.volumes):
            array.flags.writeable = False

    def __len__(self) -> int:
        return len(self.times_ms)

    @property
    def symbols(self) -> tuple[str, ...]:
        """The distinct tickers, sorted."""
        return tuple(str(t) for t in np.unique(self.tickers))

    def iter_ticks(self) -> Iterator[Tick]:
        """The rows as :class:`Tick` tuples, in order."""
        for time_ms, ticker, price, volume in zip(
            self.times_ms.tolist(),
            self.tickers.tolist(),
            self.prices.tolist(),
            self.volumes.tolist(),
            strict=True,
        ):
            yield Tick(time_ms, ticker, price, volume)

    def closes_wide(
        self, tickers: Sequence[str] | None = None
    ) -> tuple[IntArray, tuple[str, ...], FloatArray]:
        """Prices as a matrix: one row per distinct time, one column per ticker, NaN if no tick.

        ``tickers`` chooses the columns and their order (default: :attr:`symbols`); times at
        which none of them has a tick are left out.

        >>> times, names, closes = read_history(bundled_history_path()).closes_wide(["ATW", "AKT"])
        >>> names, closes.shape, closes[0].tolist()  # AKT's history starts later than ATW's
        (('ATW', 'AKT'), (857, 2), [400.0, nan])
        """
        columns = self.symbols if tickers is None else tuple(tickers)
        absent = sorted(set(columns) - set(self.symbols))
        if absent:
            raise DataError(f"no prices for {absent}", self.source or None)
        selected = np.isin(self.tickers, columns)
        times, row = np.unique(self.times_ms[selected], return_inverse=True)
        names, code = np.unique(self.tickers[selected], return_inverse=True)
        position = {str(t): j for j, t in enumerate(columns)}
        column = np.array([position[str(t)] for t in names], dtype=np.intp)[code]
        closes = np.full((len(times), len(columns)), np.nan)
        closes[row, column] = self.prices[selected]
        return times, columns, closes


def read_history(
    path: str | Path,
    *,
    known_tickers: Collection[str] | None = None,
    timezone: str = "Africa/Casablanca",
    ticks: bool = False,
) -> PriceHistory:
    """Read and check a history file; see the module docstring for the layout.

    ``known_tickers``, if given, is the set of tickers allowed. A naive ``time`` is local to
    ``timezone``. Raises :class:`~streamfolio.errors.DataError` at the first bad row, with
    ``where="FILE:LINE"``. With ``ticks=True`` the file is a tick stream rather than a history:
    rows may be out of event-time order and repeat a (time, ticker) pair, as live ticks do; the
    replay engine applies the event-time rules to them.

    >>> try:
    ...     read_history(bundled_history_path(), known_tickers={"ATW"})
    ... except DataError as error:
    ...     print(error.reason, "on line", error.where.rsplit(":", 1)[1])
    unknown ticker 'AKT' (known: ATW) on line 115
    """
    path = Path(path)
    known = None if known_tickers is None else frozenset(known_tickers)
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        columns = _header(next(reader, None), path)
        try:
            times, tickers, prices, volumes = _parse_rows(
                reader, columns, known, ZoneInfo(timezone), ordered=not ticks
            )
        except _RowError as exc:
            raise DataError(str(exc), f"{path}:{reader.line_num}") from None
    return PriceHistory(
        times_ms=np.array(times, dtype=np.int64),
        tickers=np.array(tickers, dtype=np.str_),
        prices=np.array(prices, dtype=np.float64),
        volumes=np.array(volumes, dtype=np.float64),
        source=str(path),
    )


class _RowError(Exception):
    """A bad row; :func:`read_history` adds the file and line."""


def _header(header: list[str] | None, path: Path) -> tuple[int, int, int, int, int]:
    """Column indices of time, ticker, price, volume (-1 if absent), and the row width."""
    allowed = f"expected columns {','.join(COLUMNS)}[,{','.join(_OPTIONAL)}]"
    if header is None:
        raise DataError(f"empty file: {allowed}", f"{path}:1")
    names = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in names]
    unknown = [c for c in names if c not in COLUMNS + _OPTIONAL]
    repeated = sorted({c for c in names if names.count(c) > 1})
    if missing or unknown or repeated:
        problems = [
            f"missing column(s) {', '.join(missing)}" if missing else "",
            f"unknown column(s) {', '.join(repr(c) for c in unknown)}" if unknown else "",
            f"repeated column(s) {', '.join(repeated)}" if repeated else "",
        ]
        raise DataError(f"{'; '.join(p for p in problems if p)} ({allowed})", f"{path}:1")
    volume = names.index("volume") if "volume" in names else -1
    return names.index("time"), names.index("ticker"), names.index("price"), volume, len(names)


def _parse_rows(
    rows: Iterator[list[str]],
    columns: tuple[int, int, int, int, int],
    known: frozenset[str] | None,
    zone: ZoneInfo,
    *,
    ordered: bool = True,
) -> tuple[list[int], list[str], list[float], list[float]]:
    # One flat loop, no per-row function calls: a replay file can hold millions of rows.
    i_time, i_ticker, i_price, i_volume, width = columns
    times: list[int] = []
    tickers: list[str] = []
    prices: list[float] = []
    volumes: list[float] = []
    last_text = ""
    last_ms = -(2**63)
    at_last_time: set[str] = set()
    offsets: dict[str, int] = {}
    for row in rows:
        if len(row) != width:
            if not row:
                continue
            raise _RowError(f"expected {width} fields, got {len(row)}")
        text = row[i_time]
        if text != last_text:
            try:
                when = dt.datetime.fromisoformat(text)
            except ValueError:
                raise _RowError(f"bad time {text!r}: {_TIME_HINT}") from None
            if when.tzinfo is not None:
                ms = (when - _EPOCH) // _ONE_MS
            else:
                # Zone offsets change on the hour, so one lookup per local minute is exact.
                offset = offsets.get(text[:16])
                if offset is None:
                    offset = offsets[text[:16]] = _offset_ms(when, zone, text)
                ms = (when - _NAIVE_EPOCH) // _ONE_MS - offset
            if ms < last_ms and ordered:
                raise _RowError(f"time {text} is earlier than the previous row's {last_text}")
            if ms != last_ms:
                at_last_time.clear()
            last_text, last_ms = text, ms
        ticker = row[i_ticker]
        if (
            (ordered and ticker in at_last_time)
            or not ticker
            or (known is not None and ticker not in known)
        ):
            raise _RowError(_ticker_problem(ticker, known, text))
        at_last_time.add(ticker)
        try:
            price = float(row[i_price])
        except ValueError:
            raise _RowError(f"unparsable price {row[i_price]!r}") from None
        if not 0.0 < price < _INF:
            raise _RowError(_bad_number("price", price))
        volume = math.nan
        if i_volume >= 0 and row[i_volume]:
            try:
                volume = float(row[i_volume])
            except ValueError:
                raise _RowError(f"unparsable volume {row[i_volume]!r}") from None
            if not 0.0 <= volume < _INF:
                raise _RowError(_bad_number("volume", volume))
        times.append(last_ms)
        tickers.append(ticker)
        prices.append(price)
        volumes.append(volume)
    return times, tickers, prices, volumes


def _offset_ms(when: dt.datetime, zone: ZoneInfo, text: str) -> int:
    if len(text) <= 10:
        # fromisoformat reads a bare date as midnight, which no exchange trades at.
        raise _RowError(f"bad time {text!r}: a date without a time of day")
    offset = when.replace(tzinfo=zone).utcoffset()  # never None for a ZoneInfo
    return (offset or dt.timedelta()) // _ONE_MS


def _bad_number(name: str, value: float) -> str:
    kind = "non-finite" if not math.isfinite(value) else "negative" if value < 0 else "zero"
    return f"{kind} {name} {value!r}"


def _ticker_problem(ticker: str, known: frozenset[str] | None, time: str) -> str:
    if not ticker:
        return "empty ticker"
    if known is not None and ticker not in known:
        return f"unknown ticker {ticker!r} (known: {', '.join(sorted(known))})"
    return f"duplicate row for ticker {ticker!r} at time {time}"


def _bundled(name: str) -> Path:
    return Path(str(resources.files("streamfolio").joinpath("data", "cse", name)))


def bundled_history_path() -> Path:
    """The packaged CSE daily closes of the 11 demo tickers, ``time,ticker,price,volume``.

    >>> bundled_history_path().name
    'history.csv'
    """
    return _bundled("history.csv")


def bundled_index_path() -> Path:
    """The packaged MASI index closes (2025-12 to 2026-09), ``time,ticker,price``.

    >>> read_history(bundled_index_path()).symbols
    ('MASI',)
    """
    return _bundled("masi.csv")
