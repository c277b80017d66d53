"""``streamfolio feed --source heartbeats``: heartbeats for a prices topic another producer writes.

The streaming job's watermarks come from the data only (SEMANTICS.md §4): every partition of
the prices topic needs ticks or heartbeats, or the job's watermark stops and no bar closes. The
reference project's BourseData producer, like any third-party producer, sends no heartbeats.
The compatibility mode for such a producer is to run this feed next to it: it publishes no
ticks, only a heartbeat on every partition of the prices topic every ``feed.heartbeat_ms``,
with T = the wall clock minus ``feed.heartbeat_lag_ms`` (``--lag-ms``), never decreasing. The
clock rule is the CSE poller's (:func:`~streamfolio.feeds.heartbeat.wall_clock_floor` as the
``clock_floor`` of :class:`~streamfolio.feeds.heartbeat.Heartbeats`).

Its limits:

* **Late ticks.** A tick that reaches the topic more than ``heartbeat_lag_ms`` + the job's
  ``flink.max_out_of_orderness_ms`` after its trade time finds its partition's watermark past
  its event time, and is dead-lettered ``late`` when its bar has ended by then (always, once it
  is that late after its bar's end). A tick that arrives sooner is never late because of these
  heartbeats. Choose the lag above the producer's worst delay.
* **Bars close later.** A bar of a quiet partition closes ``heartbeat_lag_ms`` + the bound
  (plus up to one ``heartbeat_ms``) after its end in real time.
* **Live quotes only.** It assumes the producer's event times follow the wall clock, this
  machine's clock agreeing with the trade times to well within the lag (NTP). It cannot be
  used to replay history: older event times would all be late. Replay a tick file with
  ``streamfolio feed --source replay``, which sends its own heartbeats from the data.

While it is stopped the quiet partitions hold the bars back (nothing is lost; they close once
it runs again). Heartbeats from two instances, or next to a feed's own, are harmless.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamfolio.config import Settings
from streamfolio.errors import ConfigError, UsageError
from streamfolio.feeds.heartbeat import Heartbeats, HeartbeatSink, wall_clock_floor
from streamfolio.feeds.publish import HEARTBEAT_STOP_S, FeedStats
from streamfolio.kafka.topics import contract

__all__ = ["SOURCE", "HeartbeatFeed", "HeartbeatFeedStats"]

SOURCE = "heartbeats"
"""The ``source`` field of the heartbeats this feed sends."""


def _iso(time_ms: int) -> str:
    when = dt.datetime.fromtimestamp(time_ms / 1000, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class HeartbeatFeedStats(FeedStats):
    """What ``--source heartbeats`` reports: rounds, heartbeats, partitions and the last T."""

    rounds: int = 0
    partitions: int = 0
    promised: int | None = None
    lag_ms: int = 0

    def line(self) -> str:
        text = (
            f"{self.rounds} heartbeat rounds sent "
            f"({self.heartbeats} heartbeats on {self.partitions} partition(s))"
        )
        if self.promised is not None:
            text += f", last T {_iso(self.promised)} (wall clock - {self.lag_ms} ms)"
        return text + self.kept()


class HeartbeatFeed:
    """Heartbeats only, from the wall clock, until :meth:`stop`, a duration, or Ctrl-C.

    Parameters
    ----------
    settings
        ``feed.heartbeat_ms`` (> 0) is the interval, ``topics.prices`` the topic.
    lag_ms
        T = ``clock()`` minus this (None: ``feed.heartbeat_lag_ms``).
    clock
        Wall-clock seconds since the epoch; tests pass their own.
    progress_every_s
        Seconds between two progress lines.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        lag_ms: int | None = None,
        clock: Callable[[], float] = time.time,
        progress_every_s: float = 5.0,
    ) -> None:
        if settings.feed.heartbeat_ms <= 0:
            raise ConfigError(
                "feed.heartbeat_ms",
                f"--source heartbeats needs it > 0 (it is {settings.feed.heartbeat_ms}): the "
                "interval between heartbeat rounds",
                "set it to a positive number of milliseconds",
            )
        self.lag_ms = settings.feed.heartbeat_lag_ms if lag_ms is None else lag_ms
        if self.lag_ms < 0:
            problem = f"the heartbeat lag must be >= 0 ms, got {self.lag_ms}"
            if lag_ms is None:
                raise ConfigError("feed.heartbeat_lag_ms", problem)
            raise UsageError(f"--lag-ms: {problem}")
        self.interval_ms = settings.feed.heartbeat_ms
        self.topic = contract(settings, "prices").name
        self.bootstrap = settings.kafka.bootstrap_servers
        self._clock = clock
        self._progress_every_s = progress_every_s
        self._stop = threading.Event()
        self.stats = HeartbeatFeedStats(lag_ms=self.lag_ms)
        self.interrupted = False
        """Whether :meth:`run` ended on Ctrl-C (or SIGTERM): its caller then waits for the
        broker no longer than a stop request allows."""

    def stop(self) -> None:
        """Ask :meth:`run` to send its last round and return (from any thread)."""
        self._stop.set()

    def run(
        self,
        sink: HeartbeatSink,
        progress: Callable[[str], None],
        *,
        duration_s: float | None = None,
    ) -> HeartbeatFeedStats:
        """Send heartbeats until :meth:`stop`, ``duration_s`` or Ctrl-C; then a last round.

        The caller flushes ``sink`` afterwards.
        """
        beats = Heartbeats(
            sink,
            self.topic,
            interval_ms=self.interval_ms,
            source=SOURCE,
            clock_floor=wall_clock_floor(self.lag_ms, self._clock),
        )
        progress(
            f"feed heartbeats: no ticks, a heartbeat on every partition of {self.topic} at "
            f"{self.bootstrap} every {self.interval_ms} ms, T = wall clock - {self.lag_ms} ms; "
            "Ctrl-C to stop"
        )
        started = time.monotonic()
        try:
            beats.start()
            if not beats.partitions:
                progress(f"no partitions of {self.topic} yet: heartbeats start once it has some")
            self._wait(beats, progress, started, duration_s)
        except KeyboardInterrupt:
            self.interrupted = True
            progress(
                "stopping: a last round of heartbeats (what the broker has not acknowledged "
                "within 2 s is kept for the next run)"
            )
        finally:
            beats.stop(wait_s=HEARTBEAT_STOP_S if self.interrupted else None)
            self._count(beats)
        return self.stats

    def _wait(
        self,
        beats: Heartbeats,
        progress: Callable[[str], None],
        started: float,
        duration_s: float | None,
    ) -> None:
        # The heartbeat thread does the sending; this thread reports and waits to be stopped.
        next_report = started + self._progress_every_s
        end = None if duration_s is None else started + duration_s
        while True:
            now = time.monotonic()
            if end is not None and now >= end:
                return
            wake = next_report if end is None else min(next_report, end)
            if self._stop.wait(max(wake - now, 0.0)):
                return
            now = time.monotonic()
            if now >= next_report:
                progress(self._count(beats).line())
                next_report = now + self._progress_every_s

    def _count(self, beats: Heartbeats) -> HeartbeatFeedStats:
        stats = self.stats
        stats.rounds = beats.rounds
        stats.heartbeats = beats.sent
        stats.partitions = beats.partitions
        stats.promised = beats.promised
        return stats
