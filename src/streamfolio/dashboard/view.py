"""One portfolio as the dashboard shows it: bounded histories, and the JSON sent to a browser.

A :class:`PortfolioView` keeps one configured portfolio's metrics, weights and rebalance events
(bounded by :class:`~streamfolio.dashboard.bounds.Limits`) and its latest statistics, each change
tagged with the state's sequence number, so :meth:`PortfolioView.payload` can send only what is
newer than a browser's cursor. Histories only grow at their end: a record older than the newest
shown is refused as ``out_of_order``, one with too many tickers as ``too_large``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from streamfolio.dashboard.bounds import MAX_TICKERS, Ignored, Json, Limits, clip_text
from streamfolio.messages import PortfolioMetrics, PortfolioStats, RebalanceEvent, Weights

__all__ = ["PortfolioInfo", "PortfolioView", "correlation", "sharpe_status"]


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


class PortfolioView:
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
            _Weights(seq, w.timestamp, dict(w.weights), clip_text(w.reason), clip_text(w.source))
        )
        self.last_seq = seq
        return None

    def add_event(self, e: RebalanceEvent, seq: int) -> Ignored | None:
        if max(len(e.old_weights), len(e.new_weights)) > MAX_TICKERS:
            return "too_large"
        # Replays of the rebalancer publish the same deterministic ids again: show each once.
        event_id = clip_text(e.event_id)
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


def _event_json(e: RebalanceEvent) -> Json:
    return {
        "t": e.timestamp,
        "decision": clip_text(e.decision),
        "reason": clip_text(e.reason),
        "sharpe_before": _finite(e.sharpe_before),
        "sharpe_after": _finite(e.sharpe_after),
        "expected_return_after": _finite(e.expected_return_after),
        "risk_after": _finite(e.risk_after),
        "turnover": _finite(e.turnover),
        "optimizer_status": clip_text(e.optimizer_status),
        "event_id": clip_text(e.event_id),
    }
