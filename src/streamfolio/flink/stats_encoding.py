"""``PortfolioStats`` Avro bytes written straight from an estimator's arrays: the job's hot path.

The codec (fastavro) takes ~100 µs for one 20-ticker record: 420 doubles, each first made a
Python float in a nested dict (``stats_record``) and then walked key by key. Per portfolio the
bytes around the doubles never change (the tickers' names, the maps' block counts), so
:class:`StatsEncoder` keeps them as a template per ticker list and copies the doubles in with
one numpy assignment. The bytes are the codec's own, byte for byte
(``tests/flink/test_stats_encoding.py`` compares them): a map is one block (its entry count,
the entries in insertion order, then 0), a double is 8 bytes little-endian, ints are zig-zag
varints.

The packed layout (``flink.stats_layout: packed``) needs no template: two empty maps, and the
means and the covariance's upper triangle as two arrays of doubles at the end (2 kB instead
of 5 kB for 20 tickers).

>>> import numpy as np
>>> from streamfolio.serde import codec_for
>>> head = StatsHead("p", ("A", "B"), "welford", None, 1, "updated")
>>> data = StatsEncoder().encode(head, 5, 3, np.array([1.0, 2.0]), np.eye(2))
>>> record = codec_for("PortfolioStats").decode(data)
>>> record["covarianceMatrix"], record["kind"]
({'A': {'A': 1.0, 'B': 0.0}, 'B': {'A': 0.0, 'B': 1.0}}, 'updated')
>>> packed = StatsEncoder("packed").encode(head, 5, 3, np.array([1.0, 2.0]), np.eye(2))
>>> record = codec_for("PortfolioStats").decode(packed)
>>> record["packed_covariance"], record["covarianceMatrix"], len(packed) < len(data)
([1.0, 0.0, 1.0], {}, True)
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from streamfolio.core.moments import StatsLayout, upper_triangle
from streamfolio.core.types import FloatArray

__all__ = ["MetricsEncoder", "StatsEncoder", "StatsHead", "avro_long", "avro_string"]

_NULL: Final = b"\x00"
"""A union's branch 0 (null)."""
_SECOND: Final = b"\x02"
"""A union's branch 1 (the value)."""
_END: Final = b"\x00"
"""The empty block that ends a map or an array."""
_TWO_EMPTY: Final = _END + _END
"""Two empty maps or arrays: the layout not in use."""


@lru_cache(maxsize=1 << 14)  # a bar's stamps are every portfolio's: 0.1 µs, not 0.9
def avro_long(value: int) -> bytes:
    """An Avro ``long``: zig-zag, then a base-128 varint.

    >>> avro_long(0), avro_long(-1), avro_long(64), avro_long(-65)
    (b'\\x00', b'\\x01', b'\\x80\\x01', b'\\x81\\x01')
    """
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def avro_string(value: str) -> bytes:
    """An Avro ``string``: its UTF-8 length, then the bytes.

    >>> avro_string("AB")
    b'\\x04AB'
    """
    data = value.encode("utf-8")
    return avro_long(len(data)) + data


@dataclass(frozen=True, slots=True)
class _Layout:
    """The bytes of ``meanReturns`` and ``covarianceMatrix`` for one ticker list, doubles zero,
    and where the doubles go: ``offsets[i]`` is the first byte of double i (the means, then the
    covariance row by row). About 5 kB for 20 tickers: ten thousand portfolios keep one each."""

    template: bytes
    offsets: npt.NDArray[np.int32]


_EIGHT: Final = np.arange(8, dtype=np.intp)
_ZEROS: Final = bytes(8)


def _ticker_array(tickers: Sequence[str]) -> bytes:
    """The ``tickers`` field: an array of strings (an empty one is its end alone)."""
    if not tickers:
        return _END
    return avro_long(len(tickers)) + b"".join(avro_string(t) for t in tickers) + _END


