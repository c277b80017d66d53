"""What the dashboard knows: bounded per-portfolio histories folded from the pipeline's topics.

:class:`DashboardState` is fed the messages the consumer thread accepts
(:meth:`~DashboardState.accept`; :meth:`~DashboardState.apply` for a decoded record) and read by
the web server (:meth:`~DashboardState.snapshot`,
:meth:`~DashboardState.delta`, :meth:`~DashboardState.summaries`,
:meth:`~DashboardState.health_report`); one lock guards both sides.
It does no IO, takes the wall clock as a parameter and returns plain JSON-ready dicts, so it is
tested without Kafka or a web server.

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

import math
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

from streamfolio.config import Settings, example_config_path, load_config  # noqa: F401 (doctest)
from streamfolio.errors import SchemaError
from streamfolio.intake import REASONS as INTAKE_REASONS
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

Role: TypeAlias = Literal[
    "metrics", "updated_stats", "initial_stats", "weights", "rebalance_events", "dead_letter"
]
ROLES: Final[tuple[Role, ...]] = (
    "metrics",
    "updated_stats",
    "initial_stats",
    "weights",
    "rebalance_events",
    "dead_letter",
)
"""The topics whose records the state folds (prices are only counted, never read)."""

Json: TypeAlias = dict[str, Any]

DEFAULT_WINDOW_MS: Final = 3650 * 86_400_000
"""How far back in event time records are shown by default: ten years.

