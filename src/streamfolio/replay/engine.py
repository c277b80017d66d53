"""The offline engine: ticks in event time → bars → statistics → metrics → policy → weights.

This is the reference implementation of ``SEMANTICS.md`` that the streaming job must match
bar for bar, and it defines the event-time rules exactly (``docs/semantics.md``, "Time and
bars"):

* Each record (tick or heartbeat) comes from a partition of the prices topic. A partition's
  watermark is the greatest event time read from it so far minus ``max_out_of_orderness_ms``.
* A tick of bar ``k`` (end ``e = (k+1)·B``) is *late* iff ``e <= `` its own partition's watermark
  before it was read (Flink's form, watermark ``greatest − bound − 1`` and a bar final once it
  reaches ``e − 1``, is the same condition). A late tick changes nothing and is dead-lettered,
  for each bar size it is late for; it still counts for the others.
* The job's watermark is the minimum over the partitions (−∞ until every partition has read
  something); a bar is final, and its statistics emitted, once that reaches its end.
* A record stamped beyond ``now + max_future_skew_ms`` is dead-lettered and moves nothing.
* At the end of the input every open bar is closed (as Flink does at the end of a bounded
  source).

Since lateness depends only on each partition's own order, and equal event times are broken by
(partition, offset), the output for each portfolio does not depend on how the partitions are
interleaved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any

from streamfolio.core.policy import PolicyState, RebalancePolicy
from streamfolio.core.portfolio import PortfolioMonitor
from streamfolio.core.returns import bar_end_ms, bar_index, chain_bar
from streamfolio.replay.clock import (
    DEFAULT_MAX_FUTURE_SKEW_MS,
    BarClock,
    Closes,
    Partition,
    partition_ids,
    wall_clock_ms,
)
from streamfolio.replay.controls import ControlMessages
from streamfolio.replay.decisions import after_change
from streamfolio.replay.records import (
    Heartbeat,
    PriceRecord,
    ReplayError,
    ReplayEvent,
    ReplayPortfolio,
    Tick,
)


class ReplayEngine(ControlMessages):
    """Runs portfolios over the prices topic's records; yields :class:`ReplayEvent` in order.

    ``partitions`` names the prices topic's partitions (a count or the ids; default one,
    partition 0): the job's watermark waits for every one of them. ``now_ms`` gives the wall
    clock that ``max_future_skew_ms`` is measured from (None: no limit).

    Examples
    --------
    >>> from streamfolio.core.portfolio import PortfolioSpec
    >>> spec = PortfolioSpec("p", ("A", "B"), bar_ms=1_000, periods_per_year=1_000)
    >>> engine = ReplayEngine([ReplayPortfolio(spec, initial_weights={"A": 0.5, "B": 0.5})],
    ...                       max_out_of_orderness_ms=0)
    >>> ticks = [Tick(t * 1_000, s, p) for t, s, p in
    ...          [(0, "A", 10), (0, "B", 20), (1, "A", 11), (2, "B", 19), (3, "A", 10.5)]]
    >>> [e.kind for e in engine.run(ticks)]
    ['stats', 'stats', 'metrics', 'stats', 'metrics']

    With two partitions nothing is final until both have been read from:

    >>> engine = ReplayEngine([ReplayPortfolio(spec)], partitions=2, now_ms=lambda: 10_000)
    >>> [e.kind for e in engine.run([Tick(0, "A", 10), Tick(0, "B", 20, partition=1),
    ...                              Tick(1_000, "A", 11), Tick(2_000, "A", 12)], flush=False)]
    []
    >>> engine.watermark_ms, engine.partition_watermark_ms(0)
    (0, 2000)
    >>> [(e.kind, e.record["timestamp"]) for e in engine.on_heartbeat(2_500, partition=1)]
    [('stats', 2000)]
    >>> [e.record["reason"] for e in engine.on_heartbeat(400_000, partition=1)]
    ['future']
    """

    def __init__(
        self,
        portfolios: Sequence[ReplayPortfolio],
        *,
        max_out_of_orderness_ms: int = 0,
        partitions: int | Collection[int] = 1,
        max_future_skew_ms: int | None = DEFAULT_MAX_FUTURE_SKEW_MS,
        now_ms: Callable[[], int] = wall_clock_ms,
        bar_sizes_ms: Collection[int] = (),
    ) -> None:
        self.max_out_of_orderness_ms = max_out_of_orderness_ms
        self.max_future_skew_ms = max_future_skew_ms
        self.now_ms = now_ms
        self.partitions = partition_ids(partitions)
        self.monitors: dict[str, PortfolioMonitor] = {}
        self.policies: dict[str, RebalancePolicy] = {}
        self.policy_states: dict[str, PolicyState] = {}
        self._clocks: dict[int, BarClock] = {}
        self._by_bar: dict[int, list[str]] = {}
        self._partitions = {p: Partition() for p in self.partitions}
        self._watermark = -math.inf  # the job watermark, kept as partitions move
        # A lower bound of the open bars' ends and the pending controls' stamps: below it a
        # watermark has nothing to emit.
        self._next_due = math.inf
        self._pending: dict[str, list[tuple[int, int, int, str, Any]]] = {}
        self._control_seq = 0
        self.late_ticks = 0
        """(Tick, bar size) pairs dead-lettered as late."""
        self.future_records = 0
        """Ticks and heartbeats dead-lettered as stamped beyond the future skew."""
        for portfolio in portfolios:
            spec = portfolio.spec
            monitor = PortfolioMonitor(spec)
            if portfolio.initial_stats is not None:
                monitor.seed(portfolio.initial_stats)
            if portfolio.initial_weights is not None:
                problem = monitor.set_weights(portfolio.initial_weights, timestamp_ms=0)
                if problem is not None:
                    raise ReplayError(f"portfolio {spec.portfolio_id}: {problem}")
            self.monitors[spec.portfolio_id] = monitor
            if portfolio.policy is not None:
                self.policies[spec.portfolio_id] = RebalancePolicy(portfolio.policy)
                self.policy_states[spec.portfolio_id] = PolicyState()
            self._clocks.setdefault(spec.bar_ms, BarClock(spec.bar_ms))
            self._by_bar.setdefault(spec.bar_ms, []).append(spec.portfolio_id)
        # Bar sizes for portfolios defined while it runs (define): their bars from the start.
        for bar_ms in sorted(bar_sizes_ms):
            self._clocks.setdefault(bar_ms, BarClock(bar_ms))
            self._by_bar.setdefault(bar_ms, [])

    # -- watermarks ---------------------------------------------------------------------------

    def partition_watermark_ms(self, partition: int) -> float:
        """Greatest event time read from ``partition`` minus the bound; −∞ before any record.

        A tick of a bar ending at or before it is late.
        """
        greatest = self._partition(partition).greatest
        return -math.inf if greatest is None else greatest - self.max_out_of_orderness_ms

    @property
    def watermark_ms(self) -> float:
        """The job's watermark: the least partition watermark. Bars ending at or before it are
        final."""
        return self._watermark

    def _advance(self, part: Partition, event_time_ms: int) -> Iterator[ReplayEvent]:
        """Move ``part``'s greatest event time, then emit what the job's watermark made final."""
        if part.greatest is not None and event_time_ms <= part.greatest:
            return
        was = -math.inf if part.greatest is None else part.greatest - self.max_out_of_orderness_ms
        part.greatest = event_time_ms
        if was == self._watermark:  # this partition may have been holding the job's back
            self._watermark = min(self.partition_watermark_ms(p) for p in self.partitions)
            yield from self._fire(self._watermark)

    def _partition(self, partition: int) -> Partition:
        state = self._partitions.get(partition)
        if state is None:
            raise ReplayError(
                f"partition {partition} is not one of the prices topic's {list(self.partitions)}"
            )
        return state

    # -- input --------------------------------------------------------------------------------

    def run(self, records: Iterable[PriceRecord], *, flush: bool = True) -> Iterator[ReplayEvent]:
        """Feed every tick and heartbeat, then (with ``flush``) close the bars still open."""
        for record in records:
            yield from self.on_record(record)
        if flush:
            yield from self.flush()

    def on_record(self, record: PriceRecord) -> Iterator[ReplayEvent]:
        """Feed a tick or a heartbeat."""
        if isinstance(record, Heartbeat):
            return self.on_heartbeat(record.event_time_ms, record.partition, offset=record.offset)
        return self.on_tick(record)

    def on_tick(self, tick: Tick) -> Iterator[ReplayEvent]:
        """Read a tick from its partition: counted in its bar, for each bar size it is not late
        for; dead-lettered (``late``) for each it is; or dead-lettered (``future``) once."""
        part = self._partition(tick.partition)
        position = part.read if tick.offset is None else tick.offset
        part.read += 1
        limit = self._future_limit()
        if tick.event_time_ms > limit:
            self.future_records += 1
            yield ReplayEvent(
                "dead_letter",
                tick.ticker,
                {
                    "reason": "future",
                    "ticker": tick.ticker,
                    "event_time": tick.event_time_ms,
                    "price": tick.price,
                    "limit": limit,
                    "partition": tick.partition,
                    "offset": tick.offset,
                },
            )
            return
        # Judged on this partition alone, before the tick moves it: other partitions' progress
        # depends on how they were interleaved with this one, its own order does not.
        watermark = (
            -math.inf if part.greatest is None else part.greatest - self.max_out_of_orderness_ms
        )
        rank = (tick.event_time_ms, tick.partition, position)
        for clock in self._clocks.values():
            k = bar_index(tick.event_time_ms, clock.bar_ms)
            # Each bar size has its own windows: too late for one may still count for another.
            if bar_end_ms(k, clock.bar_ms) <= watermark:
                self.late_ticks += 1
                yield ReplayEvent(
                    "dead_letter",
                    tick.ticker,
                    {
                        "reason": "late",
                        "ticker": tick.ticker,
                        "event_time": tick.event_time_ms,
                        "price": tick.price,
                        "bar_ms": clock.bar_ms,
                        "watermark": watermark,
                        "partition": tick.partition,
                        "offset": tick.offset,
                    },
                )
                continue
            bar = clock.open_bars.get(k)
            if bar is None:
                bar = clock.open_bars[k] = Closes()
                self._next_due = min(self._next_due, bar_end_ms(k, clock.bar_ms))
            bar.offer(tick.ticker, rank, tick.price)
        yield from self._advance(part, tick.event_time_ms)

    def on_heartbeat(
        self, time_ms: int, partition: int = 0, *, offset: int | None = None
    ) -> Iterator[ReplayEvent]:
        """Read a heartbeat: moves ``partition``'s watermark like a tick, makes no close. One
        stamped beyond the future skew moves nothing and is dead-lettered (``future``)."""
        part = self._partition(partition)
        part.read += 1
        limit = self._future_limit()
        if time_ms > limit:
            self.future_records += 1
            yield ReplayEvent(
                "dead_letter",
                "",
                {
                    "reason": "future",
                    "heartbeat": True,
                    "event_time": time_ms,
                    "limit": limit,
                    "partition": partition,
                    "offset": offset,
                },
            )
            return
        yield from self._advance(part, time_ms)

    def flush(self) -> Iterator[ReplayEvent]:
        """End of input: close every open bar and apply every pending control message."""
        yield from self._fire(math.inf)

    def _future_limit(self) -> float:
        if self.max_future_skew_ms is None:
            return math.inf
        return self.now_ms() + self.max_future_skew_ms

    def _fire(self, watermark: float) -> Iterator[ReplayEvent]:
        """Emit the bars ending at or before ``watermark``, in bar order, then the control
        messages stamped at or before it."""
        if watermark < self._next_due:
            return  # no open bar ends, and no pending control is stamped, at or before it
        for bar_ms, clock in self._clocks.items():
            ready = sorted(k for k in clock.open_bars if bar_end_ms(k, bar_ms) <= watermark)
            for k in ready:
                bar = chain_bar(clock.chains, k, clock.open_bars.pop(k).closes)
                end = bar_end_ms(k, bar_ms)
                # Who takes this bar: the definitions stamped before its end first.
                for portfolio_id in list(self._pending):
                    yield from self._apply_definitions(portfolio_id, end - 1)
                for portfolio_id in list(self._by_bar[bar_ms]):
                    # Control messages stamped before this bar's end come first.
                    yield from self._apply_controls(portfolio_id, end - 1)
                    monitor = self.monitors[portfolio_id]
                    stats = monitor.on_bar(bar)
                    if stats is None:
                        continue
                    yield ReplayEvent("stats", portfolio_id, stats)
                    yield from self._after_change(portfolio_id, now_ms=end)
        for portfolio_id in list(self._pending):
            yield from self._apply_controls(portfolio_id, watermark)
        self._next_due = min(
            (
                *(bar_end_ms(k, c.bar_ms) for c in self._clocks.values() for k in c.open_bars),
                *(pending[0][0] for pending in self._pending.values() if pending),
            ),
            default=math.inf,
        )

    def _after_change(self, portfolio_id: str, now_ms: int) -> Iterator[ReplayEvent]:
        """The metrics, then the policy's decision, after ``portfolio_id`` changed."""
        return after_change(
            portfolio_id,
            self.monitors[portfolio_id],
            self.policies.get(portfolio_id),
            self.policy_states,
            now_ms,
        )
