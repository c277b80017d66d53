"""``PortfolioStats`` Avro bytes written straight from an estimator's arrays: the job's hot path.

The codec (fastavro) takes ~100 µs for one 20-ticker record: 420 doubles, each first made a
Python float in a nested dict (``stats_record``) and then walked key by key. Per portfolio the
bytes around the doubles never change (the tickers' names, the maps' block counts), so
:class:`StatsEncoder` keeps them as a template per ticker list and copies the doubles in with
one numpy assignment. The bytes are the codec's own, byte for byte
(``tests/flink/test_stats_encoding.py`` compares them): a map is one block (its entry count,
the entries in insertion order, then 0), a double is 8 bytes little-endian, ints are zig-zag
varints.

>>> import numpy as np
>>> from streamfolio.serde import codec_for
>>> data = StatsEncoder().encode("p", ("A", "B"), 5, np.array([1.0, 2.0]), np.eye(2), 3,
...                              "welford", None, 1, "updated")
>>> record = codec_for("PortfolioStats").decode(data)
>>> record["covarianceMatrix"], record["kind"]
({'A': {'A': 1.0, 'B': 0.0}, 'B': {'A': 0.0, 'B': 1.0}}, 'updated')
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from streamfolio.core.types import FloatArray

__all__ = ["StatsEncoder", "avro_long", "avro_string"]

_NULL: Final = b"\x00"
"""A union's branch 0 (null)."""
_SECOND: Final = b"\x02"
"""A union's branch 1 (the value)."""
_END: Final = b"\x00"
"""The empty block that ends a map or an array."""


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
    and where the doubles go: row i of ``slots`` is the 8 byte offsets of double i (the means,
    then the covariance row by row)."""

    template: npt.NDArray[np.uint8]
    slots: npt.NDArray[np.intp]
    tickers: bytes
    """The ``tickers`` array field, encoded."""


def _layout(tickers: Sequence[str]) -> _Layout:
    names = [avro_string(t) for t in tickers]
    count = avro_long(len(tickers))
    out = bytearray()
    offsets: list[int] = []

    def double() -> None:
        offsets.append(len(out))
        out.extend(bytes(8))

    out += count
    for name in names:
        out += name
        double()
    out += _END
    out += count
    for row in names:
        out += row + count
        for column in names:
            out += column
            double()
        out += _END
    out += _END
    slots = np.asarray(offsets, dtype=np.intp)[:, None] + np.arange(8, dtype=np.intp)
    return _Layout(np.frombuffer(bytes(out), dtype=np.uint8), slots, count + b"".join(names) + _END)


class StatsEncoder:
    """Writes ``PortfolioStats`` records; keeps one template per ticker list it has seen."""

    __slots__ = ("_layouts",)

    def __init__(self) -> None:
        self._layouts: dict[tuple[str, ...], _Layout] = {}

    def encode(
        self,
        portfolio_id: str,
        tickers: tuple[str, ...],
        timestamp_ms: int,
        mean: FloatArray,
        covariance: FloatArray,
        count: int,
        estimator: str,
        half_life_bars: float | None,
        bar_seconds: int | None,
        kind: str,
    ) -> bytes:
        """The bytes ``codec_for("PortfolioStats").encode`` gives the record of these values
        (``mean`` and ``covariance`` in ``tickers`` order, as ``stats_record`` makes it)."""
        layout = self._layouts.get(tickers)
        if layout is None:
            layout = self._layouts[tickers] = _layout(tickers)
        values = np.concatenate((mean.ravel(), covariance.ravel())).astype("<f8", copy=False)
        body = layout.template.copy()
        body[layout.slots] = values.view(np.uint8).reshape(-1, 8)
        return b"".join(
            (
                avro_long(timestamp_ms),
                avro_string(portfolio_id),
                body.tobytes(),
                avro_long(count),
                avro_string(estimator),
                _NULL if half_life_bars is None else _SECOND + struct.pack("<d", half_life_bars),
                layout.tickers,
                _NULL if bar_seconds is None else _SECOND + avro_long(bar_seconds),
                avro_string(kind),
            )
        )