A sanity bound against stamps nobody meant (1970, an unset clock), not a retention policy (that
is :class:`Limits`): the demo starts its simulated market where the bundled history ends, weeks
before now, a replay of history is as old as the history, and a portfolio that has not been
rebalanced for months still shows its weights. ``streamfolio dashboard --window-days`` narrows
it."""
MAX_TICKERS: Final = 512
"""Most tickers a weights, statistics or rebalance record may carry to be shown."""
MAX_TEXT: Final = 200
"""Texts from the topics (reasons, details, sources) are cut to this many characters."""
MAX_REASONS: Final = 64
"""Distinct dead-letter reasons counted one by one; any further one is counted as ``other``."""
_MAX_RATE_KEYS: Final = 16
_MAX_RATE_SAMPLES: Final = 1024

Ignored: TypeAlias = Literal["unknown_portfolio", "stale", "out_of_order", "too_large"]
IGNORED_REASONS: Final[tuple[Ignored, ...]] = (
    "unknown_portfolio",
    "stale",
    "out_of_order",
    "too_large",
)
"""Why a record the intake accepted is not shown (counted per reason in the health report,
beside the intake's reasons, :data:`streamfolio.intake.REASONS`, for the records it refused)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """How much history is kept per portfolio (and sent to a browser)."""

    metrics: int = 2000
    weights: int = 500
    events: int = 200

    def __post_init__(self) -> None:
        for name in ("metrics", "weights", "events"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Which event times are shown: ``history_ms`` back.

    A record is ``stale`` if it is stamped before ``now - history_ms`` (``now``: the dashboard's
    wall clock) or before ``newest - history_ms`` (``newest``: the newest record of its kind
    shown for its portfolio). How far ahead a record may be stamped is the intake's rule
    (``validation.max_future_skew_ms``), judged before a record reaches the state.

    >>> w = TimeWindow(history_ms=1000)
    >>> [w.judge(t, now_ms=5000, newest=None) for t in (3999, 4000, 5000)]
    ['stale', None, None]
    >>> w.judge(4500, now_ms=5000, newest=5600)
    'stale'
    """

    history_ms: int = DEFAULT_WINDOW_MS

    def __post_init__(self) -> None:
        if self.history_ms < 1:
            raise ValueError(f"TimeWindow.history_ms must be >= 1, got {self.history_ms}")

    def judge(self, t: int, *, now_ms: int, newest: int | None) -> Ignored | None:
        """``stale`` or None (inside the window)."""
        if t < now_ms - self.history_ms or (newest is not None and t < newest - self.history_ms):
            return "stale"
        return None


@dataclass(frozen=True, slots=True)
class PortfolioInfo:
    """What the configuration says about a portfolio (``band`` None: not configured here)."""

    id: str
    tickers: tuple[str, ...] = ()
    owner: str | None = None
    threshold: float | None = None
    band: float | None = None


class _Metric(NamedTuple):
    seq: int
    t: int
    sharpe: float
    expected_return: float
    risk: float
    n: int  # observations behind the statistics ("count" would shadow tuple.count)


class _Weights(NamedTuple):
    seq: int
    t: int
    weights: dict[str, float]
    reason: str
    source: str


class _Event(NamedTuple):
    seq: int
    t: int
    event_id: str
    json: Json  # what is sent, built once: the record's weight maps are not kept


def correlation(cov: npt.NDArray[np.float64]) -> list[list[float | None]]:
    """``cov / sqrt(diag diag')`` as nested lists; None where a variance is not positive.

    >>> correlation(np.array([[4.0, 2.0], [2.0, 9.0]]))
    [[1.0, 0.3333333333333333], [0.3333333333333333, 1.0]]
    >>> correlation(np.array([[1.0, 0.0], [0.0, 0.0]]))
    [[1.0, None], [None, None]]
    """
    variances = np.diag(cov)
    usable = variances > 0
    sd = np.sqrt(np.where(usable, variances, 1.0))
    # Round-off can push a perfect correlation a hair past 1, or the diagonal a hair below it.
    corr = np.clip(cov / np.outer(sd, sd), -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    keep = np.outer(usable, usable) & np.isfinite(corr)
    return [
        [float(v) if k else None for v, k in zip(row, keep_row, strict=True)]
        for row, keep_row in zip(corr, keep, strict=True)
    ]


def sharpe_status(sharpe: float | None, threshold: float | None, band: float | None) -> str:
    """Where a Sharpe ratio stands: ``below`` the band, in the ``band``, ``above`` it, or ``none``.

    >>> [sharpe_status(s, 0.5, 0.05) for s in (0.4, 0.52, 0.6, None)]
    ['below', 'band', 'above', 'none']
    """
    if sharpe is None:
        return "none"
    if threshold is None:
        return "above"
    half = band or 0.0
    if sharpe < threshold - half:
        return "below"
    return "band" if sharpe <= threshold + half else "above"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class _View:
    """One portfolio's bounded histories and the sequence numbers of their changes."""

    def __init__(self, info: PortfolioInfo, limits: Limits) -> None:
        self.info = info
        self.metrics: deque[_Metric] = deque(maxlen=limits.metrics)
        self.weights: deque[_Weights] = deque(maxlen=limits.weights)
        self.events: deque[_Event] = deque(maxlen=limits.events)
        self.stats: PortfolioStats | None = None
        self.stats_seq = 0
        self.record_threshold: float | None = None  # sharpeThreshold carried by the metrics
        self.last_seq = 0  # newest change of any kind
        self._corr: tuple[int, Json | None] = (-1, None)

    @property
    def threshold(self) -> float | None:
        return self.info.threshold if self.info.threshold is not None else self.record_threshold

    def newest(self, message: Any) -> int | None:
        """Event time of the newest record shown of ``message``'s kind (None: none yet)."""
        if isinstance(message, PortfolioMetrics):
            return self.metrics[-1].t if self.metrics else None
        if isinstance(message, Weights):
            return self.weights[-1].t if self.weights else None
        if isinstance(message, RebalanceEvent):
            return max((e.t for e in self.events), default=None)
        if isinstance(message, PortfolioStats):
            return self.stats.timestamp if self.stats is not None else None
        return None

    def add_metrics(self, m: PortfolioMetrics, seq: int) -> Ignored | None:
        # Histories only grow at their end: a replayed or misstamped record never wipes them.
        if self.metrics and m.timestamp <= self.metrics[-1].t:
            return "out_of_order"
        if m.sharpe_threshold is not None:
            self.record_threshold = m.sharpe_threshold
        self.metrics.append(
            _Metric(seq, m.timestamp, m.sharpe_ratio, m.expected_return, m.risk, m.count)
        )
        self.last_seq = seq
        return None

    def add_weights(self, w: Weights, seq: int) -> Ignored | None:
        if self.weights and w.timestamp < self.weights[-1].t:
            return "out_of_order"
        if len(w.weights) > MAX_TICKERS:
            return "too_large"
        self.weights.append(
            _Weights(seq, w.timestamp, dict(w.weights), _text(w.reason), _text(w.source))
        )
        self.last_seq = seq
        return None

    def add_event(self, e: RebalanceEvent, seq: int) -> Ignored | None:
        if max(len(e.old_weights), len(e.new_weights)) > MAX_TICKERS:
            return "too_large"
        # Replays of the rebalancer publish the same deterministic ids again: show each once.
        event_id = _text(e.event_id)
        if event_id and any(old.event_id == event_id for old in self.events):
            return None
        self.events.append(_Event(seq, e.timestamp, event_id, _event_json(e)))
        self.last_seq = seq
        return None

    def add_stats(self, s: PortfolioStats, seq: int) -> Ignored | None:
        if len(s.tickers) > MAX_TICKERS:
            return "too_large"
        # Initial statistics (the prior) only stand in until the job's first update.
        if self.stats is not None and s.kind == "initial" and self.stats.kind == "updated":
            return None
        if self.stats is not None and s.timestamp < self.stats.timestamp and s.kind == "updated":
            return "out_of_order"
        self.stats, self.stats_seq, self.last_seq = s, seq, seq
        return None

    def correlation(self) -> Json | None:
        if self._corr[0] != self.stats_seq:
            s = self.stats
            value = None
            if s is not None:
                value = {
                    "tickers": list(s.tickers),
                    "matrix": correlation(s.covariance_matrix()),
                    "timestamp": s.timestamp,
                    "kind": s.kind,
                    "count": s.count,
                }
            self._corr = (self.stats_seq, value)
        return self._corr[1]

    def summary(self) -> Json:
        last = self.metrics[-1] if self.metrics else None
        sharpe = last.sharpe if last else None
        return {
            "id": self.info.id,
            "owner": self.info.owner,
            "tickers": list(self.info.tickers or (self.stats.tickers if self.stats else ())),
            "threshold": self.threshold,
            "band": self.info.band,
            "sharpe": sharpe,
            "expected_return": last.expected_return if last else None,
            "risk": last.risk if last else None,
            "count": last.n if last else None,
            "last_time": last.t if last else None,
            "status": sharpe_status(sharpe, self.threshold, self.info.band),
            "points": len(self.metrics),
        }

    def payload(self, since: int) -> Json:
        """Everything newer than ``since`` (everything when ``since`` is -1)."""
        metrics = [p for p in self.metrics if p.seq > since]
        return {
            "summary": self.summary(),
            "metrics": {
                "t": [p.t for p in metrics],
                "sharpe": [p.sharpe for p in metrics],
                "expected_return": [p.expected_return for p in metrics],
                "risk": [p.risk for p in metrics],
                "count": [p.n for p in metrics],
            },
            "weights": [
                {"t": w.t, "weights": w.weights, "reason": w.reason, "source": w.source}
                for w in self.weights
                if w.seq > since
            ],
            "events": [e.json for e in self.events if e.seq > since],
            "correlation": self.correlation() if self.stats_seq > since else None,
        }


def _text(value: str, limit: int = MAX_TEXT) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _event_json(e: RebalanceEvent) -> Json:
    return {
        "t": e.timestamp,
        "decision": _text(e.decision),
        "reason": _text(e.reason),
        "sharpe_before": _finite(e.sharpe_before),
        "sharpe_after": _finite(e.sharpe_after),
        "expected_return_after": _finite(e.expected_return_after),
        "risk_after": _finite(e.risk_after),
        "turnover": _finite(e.turnover),
        "optimizer_status": _text(e.optimizer_status),
        "event_id": _text(e.event_id),
    }


_PARSERS: Final[dict[Role, Callable[[Mapping[str, Any]], Any]]] = {
    "metrics": PortfolioMetrics.from_record,
    "updated_stats": PortfolioStats.from_record,
    "initial_stats": PortfolioStats.from_record,
    "weights": Weights.from_record,
    "rebalance_events": RebalanceEvent.from_record,
    "dead_letter": DeadLetter.from_record,
}


class Health:
    """Pipeline health as the dashboard sees it (callers hold the state's lock).

    * the newest event time in the metrics, and the lag of the wall clock behind it (roughly the
      pipeline's watermark lag: metrics are emitted as the job's event time advances);
    * records read, invalid (failing their message's rules or not fitting their portfolio: the
      intake's ``invalid*`` reasons) and undecodable, per topic role;
    * records not shown, per reason: the intake's (:data:`streamfolio.intake.REASONS`) for those
      it refused, :data:`IGNORED_REASONS` for those it accepted;
    * dead letters by reason (at most :data:`MAX_REASONS` of them, then ``other``), and the last
      few of them;
    * message rates per topic role from the topics' end offsets (so the prices topic is measured
      without being read), and the dashboard's own read rate, over a sliding window.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.time, window_s: float = 10.0, recent: int = 8
    ) -> None:
        self._clock = clock
        self._window_s = window_s
        self.status = "starting"
        self.error: str | None = None
        self.read: Counter[str] = Counter()
        self.invalid: Counter[str] = Counter()
        self.undecodable: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.recent_dead_letters: deque[Json] = deque(maxlen=recent)
        self.last_event_time: int | None = None
        self.last_record_at: float | None = None
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def count(
        self, role: str, *, invalid: bool = False, undecodable: bool = False, now: float | None
    ) -> None:
        self.read[role] += 1
        if invalid:
            self.invalid[role] += 1
        if undecodable:
            self.undecodable[role] += 1
        self.last_record_at = self._clock() if now is None else now

    def event_time(self, timestamp_ms: int) -> None:
        if self.last_event_time is None or timestamp_ms > self.last_event_time:
            self.last_event_time = timestamp_ms

    def dead_letter(self, d: DeadLetter) -> None:
        reason = _text(d.reason, 64)
        if reason not in self.dead_letters and len(self.dead_letters) >= MAX_REASONS:
            reason = "other"
        self.dead_letters[reason] += 1
        self.recent_dead_letters.append(
            {
                "t": d.timestamp,
                "reason": reason,
                "detail": _text(d.detail),
                "source_topic": _text(d.source_topic),
                "component": _text(d.component),
            }
        )

    def set_status(self, status: str, *, error: str | None = None) -> None:
        self.status, self.error = status, error

    def end_offsets(self, totals: Mapping[str, int], *, now: float | None) -> None:
        at = self._clock() if now is None else now
        for role, total in {**totals, "read": sum(self.read.values())}.items():
            samples = self._samples.get(role)
            if samples is None:
                if len(self._samples) >= _MAX_RATE_KEYS:
                    continue
                samples = self._samples[role] = deque(maxlen=_MAX_RATE_SAMPLES)
            samples.append((at, total))
            while len(samples) > 2 and at - samples[1][0] >= self._window_s:
                samples.popleft()

    def rates(self) -> dict[str, float]:
        """Messages per second per role over the window (roles with two samples or more)."""
        out: dict[str, float] = {}
        for role, samples in self._samples.items():
            (t0, n0), (t1, n1) = samples[0], samples[-1]
            if t1 > t0:
                out[role] = max(0.0, (n1 - n0) / (t1 - t0))
        return out

    def report(self, *, now: float | None) -> Json:
        at = self._clock() if now is None else now
        lag = None if self.last_event_time is None else int(at * 1000) - self.last_event_time
        idle = None if self.last_record_at is None else max(0.0, at - self.last_record_at)
        return {
            "now": int(at * 1000),
            "status": self.status,
            "error": self.error,
            "last_event_time": self.last_event_time,
            "lag_ms": lag,
            "idle_s": idle,
            "read": dict(self.read),
            "invalid": dict(self.invalid),
            "undecodable": dict(self.undecodable),
            "ignored": dict(self.ignored),
            "dead_letters": dict(self.dead_letters.most_common()),
            "dead_letter_total": sum(self.dead_letters.values()),
            "recent_dead_letters": list(reversed(self.recent_dead_letters)),
            "rates": self.rates(),
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
        self._views: dict[str, _View] = {p.id: _View(p, self.limits) for p in portfolios}

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

    def _payload(self, view: _View, since: int, *, reset: bool) -> Json:
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
