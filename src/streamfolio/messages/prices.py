"""The prices topic's messages: :class:`PriceTick` (one trade) and :class:`Heartbeat`.

>>> tick = PriceTick("ATW", 612.5, 1750427972000, source="cse")
>>> PriceTick.from_record(tick.to_record()) == tick
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from streamfolio.messages.checks import (
    MAX_EPOCH_MS,
    check_int,
    check_number,
    check_text,
    check_timestamp,
    fail,
    missing_field,
)

__all__ = ["Heartbeat", "PriceTick"]


@dataclass(frozen=True, slots=True)
class PriceTick:
    """One trade: ``price`` of ``ticker`` at ``event_time`` (epoch ms UTC, the trade time).

    >>> PriceTick("ATW", 612.5, 1750427972000).to_record()["source"]
    'unknown'
    >>> PriceTick("ATW", float("nan"), 1750427972000)
    Traceback (most recent call last):
    ...
    streamfolio.errors.SchemaError: PriceTick.price is not finite: nan
    """

    FIELDS: ClassVar[Mapping[str, str]] = {
        "ticker": "ticker",
        "price": "price",
        "event_time": "event_time",
        "volume": "volume",
        "source": "source",
        "sequence": "sequence",
    }

    ticker: str
    price: float
    event_time: int
    volume: float | None = None
    source: str = "unknown"
    sequence: int | None = None

    def __post_init__(self) -> None:
        # Ticks are the hot path: accept the usual well-typed tick with a few cheap tests, and
        # leave everything else to the checks below, which also say what is wrong.
        volume, sequence = self.volume, self.sequence
        if (
            type(self.ticker) is str
            and self.ticker
            and type(self.price) is float
            and 0.0 < self.price < math.inf
            and type(self.event_time) is int
            and 0 <= self.event_time <= MAX_EPOCH_MS
            and (volume is None or (type(volume) is float and 0.0 <= volume < math.inf))
            and type(self.source) is str
            and (sequence is None or type(sequence) is int)
        ):
            return
        check_text("PriceTick.ticker", self.ticker, empty=False)
        check_number("PriceTick.price", self.price)
        if not self.price > 0:
            fail("PriceTick.price", f"must be > 0, got {self.price!r}")
        check_timestamp("PriceTick.event_time", self.event_time)
        if self.volume is not None:
            check_number("PriceTick.volume", self.volume, minimum=0.0)
        check_text("PriceTick.source", self.source)
        if self.sequence is not None:
            check_int("PriceTick.sequence", self.sequence)

    def to_record(self) -> dict[str, Any]:
        """The Avro record (schema ``PriceTick``)."""
        return {
            "ticker": self.ticker,
            "price": self.price,
            "event_time": self.event_time,
            "volume": self.volume,
            "source": self.source,
            "sequence": self.sequence,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Build from an Avro record; raises :class:`~streamfolio.errors.SchemaError`."""
        try:
            return cls(
                record["ticker"],
                record["price"],
                record["event_time"],
                record.get("volume"),
                record.get("source", "unknown"),
                record.get("sequence"),
            )
        except KeyError as exc:
            raise missing_field(cls, exc) from None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A promise on one partition of the prices topic: no event time older than ``time`` follows.

    It is not a tick and never makes a close; it only moves the partition's watermark while no
    ticks do (SEMANTICS.md §4). On the wire it is not plain Avro but single-object encoding, so
    it can share the topic with ticks: :func:`streamfolio.serde.encode_heartbeat`.

    >>> Heartbeat(1750427972000, "sim").to_record()
    {'time': 1750427972000, 'source': 'sim'}
    >>> Heartbeat(-1)
    Traceback (most recent call last):
    ...
    streamfolio.errors.SchemaError: Heartbeat.time is not an epoch-millisecond time in \
1970..9999: -1
    """

    FIELDS: ClassVar[Mapping[str, str]] = {"time": "time", "source": "source"}

    time: int
    source: str = "unknown"

    def __post_init__(self) -> None:
        check_timestamp("Heartbeat.time", self.time)
        check_text("Heartbeat.source", self.source)

    def to_record(self) -> dict[str, Any]:
        """The Avro record (schema ``Heartbeat``)."""
        return {"time": self.time, "source": self.source}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Build from an Avro record; raises :class:`~streamfolio.errors.SchemaError`."""
        try:
            return cls(record["time"], record.get("source", "unknown"))
        except KeyError as exc:
            raise missing_field(cls, exc) from None
