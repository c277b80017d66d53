"""The job's Python functions for control messages and portfolios, and what they share.

Each function decodes what Flink hands it, calls :mod:`streamfolio.core` (or the message and
serde modules) and encodes what it emits; none of them computes a return, a moment or a metric
itself. They are plain classes (picklable: only settings-derived values are captured; codecs are
built in ``open``) so they can also be driven directly in unit tests with fake contexts. The
price path (ticks → bars) is in :mod:`streamfolio.flink.prices`.

Records between operators are named tuples (:mod:`streamfolio.flink.records`):

* :class:`DecodeControls` emits a :class:`~streamfolio.flink.records.ControlMessage` per
  accepted initial-statistics or weights message;
* :class:`PortfolioProcess` (keyed by portfolio id) takes those and the
  :class:`~streamfolio.flink.records.PortfolioBar` of each bar, and emits ``Row(k, v)``: key and
  Avro value of updated statistics (main output) and metrics (side output :func:`metrics_tag`).

What cannot be used becomes an encoded ``DeadLetter`` in the side output
:func:`~streamfolio.flink.dead_letters.dead_letter_tag`. Keyed state is versioned bytes
(:mod:`streamfolio.flink.state`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from pyflink.common import Row, Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import KeyedCoProcessFunction, OutputTag, ProcessFunction
from pyflink.datastream.state import ValueStateDescriptor

from streamfolio.core.portfolio import PortfolioMonitor, PortfolioSpec
from streamfolio.core.returns import BarReturns, bar_end_ms
from streamfolio.flink.dead_letters import DeadLetterLog
from streamfolio.flink.definitions import spec_from_record
from streamfolio.flink.records import ControlMessage, PortfolioBar, kafka_record
from streamfolio.flink.state import (
    PortfolioState,
    dump_portfolio_state,
    load_portfolio_state,
    state_type,
)
from streamfolio.flink.stats_encoding import StatsEncoder
from streamfolio.intake import CONTROL_RANK, ControlKind, Intake, Rejected, control_problem
from streamfolio.serde import codec_for

if TYPE_CHECKING:
    from pyflink.common.typeinfo import TypeInformation

__all__ = [
    "ControlTime",
    "DecodeControls",
    "PortfolioProcess",
    "keyed_bytes_type",
    "metrics_tag",
]

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ shared bits


def keyed_bytes_type() -> TypeInformation:
    """``Row(k: byte[], v: byte[])``: a Kafka key and value, as the table sinks read them.

    A new object on every call: an OutputTag pickles its type, and a type already used by the
    Java side holds an unpicklable lock (research/streaming.md §2, bug 4).
    """
    return Types.ROW_NAMED(
        ["k", "v"], [Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.PRIMITIVE_ARRAY(Types.BYTE())]
    )


def metrics_tag() -> OutputTag:
    """The side output of :class:`PortfolioProcess` carrying metrics as ``Row(k, v)``."""
    return OutputTag("metrics", keyed_bytes_type())


# ------------------------------------------------------------------------- control messages


class DecodeControls(ProcessFunction):  # type: ignore[misc]
    """Whole initial-statistics or weights records (``records.kafka_record``) →
    :class:`~streamfolio.flink.records.ControlMessage` keyed by portfolio id, through
    :class:`~streamfolio.intake.Intake`: a record that is not accepted (undecodable, invalid,
    future, key_mismatch, unknown_portfolio, invalid_stats, invalid_weights) is dead-lettered
    with where it was read, and goes no further.
    """

    def __init__(self, kind: ControlKind, intake: Intake, source_topic: str) -> None:
        self.kind: ControlKind = kind
        self.intake = intake
        self.source_topic = source_topic

    def open(self, runtime_context: Any = None) -> None:
        # Whether a message fits its portfolio depends on the definition in force at its time
        # (the portfolios topic may change it, or define the portfolio, read later or not):
        # PortfolioProcess judges that when the time comes. Here: the message's own rules.
        intake = dataclasses.replace(self.intake, portfolios=None)
        self._read = intake.initial_stats if self.kind == "stats" else intake.weights
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
        yield ControlMessage(
            message.portfolio_id, self.kind, message.to_record(), payload, partition, offset, key
        )


class ControlTime(TimestampAssigner):  # type: ignore[misc]
    """A decoded control message's time: its ``timestamp`` (see
    :func:`~streamfolio.flink.connectors.control_watermarks`)."""

    def extract_timestamp(self, value: ControlMessage, record_timestamp: int) -> int:
        return int(value.record["timestamp"])


# ------------------------------------------------------------------------------- portfolios


_RANK: Final[dict[str, int]] = {"definition": -1, **CONTROL_RANK}
"""Equal timestamps: a definition, then a seed, then weights (as the replay)."""
_NO_BARS: Final = PortfolioSpec("", (), 1, 1.0)
"""Stands for the spec of a portfolio not defined yet: no bar of it is due."""


class PortfolioProcess(KeyedCoProcessFunction):  # type: ignore[misc]
    """One portfolio's statistics and metrics, in keyed state (SEMANTICS §4–§6).

    Input 1: :class:`~streamfolio.flink.records.PortfolioBar` (all its tickers' results of bar
    k); input 2: :class:`~streamfolio.flink.records.ControlMessage`.
    State: one value per portfolio (:data:`~streamfolio.flink.state.PortfolioState`, versioned
    bytes) holding the
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

    ``stats_every_bars`` k (``flink.stats_every_bars``): updated statistics are emitted for the
    bars whose index is a multiple of k (every bar by default); metrics for every bar.

    Per portfolio update the costs are Python's (BENCHMARKS.md, scale run), so the monitor a
    state was saved from stays alive next to its text: while the stored text is that one, the
    state is neither parsed nor the monitor rebuilt, and statistics are written to Avro straight
    from the estimator's arrays (:class:`~streamfolio.flink.stats_encoding.StatsEncoder`).
    """

    def __init__(
        self,
        specs: Mapping[str, PortfolioSpec],
        control_topics: Mapping[str, str],
        stats_every_bars: int = 1,
    ):
        if stats_every_bars < 1:
            raise ValueError(f"stats_every_bars must be at least 1, got {stats_every_bars}")
        self.specs = dict(specs)
        self.control_topics = dict(control_topics)
        self.stats_every_bars = stats_every_bars

    def open(self, runtime_context: Any) -> None:
        self._state = runtime_context.get_state(ValueStateDescriptor("portfolio", state_type()))
        self._stats_encoder = StatsEncoder()
        self._metrics_codec = codec_for("PortfolioMetrics")
        self._metrics_tag = metrics_tag()
        self._dead = DeadLetterLog("portfolio")
        self._waiting_logged: set[str] = set()
        # The state each portfolio was last saved with, its text, and the live monitor it was
        # saved from: when the stored text is still that one (it is, unless a restore replaced
        # it), it need not be parsed again, nor the monitor rebuilt.
        self._saved: dict[str, tuple[str, PortfolioState, PortfolioMonitor | None]] = {}
        self._job_metrics(runtime_context)

    def _job_metrics(self, runtime_context: Any) -> None:
        """Flink metrics of this step (group ``streamfolio``, exported by the Prometheus
        reporter, docs/operations.md): bars closed, portfolio updates (metrics emitted), and
        the watermark's lag behind the wall clock in ms. Without a metric group (a test's
        stand-in context) they are counted nowhere."""
        self._bars_closed: Any = None
        self._portfolio_updates: Any = None
        self._watermark_ms: int | None = None
        try:
            group = runtime_context.get_metrics_group().add_group("streamfolio")
        except Exception:  # no metrics here: the job must run all the same
            return
        self._bars_closed = group.counter("bars_closed")
        self._portfolio_updates = group.counter("portfolio_updates")
        group.gauge("watermark_lag_ms", self._watermark_lag_ms)

    def _watermark_lag_ms(self) -> int:
        if self._watermark_ms is None or self._watermark_ms < 0:
            return 0
        return int(time.time() * 1000) - self._watermark_ms

    # -- inputs ---------------------------------------------------------------------------

    def _load(self, portfolio_id: str) -> tuple[PortfolioState, PortfolioMonitor | None]:
        """The portfolio's state, and the live monitor of ``state["monitor"]`` if known."""
        data: str | None = self._state.value()
        if data is None:
            return {"seeded": False, "seq": 0, "pending": [], "bars": {}, "monitor": None}, None
        saved = self._saved.get(portfolio_id)
        if saved is not None and saved[0] == data:
            return saved[1], saved[2]
        return load_portfolio_state(data), None

    def _save(
        self, portfolio_id: str, state: PortfolioState, monitor: PortfolioMonitor | None
    ) -> None:
        """Store ``state``; ``monitor`` is the live one ``state["monitor"]`` was taken from."""
        text = dump_portfolio_state(state)
        self._state.update(text)
        self._saved[portfolio_id] = (text, state, monitor)

    def process_element1(self, value: PortfolioBar, ctx: Any) -> None:
        portfolio_id, k = value.portfolio_id, value.bar
        state, live = self._load(portfolio_id)
        # A bar of a portfolio whose definition is still pending was gathered with it.
        spec = self._spec(portfolio_id, state) or self._spec(portfolio_id, state, pending=True)
        if spec is None:  # removed: GatherBars sends it nothing after its removal
            return
        state["bars"][k] = (value.closes, value.returns)
        self._save(portfolio_id, state, live)
        ctx.timer_service().register_event_time_timer(bar_end_ms(k, spec.bar_ms) - 1)
        if not state["seeded"] and portfolio_id not in self._waiting_logged:
            # The usual cause of "the job runs but writes nothing": say it once.
            log.warning(
                "portfolio %s: bars wait in state until its initial statistics arrive "
                "(publish them with `streamfolio init --publish`)",
                portfolio_id,
            )
            self._waiting_logged.add(portfolio_id)

    def process_element2(self, value: ControlMessage, ctx: Any) -> Iterator[Any]:
        portfolio_id, kind, record = value.portfolio_id, value.kind, value.record
        state, live = self._load(portfolio_id)
        state["seq"] += 1
        timestamp = int(record["timestamp"])
        # Where it was read, for a dead letter should it turn out stale.
        origin = (value.payload, value.partition, value.offset, value.key)
        state["pending"].append([timestamp, _RANK[kind], state["seq"], kind, record, origin])
        state["pending"].sort(key=lambda entry: (entry[0], entry[1], entry[2]))
        if kind == "stats":
            state["seeded"] = True
        watermark = ctx.timer_service().current_watermark()
        self._watermark_ms = watermark
        if timestamp > watermark:
            ctx.timer_service().register_event_time_timer(timestamp)
        elif state["seeded"]:
            live = yield from self._advance(portfolio_id, state, watermark, live)
        self._save(portfolio_id, state, live)

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        portfolio_id = ctx.get_current_key()
        state, live = self._load(portfolio_id)
        self._watermark_ms = timestamp
        live = yield from self._advance(portfolio_id, state, timestamp, live)
        self._save(portfolio_id, state, live)

    # -- processing -----------------------------------------------------------------------

    def _spec(
        self, portfolio_id: str, state: PortfolioState, *, pending: bool = False
    ) -> PortfolioSpec | None:
        """The portfolio's spec in force (None: unknown or removed): the configured one until a
        definition replaced it. With ``pending``, the newest definition received counts
        already (what the bars GatherBars sends now were gathered with)."""
        defined = state.get("spec")
        if pending:
            definitions = [e for e in state["pending"] if e[3] == "definition"]
            if definitions:
                defined = definitions[-1][4]["spec"] or False
        if defined is None:
            return self.specs.get(portfolio_id)
        return spec_from_record(defined) if defined else None

    def _advance(
        self,
        portfolio_id: str,
        state: PortfolioState,
        up_to: int,
        live: PortfolioMonitor | None,
    ) -> Generator[Any, None, PortfolioMonitor | None]:
        """Process, in event-time order, the control messages stamped at or before ``up_to``
        and the bars whose last millisecond is at or before it (``state`` is updated).
        ``live``: the monitor ``state["monitor"]`` was taken from, if known; returns the one
        the updated state's was taken from."""
        spec = self._spec(portfolio_id, state)
        if not state["seeded"] and self._spec(portfolio_id, state, pending=True) is not None:
            return live  # everything waits for the first initial statistics
        # (a portfolio never defined has none to wait for: its messages are dead letters)
        due: list[tuple[int, int, int, int, Any]] = []
        waiting = []
        for entry in state["pending"]:
            timestamp, rank, seq = entry[:3]
            if timestamp <= up_to:
                due.append((timestamp, 0, rank, seq, entry))
            else:
                waiting.append(entry)
        bars = state["bars"]
        bar_ms = (spec or self._spec(portfolio_id, state, pending=True) or _NO_BARS).bar_ms
        for k in list(bars):
            last_ms = bar_end_ms(k, bar_ms) - 1
            if last_ms <= up_to:
                due.append((last_ms, 1, 0, k, k))
        if not due:
            return live
        due.sort(key=lambda item: item[:4])
        monitor = (
            None
            if spec is None
            else PortfolioMonitor(spec)
            if state["monitor"] is None
            else live
            if live is not None and live.spec == spec
            else PortfolioMonitor.from_state(spec, state["monitor"])
        )
        for _, what, _, _, item in due:
            if what == 0:
                _, _, _, kind, record, (payload, partition, offset, key) = item
                where: dict[str, Any] = {"partition": partition, "offset": offset, "key": key}
                if kind == "definition":
                    spec, monitor = self._redefine(state, spec, monitor, record["spec"])
                    continue
                problem = (
                    ("unknown_portfolio", f"no portfolio {portfolio_id!r}")
                    if spec is None or monitor is None
                    else control_problem(spec, kind, record)
                )
                if problem is not None:
                    reason, detail = problem
                    topic = self.control_topics[kind]
                    yield self._dead(reason, detail, topic, payload, **where)
                    continue
                assert monitor is not None
                if kind == "stats":
                    stale = monitor.seed(record)
                else:
                    stale = monitor.set_weights(record["weights"], record["timestamp"])
                if stale is not None:  # the fit was checked when read: only its age is left
                    detail = f"{portfolio_id}: {stale}"
                    yield self._dead("stale", detail, self.control_topics[kind], payload, **where)
                    continue
            else:
                closes, returns = bars.pop(item)
                if monitor is None or spec is None:
                    continue  # removed before this bar was processed
                if self._bars_closed is not None:
                    self._bars_closed.inc()
                if not monitor.take_bar(BarReturns(item, closes, returns)):
                    continue
                if item % self.stats_every_bars == 0:
                    yield Row(portfolio_id.encode(), self._encode_stats(monitor))
            metrics = None if monitor is None else monitor.metrics()
            if metrics is not None:
                if self._portfolio_updates is not None:
                    self._portfolio_updates.inc()
                yield (
                    self._metrics_tag,
                    Row(portfolio_id.encode(), self._metrics_codec.encode(metrics)),
                )
        state["monitor"] = None if monitor is None else monitor.to_state(arrays=True)
        state["pending"] = waiting
        return monitor

    def _encode_stats(self, monitor: PortfolioMonitor) -> bytes:
        """The updated statistics' Avro bytes: ``monitor.stats()`` with ``kind`` and
        ``bar_seconds``, as the codec writes it."""
        spec, moments = monitor.spec, monitor.moments
        return self._stats_encoder.encode(
            spec.portfolio_id,
            spec.tickers,
            monitor.stats_timestamp_ms,
            moments.mean,
            moments.covariance,
            moments.n,
            moments.kind,
            getattr(moments, "half_life_bars", None),
            spec.bar_ms // 1000,
            "updated",
        )

    @staticmethod
    def _redefine(
        state: PortfolioState,
        old: PortfolioSpec | None,
        monitor: PortfolioMonitor | None,
        defined: dict[str, Any] | None,
    ) -> tuple[PortfolioSpec | None, PortfolioMonitor | None]:
        """Apply a definition (None: a removal): the new spec, and the monitor that carries on
        (its moments kept when :meth:`PortfolioSpec.keeps_moments_of` says so)."""
        if defined is None:
            state["spec"] = False
            state["bars"] = {}
            return None, None
        state["spec"] = defined
        spec = spec_from_record(defined)
        if monitor is not None and old is not None and spec.keeps_moments_of(old):
            return spec, PortfolioMonitor.from_state(spec, monitor.to_state())
        return spec, PortfolioMonitor(spec)
