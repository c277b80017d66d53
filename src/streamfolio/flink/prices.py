"""From price ticks to bar closes: the job's Python function on the price path.

Per tick only :class:`DecodeTick` runs in Python (a Flink SQL scalar function, see
:mod:`streamfolio.flink.closes`); Flink SQL windows pick each bar's close. From there on
:mod:`streamfolio.flink.bars` chains the closes into returns and gathers them per portfolio.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from pyflink.common import Row
from pyflink.table.udf import ScalarFunction

from streamfolio.core.returns import bar_end_ms, bar_index
from streamfolio.flink.dead_letters import (
    DEAD_LETTER_KEY,
    DeadLetterLog,
    dead_letter,
)
from streamfolio.flink.records import DecodedTick
from streamfolio.intake import Intake, PriceFormat, Rejected
from streamfolio.messages import Heartbeat
from streamfolio.serde import is_heartbeat

if TYPE_CHECKING:
    import pandas as pd
    from pyflink.table.types import DataType

__all__ = [
    "DecodeTick",
    "TickCounts",
    "close_key",
    "decoded_tick_type",
]


def decoded_tick_type() -> DataType:
    """SQL type of :meth:`DecodeTick.eval`'s result."""
    from pyflink.table import DataTypes

    return DataTypes.ROW(
        [
            DataTypes.FIELD("ticker", DataTypes.STRING()),
            DataTypes.FIELD("price", DataTypes.DOUBLE()),
            DataTypes.FIELD("bar_sizes", DataTypes.ARRAY(DataTypes.BIGINT())),
            DataTypes.FIELD("dead_letter", DataTypes.BYTES()),
        ]
    )


class DecodeTick(ScalarFunction):  # type: ignore[misc]
    """Prices-topic records → ``(ticker, price, bar_sizes, dead_letter)`` each (a pandas UDF).

    Flink hands the function batches of records as pandas Series (Apache Arrow underneath) and
    runs it in a separate Python process: per tick, only :meth:`judge` runs in Python, with no
    call across the JVM boundary, and it runs next to the JVM's own work instead of taking
    turns with it (measured: about 1.5× the ticks/s of a row-at-a-time function in thread
    mode on 2 cores; BENCHMARKS.md).

    ``bar_sizes`` are the bar sizes (ms) whose windows take the tick; ``dead_letter`` is an
    encoded ``DeadLetter`` when (part of) the tick is refused, else None. A heartbeat gives
    ``(None, None, [], None)``: it has moved its partition's watermark and that is all it does.

    * ``undecodable``: not a record of the topic's schema (nor a heartbeat);
    * ``invalid``: a record whose values break the contract (non-finite or non-positive price,
      bad time...);
    * ``future``: stamped more than ``max_future_skew_ms`` ahead of the wall clock; it moved
      no watermark;
    * ``unknown_ticker``: in no configured portfolio;
    * ``late``: its bar had already ended at or before its partition's watermark when it was
      read (SEMANTICS §4), for one or more of the bar sizes; the tick still counts for the
      others.

    Times are epoch ms: ``event_ms`` is the row time ``sf_event_time`` gave the record (0 when
    it states none), ``partition_max`` the greatest row time read from its partition up to and
    including it. ``watermark`` is the watermark of this operator, never behind the windows
    downstream: a tick refused when its bar is final by that watermark too is never dropped
    there silently. With heartbeats that cannot happen before the partition's own rule says
    late; it guards the compatibility mode, whose idleness can move the watermark past a quiet
    partition (docs/flink.md).
    """

    def __init__(
        self,
        bar_sizes: Mapping[str, Sequence[int]],
        schema: str,
        source_topic: str,
        *,
        max_out_of_orderness_ms: int,
        max_future_skew_ms: int,
    ):
        self.bar_sizes = {ticker: tuple(sizes) for ticker, sizes in bar_sizes.items()}
        self.schema = schema
        self.source_topic = source_topic
        self.max_out_of_orderness_ms = max_out_of_orderness_ms
        self.max_future_skew_ms = max_future_skew_ms

    def open(self, function_context: Any = None) -> None:
        self._intake = Intake(None, max_future_skew_ms=self.max_future_skew_ms)
        self._format: PriceFormat = "bourse" if self.schema == "BourseData" else "tick"
        self._dead = DeadLetterLog("decode ticks")
        self.counts = TickCounts()
        self._metrics = None
        if function_context is not None:
            group = function_context.get_metric_group().add_group("streamfolio")
            self._metrics = {name: group.counter(name) for name in TickCounts.NAMES}

    def eval(
        self,
        key: pd.Series[Any],
        value: pd.Series[Any],
        event_ms: pd.Series[Any],
        partition_max: pd.Series[Any],
        watermark: pd.Series[Any],
        partition: pd.Series[Any],
        offset: pd.Series[Any],
    ) -> pd.DataFrame:
        """:meth:`judge` over a batch (null watermarks arrive as NaN)."""
        import pandas as pd

        before = self.counts.snapshot()
        now_ms = int(time.time() * 1000)
        rows = [
            self.judge(k, v, int(t), int(m), None if w != w else int(w), int(p), int(o), now_ms)
            for k, v, t, m, w, p, o in zip(
                key.tolist(),
                value.tolist(),
                event_ms.tolist(),
                partition_max.tolist(),
                watermark.tolist(),
                partition.tolist(),
                offset.tolist(),
                strict=True,
            )
        ]
        if self._metrics is not None:
            for name, count in self.counts.snapshot().items():
                if count != before[name]:
                    self._metrics[name].inc(count - before[name])
        return pd.DataFrame(rows, columns=["ticker", "price", "bar_sizes", "dead_letter"])

    def judge(
        self,
        key: bytes | None,
        value: bytes | None,
        event_ms: int,
        partition_max: int,
        watermark: int | None,
        partition: int,
        offset: int,
        now_ms: int,
    ) -> DecodedTick:
        """Decode and judge one record: its key and value, its row time, its partition's
        greatest row time so far, the operator's watermark (None before the first one), its
        partition and offset, and the wall clock (for the future skew only)."""

        where = (value or b"", partition, offset, key)
        try:
            read = self._intake.price(value, key, price_format=self._format, now_ms=now_ms)
        except Rejected as refused:
            # Only a refusal asks again whether the bytes were a heartbeat (for the counters).
            if value is not None and is_heartbeat(value):
                self.counts.heartbeats += 1
                return self._refuse(refused.reason, refused.detail, where)
            self.counts.ticks += 1
            return self._refuse_tick(refused.reason, refused.detail, where)
        if isinstance(read, Heartbeat):
            self.counts.heartbeats += 1
            if read.time != event_ms:
                return self._refuse("invalid", _disagreement(read.time, event_ms), where)
            return DecodedTick(None, None, [], None)
        self.counts.ticks += 1
        tick = read
        if tick.event_time != event_ms:
            return self._refuse_tick("invalid", _disagreement(tick.event_time, event_ms), where)
        sizes = self.bar_sizes.get(tick.ticker)
        if sizes is None:
            detail = f"ticker {tick.ticker!r} is in no configured portfolio"
            return self._refuse_tick("unknown_ticker", detail, where)
        partition_watermark = partition_max - self.max_out_of_orderness_ms
        taken: list[int] = []
        late: list[tuple[int, int]] = []
        for bar_ms in sizes:
            end = bar_end_ms(bar_index(tick.event_time, bar_ms), bar_ms)
            if end <= partition_watermark or (watermark is not None and end - 1 <= watermark):
                late.append((bar_ms, end))
            else:
                taken.append(bar_ms)
        if taken:
            self.counts.counted += 1
        else:
            self.counts.dead_lettered += 1
        late_letter = None
        if late:
            ends = ", ".join(f"{size} ms bar ending {end}" for size, end in late)
            late_letter = self._letter(
                "late",
                f"{tick.ticker} at {tick.event_time}: partition {partition}'s watermark "
                f"{partition_watermark} (greatest event time read {partition_max} − "
                f"{self.max_out_of_orderness_ms} ms) has passed its {ends}",
                *where,
            )
        return DecodedTick(
            tick.ticker if taken else None,
            tick.price if taken else None,
            taken,
            late_letter,
        )

    def _refuse(
        self, reason: str, detail: str, where: tuple[bytes, int, int, bytes | None]
    ) -> DecodedTick:
        return DecodedTick(None, None, [], self._letter(reason, detail, *where))

    def _refuse_tick(
        self, reason: str, detail: str, where: tuple[bytes, int, int, bytes | None]
    ) -> DecodedTick:
        self.counts.dead_lettered += 1
        return self._refuse(reason, detail, where)

    def _letter(
        self,
        reason: str,
        detail: str,
        value: bytes,
        partition: int,
        offset: int,
        key: bytes | None,
    ) -> bytes:
        self.counts.dead_letters[reason] += 1
        letter = dead_letter(
            reason, detail, self.source_topic, value, partition=partition, offset=offset, key=key
        )
        return self._dead.encode(letter)


