"""The job's Python functions: thin adapters between Flink and the analytics core.

Each function decodes what Flink hands it, calls :mod:`streamfolio.core` (or the message and
serde modules) and encodes what it emits; none of them computes a return, a moment or a metric
itself. They are plain classes (picklable: only settings-derived values are captured; codecs are
built in ``open``) so they can also be driven directly in unit tests with fake contexts.

Records between operators are Python tuples (pickled by Flink):

* :class:`DecodeTicks` emits a :data:`TickRow` per (tick, bar size the ticker is used with);
* :class:`CloseBars` (keyed by ``TICKER|bar_ms``) emits a :data:`BarRow` per (closed bar,
  portfolio holding the ticker at that bar size);
* :class:`DecodeControls` emits a :data:`ControlRow` per initial-statistics or weights message;
* :class:`PortfolioProcess` (keyed by portfolio id) emits ``Row(k, v)``: key and Avro value of
  updated statistics (main output) and metrics (side output :func:`metrics_tag`).

What cannot be used becomes an encoded ``DeadLetter``. The control and portfolio functions emit
them to the side output :func:`dead_letter_tag`; the per-tick functions send them down their
main output under the key :data:`DEAD_LETTER_KEY` instead, and :class:`PortfolioProcess` moves
them to its side output (a side output makes a PyFlink function slower on every record it
receives; see :class:`DecodeTicks`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from pyflink.common import Row, Types
from pyflink.datastream import (
    KeyedCoProcessFunction,
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
)
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from streamfolio.core.portfolio import PortfolioMonitor, PortfolioSpec
from streamfolio.core.returns import BarCloses, BarReturns, ReturnChain, bar_end_ms, bar_index
from streamfolio.errors import DataError, SchemaError
from streamfolio.messages import PriceTick, price_tick_from_bourse
from streamfolio.replay import CONTROL_RANK, ControlKind, control_problem
from streamfolio.serde import codec_for

if TYPE_CHECKING:
    from pyflink.common.typeinfo import TypeInformation

__all__ = [
    "DEAD_LETTER_KEY",
    "BarRow",
    "CloseBars",
    "ControlRow",
    "DecodeControls",
    "DecodeTicks",
    "PortfolioProcess",
    "TickRow",
    "dead_letter",
    "dead_letter_tag",
    "keyed_bytes_type",
    "metrics_tag",
    "tick_key",
]

log = logging.getLogger(__name__)

TickRow = tuple[str, str, int, int, float, bytes]
"""``(key "TICKER|bar_ms", ticker, bar_ms, event_time_ms, price, original bytes)``, or a dead
letter ``(DEAD_LETTER_KEY, "", 0, 0, 0.0, encoded DeadLetter)``."""
DEAD_LETTER_KEY: Final = "!dead-letter"
"""Key of the dead letters :class:`DecodeTicks` sends down its main output (no ticker has a
``!``)."""
BarRow = tuple[str, int, str, float, Any]
"""``(portfolio_id, bar index, ticker, close, log return or None for a first close)``, or a dead
letter ``(DEAD_LETTER_KEY, 0, "", 0.0, encoded DeadLetter)``."""
ControlRow = tuple[str, ControlKind, dict[str, Any], bytes]
"""``(portfolio_id, "stats" | "weights", decoded record, original bytes)``."""

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


def dead_letter(reason: str, detail: str, source_topic: str, payload: bytes) -> bytes:
    """An encoded ``DeadLetter`` from the job.

    The job cannot see the Kafka partition, offset or key of what it read (PyFlink sources are
    value-only), so those stay null; the payload is the original value, unchanged.
    """
    if len(detail) > _DETAIL_LIMIT:
        detail = detail[: _DETAIL_LIMIT - 3] + "..."
    return codec_for("DeadLetter").encode(
        {
            "reason": reason,
            "detail": detail,
            "source_topic": source_topic,
            "partition": None,
            "offset": None,
            "key": None,
            "payload": bytes(payload),
            "timestamp": int(time.time() * 1000),
            "component": "job",
        }
    )


class _DeadLetterLog:
    """Counts dead letters by reason and logs the first of each (a flood stays one line).

    Calling it gives the dead letter as a side-output pair ``(dead_letter_tag(), bytes)``.
    """

    def __init__(self, operator: str) -> None:
        self.operator = operator
        self.counts: Counter[str] = Counter()

    def __call__(self, reason: str, detail: str, source_topic: str, payload: bytes) -> Any:
        return dead_letter_tag(), self.encode(reason, detail, source_topic, payload)

    def encode(self, reason: str, detail: str, source_topic: str, payload: bytes) -> bytes:
        if self.counts[reason] == 0:
            log.warning(
                "%s: dead-lettered (%s): %s; further ones are only counted",
                self.operator,
                reason,
                detail,
            )
        self.counts[reason] += 1
        return dead_letter(reason, detail, source_topic, payload)


def tick_key(row: TickRow) -> str:
    """Key of a :data:`TickRow`: ``TICKER|bar_ms`` (a string, so Flink hashes it by value)."""
    return row[0]


def _key(ticker: str, bar_ms: int) -> str:
    return f"{ticker}|{bar_ms}"


# ------------------------------------------------------------------------------ price ticks


class DecodeTicks(ProcessFunction):  # type: ignore[misc]
    """Raw prices-topic values → validated ticks, one per bar size the ticker is used with.

    Dead letters: ``undecodable`` (not a record of the topic's schema), ``invalid`` (a record
    whose values break the contract: non-finite or non-positive price, bad time...),
    ``unknown_ticker`` (in no configured portfolio). They travel in the main output, as rows
    keyed :data:`DEAD_LETTER_KEY`, down to :class:`PortfolioProcess`, which puts them in its
    side output: a Python function with a side output is markedly slower on every record it
    receives (measured: +25 to +40 % job time for each per-tick function given one), so the
    per-tick functions have none.
    """

    def __init__(
        self, bar_sizes: Mapping[str, Sequence[int]], schema: str, source_topic: str
    ) -> None:
        self.bar_sizes = {ticker: tuple(sizes) for ticker, sizes in bar_sizes.items()}
        self.schema = schema
        self.source_topic = source_topic

    def open(self, runtime_context: Any = None) -> None:
        self._codec = codec_for(self.schema)
        self._dead = _DeadLetterLog("decode ticks")

    def _dead_row(self, reason: str, detail: str, value: bytes) -> TickRow:
        encoded = self._dead.encode(reason, detail, self.source_topic, value)
        return (DEAD_LETTER_KEY, "", 0, 0, 0.0, encoded)

    def process_element(self, value: bytes, ctx: Any = None) -> Iterator[TickRow]:
        try:
            record = self._codec.decode(value)
        except SchemaError as exc:
            yield self._dead_row("undecodable", str(exc), value)
            return
        try:
            if self.schema == "BourseData":
                tick = price_tick_from_bourse(record)
            else:
                tick = PriceTick.from_record(record)
        except DataError as exc:
            yield self._dead_row("invalid", str(exc), value)
            return
        sizes = self.bar_sizes.get(tick.ticker)
        if sizes is None:
            detail = f"ticker {tick.ticker!r} is in no configured portfolio"
            yield self._dead_row("unknown_ticker", detail, value)
            return
        for bar_ms in sizes:
            yield (
                _key(tick.ticker, bar_ms),
                tick.ticker,
                bar_ms,
                tick.event_time,
                tick.price,
                value,
            )


class CloseBars(KeyedProcessFunction):  # type: ignore[misc]
    """Per (ticker, bar size): the close of each bar, then its log return (SEMANTICS §2–§3).

    Open bars live in keyed state as :class:`~streamfolio.core.returns.BarCloses` (the close
    rule: greatest event time, ties to the tick read last); an event-time timer at the bar's last
    millisecond closes it, chains the close with :class:`~streamfolio.core.returns.ReturnChain`
    and sends ``(portfolio, bar, ticker, close, return)`` to every portfolio holding the ticker
    at that bar size. A tick whose bar the watermark has already closed is dead-lettered
    ``late`` and changes nothing.

    Timers fire in time order and what they emit precedes the watermark downstream, so every
    ticker's result for bar k reaches the portfolio operator before its own timer for bar k.
    """

    def __init__(self, portfolios: Mapping[tuple[str, int], Sequence[str]], source_topic: str):
        self.portfolios = {key: tuple(ids) for key, ids in portfolios.items()}
        self.source_topic = source_topic

    def open(self, runtime_context: Any) -> None:
        self._open_bars = runtime_context.get_map_state(
            MapStateDescriptor("open_bars", Types.LONG(), Types.PICKLED_BYTE_ARRAY())
        )
        self._last_close = runtime_context.get_state(
            ValueStateDescriptor("last_close", Types.DOUBLE())
        )
        self._dead = _DeadLetterLog("close bars")

    def process_element(self, value: TickRow, ctx: Any) -> Iterator[BarRow]:
        key, ticker, bar_ms, event_time, price, payload = value
        if key == DEAD_LETTER_KEY:  # from DecodeTicks: pass it on (see DecodeTicks)
            yield (DEAD_LETTER_KEY, 0, "", 0.0, payload)
            return
        k = bar_index(event_time, bar_ms)
        last_ms = bar_end_ms(k, bar_ms) - 1
        watermark = ctx.timer_service().current_watermark()
        if last_ms <= watermark:
            detail = (
                f"{ticker} at {event_time}: bar {k} of {bar_ms} ms ended at {last_ms + 1} and "
                f"the watermark is {watermark}"
            )
            encoded = self._dead.encode("late", detail, self.source_topic, payload)
            yield (DEAD_LETTER_KEY, 0, "", 0.0, encoded)
            return
        bar = self._open_bars.get(k)
        if bar is None:
            bar = BarCloses()
            ctx.timer_service().register_event_time_timer(last_ms)
        bar.offer(ticker, event_time, price)
        self._open_bars.put(k, bar)

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[BarRow]:
        ticker, _, size = ctx.get_current_key().rpartition("|")
        bar_ms = int(size)
        k = bar_index(timestamp, bar_ms)  # the timer is the bar's last millisecond
        bar = self._open_bars.get(k)
        if bar is None:  # cannot happen: a timer is registered with its bar
            return
        self._open_bars.remove(k)
        close = bar.closes[ticker]
        chain = ReturnChain(self._last_close.value())
        value = chain.update(close)
        self._last_close.update(close)
        for portfolio_id in self.portfolios.get((ticker, bar_ms), ()):
            yield (portfolio_id, k, ticker, close, value)


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
        self._dead = _DeadLetterLog(f"decode {self.kind}")

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


def bar_row_key(row: BarRow) -> str:
    """Portfolio id of a :data:`BarRow`."""
    return row[0]


def control_row_key(row: ControlRow) -> str:
    """Portfolio id of a :data:`ControlRow`."""
    return row[0]


# ------------------------------------------------------------------------------- portfolios


class PortfolioProcess(KeyedCoProcessFunction):  # type: ignore[misc]
    """One portfolio's statistics and metrics, in keyed state (SEMANTICS §4–§6).

    Input 1: :data:`BarRow` (per-ticker results of bar k); input 2: :data:`ControlRow`.
    State: the :class:`~streamfolio.core.portfolio.PortfolioMonitor` (``to_state()``), the bars
    not processed yet, and the control messages waiting for their time.

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
        self._monitor = runtime_context.get_state(
            ValueStateDescriptor("monitor", Types.PICKLED_BYTE_ARRAY())
        )
        self._controls = runtime_context.get_state(
            ValueStateDescriptor("controls", Types.PICKLED_BYTE_ARRAY())
        )
        self._bars = runtime_context.get_map_state(
            MapStateDescriptor("bars", Types.LONG(), Types.PICKLED_BYTE_ARRAY())
        )
        self._stats_codec = codec_for("PortfolioStats")
        self._metrics_codec = codec_for("PortfolioMetrics")
        self._metrics_tag = metrics_tag()
        self._dead = _DeadLetterLog("portfolio")
        self._waiting_logged: set[str] = set()

    # -- inputs ---------------------------------------------------------------------------

    def process_element1(self, value: BarRow, ctx: Any) -> Iterator[Any]:
        portfolio_id, k, ticker, close, log_return = value
        if portfolio_id == DEAD_LETTER_KEY:  # from the per-tick functions (see DecodeTicks)
            yield dead_letter_tag(), log_return
            return
        pending: tuple[dict[str, float], dict[str, float]] | None = self._bars.get(k)
        closes, returns = pending if pending is not None else ({}, {})
        closes[ticker] = close
        if log_return is not None:
            returns[ticker] = log_return
        self._bars.put(k, (closes, returns))
        ctx.timer_service().register_event_time_timer(
            bar_end_ms(k, self.specs[portfolio_id].bar_ms) - 1
        )
        if portfolio_id not in self._waiting_logged:
            controls = self._controls.value()
            if controls is None or not controls["seeded"]:
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
        controls = self._controls.value() or {"seeded": False, "seq": 0, "pending": []}
        controls["seq"] += 1
        timestamp = int(record["timestamp"])
        controls["pending"].append((timestamp, CONTROL_RANK[kind], controls["seq"], kind, record))
        controls["pending"].sort(key=lambda entry: entry[:3])
        if kind == "stats":
            controls["seeded"] = True
        self._controls.update(controls)
        watermark = ctx.timer_service().current_watermark()
        if timestamp > watermark:
            ctx.timer_service().register_event_time_timer(timestamp)
        elif controls["seeded"]:
            yield from self._advance(portfolio_id, watermark)

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        yield from self._advance(ctx.get_current_key(), timestamp)

    # -- processing -----------------------------------------------------------------------

    def _advance(self, portfolio_id: str, up_to: int) -> Iterator[Any]:
        """Process, in event-time order, the control messages stamped at or before ``up_to``
        and the bars whose last millisecond is at or before it."""
        controls = self._controls.value()
        if controls is None or not controls["seeded"]:
            return  # everything waits for the first initial statistics
        spec = self.specs[portfolio_id]
        due: list[tuple[int, int, int, int, Any]] = []
        waiting = []
        for entry in controls["pending"]:
            timestamp, rank, seq, _, _ = entry
            if timestamp <= up_to:
                due.append((timestamp, 0, rank, seq, entry))
            else:
                waiting.append(entry)
        for k in list(self._bars.keys()):
            last_ms = bar_end_ms(k, spec.bar_ms) - 1
            if last_ms <= up_to:
                due.append((last_ms, 1, 0, k, k))
        if not due:
            return
        due.sort(key=lambda item: item[:4])
        state = self._monitor.value()
        monitor = (
            PortfolioMonitor(spec) if state is None else PortfolioMonitor.from_state(spec, state)
        )
        for _, what, _, _, item in due:
            if what == 0:
                _, _, _, kind, record = item
                if kind == "stats":
                    monitor.seed(record)
                elif monitor.set_weights(record["weights"], record["timestamp"]) is not None:
                    continue  # cannot happen: checked on arrival against the same tickers
            else:
                closes, returns = self._bars.get(item)
                self._bars.remove(item)
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
        self._monitor.update(monitor.to_state())
        controls["pending"] = waiting
        self._controls.update(controls)
