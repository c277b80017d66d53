"""What the dashboard knows: bounded per-portfolio histories folded from the pipeline's topics.

:class:`DashboardState` is fed decoded records by the consumer thread
(:meth:`~DashboardState.apply`) and read by the web server (:meth:`~DashboardState.snapshot`,
:meth:`~DashboardState.delta`, :meth:`~DashboardState.summaries`,
:meth:`~DashboardState.health_report`); one lock guards both sides.
It does no IO, takes the wall clock as a parameter and returns plain JSON-ready dicts, so it is
tested without Kafka or a web server.

Every change gets a sequence number from one counter. A browser keeps the number of the last
change it has seen and asks for what is newer (:meth:`~DashboardState.delta`): that keeps the push
channel small however many portfolios there are, and coalesces bursts. Histories are bounded
(:class:`Limits`); a client trims its copy to the same bounds, so dropping old points never needs
a resend. Only a rewind (a record older than the newest one shown, e.g. after the job reprocessed
its input) makes the next delta a full ``reset``.

>>> state = DashboardState.from_settings(load_config(example_config_path(), environ={}))
>>> state.apply("metrics", {"portfolioId": "banks", "risk": 0.2, "expectedReturn": 0.1,
...                         "sharpRatio": 0.4, "timestamp": 1_000}, now=2.0)
True
>>> [(s["id"], s["sharpe"], s["status"]) for s in state.summaries()]
[('portf1', None, 'none'), ('banks', 0.4, 'above')]
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
from streamfolio.messages import (
    DeadLetter,
    PortfolioMetrics,
    PortfolioStats,
    RebalanceEvent,
    Weights,
)

__all__ = [
    "ROLES",
    "DashboardState",
    "Health",
    "Limits",
    "PortfolioInfo",
    "Role",
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
    event: RebalanceEvent


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
        self.reset_seq = 0  # newest change a delta cannot express
        self._corr: tuple[int, Json | None] = (-1, None)

    @property
    def threshold(self) -> float | None:
        return self.info.threshold if self.info.threshold is not None else self.record_threshold

    def add_metrics(self, m: PortfolioMetrics, seq: int) -> None:
        if self.metrics and m.timestamp <= self.metrics[-1].t:
            self._rewind(self.metrics, m.timestamp, seq)
        if m.sharpe_threshold is not None:
            self.record_threshold = m.sharpe_threshold
        self.metrics.append(
            _Metric(seq, m.timestamp, m.sharpe_ratio, m.expected_return, m.risk, m.count)
        )
        self.last_seq = seq

    def add_weights(self, w: Weights, seq: int) -> None:
        if self.weights and w.timestamp < self.weights[-1].t:
            self._rewind(self.weights, w.timestamp, seq)
        self.weights.append(_Weights(seq, w.timestamp, dict(w.weights), w.reason, w.source))
        self.last_seq = seq

    def add_event(self, e: RebalanceEvent, seq: int) -> None:
        # Replays of the rebalancer publish the same deterministic ids again: show each once.
        if e.event_id and any(old.event.event_id == e.event_id for old in self.events):
            return
        self.events.append(_Event(seq, e.timestamp, e))
        self.last_seq = seq

    def add_stats(self, s: PortfolioStats, seq: int) -> None:
        # Initial statistics (the prior) only stand in until the job's first update.
        if self.stats is not None and s.kind == "initial" and self.stats.kind == "updated":
            return
        if self.stats is not None and s.timestamp < self.stats.timestamp and s.kind == "updated":
            return
        self.stats, self.stats_seq, self.last_seq = s, seq, seq

    def _rewind(self, series: deque[Any], t: int, seq: int) -> None:
        while series and series[-1].t >= t:
            series.pop()
        self.reset_seq = seq

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
            "events": [_event_json(e.event) for e in self.events if e.seq > since],
            "correlation": self.correlation() if self.stats_seq > since else None,
        }


def _event_json(e: RebalanceEvent) -> Json:
    return {
        "t": e.timestamp,
        "decision": e.decision,
        "reason": e.reason,
        "sharpe_before": _finite(e.sharpe_before),
        "sharpe_after": _finite(e.sharpe_after),
        "expected_return_after": _finite(e.expected_return_after),
        "risk_after": _finite(e.risk_after),
        "turnover": _finite(e.turnover),
        "optimizer_status": e.optimizer_status,
        "event_id": e.event_id,
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
    * records read, invalid (decoded but failing validation) and undecodable, per topic role;
    * dead letters by reason, and the last few of them;
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
        self.dead_letters[d.reason] += 1
        self.recent_dead_letters.append(
            {
                "t": d.timestamp,
                "reason": d.reason,
                "detail": d.detail[:200],
                "source_topic": d.source_topic,
                "component": d.component,
            }
        )

    def set_status(self, status: str, *, error: str | None = None) -> None:
        self.status, self.error = status, error

    def end_offsets(self, totals: Mapping[str, int], *, now: float | None) -> None:
        at = self._clock() if now is None else now
        for role, total in {**totals, "read": sum(self.read.values())}.items():
            samples = self._samples.setdefault(role, deque())
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
            "dead_letters": dict(self.dead_letters.most_common()),
            "dead_letter_total": sum(self.dead_letters.values()),
            "recent_dead_letters": list(reversed(self.recent_dead_letters)),
            "rates": self.rates(),
        }


class DashboardState:
    """Per-portfolio histories and pipeline health, safe to share between threads.

    ``portfolios`` are the configured ones, listed first and in their order; portfolios met only
    in the topics are added as they appear.
    """

    def __init__(
        self,
        portfolios: Iterable[PortfolioInfo] = (),
        *,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits or Limits()
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
        clock: Callable[[], float] = time.time,
    ) -> DashboardState:
        infos = [
            PortfolioInfo(p.id, p.tickers, p.owner, p.policy.sharpe_threshold, p.policy.band)
            for p in settings.portfolios
        ]
        return cls(infos, limits=limits, clock=clock)

    # ------------------------------------------------------------------------------ writing

    def apply(self, role: Role, record: Mapping[str, Any], *, now: float | None = None) -> bool:
        """Fold one decoded record in; False (and counted as invalid) if it does not validate."""
        try:
            message = _PARSERS[role](record)
        except (SchemaError, KeyError, TypeError, ValueError):
            with self._lock:
                self.health.count(role, invalid=True, now=now)
            return False
        with self._lock:
            self.health.count(role, now=now)
            self._fold(role, message)
        return True

    def undecodable(self, role: Role, *, now: float | None = None) -> None:
        """Count a message of ``role``'s topic that did not decode with its schema."""
        with self._lock:
            self.health.count(role, undecodable=True, now=now)

    def _fold(self, role: Role, message: Any) -> None:
        if isinstance(message, DeadLetter):
            self.health.dead_letter(message)
            return
        self._seq += 1
        if isinstance(message, PortfolioMetrics):
            self._view(message.portfolio_id).add_metrics(message, self._seq)
            self.health.event_time(message.timestamp)
        elif isinstance(message, PortfolioStats):
            self._view(message.portfolio_id).add_stats(message, self._seq)
        elif isinstance(message, Weights):
            self._view(message.portfolio_id).add_weights(message, self._seq)
        elif isinstance(message, RebalanceEvent):
            self._view(message.portfolio_id).add_event(message, self._seq)

    def _view(self, portfolio_id: str) -> _View:
        view = self._views.get(portfolio_id)
        if view is None:
            view = self._views[portfolio_id] = _View(PortfolioInfo(portfolio_id), self.limits)
        return view

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

    def snapshot(self, portfolio_id: str) -> Json | None:
        """Everything kept for one portfolio, or None if it is unknown."""
        with self._lock:
            view = self._views.get(portfolio_id)
            if view is None:
                return None
            return self._payload(view, -1, reset=True)

    def delta(self, portfolio_id: str, since: int) -> Json | None:
        """What changed in one portfolio after change ``since``; None if nothing did.

        A ``reset`` delta (a full snapshot) is returned when the changes cannot be appended to
        what the client has, or when ``since`` is not a cursor of this state.
        """
        with self._lock:
            view = self._views.get(portfolio_id)
            if view is None or (view.last_seq <= since <= self._seq):
                return None
            if since < view.reset_seq or since > self._seq:
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


def _haystack(summary: Json) -> str:
    return " ".join([summary["id"], summary["owner"] or "", *summary["tickers"]]).lower()
