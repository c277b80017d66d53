"""Heartbeats: a feed's promise, on every partition of the prices topic, that nothing older follows.

A heartbeat with time T on a partition says that no tick with an event time older than T will
follow on that partition (SEMANTICS.md §4). The streaming job's watermark is a function of the
data only, so without heartbeats a partition that carries no ticks (a ticker that does not
trade, the market closed at night) would hold every bar back.

:class:`Heartbeats` sends one heartbeat per partition every ``interval_ms`` of wall-clock time
from a background thread, whatever the feed's own thread is doing (sleeping until the exchange
opens, waiting on a slow HTTP request, pacing a replay). Its T comes from two places:

* **the data**: after each tick it produces, the feed calls :meth:`Heartbeats.advance` with a
  lower bound on the event time of every tick it may still produce (the simulator's next tick
  minus its disorder, a replay's smallest remaining event time, one past the last at its end);
* **a clock**, for a live source that cannot know its future (``clock_floor``, called on the
  heartbeat thread: :func:`wall_clock_floor`, the wall clock minus ``feed.heartbeat_lag_ms``,
  for the CSE poller and for ``--source heartbeats``).

T is the greater of the two and of the last T sent, so it never decreases. Heartbeats and ticks
go through one producer: a heartbeat produced after a tick stays after it on its partition
(idempotence keeps the order through retries), and as :meth:`~Heartbeats.advance` is only
called once a tick's produce call has returned, no heartbeat overtakes a tick it must follow.

``feed.heartbeat_ms: 0`` turns them off. A producer without heartbeats of its own (the
reference's BourseData producer) runs next to ``streamfolio feed --source heartbeats``
(:mod:`streamfolio.feeds.heartbeat_feed`), which sends only heartbeats, from the clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final, Protocol

from streamfolio.errors import SchemaError
from streamfolio.messages import Heartbeat
from streamfolio.observability.metrics import FEED_HEARTBEATS
from streamfolio.serde import encode_heartbeat

__all__ = ["HeartbeatSink", "Heartbeats", "wall_clock_floor"]

log = logging.getLogger(__name__)

_REFRESH_PARTITIONS_S: Final = 30.0


def wall_clock_floor(lag_ms: int, clock: Callable[[], float] = time.time) -> Callable[[], int]:
    """A ``clock_floor`` for a live source: ``clock()`` (seconds) in milliseconds minus ``lag_ms``.

    A clock stepped back (NTP) gives a lower value; :class:`Heartbeats` then keeps its last T.

    >>> floor = wall_clock_floor(60_000, clock=lambda: 1_750_000_000.5)
    >>> floor()
    1749999940500
    """

    def floor() -> int:
        return int(clock() * 1000) - lag_ms

    return floor


class RawSink(Protocol):
    """What bytes are produced through (:class:`~streamfolio.kafka.clients.RecordProducer`)."""

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> None: ...


class HeartbeatSink(RawSink, Protocol):
    """What heartbeats are produced through: a :class:`RawSink` that knows partition counts."""

    def partition_count(self, topic: str, timeout: float = 10.0) -> int: ...


class Heartbeats:
    """Sends a heartbeat on every partition of ``topic`` every ``interval_ms``, in a thread.

    Parameters
    ----------
    sink
        The producer; the same one the ticks go through, so that they stay in order.
    topic
        The prices topic's name. Its partition count is read from the producer's metadata at
        :meth:`start` and every 30 s (a topic given more partitions gets heartbeats on them).
    interval_ms
        Wall-clock time between two rounds (> 0; ``feed.heartbeat_ms``).
    source
        The heartbeats' ``source`` field (``sim``, ``replay``, ``cse``...).
    clock_floor
        For live sources: T from a clock, called on the heartbeat thread (thread-safe);
        None when only the data moves T.
    metadata_timeout_s
        How long a partition-count lookup may wait for the broker.
    """

    def __init__(
        self,
        sink: HeartbeatSink,
        topic: str,
        *,
        interval_ms: int,
        source: str = "unknown",
        clock_floor: Callable[[], int | None] | None = None,
        metadata_timeout_s: float = 5.0,
    ) -> None:
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be > 0, got {interval_ms}")
        self._sink = sink
        self.topic = topic
        self.interval_s = interval_ms / 1000.0
        self.source = source
        self._clock_floor = clock_floor
        self._metadata_timeout_s = metadata_timeout_s
        # Each of these has one writer (the feed's thread, the heartbeat thread), so plain
        # attribute stores are enough: no lock on the tick path.
        self._data_floor: int | None = None
        self._promised: int | None = None
        self.partitions = 0
        self._partitions_read_at: float | None = None
        self.sent = 0
        self.rounds = 0
        self._failures: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the feed's side ---------------------------------------------------------------------

    def advance(self, time_ms: int | None) -> None:
        """Raise T to ``time_ms``: no tick produced from now on has an older event time.

        Call it only from the feed's thread, after the produce call of the last tick returned.
        A lower value than before (or None) changes nothing.
        """
        if time_ms is not None and (self._data_floor is None or time_ms > self._data_floor):
            self._data_floor = time_ms

    @property
    def promised(self) -> int | None:
        """The T of the last heartbeat sent (None before the first): ticks older than this
        that are produced now break the promise."""
        return self._promised

    # -- sending -----------------------------------------------------------------------------

    def _floor(self) -> int | None:
        floor = self._data_floor
        if self._clock_floor is not None:
            clock = self._clock_floor()
            if clock is not None and (floor is None or clock > floor):
                floor = clock
        promised = self._promised
        if floor is None or (promised is not None and floor < promised):
            return promised  # T never decreases
        return floor

    def _refresh_partitions(self) -> None:
        now = time.monotonic()
        last = self._partitions_read_at
        if self.partitions and last is not None and now - last < _REFRESH_PARTITIONS_S:
            return
        self._partitions_read_at = now
        try:
            count = self._sink.partition_count(self.topic, self._metadata_timeout_s)
        except Exception as exc:  # the broker away: keep the count we had, try again later
            self._failed("metadata", f"cannot read the partitions of {self.topic}: {exc}")
            return
        if count != self.partitions:
            if count == 0:
                self._failed("no-topic", f"topic {self.topic} has no partitions (yet)")
            else:
                log.info("heartbeats on %d partition(s) of %s", count, self.topic)
            self.partitions = max(count, self.partitions)  # partitions are never removed

    def beat(self, *, refresh: bool = True) -> int:
        """Send one heartbeat on every partition now; returns how many (0 while T is unknown).

        The heartbeat thread calls this every interval; :meth:`stop` calls it a last time.
        ``refresh`` False sends on the partitions already known, without asking the broker.
        """
        return self._round(refresh=refresh, final=True)

    def _round(self, *, refresh: bool, final: bool) -> int:
        floor = self._floor()
        if floor is None:
            return 0
        try:
            heartbeat = Heartbeat(floor, self.source)
        except SchemaError as exc:  # a clock before 1970 or a bound past 9999: nothing to say
            self._failed("time", f"no heartbeat: {exc}")
            return 0
        if refresh:
            self._refresh_partitions()
        if not self.partitions or (self._stop.is_set() and not final):
            # The thread back from a metadata lookup that outlasted stop(): the feed is past
            # its last round, so nothing more.
            return 0
        value = encode_heartbeat(heartbeat)
        for partition in range(self.partitions):
            self._sink.send_raw(self.topic, None, value, timestamp_ms=floor, partition=partition)
        self._promised = floor
        self.sent += self.partitions
        FEED_HEARTBEATS.inc(self.partitions)
        self.rounds += 1
        return self.partitions

    def _failed(self, kind: str, message: str) -> None:
        # Logged once per kind: a broker that is away for an hour must not flood the log.
        if kind not in self._failures:
            self._failures.add(kind)
            log.warning("%s; heartbeats carry on with what they know", message)

    # -- the thread --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the heartbeat thread, which reads the partition count (this waits for that)
        and sends its first round at once."""
        if self._thread is not None:
            return
        self._stop.clear()
        counted = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(counted,), name="heartbeats", daemon=True
        )
        self._thread.start()
        # The lookup waits for the broker in C, where no signal gets through; a wait on an
        # event does not keep Ctrl-C or SIGTERM out.
        counted.wait()

    def _run(self, counted: threading.Event) -> None:
        try:
            self._refresh_partitions()
        finally:
            counted.set()
        due = time.monotonic()
        while True:
            try:
                self._round(refresh=True, final=False)
            except Exception as exc:  # never let the thread die silently
                self._failed(type(exc).__name__, f"heartbeat round failed: {exc!r}")
            due += self.interval_s
            now = time.monotonic()
            if due < now:
                due = now  # a late round (the queue was full): no burst to catch up
            if self._stop.wait(due - now):
                return

    def stop(self, *, final: bool = True, wait_s: float | None = None) -> None:
        """Stop the thread; with ``final``, send a last round with the latest T.

        Call :meth:`advance` with the feed's last bound first (one past its last tick when a
        finite source is exhausted), so that the last bars can close. ``wait_s`` (a stop
        request, which must be prompt) bounds the wait for the thread, which may be waiting
        for the broker's metadata; if it is still waiting then, there is no last round, and
        the last round sends on the partitions already known rather than asking the broker.
        """
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join(wait_s)
            if thread.is_alive():
                log.warning(
                    "the heartbeat thread is still waiting for the broker after %.0f s; "
                    "no last round of heartbeats",
                    wait_s,
                )
                return
        if final:
            self.beat(refresh=wait_s is None)

    def __enter__(self) -> Heartbeats:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
