"""The job's Python functions for control messages and portfolios, and what they share.

Each function decodes what Flink hands it, calls :mod:`streamfolio.core` (or the message and
serde modules) and encodes what it emits; none of them computes a return, a moment or a metric
itself. They are plain classes (picklable: only settings-derived values are captured; codecs are
built in ``open``) so they can also be driven directly in unit tests with fake contexts. The
price path (ticks → bars) is in :mod:`streamfolio.flink.prices`.

Records between operators are named tuples (:mod:`streamfolio.flink.records`):

* :class:`DecodeControls` emits a :class:`~streamfolio.flink.records.ControlMessage` per
  accepted initial-statistics or weights message;
* :class:`PortfolioShards` (keyed by the portfolios' shard) takes those and the
  :class:`~streamfolio.flink.records.MemberBars` of each bar, and emits ``Row(k, v)``: key and
  Avro value of updated statistics (main output) and metrics (side output :func:`metrics_tag`).

What cannot be used becomes an encoded ``DeadLetter`` in the side output
:func:`~streamfolio.flink.dead_letters.dead_letter_tag`. Keyed state is versioned bytes
(:mod:`streamfolio.flink.state`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pyflink.common import Row, Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import KeyedCoProcessFunction, OutputTag, ProcessFunction
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from streamfolio.core.moments import EstimatorKind, StatsLayout
from streamfolio.core.panel import MonitorPanel, panel_key
from streamfolio.core.portfolio import PortfolioMonitor, PortfolioSpec
from streamfolio.core.returns import BarReturns, bar_end_ms
from streamfolio.core.types import FloatArray
from streamfolio.flink.dead_letters import DeadLetterLog
from streamfolio.flink.definitions import spec_from_record
from streamfolio.flink.records import ControlMessage, MemberBars, kafka_record
from streamfolio.flink.state import (
    PortfolioState,
    dump_member_bars,
    dump_panels,
    dump_portfolio_state,
    load_member_bars,
    load_panels,
    load_portfolio_state,
    state_type,
)
from streamfolio.flink.stats_encoding import MetricsEncoder, StatsEncoder, StatsHead
from streamfolio.intake import CONTROL_RANK, ControlKind, Intake, Rejected, control_problem
from streamfolio.serde import codec_for

if TYPE_CHECKING:
    from pyflink.common.typeinfo import TypeInformation

__all__ = [
    "ControlTime",
    "DecodeControls",
    "PortfolioShards",
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
    """The side output of :class:`PortfolioShards` carrying metrics as ``Row(k, v)``."""
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
        # PortfolioShards judges that when the time comes. Here: the message's own rules.
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


@dataclass
class _Shard:
    """What the portfolio step holds of one shard in memory, and the save it was read from."""

    roster: dict[str, PortfolioState]
    """Each portfolio's state; ``in_panel``: its monitor is a row of a panel."""
    panels: dict[tuple[int, EstimatorKind], MonitorPanel]
    epoch: str | None
    """The ``epoch`` state value of the save this is (None: nothing saved yet)."""

    def panel_of(self, portfolio_id: str) -> MonitorPanel | None:
        state = self.roster.get(portfolio_id)
        if state is None or not state.get("in_panel"):
            return None
        for panel in self.panels.values():
            if portfolio_id in panel:
                return panel
        return None


