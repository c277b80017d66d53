"""The offline engine: ticks in event time → bars → statistics → metrics → policy → weights.

This is the reference implementation of ``SEMANTICS.md`` that the streaming job must match
bar for bar. It runs the analytics core over a finite tick sequence with the same event-time
rules as Flink: a watermark ``max event time − max_out_of_orderness − 1``; bar ``k`` is final
once the watermark reaches its last millisecond; a tick for a final bar is *late* and changes
nothing. At the end of the input every open bar is closed (as Flink does at the end of a bounded
source).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from streamfolio.core.policy import Hold, PolicySettings, PolicyState, Rebalance, RebalancePolicy
from streamfolio.core.portfolio import PortfolioMonitor, PortfolioSpec, check_weights
from streamfolio.core.returns import BarCloses, ReturnChain, bar_end_ms, bar_index, chain_bar
from streamfolio.errors import DataError

EventKind = Literal["stats", "metrics", "weights", "rebalance", "hold", "dead_letter"]
ControlKind = Literal["stats", "weights"]
"""A control message: initial statistics (a seed, from the initial-statistics topic) or weights."""

CONTROL_RANK: Mapping[str, int] = {"stats": 0, "weights": 1}
"""Order of control messages with equal timestamps: a seed before weights, so the metrics emitted
in between do not depend on which topic was read first."""


def control_problem(
    spec: PortfolioSpec, kind: ControlKind, record: Mapping[str, Any]
) -> tuple[str, str] | None:
    """``(reason, detail)`` if a control message cannot apply to ``spec``'s portfolio, else None.

    Checked on arrival, by the replay and the Flink job alike, so a bad message is refused at
    once (dead letter) and never waits for its timestamp.

    >>> spec = PortfolioSpec("p", ("A", "B"), bar_ms=1_000, periods_per_year=252)
    >>> control_problem(spec, "weights", {"timestamp": 0, "weights": {"A": 1.0}})
    ('invalid_weights', 'weights do not cover the portfolio: missing B')
    >>> control_problem(spec, "stats", {"timestamp": 0, "meanReturns": {"A": 0.0},
    ...                                 "covarianceMatrix": {"A": {"A": 1.0}}})[0]
    'invalid_stats'
    """
    if kind == "weights":
        weights = record.get("weights")
        if not isinstance(weights, Mapping):
            return "invalid_weights", "no weights map"
        problem = check_weights(spec.tickers, weights)
        return None if problem is None else ("invalid_weights", problem)
    try:
        PortfolioMonitor(spec).seed(record)
    except (DataError, KeyError, ValueError, TypeError) as exc:
        return "invalid_stats", f"{type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True, slots=True)
class Tick:
    """One price observation in event time."""

    event_time_ms: int
    ticker: str
    price: float


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """Something the engine emitted, in the order it emitted it."""

    kind: EventKind
    key: str
    record: Mapping[str, Any]


@dataclass(slots=True)
class ReplayPortfolio:
    """A portfolio as the engine runs it: its spec, starting state and (optional) policy."""

    spec: PortfolioSpec
    initial_stats: Mapping[str, Any] | None = None
    initial_weights: Mapping[str, float] | None = None
    policy: PolicySettings | None = None


@dataclass(slots=True)
class _BarClock:
    """Open bars of one bar size, and the watermark that closes them."""

    bar_ms: int
    open_bars: dict[int, BarCloses] = field(default_factory=dict)
    chains: dict[str, ReturnChain] = field(default_factory=dict)


class ReplayEngine:
    """Runs portfolios over ticks; yields :class:`ReplayEvent` in emission order.

    Examples
    --------
    >>> spec = PortfolioSpec("p", ("A", "B"), bar_ms=1_000, periods_per_year=1_000)
    >>> engine = ReplayEngine([ReplayPortfolio(spec, initial_weights={"A": 0.5, "B": 0.5})],
    ...                       max_out_of_orderness_ms=0)
    >>> ticks = [Tick(t * 1_000, s, p) for t, s, p in
    ...          [(0, "A", 10), (0, "B", 20), (1, "A", 11), (2, "B", 19), (3, "A", 10.5)]]
    >>> [e.kind for e in engine.run(ticks)]
    ['stats', 'stats', 'metrics', 'stats', 'metrics']
    """

    def __init__(
        self,
        portfolios: Sequence[ReplayPortfolio],
        *,
        max_out_of_orderness_ms: int = 0,
    ) -> None:
        self.max_out_of_orderness_ms = max_out_of_orderness_ms
        self.monitors: dict[str, PortfolioMonitor] = {}
        self.policies: dict[str, RebalancePolicy] = {}
        self.policy_states: dict[str, PolicyState] = {}
        self._clocks: dict[int, _BarClock] = {}
        self._by_bar: dict[int, list[str]] = {}
        self._initial: list[ReplayEvent] = []
        self._max_event_time: int | None = None
        self._pending: dict[str, list[tuple[int, int, int, ControlKind, Mapping[str, Any]]]] = {}
        self._control_seq = 0
        self.late_ticks = 0
        for portfolio in portfolios:
            spec = portfolio.spec
            monitor = PortfolioMonitor(spec)
            if portfolio.initial_stats is not None:
                monitor.seed(portfolio.initial_stats)
            if portfolio.initial_weights is not None:
                problem = monitor.set_weights(portfolio.initial_weights, timestamp_ms=0)
                if problem is not None:
                    raise ValueError(f"portfolio {spec.portfolio_id}: {problem}")
            self.monitors[spec.portfolio_id] = monitor
            if portfolio.policy is not None:
                self.policies[spec.portfolio_id] = RebalancePolicy(portfolio.policy)
                self.policy_states[spec.portfolio_id] = PolicyState()
            self._clocks.setdefault(spec.bar_ms, _BarClock(spec.bar_ms))
            self._by_bar.setdefault(spec.bar_ms, []).append(spec.portfolio_id)

    @property
    def watermark_ms(self) -> float:
        """Greatest event time seen minus the out-of-orderness bound (Flink's convention, − 1)."""
        if self._max_event_time is None:
            return -math.inf
        return self._max_event_time - self.max_out_of_orderness_ms - 1

    def run(self, ticks: Iterable[Tick], *, flush: bool = True) -> Iterator[ReplayEvent]:
        """Feed every tick, then (with ``flush``) close the bars still open."""
        for tick in ticks:
            yield from self.on_tick(tick)
        if flush:
            yield from self.flush()

    def on_tick(self, tick: Tick) -> Iterator[ReplayEvent]:
        watermark = self.watermark_ms
        for clock in self._clocks.values():
            # Each bar size has its own windows: too late for one may still count for another.
            if self._is_final(clock, tick.event_time_ms, watermark):
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
                    },
                )
                continue
            k = bar_index(tick.event_time_ms, clock.bar_ms)
            clock.open_bars.setdefault(k, BarCloses()).offer(
                tick.ticker, tick.event_time_ms, tick.price
            )
        if self._max_event_time is None or tick.event_time_ms > self._max_event_time:
            self._max_event_time = tick.event_time_ms
        yield from self._fire(self.watermark_ms)

    def flush(self) -> Iterator[ReplayEvent]:
        yield from self._fire(math.inf)

    def control(self, kind: ControlKind, record: Mapping[str, Any]) -> Iterator[ReplayEvent]:
        """Read a control message between ticks: initial statistics (``"stats"``, a seed that
        replaces the statistics) or ``"weights"``, as the streaming job reads them from their
        topics.

        It takes effect in event time, at its ``timestamp`` T: after every bar that ends at or
        before T, before the first bar that ends after T. One whose T the watermark has already
        passed takes effect at once (it arrived too late to be placed among the bars). After it
        takes effect the metrics are emitted if they changed. A message for an unknown portfolio,
        or one that does not fit its portfolio, is a dead letter and changes nothing.

        Unlike the job, which buffers a portfolio's bars until its first initial statistics
        arrive, the replay starts from the state given at construction.

        >>> spec = PortfolioSpec("p", ("A",), bar_ms=1_000, periods_per_year=1_000)
        >>> engine = ReplayEngine([ReplayPortfolio(spec)])
        >>> [e.kind for e in engine.control("weights", {"timestamp": 1_500,
        ...                                              "portfolio_id": "p", "weights": {"A": 1}})]
        []
        >>> ticks = [Tick(t, "A", p) for t, p in [(0, 10), (1_000, 11), (2_000, 12), (3_000, 9)]]
        >>> [(e.kind, e.record["timestamp"]) for e in engine.run(ticks)]
        [('stats', 2000), ('stats', 3000), ('metrics', 3000), ('stats', 4000), ('metrics', 4000)]
        """
        portfolio_id = str(record.get("portfolio_id", ""))
        monitor = self.monitors.get(portfolio_id)
        if monitor is None:
            yield ReplayEvent(
                "dead_letter",
                portfolio_id,
                {"reason": "unknown_portfolio", "detail": f"no portfolio {portfolio_id!r}"},
            )
            return
        problem = control_problem(monitor.spec, kind, record)
        if problem is not None:
            reason, detail = problem
            yield ReplayEvent("dead_letter", portfolio_id, {"reason": reason, "detail": detail})
            return
        self._control_seq += 1
        entry = (int(record["timestamp"]), CONTROL_RANK[kind], self._control_seq, kind, record)
        bisect.insort(self._pending.setdefault(portfolio_id, []), entry, key=lambda e: e[:3])
        yield from self._apply_controls(portfolio_id, self.watermark_ms)

    def _apply_controls(self, portfolio_id: str, up_to: float) -> Iterator[ReplayEvent]:
        """Apply the pending control messages stamped at or before ``up_to``, in time order."""
        pending = self._pending.get(portfolio_id)
        while pending and pending[0][0] <= up_to:
            timestamp, _, _, kind, record = pending.pop(0)
            monitor = self.monitors[portfolio_id]
            if kind == "stats":
                monitor.seed(record)
            elif monitor.set_weights(record["weights"], timestamp_ms=timestamp) is not None:
                continue  # cannot happen: checked on arrival against the same tickers
            yield from self._after_change(portfolio_id, now_ms=timestamp)

    @staticmethod
    def _is_final(clock: _BarClock, event_time_ms: int, watermark: float) -> bool:
        k = bar_index(event_time_ms, clock.bar_ms)
        return bar_end_ms(k, clock.bar_ms) - 1 <= watermark

    def _fire(self, watermark: float) -> Iterator[ReplayEvent]:
        for bar_ms, clock in self._clocks.items():
            ready = sorted(k for k in clock.open_bars if bar_end_ms(k, bar_ms) - 1 <= watermark)
            for k in ready:
                bar = chain_bar(clock.chains, k, clock.open_bars.pop(k).closes)
                for portfolio_id in self._by_bar[bar_ms]:
                    # Control messages stamped before this bar's last millisecond come first.
                    yield from self._apply_controls(portfolio_id, bar_end_ms(k, bar_ms) - 1)
                    monitor = self.monitors[portfolio_id]
                    stats = monitor.on_bar(bar)
                    if stats is None:
                        continue
                    yield ReplayEvent("stats", portfolio_id, stats)
                    yield from self._after_change(portfolio_id, now_ms=bar_end_ms(k, bar_ms))
        for portfolio_id in list(self._pending):
            yield from self._apply_controls(portfolio_id, watermark)

    def _after_change(self, portfolio_id: str, now_ms: int) -> Iterator[ReplayEvent]:
        monitor = self.monitors[portfolio_id]
        metrics = monitor.metrics()
        if metrics is None:
            return
        yield ReplayEvent("metrics", portfolio_id, metrics)
        policy = self.policies.get(portfolio_id)
        if policy is None or monitor.weights is None:
            return
        decision, self.policy_states[portfolio_id] = policy.decide(
            mean=monitor.moments.mean,
            covariance=monitor.moments.covariance,
            count=monitor.moments.n,
            weights=monitor.weights,
            now_ms=now_ms,
            state=self.policy_states[portfolio_id],
        )
        if isinstance(decision, Hold):
            if decision.notify:
                yield ReplayEvent(
                    "hold",
                    portfolio_id,
                    {
                        "portfolio_id": portfolio_id,
                        "timestamp": now_ms,
                        "reason": decision.reason,
                        "sharpe": decision.sharpe,
                    },
                )
            return
        yield from self._rebalance(portfolio_id, decision, now_ms)

    def _rebalance(
        self, portfolio_id: str, decision: Rebalance, now_ms: int
    ) -> Iterator[ReplayEvent]:
        monitor = self.monitors[portfolio_id]
        assert monitor.weights is not None
        tickers = monitor.spec.tickers
        old = dict(zip(tickers, monitor.weights.tolist(), strict=True))
        new = dict(zip(tickers, np.asarray(decision.weights).tolist(), strict=True))
        yield ReplayEvent(
            "rebalance",
            portfolio_id,
            {
                "event_id": f"{portfolio_id}@{now_ms}",  # as RebalanceEvent.make_event_id
                "portfolio_id": portfolio_id,
                "timestamp": now_ms,
                "reason": decision.reason,
                "decision": "rebalance",
                "old_weights": old,
                "new_weights": new,
                "sharpe_before": decision.sharpe_before,
                "sharpe_after": decision.sharpe_after,
                "expected_return_after": decision.expected_return_after,
                "risk_after": decision.risk_after,
                "turnover": decision.turnover,
                "optimizer_status": decision.optimizer_status,
            },
        )
        weights_record = {
            "timestamp": now_ms,
            "portfolio_id": portfolio_id,
            "weights": new,
            "reason": decision.reason,
            "source": "rebalancer",
        }
        yield ReplayEvent("weights", portfolio_id, weights_record)
        problem = monitor.set_weights(new, timestamp_ms=now_ms)
        if problem is None:
            metrics = monitor.metrics()
            if metrics is not None:
                yield ReplayEvent("metrics", portfolio_id, metrics)


def ticks_from_rows(rows: Iterable[tuple[int, str, float]]) -> Iterator[Tick]:
    """Adapt ``(event_time_ms, ticker, price)`` rows to :class:`Tick`."""
    for event_time_ms, ticker, price in rows:
        yield Tick(int(event_time_ms), ticker, float(price))


EventSink = Callable[[ReplayEvent], None]
