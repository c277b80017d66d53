"""The job's Python functions for control messages and portfolios, and what they share.

Each function decodes what Flink hands it, calls :mod:`streamfolio.core` (or the message and
serde modules) and encodes what it emits; none of them computes a return, a moment or a metric
itself. They are plain classes (picklable: only settings-derived values are captured; codecs are
built in ``open``) so they can also be driven directly in unit tests with fake contexts. The
price path (ticks → bars) is in :mod:`streamfolio.flink.prices`.

Records between operators are Python tuples (pickled by Flink):

* :class:`DecodeControls` emits a :data:`ControlRow` per initial-statistics or weights message;
* :class:`PortfolioProcess` (keyed by portfolio id) takes those and the
  :data:`~streamfolio.flink.prices.PortfolioBar` of each bar, and emits ``Row(k, v)``: key and
  Avro value of updated statistics (main output) and metrics (side output :func:`metrics_tag`).

What cannot be used becomes an encoded ``DeadLetter`` in the side output
:func:`dead_letter_tag`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from pyflink.common import Row, Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import KeyedCoProcessFunction, OutputTag, ProcessFunction
from pyflink.datastream.state import ValueStateDescriptor

from streamfolio.core.portfolio import PortfolioMonitor, PortfolioSpec
from streamfolio.core.returns import BarReturns, bar_end_ms
from streamfolio.intake import CONTROL_RANK, ControlKind, Intake, Rejected
from streamfolio.messages import DeadLetter
from streamfolio.serde import codec_for

if TYPE_CHECKING:
    from pyflink.common.typeinfo import TypeInformation

    from streamfolio.flink.prices import PortfolioBar

__all__ = [
    "DEAD_LETTER_KEY",
    "ControlRow",
    "ControlTime",
    "DeadLetterLog",
    "DecodeControls",
    "PortfolioProcess",
    "dead_letter",
    "dead_letter_tag",
    "kafka_record",
    "keyed_bytes_type",
    "metrics_tag",
]

log = logging.getLogger(__name__)

DEAD_LETTER_KEY: Final = "!dead-letter"
"""Key under which rows carrying a dead letter travel through keyed streams (no ticker or
portfolio id has a ``!``)."""
ControlRow = tuple[str, ControlKind, dict[str, Any], bytes, int, int, bytes | None]
"""``(portfolio_id, "stats" | "weights", decoded record, original bytes, partition, offset,
key)``."""
PortfolioState = dict[str, Any]
"""What :class:`PortfolioProcess` keeps per portfolio: ``seeded`` (bool), ``seq`` (control
messages received), ``pending`` (control messages waiting for their time), ``bars`` (bar index
→ (closes, returns) not processed yet), ``monitor`` (``PortfolioMonitor.to_state()`` or None)."""

# ------------------------------------------------------------------------------ shared bits


def keyed_bytes_type() -> TypeInformation:
    """``Row(k: byte[], v: byte[])``: a Kafka key and value, as the table sinks read them.

    A new object on every call: an OutputTag pickles its type, and a type already used by the
    Java side holds an unpicklable lock (research/streaming.md §2, bug 4).
    """
    return Types.ROW_NAMED(
        ["k", "v"], [Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.PRIMITIVE_ARRAY(Types.BYTE())]
    )


def dead_letter_tag() -> OutputTag:
    """The side output of encoded ``DeadLetter`` records (one tag name for every operator)."""
    return OutputTag("dead-letters", Types.PRIMITIVE_ARRAY(Types.BYTE()))


def metrics_tag() -> OutputTag:
    """The side output of :class:`PortfolioProcess` carrying metrics as ``Row(k, v)``."""
    return OutputTag("metrics", keyed_bytes_type())


def dead_letter(
    reason: str,
    detail: str,
    source_topic: str,
    payload: bytes,
    *,
    partition: int | None = None,
    offset: int | None = None,
    key: bytes | None = None,
) -> DeadLetter:
    """A ``DeadLetter`` from the job; the payload is the original value, unchanged."""
    return Rejected(reason, detail).dead_letter(
        source_topic=source_topic,
        payload=payload,
        component="job",
        partition=partition,
        offset=offset,
        key=key,
    )


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


class DeadLetterLog:
    """Encodes dead letters, counting them by reason and logging the first of each (a flood
    stays one line).

    Calling it gives a letter as a side-output pair ``(dead_letter_tag(), bytes)``.
    """

    def __init__(self, operator: str) -> None:
        self.operator = operator
        self.counts: Counter[str] = Counter()

    def __call__(
        self,
        reason: str,
        detail: str,
        source_topic: str,
        payload: bytes,
        *,
        partition: int | None = None,
        offset: int | None = None,
        key: bytes | None = None,
    ) -> Any:
        letter = dead_letter(
            reason, detail, source_topic, payload, partition=partition, offset=offset, key=key
        )
        return dead_letter_tag(), self.encode(letter)

    def encode(self, letter: DeadLetter) -> bytes:
        if self.counts[letter.reason] == 0:
            log.warning(
                "%s: dead-lettered (%s): %s; further ones are only counted",
                self.operator,
                letter.reason,
                letter.detail,
            )
        self.counts[letter.reason] += 1
        return codec_for("DeadLetter").encode(letter.to_record())


# ------------------------------------------------------------------------- control messages


class DecodeControls(ProcessFunction):  # type: ignore[misc]
    """Whole initial-statistics or weights records (:func:`kafka_record`) → :data:`ControlRow`
    keyed by portfolio id, through :class:`~streamfolio.intake.Intake`: a record that is not
    accepted (undecodable, invalid, future, key_mismatch, unknown_portfolio, invalid_stats,
    invalid_weights) is dead-lettered with where it was read, and goes no further.
    """

    def __init__(self, kind: ControlKind, intake: Intake, source_topic: str) -> None:
        self.kind: ControlKind = kind
        self.intake = intake
        self.source_topic = source_topic

    def open(self, runtime_context: Any = None) -> None:
        self._read = self.intake.initial_stats if self.kind == "stats" else self.intake.weights
        self._dead = DeadLetterLog(f"decode {self.kind}")

    def process_element(self, value: bytes, ctx: Any = None) -> Iterator[Any]:
        partition, offset, key, payload = kafka_record(value)
        try:
            message = self._read(payload, key)
        except Rejected as refused:
            yield self._dead(
                refused.reason,
                refused.detail,
                self.source_topic,
                payload,
                partition=partition,
                offset=offset,
                key=key,
            )
            return
        record = message.to_record()
        yield (message.portfolio_id, self.kind, record, payload, partition, offset, key)


class ControlTime(TimestampAssigner):  # type: ignore[misc]
    """A decoded control message's time: its ``timestamp`` (see
    :func:`~streamfolio.flink.connectors.control_watermarks`)."""

    def extract_timestamp(self, value: ControlRow, record_timestamp: int) -> int:
        return int(value[2]["timestamp"])


def bar_row_key(row: PortfolioBar) -> str:
    """Portfolio id of a :data:`~streamfolio.flink.prices.PortfolioBar`."""
    return row[0]


def control_row_key(row: ControlRow) -> str:
    """Portfolio id of a :data:`ControlRow`."""
    return row[0]


# ------------------------------------------------------------------------------- portfolios


class PortfolioProcess(KeyedCoProcessFunction):  # type: ignore[misc]
    """One portfolio's statistics and metrics, in keyed state (SEMANTICS §4–§6).

    Input 1: :data:`~streamfolio.flink.prices.PortfolioBar` (all its tickers' results of bar
    k); input 2: :data:`ControlRow`.
    State: one value per portfolio (:data:`PortfolioState`) holding the
    :class:`~streamfolio.core.portfolio.PortfolioMonitor` (``to_state()``), the bars not
    processed yet, and the control messages waiting for their time. One value rather than three
    because every access crosses from Python into the JVM: a bar costs one read and one write
    on arrival and again when processed.

    The event-time timer at bar k's last millisecond processes bar k: ``BarReturns`` →
    ``monitor.on_bar`` → updated statistics → ``monitor.metrics()``. A control message takes
    effect at its timestamp T, before every bar ending after T (ties: a seed before weights);
    one whose T the watermark has passed takes effect on arrival. Until the portfolio's first
    initial statistics arrive nothing is processed: bars and control messages wait in state and
    are then processed in event-time order, so the results do not depend on which topic was
    read first. The same rules as :meth:`streamfolio.replay.ReplayEngine.control`.

    Dead letters: ``stale``, a control message not newer than the one in force when its time
    comes (:meth:`~streamfolio.core.portfolio.PortfolioMonitor.seed`, ``set_weights``); what
    does not fit its portfolio never got here (:class:`DecodeControls`).
    """

    def __init__(self, specs: Mapping[str, PortfolioSpec], control_topics: Mapping[str, str]):
        self.specs = dict(specs)
        self.control_topics = dict(control_topics)

    def open(self, runtime_context: Any) -> None:
        self._state = runtime_context.get_state(
            ValueStateDescriptor("portfolio", Types.PICKLED_BYTE_ARRAY())
        )
        self._stats_codec = codec_for("PortfolioStats")
        self._metrics_codec = codec_for("PortfolioMetrics")
        self._metrics_tag = metrics_tag()
        self._dead = DeadLetterLog("portfolio")
        self._waiting_logged: set[str] = set()

    # -- inputs ---------------------------------------------------------------------------

    def _load(self) -> PortfolioState:
        state: PortfolioState | None = self._state.value()
        if state is None:
            return {"seeded": False, "seq": 0, "pending": [], "bars": {}, "monitor": None}
        return state

    def process_element1(self, value: PortfolioBar, ctx: Any) -> None:
        portfolio_id, k, closes, returns = value
        state = self._load()
        state["bars"][k] = (closes, returns)
        self._state.update(state)
        ctx.timer_service().register_event_time_timer(
            bar_end_ms(k, self.specs[portfolio_id].bar_ms) - 1
        )
        if not state["seeded"] and portfolio_id not in self._waiting_logged:
            # The usual cause of "the job runs but writes nothing": say it once.
            log.warning(
                "portfolio %s: bars wait in state until its initial statistics arrive "
                "(publish them with `streamfolio init --publish`)",
                portfolio_id,
            )
            self._waiting_logged.add(portfolio_id)

    def process_element2(self, value: ControlRow, ctx: Any) -> Iterator[Any]:
        portfolio_id, kind, record, payload, partition, offset, key = value
        state = self._load()
        state["seq"] += 1
        timestamp = int(record["timestamp"])
        origin = (payload, partition, offset, key)  # for a dead letter if it turns out stale
        state["pending"].append((timestamp, CONTROL_RANK[kind], state["seq"], kind, record, origin))
        state["pending"].sort(key=lambda entry: entry[:3])
        if kind == "stats":
            state["seeded"] = True
        watermark = ctx.timer_service().current_watermark()
        if timestamp > watermark:
            ctx.timer_service().register_event_time_timer(timestamp)
        elif state["seeded"]:
            yield from self._advance(portfolio_id, state, watermark)
        self._state.update(state)

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        state = self._load()
        yield from self._advance(ctx.get_current_key(), state, timestamp)
        self._state.update(state)

    # -- processing -----------------------------------------------------------------------

    def _advance(self, portfolio_id: str, state: PortfolioState, up_to: int) -> Iterator[Any]:
        """Process, in event-time order, the control messages stamped at or before ``up_to``
        and the bars whose last millisecond is at or before it (``state`` is updated)."""
        if not state["seeded"]:
            return  # everything waits for the first initial statistics
        spec = self.specs[portfolio_id]
        due: list[tuple[int, int, int, int, Any]] = []
        waiting = []
        for entry in state["pending"]:
            timestamp, rank, seq = entry[:3]
            if timestamp <= up_to:
                due.append((timestamp, 0, rank, seq, entry))
            else:
                waiting.append(entry)
        bars = state["bars"]
        for k in list(bars):
            last_ms = bar_end_ms(k, spec.bar_ms) - 1
            if last_ms <= up_to:
                due.append((last_ms, 1, 0, k, k))
        if not due:
            return
        due.sort(key=lambda item: item[:4])
        monitor = (
            PortfolioMonitor(spec)
            if state["monitor"] is None
            else PortfolioMonitor.from_state(spec, state["monitor"])
        )
        for _, what, _, _, item in due:
            if what == 0:
                _, _, _, kind, record, (payload, partition, offset, key) = item
                if kind == "stats":
                    stale = monitor.seed(record)
                else:
                    stale = monitor.set_weights(record["weights"], record["timestamp"])
                if stale is not None:  # the fit was checked when read: only its age is left
                    yield self._dead(
                        "stale",
                        f"{portfolio_id}: {stale}",
                        self.control_topics[kind],
                        payload,
                        partition=partition,
                        offset=offset,
                        key=key,
                    )
                    continue
            else:
                closes, returns = bars.pop(item)
                stats = monitor.on_bar(BarReturns(item, closes, returns))
                if stats is None:
                    continue
                stats.update(kind="updated", bar_seconds=spec.bar_ms // 1000)
                yield Row(portfolio_id.encode(), self._stats_codec.encode(stats))
            metrics = monitor.metrics()
            if metrics is not None:
                yield (
                    self._metrics_tag,
                    Row(portfolio_id.encode(), self._metrics_codec.encode(metrics)),
                )
        state["monitor"] = monitor.to_state()
        state["pending"] = waiting