class PortfolioShards(KeyedCoProcessFunction):  # type: ignore[misc]
    """The statistics and metrics of a shard's portfolios, in keyed state (SEMANTICS §4–§6).

    Keyed by the portfolios' shard (:func:`~streamfolio.flink.routing.shard_of`). Input 1:
    :class:`~streamfolio.flink.records.MemberBars` (a bar of one bar size, and the portfolios
    that are its members then); input 2: :class:`~streamfolio.flink.records.ControlMessage`.

    Per portfolio the rules are those of :meth:`streamfolio.replay.ReplayEngine.control`. The
    event-time timer at bar k's last millisecond processes bar k, and anything earlier still
    due (a timer a restore lost in process mode, :func:`~streamfolio.flink.bars.due_first`).
    A control message takes effect at its timestamp T, before every bar ending after T (ties: a
    definition, then a seed, then weights); one whose T the watermark has passed takes effect
    on arrival. Until a portfolio's first initial statistics arrive nothing of it is processed:
    its bars and control messages wait in state and are then processed in event-time order, so
    the results do not depend on which topic was read first.

    How: a portfolio with nothing but the bar due, warmed up, is a row of a
    :class:`~streamfolio.core.panel.MonitorPanel`, and all such rows of the shard take the bar
    in one numpy step; any other (a control message due, a bar waiting for its statistics, its
    warm-up) goes through its own :class:`~streamfolio.core.portfolio.PortfolioMonitor`, with
    the same bits (the panel's docstring), and back into the panel when it can.

    State (per shard, versioned text, :mod:`streamfolio.flink.state`): ``roster``, a map of
    each portfolio's definition, pending control messages and bars, and its monitor unless in
    a panel, written for the portfolios that changed; ``panels``, the panels' rows, rewritten
    every bar; ``bars``, the bars received and not processed yet; ``epoch``, which save the
    others are. The shard is kept in memory with
    the epoch it was saved under and read back only when the state holds another (a restore).

    Dead letters: ``stale``, a control message not newer than the one in force when its time
    comes (:meth:`~streamfolio.core.portfolio.PortfolioMonitor.seed`, ``set_weights``), and
    ``unknown_portfolio`` and the rest of :func:`~streamfolio.intake.control_problem` for one
    that does not fit the definition in force then.

    ``stats_every_bars`` k (``flink.stats_every_bars``): updated statistics are emitted for the
    bars whose index is a multiple of k (every bar by default); metrics for every bar.
    ``stats_layout`` (``flink.stats_layout``): how they carry the moments.
    """

    def __init__(
        self,
        specs: Mapping[str, PortfolioSpec],
        control_topics: Mapping[str, str],
        stats_every_bars: int = 1,
        stats_layout: StatsLayout = "maps",
    ):
        if stats_every_bars < 1:
            raise ValueError(f"stats_every_bars must be at least 1, got {stats_every_bars}")
        self.specs = dict(specs)
        self.control_topics = dict(control_topics)
        self.stats_every_bars = stats_every_bars
        self.stats_layout: StatsLayout = stats_layout

    def open(self, runtime_context: Any) -> None:
        def value(name: str) -> Any:
            return runtime_context.get_state(ValueStateDescriptor(name, state_type()))

        def mapping(name: str) -> Any:
            return runtime_context.get_map_state(
                MapStateDescriptor(name, Types.STRING(), state_type())
            )

        self._panels, self._epoch = value("panels"), value("epoch")
        self._roster, self._bars = mapping("roster"), mapping("bars")
        self._token = uuid.uuid4().hex
        self._saves = 0
        self._shards: dict[str, _Shard] = {}
        self._stats_encoder = StatsEncoder(self.stats_layout)
        self._metrics_codec = codec_for("PortfolioMetrics")
        self._metrics_encoder = MetricsEncoder()
        self._metrics_tag = metrics_tag()
        self._dead = DeadLetterLog("portfolio")
        self._waiting_logged: set[str] = set()
        self._job_metrics(runtime_context)

    def _job_metrics(self, runtime_context: Any) -> None:
        """Flink metrics of this step (group ``streamfolio``, exported by the Prometheus
        reporter, docs/operations.md): portfolio bars closed, portfolio updates (metrics
        emitted), and the watermark's lag behind the wall clock in ms. Without a metric group
        (a test's stand-in context) they are counted nowhere."""
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

    # -- the shard's state ----------------------------------------------------------------

    def _shard(self, key: str) -> _Shard:
        epoch = self._epoch.value()
        cached = self._shards.get(key)
        if cached is not None and cached.epoch == epoch:
            return cached
        roster = {pid: load_portfolio_state(data) for pid, data in self._roster.items()}
        panels: dict[tuple[int, EstimatorKind], MonitorPanel] = {}
        data = self._panels.value()
        for (d, kind), (ids, arrays) in ({} if data is None else load_panels(data)).items():
            specs = [self._spec(pid, roster[pid]) for pid in ids]
            estimator: EstimatorKind = "ewm" if kind == "ewm" else "welford"
            panels[(d, estimator)] = MonitorPanel.from_arrays(
                d, estimator, [spec for spec in specs if spec is not None], arrays
            )
        shard = self._shards[key] = _Shard(roster, panels, epoch)
        return shard

    def _save(self, shard: _Shard, changed: Iterable[str], *, panels: bool) -> None:
        """Save the states of the ``changed`` portfolios, and the panels if ``panels``."""
        for portfolio_id in changed:
            self._roster.put(portfolio_id, dump_portfolio_state(shard.roster[portfolio_id]))
        if panels:
            shard.panels = {key: panel for key, panel in shard.panels.items() if len(panel)}
            self._panels.update(
                dump_panels({key: panel.to_arrays() for key, panel in shard.panels.items()})
            )
        self._saves += 1
        shard.epoch = f"{self._token}:{self._saves}"
        self._epoch.update(shard.epoch)

    @staticmethod
    def _new_state() -> PortfolioState:
        return {"seeded": False, "seq": 0, "pending": [], "bars": {}, "monitor": None}

    def _take_out(self, shard: _Shard, portfolio_id: str) -> PortfolioMonitor | None:
        """The portfolio's live monitor: out of its panel (its state holds it meanwhile)."""
        panel = shard.panel_of(portfolio_id)
        if panel is None:
            return None
        monitor = panel.monitor(portfolio_id)
        shard.roster[portfolio_id]["monitor"] = monitor.to_state(arrays=True)
        return monitor

    def _settle(self, shard: _Shard, portfolio_id: str, monitor: PortfolioMonitor | None) -> None:
        """Into the panel of its shape (None: out of every panel)."""
        state = shard.roster[portfolio_id]
        for panel in shard.panels.values():
            if portfolio_id in panel:
                panel.remove(portfolio_id)
        if monitor is None:
            state["in_panel"] = False
            return
        key = panel_key(monitor.spec)
        home = shard.panels.get(key)
        if home is None:
            home = shard.panels[key] = MonitorPanel(*key)
        home.put(monitor)
        state["monitor"], state["in_panel"] = None, True

    # -- inputs ---------------------------------------------------------------------------

    def process_element1(self, value: MemberBars, ctx: Any) -> None:
        self._bars.put(
            f"{value.bar_ms}|{value.bar}",
            dump_member_bars(value.closes, value.returns, value.members),
        )
        ctx.timer_service().register_event_time_timer(bar_end_ms(value.bar, value.bar_ms) - 1)

    def process_element2(self, value: ControlMessage, ctx: Any) -> Iterator[Any]:
        shard = self._shard(ctx.get_current_key())
        portfolio_id, kind, record = value.portfolio_id, value.kind, value.record
        state = shard.roster.setdefault(portfolio_id, self._new_state())
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
        panels_changed = False  # a message waiting for its time changes no panel
        if timestamp > watermark:
            ctx.timer_service().register_event_time_timer(timestamp)
        elif state["seeded"] or self._spec(portfolio_id, state, pending=True) is None:
            live = self._take_out(shard, portfolio_id)
            monitor = yield from self._advance(portfolio_id, state, watermark, live)
            self._settle(shard, portfolio_id, monitor)
            panels_changed = live is not None or bool(state.get("in_panel"))
        self._save(shard, [portfolio_id], panels=panels_changed)

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        shard = self._shard(ctx.get_current_key())
        self._watermark_ms = timestamp
        bars = []
        for name, data in list(self._bars.items()):
            bar_ms, _, k = name.partition("|")
            last_ms = bar_end_ms(int(k), int(bar_ms)) - 1
            if last_ms <= timestamp:
                bars.append((last_ms, int(bar_ms), int(k), name, data))
        bars.sort()
        # The portfolios something else is due for (a control message, a bar waiting) go
        # through their own monitors, with every bar of theirs due now.
        slow = {pid for pid, state in shard.roster.items() if self._due(state, timestamp)}
        fast: list[tuple[int, int, dict[str, float], dict[str, float], dict[Any, list[str]]]]
        fast = []
        for _, bar_ms, k, name, data in bars:
            self._bars.remove(name)
            closes, returns, members = load_member_bars(data)
            groups: dict[Any, list[str]] = {}
            for portfolio_id, tickers in members.items():
                panel = shard.panel_of(portfolio_id)
                if panel is not None and portfolio_id not in slow:
                    groups.setdefault(panel_key(panel.spec(portfolio_id)), []).append(portfolio_id)
                    continue
                state = shard.roster.setdefault(portfolio_id, self._new_state())
                mine = {t: closes[t] for t in tickers if t in closes}
                if mine and self._wait(portfolio_id, state, k, mine, returns):
                    slow.add(portfolio_id)
            fast.append((bar_ms, k, closes, returns, groups))
        panels_changed = any(groups for *_, groups in fast)
        for portfolio_id in sorted(slow):
            state = shard.roster[portfolio_id]
            live = self._take_out(shard, portfolio_id)
            monitor = yield from self._advance(portfolio_id, state, timestamp, live)
            self._settle(shard, portfolio_id, monitor)
            panels_changed |= live is not None or bool(state.get("in_panel"))
        for bar_ms, k, closes, returns, groups in fast:
            for key, ids in groups.items():
                yield from self._step(shard.panels[key], ids, k, bar_ms, closes, returns)
        self._save(shard, slow, panels=panels_changed)

    def _due(self, state: PortfolioState, up_to: int) -> bool:
        """Whether anything but a bar for its panel is due for a portfolio by ``up_to``."""
        return bool(state["bars"]) or any(entry[0] <= up_to for entry in state["pending"])

    def _wait(
        self,
        portfolio_id: str,
        state: PortfolioState,
        k: int,
        closes: dict[str, float],
        returns: dict[str, float],
    ) -> bool:
        """Bar k of a portfolio not in a panel into its state; False if it takes none."""
        # A bar of a portfolio whose definition is still pending was gathered with it.
        spec = self._spec(portfolio_id, state) or self._spec(portfolio_id, state, pending=True)
        if spec is None:  # removed: GatherBars sends it nothing after its removal
            return False
        state["bars"][k] = (closes, {t: returns[t] for t in closes if t in returns})
        if not state["seeded"] and portfolio_id not in self._waiting_logged:
            # The usual cause of "the job runs but writes nothing": say it once.
            log.warning(
                "portfolio %s: bars wait in state until its initial statistics arrive "
                "(publish them with `streamfolio init --publish`)",
                portfolio_id,
            )
            self._waiting_logged.add(portfolio_id)
        return True

    def _step(
        self,
        panel: MonitorPanel,
        portfolio_ids: list[str],
        k: int,
        bar_ms: int,
        closes: dict[str, float],
        returns: dict[str, float],
    ) -> Iterator[Any]:
        """Bar k for the panel's ``portfolio_ids``, in one step: their statistics (every k-th
        bar) and metrics."""
        updated = panel.take_bar(portfolio_ids, closes, returns, bar_end_ms(k, bar_ms))
        if self._bars_closed is not None:
            self._bars_closed.inc(len(portfolio_ids))
        if not updated:
            return
        if k % self.stats_every_bars == 0:
            n, mean, covariance, stamps = panel.statistics(updated)
            heads = [self._stats_head(panel.spec(p), panel.kind) for p in updated]
            records = self._stats_encoder.encode_many(heads, stamps, n, mean, covariance)
            for portfolio_id, data in zip(updated, records, strict=True):
                yield Row(portfolio_id.encode(), data)
        figures = panel.metrics_figures(updated)
        emitted = 0
        for spec, *values in () if figures is None else figures.rows():
            emitted += 1
            risk, annual, sharpe, timestamp, n, mean_return, variance, weights, stats_ts = values
            data = self._metrics_encoder.encode(
                spec.portfolio_id,
                spec.tickers,
                weights,
                risk,
                annual,
                sharpe,
                timestamp,
                n,
                mean_return,
                variance,
                float(spec.periods_per_year),
                float(spec.risk_free_rate),
                stats_ts,
                spec.sharpe_threshold,
            )
            yield self._metrics_tag, Row(spec.portfolio_id.encode(), data)
        if self._portfolio_updates is not None:
            self._portfolio_updates.inc(emitted)

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
                    moments = monitor.moments
                    data = self._encode_stats(
                        monitor.spec,
                        moments.kind,
                        monitor.stats_timestamp_ms,
                        moments.mean,
                        moments.covariance,
                        moments.n,
                    )
                    yield Row(portfolio_id.encode(), data)
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

    def _encode_stats(
        self,
        spec: PortfolioSpec,
        kind: EstimatorKind,
        timestamp_ms: int,
        mean: FloatArray,
        covariance: FloatArray,
        n: int,
    ) -> bytes:
        """The updated statistics' Avro bytes (``stats_record`` with ``kind`` and
        ``bar_seconds``, as the codec writes it) from a monitor's moments."""
        head = self._stats_head(spec, kind)
        return self._stats_encoder.encode(head, timestamp_ms, n, mean, covariance)

    @staticmethod
    def _stats_head(spec: PortfolioSpec, kind: EstimatorKind) -> StatsHead:
        half_life = spec.half_life_bars if kind == "ewm" else None
        return StatsHead(
            spec.portfolio_id,
            spec.tickers,
            kind,
            None if half_life is None else float(half_life),
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