class TickCounts:
    """What :class:`DecodeTick` has read and what became of it, also as Flink counters of the
    same names (group ``streamfolio``).

    Nothing is dropped silently: every tick read either counts (at least one of its bar sizes
    takes it; it may be late for another, and a ``late`` letter then names that bar size) or is
    dead-lettered, so ``ticks_read == ticks_counted + ticks_dead_lettered``; the windows after
    this step drop nothing (Flink's ``numLateRecordsDropped`` stays 0; docs/flink.md).
    ``dead_letters_<reason>`` count letters, heartbeats' included.
    """

    REASONS: Final = ("undecodable", "invalid", "future", "unknown_ticker", "late")
    NAMES: Final = (
        "ticks_read",
        "ticks_counted",
        "ticks_dead_lettered",
        "heartbeats_read",
        *(f"dead_letters_{reason}" for reason in REASONS),
    )

    def __init__(self) -> None:
        self.ticks = 0
        self.counted = 0
        self.dead_lettered = 0
        self.heartbeats = 0
        self.dead_letters: Counter[str] = Counter()

    def snapshot(self) -> dict[str, int]:
        counts = {
            "ticks_read": self.ticks,
            "ticks_counted": self.counted,
            "ticks_dead_lettered": self.dead_lettered,
            "heartbeats_read": self.heartbeats,
        }
        counts.update({f"dead_letters_{r}": self.dead_letters[r] for r in self.REASONS})
        return counts


def _disagreement(decoded_ms: int, event_ms: int) -> str:
    return (
        f"the job's event-time reader (sf_event_time) read {event_ms} where the decoder reads "
        f"{decoded_ms}; the record moved no watermark"
    )


def close_key(row: Row) -> str:
    """Key of a row of the bar-closes table: ``TICKER|bar_ms``, or the dead-letter key."""
    ticker = row[0]
    return DEAD_LETTER_KEY if ticker is None else f"{ticker}|{row[1]}"
