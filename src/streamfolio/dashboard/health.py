"""Pipeline health as the dashboard sees it: counters, the event-time lag, dead letters, rates.

:class:`Health` is kept by :class:`~streamfolio.dashboard.state.DashboardState` (under its lock)
and reported by ``GET /api/health`` and the event stream. Every counter is bounded: reasons
beyond :data:`~streamfolio.dashboard.bounds.MAX_REASONS` are counted as ``other``, and rates are
kept for a few topic roles over a sliding window.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Final

from streamfolio.dashboard.bounds import MAX_REASONS, Json, clip_text
from streamfolio.messages import DeadLetter

__all__ = ["Health"]

_MAX_RATE_KEYS: Final = 16
_MAX_RATE_SAMPLES: Final = 1024


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
        reason = clip_text(d.reason, 64)
        if reason not in self.dead_letters and len(self.dead_letters) >= MAX_REASONS:
            reason = "other"
        self.dead_letters[reason] += 1
        self.recent_dead_letters.append(
            {
                "t": d.timestamp,
                "reason": reason,
                "detail": clip_text(d.detail),
                "source_topic": clip_text(d.source_topic),
                "component": clip_text(d.component),
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
