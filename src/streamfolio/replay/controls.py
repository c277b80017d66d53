"""Control messages in the replay: initial statistics, weights and portfolio definitions, each
taking effect in event time at its timestamp (:class:`ControlMessages`, the part of
:class:`~streamfolio.replay.engine.ReplayEngine` that applies them)."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from typing import Any, cast

from streamfolio.core.policy import PolicyState, RebalancePolicy
from streamfolio.core.portfolio import PortfolioMonitor
from streamfolio.intake import CONTROL_RANK, ControlKind, control_problem
from streamfolio.replay.clock import BarClock
from streamfolio.replay.records import ReplayEvent, ReplayPortfolio

__all__ = ["ControlMessages"]

_RANK: dict[str, int] = {"definition": -1, **CONTROL_RANK}
"""Equal timestamps: a definition first, then a seed, then weights."""


class ControlMessages:
    """Pending control messages per portfolio, applied in event time (mixed into the engine,
    whose bars call :meth:`_apply_controls` and :meth:`_apply_definitions` as they close)."""

    monitors: dict[str, PortfolioMonitor]
    policies: dict[str, RebalancePolicy]
    policy_states: dict[str, PolicyState]
    _clocks: dict[int, BarClock]
    _by_bar: dict[int, list[str]]
    _pending: dict[str, list[tuple[int, int, int, str, Any]]]
    _control_seq: int
    _next_due: float

    @property
    def watermark_ms(self) -> float:  # pragma: no cover - the engine's
        raise NotImplementedError

    def _future_limit(self) -> float:  # pragma: no cover - the engine's
        raise NotImplementedError

    def _after_change(self, portfolio_id: str, now_ms: int) -> Iterator[ReplayEvent]:
        raise NotImplementedError  # pragma: no cover - the engine's

    def control(self, kind: ControlKind, record: Mapping[str, Any]) -> Iterator[ReplayEvent]:
        """Read a control message: initial statistics (``"stats"``, a seed that replaces the
        statistics) or ``"weights"``, as the streaming job reads them from their topics.

        It takes effect in event time, at its ``timestamp`` T: after every bar that ends at or
        before T, before the first bar that ends after T, whenever it is passed, as long as no
        bar ending after T is final yet. Otherwise (it arrived after such a bar was emitted) it
        takes effect at once, before the bars not yet final: the one case where the output
        depends on when a message is read. Equal timestamps: a seed before weights, then in the
        order passed. After it takes effect the metrics are emitted if they changed. A message
        that does not fit the portfolio in force when its time comes (``unknown_portfolio``
        when there is none) is a dead letter then and changes nothing: a definition
        (:meth:`define`) may change or create the portfolio before. Control messages never
        move a watermark.

        Unlike the job, which buffers a portfolio's bars until its first initial statistics
        arrive, the replay starts from the state given at construction.

        >>> from streamfolio.core.portfolio import PortfolioSpec
        >>> from streamfolio.replay import ReplayEngine, Tick
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
        # Whether it fits its portfolio is judged when its time comes, against the definition
        # in force then (define may change the portfolio, or define it, before that).
        problem = None
        if int(record["timestamp"]) > self._future_limit():
            problem = "future", f"{kind} stamped {record['timestamp']}, beyond the future skew"
        if problem is not None:
            reason, detail = problem
            yield ReplayEvent("dead_letter", portfolio_id, {"reason": reason, "detail": detail})
            return
        yield from self._enqueue(portfolio_id, int(record["timestamp"]), kind, record)

    def define(
        self, portfolio_id: str, timestamp_ms: int, portfolio: ReplayPortfolio | None
    ) -> Iterator[ReplayEvent]:
        """Read a portfolio definition (None: its removal) stamped ``timestamp_ms``, as the job
        reads the portfolios topic. It takes effect as a control message does (:meth:`control`),
        before a seed or weights with the same time. A new portfolio takes the bars ending
        after it, starting unseeded (its initial statistics and weights follow); a changed one
        keeps its statistics when :meth:`PortfolioSpec.keeps_moments_of` says so, else starts
        again unseeded; a removed one is dropped with everything it held. ``portfolio``'s
        ``initial_stats`` and ``initial_weights`` are not used: they are messages of their own.
        """
        yield from self._enqueue(portfolio_id, timestamp_ms, "definition", portfolio)

    def _enqueue(
        self, portfolio_id: str, timestamp: int, kind: str, payload: Any
    ) -> Iterator[ReplayEvent]:
        self._control_seq += 1
        entry = (timestamp, _RANK[kind], self._control_seq, kind, payload)
        bisect.insort(self._pending.setdefault(portfolio_id, []), entry, key=lambda e: e[:3])
        self._next_due = min(self._next_due, entry[0])
        # T at or before the watermark: every bar ending at or before T is final (a tick for
        # one now would be late), and no bar still open ends at or before T.
        yield from self._apply_controls(portfolio_id, self.watermark_ms)

    def _apply_controls(self, portfolio_id: str, up_to: float) -> Iterator[ReplayEvent]:
        """Apply the pending control messages stamped at or before ``up_to``, in time order."""
        pending = self._pending.get(portfolio_id)
        while pending and pending[0][0] <= up_to:
            timestamp, _, _, kind, record = pending.pop(0)
            if kind == "definition":
                self._redefine(portfolio_id, record)
                continue
            monitor = self.monitors.get(portfolio_id)
            problem = (
                ("unknown_portfolio", f"no portfolio {portfolio_id!r}")
                if monitor is None
                else control_problem(monitor.spec, cast(ControlKind, kind), record)
            )
            if problem is not None:
                reason, detail = problem
                yield ReplayEvent("dead_letter", portfolio_id, {"reason": reason, "detail": detail})
                continue
            assert monitor is not None
            if kind == "stats":
                stale = monitor.seed(record)
            else:
                stale = monitor.set_weights(record["weights"], timestamp_ms=timestamp)
            if stale is not None:  # the fit was checked on arrival: only its age is left
                yield ReplayEvent("dead_letter", portfolio_id, {"reason": "stale", "detail": stale})
                continue
            yield from self._after_change(portfolio_id, now_ms=timestamp)

    def _redefine(self, portfolio_id: str, portfolio: ReplayPortfolio | None) -> None:
        """Apply a definition (None: a removal) now."""
        old = self.monitors.pop(portfolio_id, None)
        if old is not None:
            self._by_bar[old.spec.bar_ms].remove(portfolio_id)
        if portfolio is None:
            self.policies.pop(portfolio_id, None)
            self.policy_states.pop(portfolio_id, None)
            return
        spec = portfolio.spec
        if old is not None and spec.keeps_moments_of(old.spec):
            monitor = PortfolioMonitor.from_state(spec, old.to_state())
        else:
            monitor = PortfolioMonitor(spec)
            self.policy_states[portfolio_id] = PolicyState()
        self.monitors[portfolio_id] = monitor
        self._clocks.setdefault(spec.bar_ms, BarClock(spec.bar_ms))
        self._by_bar.setdefault(spec.bar_ms, []).append(portfolio_id)
        if portfolio.policy is None:
            self.policies.pop(portfolio_id, None)
        else:
            self.policies[portfolio_id] = RebalancePolicy(portfolio.policy)
            self.policy_states.setdefault(portfolio_id, PolicyState())

    def _apply_definitions(self, portfolio_id: str, up_to: int) -> Iterator[ReplayEvent]:
        """Apply the pending messages of ``portfolio_id`` stamped at or before ``up_to`` if a
        definition is among them (the messages before it first, in their order)."""
        pending = self._pending.get(portfolio_id, [])
        if any(e[3] == "definition" and e[0] <= up_to for e in pending):
            yield from self._apply_controls(portfolio_id, up_to)
