"""What the dashboard knows: bounded per-portfolio histories folded from the pipeline's topics.

:class:`DashboardState` is fed the messages the consumer thread accepts
(:meth:`~DashboardState.accept`; :meth:`~DashboardState.apply` for a decoded record) and read by
the web server (:meth:`~DashboardState.snapshot`,
:meth:`~DashboardState.delta`, :meth:`~DashboardState.summaries`,
:meth:`~DashboardState.health_report`); one lock guards both sides.
It does no IO, takes the wall clock as a parameter and returns plain JSON-ready dicts, so it is
tested without Kafka or a web server. Each portfolio's histories are a
:class:`~streamfolio.dashboard.view.PortfolioView`, the bounds and the history window are in
:mod:`streamfolio.dashboard.bounds`, the counters in :class:`~streamfolio.dashboard.health.Health`.

Every change gets a sequence number from one counter. A browser keeps the number of the last
change it has seen and asks for what is newer (:meth:`~DashboardState.delta`): that keeps the push
channel small however many portfolios there are, and coalesces bursts. Histories are bounded
(:class:`Limits`); a client trims its copy to the same bounds, so dropping old points never needs
a resend.

Nothing read from a topic is trusted (docs/dashboard.md, "What it ignores"). The consumer
judges every message with :class:`~streamfolio.intake.Intake`, the rules every component
applies: one that does not decode, breaks its message's rules, is for a portfolio not
configured, is keyed by anything but its portfolio id, is stamped further than
``validation.max_future_skew_ms`` ahead of the wall clock, or carries weights or statistics that
do not fit its portfolio is not shown, and is counted by the intake's reason
(:meth:`~DashboardState.refused`). What the intake accepts is folded under the dashboard's own
rules:

* only the portfolios with a view are shown (the configured ones): the memory used does not
  depend on what the topics carry. The intake has refused any other id already; a record handed
  to :meth:`~DashboardState.apply` directly for one is ignored as ``unknown_portfolio`` too;
* a record stamped before the history window (:class:`TimeWindow`, relative to the wall clock or
  to the newest record shown for its portfolio) is ignored as ``stale``;
* a metrics, weights or updated statistics record older than the newest one shown for its
  portfolio (a metrics record: not newer) is ignored as ``out_of_order``: histories only ever
  grow at their end, so a record never wipes or rewrites what is shown, and every delta is an
  append;
* a record with more than :data:`MAX_TICKERS` tickers is ignored as ``too_large``; texts are cut
  to :data:`MAX_TEXT` characters; dead-letter reasons beyond :data:`MAX_REASONS` distinct ones
  are counted as ``other``.

>>> state = DashboardState.from_settings(load_config(example_config_path(), environ={}))
>>> state.apply("metrics", {"portfolioId": "banks", "risk": 0.2, "expectedReturn": 0.1,
...                         "sharpRatio": 0.4, "timestamp": 1_000}, now=2.0)
True
>>> [(s["id"], s["sharpe"], s["status"]) for s in state.summaries()]
[('portf1', None, 'none'), ('banks', 0.4, 'above')]
>>> state.apply("metrics", {"portfolioId": "nope", "risk": 0.2, "expectedReturn": 0.1,
...                         "sharpRatio": 0.4, "timestamp": 1_000}, now=2.0)
False
>>> state.health_report(now=2.0)["ignored"]
{'unknown_portfolio': 1}
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Final

from streamfolio.config import Settings, example_config_path, load_config  # noqa: F401 (doctest)
from streamfolio.dashboard.bounds import (
    DEFAULT_WINDOW_MS,
    IGNORED_REASONS,
    MAX_REASONS,
    MAX_TEXT,
    MAX_TICKERS,
    ROLES,
    Ignored,
    Json,
    Limits,
    Role,
    TimeWindow,
)
from streamfolio.dashboard.health import Health
from streamfolio.dashboard.view import PortfolioInfo, PortfolioView, correlation, sharpe_status
from streamfolio.errors import SchemaError
from streamfolio.intake import REASONS as INTAKE_REASONS

if TYPE_CHECKING:
    from streamfolio.portfolio_book import PortfolioBook
from streamfolio.messages import (
    DeadLetter,
    PortfolioMetrics,
    PortfolioStats,
    RebalanceEvent,
    Weights,
)

__all__ = [
    "DEFAULT_WINDOW_MS",
    "IGNORED_REASONS",
    "MAX_REASONS",
    "MAX_TEXT",
    "MAX_TICKERS",
    "ROLES",
    "DashboardState",
    "Health",
    "Limits",
    "PortfolioInfo",
    "Role",
    "TimeWindow",
    "correlation",
    "sharpe_status",
]

_PARSERS: Final[dict[Role, Callable[[Mapping[str, Any]], Any]]] = {
    "metrics": PortfolioMetrics.from_record,
    "updated_stats": PortfolioStats.from_record,
    "initial_stats": PortfolioStats.from_record,
    "weights": Weights.from_record,
    "rebalance_events": RebalanceEvent.from_record,
    "dead_letter": DeadLetter.from_record,
}


class DashboardState:
    """Per-portfolio histories and pipeline health, safe to share between threads.

    ``portfolios`` are the configured ones, in their order: the only ones shown. Records of any
    other portfolio are ignored and counted, so the state's size is bounded by the configuration
    and ``limits``, whatever the topics carry. ``window`` says which event times are shown (how
    far back: the intake has judged how far ahead).
    """

    def __init__(
        self,
        portfolios: Iterable[PortfolioInfo] = (),
        *,
        limits: Limits | None = None,
        window: TimeWindow | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits or Limits()
        self.window = window or TimeWindow()
        self.token = uuid.uuid4().hex[:8]  # tells a browser's cursor from another process's
        self.health = Health(clock=clock)
        self._clock = clock
        self._lock = threading.Lock()
        self._seq = 0
        self._views: dict[str, PortfolioView] = {
            p.id: PortfolioView(p, self.limits) for p in portfolios
        }

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        limits: Limits | None = None,
        history_ms: int = DEFAULT_WINDOW_MS,
        clock: Callable[[], float] = time.time,
    ) -> DashboardState:
        """The state of the configured portfolios, showing ``history_ms`` back."""
        infos = [
            PortfolioInfo(p.id, p.tickers, p.owner, p.policy.sharpe_threshold, p.policy.band)
            for p in settings.portfolios
        ]
        return cls(infos, limits=limits, window=TimeWindow(history_ms), clock=clock)

    # ------------------------------------------------------------------------------ writing

    def apply(self, role: Role, record: Mapping[str, Any], *, now: float | None = None) -> bool:
        """Fold one decoded record in; False if it breaks its message's rules (counted as
        invalid) or is not shown (counted as ignored, with the reason: see :meth:`accept`).

        ``now`` (seconds since the epoch) is the wall clock the record's event time is judged
        against; the state's clock by default.
        """
        _check_role(role)
        at = self._clock() if now is None else now
        try:
            message = _PARSERS[role](record)
        except (SchemaError, KeyError, TypeError, ValueError):
            with self._lock:
                self.health.count(role, invalid=True, now=at)
            return False
        return self.accept(role, message, now=at)

    def accept(self, role: Role, message: Any, *, now: float | None = None) -> bool:
        """Fold in a message the intake accepted from ``role``'s topic (the message
        :meth:`Intake.read <streamfolio.intake.Intake.read>` returned); False if it is not
        shown, counted as ignored with the reason (:data:`IGNORED_REASONS`, the module's
        docstring)."""
        _check_role(role)
        at = self._clock() if now is None else now
        with self._lock:
            self.health.count(role, now=at)
            ignored = self._fold(message, int(at * 1000))
            if ignored is not None:
                self.health.ignored[ignored] += 1
        return ignored is None

    def refused(self, role: Role, reason: str, *, now: float | None = None) -> None:
        """Count a message of ``role``'s topic that the intake refused, under its ``reason``
        (:data:`streamfolio.intake.REASONS`; any other is counted as ``other``, so the counters
        stay bounded). Nothing is shown or changed: the dashboard only reads, so it ignores
        and counts where the other components dead-letter."""
        _check_role(role)
        with self._lock:
            self.health.count(
                role,
                invalid=reason.startswith("invalid"),
                undecodable=reason == "undecodable",
                now=now,
            )
            self.health.ignored[reason if reason in INTAKE_REASONS else "other"] += 1

    def _fold(self, message: Any, now_ms: int) -> Ignored | None:
        if isinstance(message, DeadLetter):
            self.health.dead_letter(message)
            return None
        view = self._views.get(message.portfolio_id)
        if view is None:  # refused by the intake already, unless handed in directly
            return "unknown_portfolio"
        verdict = self.window.judge(message.timestamp, now_ms=now_ms, newest=view.newest(message))
        if verdict is not None:
            return verdict
        seq = self._seq + 1
        if isinstance(message, PortfolioMetrics):
            verdict = view.add_metrics(message, seq)
            if verdict is None:
                self.health.event_time(message.timestamp)
        elif isinstance(message, PortfolioStats):
            verdict = view.add_stats(message, seq)
        elif isinstance(message, Weights):
            verdict = view.add_weights(message, seq)
        elif isinstance(message, RebalanceEvent):
            verdict = view.add_event(message, seq)
        if view.last_seq == seq:  # something changed
            self._seq = seq
        return verdict

    def follow(self, book: PortfolioBook) -> bool:
        """Show the portfolios of ``book`` (the portfolios topic): a new one appears (with its
        tickers, before its first record), a changed one keeps its history unless its tickers
        changed, a removed one disappears. True if anything changed."""
        infos = {}
        for pid in book.ids():
            p = book.latest(pid)
            if p is not None:
                infos[pid] = PortfolioInfo(
                    p.id, tuple(p.tickers), p.owner, p.policy.sharpe_threshold, p.policy.band
                )
        with self._lock:
            changed = False
            for pid in [pid for pid in self._views if pid not in infos]:
                del self._views[pid]
                changed = True
            for pid, info in infos.items():
                view = self._views.get(pid)
                if view is not None and view.info == info:
                    continue
                if view is not None and view.info.tickers == info.tickers:
                    view.info = info
                else:
                    self._views[pid] = PortfolioView(info, self.limits)
                changed = True
            if changed:
                self._seq += 1
        return changed

    # ------------------------------------------------------------------------------ reading

    @property
    def seq(self) -> int:
        """Sequence number of the newest change."""
        with self._lock:
            return self._seq

    def summaries(self, query: str = "", limit: int | None = None) -> list[Json]:
        """One line per portfolio; ``query`` keeps those whose id, owner or a ticker contains it."""
        needle = query.strip().lower()
        with self._lock:
            lines = [v.summary() for v in self._views.values()]
        if needle:
            lines = [s for s in lines if needle in _haystack(s)]
        return lines if limit is None else lines[:limit]

    def knows(self, portfolio_id: str) -> bool:
        """Whether ``portfolio_id`` is one of the portfolios shown (the configured ones)."""
        with self._lock:
            return portfolio_id in self._views

    def snapshot(self, portfolio_id: str) -> Json | None:
        """Everything kept for one portfolio, or None if it is unknown."""
        with self._lock:
            view = self._views.get(portfolio_id)
            if view is None:
                return None
            return self._payload(view, -1, reset=True)

    def delta(self, portfolio_id: str, since: int) -> Json | None:
        """What changed in one portfolio after change ``since``; None if nothing did.

        A ``reset`` delta (a full snapshot) is returned when ``since`` is not a cursor of this
        state (negative, or ahead of it); histories only grow at their end, so any other delta
        appends to what the client has.
        """
        with self._lock:
            view = self._views.get(portfolio_id)
            if view is None or (view.last_seq <= since <= self._seq):
                return None
            if since < 0 or since > self._seq:
                return self._payload(view, -1, reset=True)
            return self._payload(view, since, reset=False)

    def _payload(self, view: PortfolioView, since: int, *, reset: bool) -> Json:
        info = view.info
        return {
            "id": info.id,
            "seq": self._seq,
            "token": self.token,
            "reset": reset,
            "limits": asdict(self.limits),
            **view.payload(since),
        }

    def health_report(self, *, now: float | None = None) -> Json:
        """Pipeline health (see :class:`~streamfolio.dashboard.health.Health`) with counts."""
        with self._lock:
            report = self.health.report(now=now)
            report["seq"] = self._seq
            report["token"] = self.token
            report["portfolios"] = len(self._views)
        return report

    def observe_end_offsets(self, totals: Mapping[str, int], *, now: float | None = None) -> None:
        """Record each topic role's summed end offsets, from which message rates are derived."""
        with self._lock:
            self.health.end_offsets(totals, now=now)

    def set_status(self, status: str, *, error: str | None = None) -> None:
        """What the consumer is doing (``starting``, ``running``, ``waiting``, ``error``)."""
        with self._lock:
            self.health.set_status(status, error=error)


def _check_role(role: str) -> None:
    if role not in _PARSERS:
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")


def _haystack(summary: Json) -> str:
    return " ".join([summary["id"], summary["owner"] or "", *summary["tickers"]]).lower()