def _layout(tickers: Sequence[str]) -> _Layout:
    """A map block per field: its entry count, each entry (name, then the value), then 0. Every
    row of the covariance holds the same entries, so the positions are sums of lengths."""
    if not tickers:
        return _Layout(_TWO_EMPTY, np.zeros(0, dtype=np.int32))
    names = [avro_string(t) for t in tickers]
    count = avro_long(len(tickers))
    entries = b"".join(name + _ZEROS for name in names)
    # Within ``entries``: where each value starts.
    sizes = np.fromiter((len(name) + 8 for name in names), np.int64, len(names))
    inner = np.cumsum(sizes) - 8
    means = count + entries + _END
    rows = [name + count + entries + _END for name in names]
    row_sizes = np.fromiter((len(row) for row in rows), np.int64, len(rows))
    row_starts = len(means) + len(count) + np.cumsum(row_sizes) - row_sizes
    heads = np.fromiter((len(name) + len(count) for name in names), np.int64, len(names))
    offsets = np.concatenate(
        (len(count) + inner, ((row_starts + heads)[:, None] + inner[None, :]).ravel())
    ).astype(np.int32)
    template = means + count + b"".join(rows) + _END
    return _Layout(template, offsets)


class StatsHead(NamedTuple):
    """What a statistics record says besides its numbers: the same for every record of a
    portfolio definition."""

    portfolio_id: str
    tickers: tuple[str, ...]
    estimator: str
    half_life_bars: float | None
    bar_seconds: int | None
    kind: str


@dataclass(frozen=True, slots=True)
class _Fixed:
    """A head's bytes around the numbers: the id, then (after the maps and the count) the
    fields from ``estimator`` to ``kind``, and for the packed layout the arrays' counts."""

    head: StatsHead
    portfolio_id: bytes
    middle: bytes
    """``estimator`` … ``kind``; packed: and the means' array count."""
    between: bytes
    """Packed: the end of the means' array and the covariance's count."""


