"""The records that travel between the job's Python operators, with named fields.

Flink pickles them between tasks (they are plain named tuples of built-in values), and the
key functions read them by name. The SQL stages' rows (ticks decoded by
:class:`~streamfolio.flink.prices.DecodeTick`, bar closes) are Flink ``Row``\\ s whose columns
are named in the SQL.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from streamfolio.intake import ControlKind

JobControlKind = ControlKind | Literal["definition"]
"""What the portfolio step applies in event time: a seed, weights, or a portfolio definition."""

__all__ = [
    "ControlMessage",
    "DecodedTick",
    "JobControlKind",
    "MemberBars",
    "MembershipChange",
    "ShardBar",
    "TickerClose",
    "bar_size_key",
    "control_key",
    "kafka_record",
    "kafka_record_time",
    "member_bars_key",
    "membership_key",
    "shard_key",
]


class DecodedTick(NamedTuple):
    """What the tick decoder makes of one prices record (a row of its pandas UDF)."""

    ticker: str | None
    """None when the record gives no tick (a heartbeat, or refused)."""
    price: float | None
    bar_sizes: list[int]
    """The bar sizes (ms) whose windows take the tick (those it is not late for)."""
    dead_letter: bytes | None
    """An encoded ``DeadLetter`` when (part of) the record is refused."""


class TickerClose(NamedTuple):
    """One bar's close of one ticker in one bar size, and its log return."""

    bar_ms: int
    ticker: str
    bar: int
    """The bar index k (the bar is ``[k·B, (k+1)·B)``)."""
    close: float
    log_return: float | None
    """None for the ticker's first close."""


class ShardBar(NamedTuple):
    """One bar of every ticker of a bar size that traded in it, for one shard of portfolios."""

    shard: str
    """``bar_ms|n`` (:func:`~streamfolio.flink.routing.shard_of`)."""
    bar: int
    closes: dict[str, float]
    returns: dict[str, float]
    """Only the tickers with a return (a ticker's first close has none)."""


class MemberBars(NamedTuple):
    """One bar of one bar size for the portfolios of a shard that are its members then."""

    shard: str
    """The portfolios' shard ``n`` (:func:`~streamfolio.flink.routing.shard_of`, as text)."""
    bar_ms: int
    bar: int
    closes: dict[str, float]
    returns: dict[str, float]
    members: dict[str, tuple[str, ...]]
    """Each member portfolio's tickers (the definition in force at the bar's end)."""


class ControlMessage(NamedTuple):
    """An accepted initial-statistics, weights or definition message, and where it was read."""

    portfolio_id: str
    kind: JobControlKind
    record: dict[str, Any]
    """The message's Avro record (schema field names); for a definition ``{"timestamp": T,
    "spec": the PortfolioSpec's fields, or None for a removal}``."""
    payload: bytes
    """The original value, for a dead letter should it turn out stale."""
    partition: int
    offset: int
    key: bytes | None


class MembershipChange(NamedTuple):
    """A portfolio joins (``tickers``) or leaves (None) a shard of one bar size from its
    definition's time ``timestamp`` on."""

    shard: str
    portfolio_id: str
    timestamp: int
    tickers: tuple[str, ...] | None


def membership_key(row: MembershipChange) -> str:
    """Key of a :class:`MembershipChange`: its shard."""
    return row.shard


def bar_size_key(row: TickerClose) -> str:
    """Key of a :class:`TickerClose`: its bar size in ms."""
    return str(row.bar_ms)


def shard_key(row: ShardBar) -> str:
    """Key of a :class:`ShardBar`: its shard."""
    return row.shard


def member_bars_key(row: MemberBars) -> str:
    """Key of a :class:`MemberBars`: its portfolios' shard."""
    return row.shard


def control_key(row: ControlMessage) -> str:
    """Key of a :class:`ControlMessage`: the shard of its portfolio (as :class:`MemberBars`).

    >>> control_key(ControlMessage("banks", "weights", {}, b"", 0, 0, None))
    '6'
    """
    from streamfolio.flink.routing import shard_of  # routing needs the config, records not

    return str(shard_of(row.portfolio_id))


def kafka_record(blob: bytes) -> tuple[int, int, bytes | None, bytes]:
    """``(partition, offset, key, value)`` of a record read whole (``KafkaRecordBytes``, the
    job's Java deserializer in ``tools/flink/event-time``); a null value is ``b""``.

    >>> kafka_record(bytes.fromhex("00000002" "000000000000002a" "00000002") + b"p1"
    ...              + bytes.fromhex("00000001") + b"v")
    (2, 42, b'p1', b'v')
    """
    view = memoryview(blob)
    partition = int.from_bytes(view[0:4], "big", signed=True)
    offset = int.from_bytes(view[4:12], "big", signed=True)
    key_size = int.from_bytes(view[12:16], "big", signed=True)
    at = 16 + max(key_size, 0)
    key = None if key_size < 0 else bytes(view[16:at])
    value_size = int.from_bytes(view[at : at + 4], "big", signed=True)
    value = b"" if value_size < 0 else bytes(view[at + 4 : at + 4 + value_size])
    return partition, offset, key, value


def kafka_record_time(blob: bytes) -> int | None:
    """The Kafka timestamp of a record read whole, after its value (None from a deserializer
    that did not write it): the only time a tombstone has.

    >>> kafka_record_time(bytes.fromhex("00000000" "0000000000000000" "ffffffff" "ffffffff"
    ...                                 "0000000000000007"))
    7
    """
    view = memoryview(blob)
    key_size = int.from_bytes(view[12:16], "big", signed=True)
    at = 16 + max(key_size, 0)
    value_size = int.from_bytes(view[at : at + 4], "big", signed=True)
    end = at + 4 + max(value_size, 0)
    if len(view) < end + 8:
        return None
    return int.from_bytes(view[end : end + 8], "big", signed=True)
