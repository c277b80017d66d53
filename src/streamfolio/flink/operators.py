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
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from pyflink.common import Row, Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import KeyedCoProcessFunction, OutputTag, ProcessFunction
from pyflink.datastream.state import ValueStateDescriptor

from streamfolio.core.portfolio import PortfolioMonitor, PortfolioSpec
from streamfolio.core.returns import BarReturns, bar_end_ms
from streamfolio.errors import SchemaError
from streamfolio.messages import DeadLetter
from streamfolio.replay import CONTROL_RANK, ControlKind, control_problem
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
    "keyed_bytes_type",
    "metrics_tag",
]

log = logging.getLogger(__name__)

DEAD_LETTER_KEY: Final = "!dead-letter"
"""Key under which rows carrying a dead letter travel through keyed streams (no ticker or
portfolio id has a ``!``)."""
ControlRow = tuple[str, ControlKind, dict[str, Any], bytes]
"""``(portfolio_id, "stats" | "weights", decoded record, original bytes)``."""
PortfolioState = dict[str, Any]
"""What :class:`PortfolioProcess` keeps per portfolio: ``seeded`` (bool), ``seq`` (control
messages received), ``pending`` (control messages waiting for their time), ``bars`` (bar index
→ (closes, returns) not processed yet), ``monitor`` (``PortfolioMonitor.to_state()`` or None)."""

_DETAIL_LIMIT: Final = 1000


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
    """A ``DeadLetter`` from the job; the payload is the original value, unchanged.

    Prices are read through a SQL table, which gives the partition, offset and key; the control
    topics are read by value-only DataStream sources, so theirs stay null.
    """
    if len(detail) > _DETAIL_LIMIT:
        detail = detail[: _DETAIL_LIMIT - 3] + "..."
    return DeadLetter(
        reason,
        detail,
        source_topic,
        payload,
        timestamp=int(time.time() * 1000),
        component="job",
        partition=partition,
        offset=offset,
        key=key,
    )


class DeadLetterLog:
    """Encodes dead letters, counting them by reason and logging the first of each (a flood
    stays one line).

    Calling it gives a letter as a side-output pair ``(dead_letter_tag(), bytes)``.
    """

    def __init__(self, operator: str) -> None:
        self.operator = operator
        self.counts: Counter[str] = Counter()

    def __call__(self, reason: str, detail: str, source_topic: str, payload: bytes) -> Any:
        return dead_letter_tag(), self.encode(dead_letter(reason, detail, source_topic, payload))

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
    """Raw initial-statistics or weights values → :data:`ControlRow` keyed by portfolio id.

    Dead letters: ``undecodable``, ``unknown_portfolio``. Whether the message fits its
    portfolio is checked by :class:`PortfolioProcess`, which knows the portfolio.
    """

    def __init__(
        self, kind: ControlKind, schema: str, portfolio_ids: Sequence[str], source_topic: str
    ) -> None:
        self.kind: ControlKind = kind
        self.schema = schema
        self.portfolio_ids = frozenset(portfolio_ids)
        self.source_topic = source_topic

    def open(self, runtime_context: Any = None) -> None:
        self._codec = codec_for(self.schema)
        self._dead = DeadLetterLog(f"decode {self.kind}")

    def process_element(self, value: bytes, ctx: Any = None) -> Iterator[Any]:
        try:
            record = self._codec.decode(value)
        except SchemaError as exc:
            yield self._dead("undecodable", str(exc), self.source_topic, value)
            return
        portfolio_id = record["portfolio_id"]
        if portfolio_id not in self.portfolio_ids:
            yield self._dead(
                "unknown_portfolio",
                f"{self.kind} for portfolio {portfolio_id!r}, which is not configured",
                self.source_topic,
                value,
            )
            return
        yield (portfolio_id, self.kind, record, value)


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

    Dead letters: ``invalid_weights``, ``invalid_stats`` (from
    :func:`streamfolio.replay.control_problem`).
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
        portfolio_id, kind, record, payload = value
        problem = control_problem(self.specs[portfolio_id], kind, record)
        if problem is not None:
            reason, detail = problem
            yield self._dead(reason, detail, self.control_topics[kind], payload)
            return
        state = self._load()
        state["seq"] += 1
        timestamp = int(record["timestamp"])
        state["pending"].append((timestamp, CONTROL_RANK[kind], state["seq"], kind, record))
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
            timestamp, rank, seq, _, _ = entry
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
                _, _, _, kind, record = item
                if kind == "stats":
                    monitor.seed(record)
                elif monitor.set_weights(record["weights"], record["timestamp"]) is not None:
                    continue  # cannot happen: checked on arrival against the same tickers
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