class StatsEncoder:
    """Writes ``PortfolioStats`` records in one layout; keeps the bytes of each portfolio's
    head, and for the maps layout one template per ticker list it has seen."""

    __slots__ = ("_fixed", "_layouts", "layout")

    def __init__(self, layout: StatsLayout = "maps") -> None:
        self.layout: Final = layout
        self._layouts: dict[tuple[str, ...], _Layout] = {}
        self._fixed: dict[str, _Fixed] = {}

    def encode(
        self,
        head: StatsHead,
        timestamp_ms: int,
        count: int,
        mean: FloatArray,
        covariance: FloatArray,
    ) -> bytes:
        """The bytes ``codec_for("PortfolioStats").encode`` gives the record of these values
        (``mean`` and ``covariance`` in ``head.tickers`` order, as ``stats_record`` makes
        it)."""
        stamps, counts = np.array([timestamp_ms]), np.array([count])
        return self.encode_many([head], stamps, counts, mean[None], covariance[None])[0]

    def encode_many(
        self,
        heads: Sequence[StatsHead],
        timestamps_ms: npt.NDArray[np.int64],
        counts: npt.NDArray[np.int64],
        means: FloatArray,
        covariances: FloatArray,
    ) -> list[bytes]:
        """:meth:`encode` for a row of each array per head (all of one number of tickers):
        the packed layout turns every row's numbers into bytes at once."""
        stamps, ns = timestamps_ms.tolist(), counts.tolist()
        if self.layout == "packed":
            block = np.concatenate((means, upper_triangle(covariances)), axis=1)
            raw = block.astype("<f8", copy=False).tobytes()
            width, split = block.shape[1] * 8, means.shape[1] * 8
            out = []
            for i, head in enumerate(heads):
                fixed = self._fixed_of(head)
                at = i * width
                out.append(
                    b"".join(
                        (
                            avro_long(stamps[i]),
                            fixed.portfolio_id,
                            _TWO_EMPTY,
                            avro_long(ns[i]),
                            fixed.middle,
                            raw[at : at + split],
                            fixed.between,
                            raw[at + split : at + width],
                            _END,
                        )
                    )
                )
            return out
        out = []
        for i, head in enumerate(heads):
            fixed = self._fixed_of(head)
            maps = self._maps(head.tickers, means[i], covariances[i])
            out.append(
                b"".join(
                    (
                        avro_long(stamps[i]),
                        fixed.portfolio_id,
                        maps,
                        avro_long(ns[i]),
                        fixed.middle,
                        _TWO_EMPTY,
                    )
                )
            )
        return out

    def _maps(self, tickers: tuple[str, ...], mean: FloatArray, covariance: FloatArray) -> bytes:
        """``meanReturns`` and ``covarianceMatrix``: the ticker list's template, doubles in."""
        layout = self._layouts.get(tickers)
        if layout is None:
            layout = self._layouts[tickers] = _layout(tickers)
        values = np.concatenate((mean.ravel(), covariance.ravel())).astype("<f8", copy=False)
        body = np.frombuffer(layout.template, dtype=np.uint8).copy()
        body[layout.offsets[:, None] + _EIGHT] = values.view(np.uint8).reshape(-1, 8)
        return body.tobytes()

    def _fixed_of(self, head: StatsHead) -> _Fixed:
        fixed = self._fixed.get(head.portfolio_id)
        if fixed is not None and fixed.head == head:
            return fixed
        n = len(head.tickers)
        half_life, bar_seconds = head.half_life_bars, head.bar_seconds
        middle = b"".join(
            (
                avro_string(head.estimator),
                _NULL if half_life is None else _SECOND + struct.pack("<d", half_life),
                _ticker_array(head.tickers),
                _NULL if bar_seconds is None else _SECOND + avro_long(bar_seconds),
                avro_string(head.kind),
            )
        )
        between = b""
        if self.layout == "packed":  # an array: its count (none when empty), values, then 0
            middle += avro_long(n) if n else b""
            between = _END + avro_long(n * (n + 1) // 2) if n else _END
        fixed = _Fixed(head, avro_string(head.portfolio_id), middle, between)
        self._fixed[head.portfolio_id] = fixed
        return fixed


_FIXED_DOUBLES: Final = struct.Struct("<ddd")
_FOUR_DOUBLES: Final = struct.Struct("<dddd")
_DOUBLE: Final = struct.Struct("<d")


class MetricsEncoder:
    """Writes ``PortfolioMetrics`` records from figures: the bytes ``codec_for(
    "PortfolioMetrics").encode`` gives the same record, about four times faster than building
    the record's dict and encoding it (one per portfolio and bar: the job's most frequent
    record). The id and the weights map are kept per portfolio until its weights change.

    >>> from streamfolio.serde import codec_for
    >>> data = MetricsEncoder().encode("p", ("A", "B"), [0.25, 0.75], 0.2, 0.1, 0.5, 7, 3,
    ...                                0.001, 0.0004, 252.0, 0.0, 7, None)
    >>> record = codec_for("PortfolioMetrics").decode(data)
    >>> record["weights"], record["sharpRatio"], record["sharpeThreshold"]
    ({'A': 0.25, 'B': 0.75}, 0.5, None)
    """

    __slots__ = ("_weights",)

    def __init__(self) -> None:
        self._weights: dict[str, tuple[bytes, bytes, bytes]] = {}
        """Per portfolio: the weights last encoded (their bits: 0.0 is not -0.0), the id's
        bytes and the weights map's."""

    def _parts(self, portfolio_id: str, tickers: Sequence[str], weights: list[float]) -> bytes:
        bits = struct.pack(f"<{len(weights)}d", *weights)
        cached = self._weights.get(portfolio_id)
        if cached is not None and cached[0] == bits:
            return cached[2]
        names = [avro_string(t) for t in tickers]
        body = b"".join(name + _DOUBLE.pack(w) for name, w in zip(names, weights, strict=True))
        block = avro_long(len(names)) + body + _END if names else _END
        self._weights[portfolio_id] = (bits, avro_string(portfolio_id), block)
        return block

    def encode(
        self,
        portfolio_id: str,
        tickers: Sequence[str],
        weights: list[float],
        risk: float,
        expected_return: float,
        sharpe: float,
        timestamp_ms: int,
        count: int,
        mean_return: float,
        variance: float,
        periods_per_year: float,
        risk_free_rate: float,
        stats_timestamp_ms: int,
        sharpe_threshold: float | None,
    ) -> bytes:
        """The record's bytes (``weights`` in ``tickers`` order)."""
        block = self._parts(portfolio_id, tickers, weights)
        return b"".join(
            (
                self._weights[portfolio_id][1],
                _FIXED_DOUBLES.pack(risk, expected_return, sharpe),
                avro_long(timestamp_ms),
                avro_long(count),
                _FOUR_DOUBLES.pack(mean_return, variance, periods_per_year, risk_free_rate),
                block,
                avro_long(stats_timestamp_ms),
                _NULL if sharpe_threshold is None else _SECOND + _DOUBLE.pack(sharpe_threshold),
            )
        )
