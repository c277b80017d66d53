"""Publishing price ticks to Kafka: validation, dead letters, pacing, progress.

Every feed (``sim``, ``replay``, ``cse``) hands its ticks to :class:`TickPublisher`, which checks
each one (known ticker, positive finite price), encodes it in the project's ``PriceTick`` schema
or the reference's ``BourseData`` schema, and produces it keyed by ticker with the Kafka record
timestamp set to the tick's event time (the streaming job's watermarks come from it). What fails
a check goes to the dead-letter topic with its reason; the feed keeps going.

With :class:`~streamfolio.feeds.heartbeat.Heartbeats`, :meth:`TickPublisher.run` also keeps a
heartbeat going on every partition of the prices topic, its time T raised after each tick to the
source's ``horizon`` (a lower bound on the event times still to come), and sends a last round
when the ticks end.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Literal

from streamfolio.errors import SchemaError
from streamfolio.feeds.heartbeat import Heartbeats
from streamfolio.kafka.clients import DeadLetters, RecordProducer
from streamfolio.kafka.topics import TopicContract
from streamfolio.messages import PriceTick, bourse_from_price_tick
from streamfolio.observability.metrics import FEED_REJECTS, FEED_TICKS
from streamfolio.serde import codec_for

log = logging.getLogger(__name__)

PriceFormat = Literal["tick", "bourse"]
HEARTBEAT_STOP_S = 1.0
"""On a stop request, how long the heartbeat thread may take to end before the last round."""
Horizon = Callable[[], int | None]
"""A lower bound on the event time of every tick a source has not yielded yet (None: unknown)."""


@dataclass(slots=True)
class FeedStats:
    """Counters a feed reports while it runs and when it stops."""

    published: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    heartbeats: int = 0
    behind_heartbeat: int = 0
    """Ticks published with an event time older than a heartbeat already sent (the CSE's late
    reports): the job judges them, most likely late."""
    republished: int = 0
    """Messages the last run kept on disk, published before anything new."""
    spooled: int = 0
    """Messages (ticks, heartbeats, dead letters) the broker had not acknowledged when the feed
    was asked to stop, kept on disk for the next run (:mod:`streamfolio.feeds.spool`)."""

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.published / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rejected = sum(self.rejected.values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items()))
        text = f"{self.published} ticks published ({self.rate:,.0f}/s)"
        if rejected:
            text += f", {rejected} dead-lettered ({reasons})"
        if self.heartbeats:
            text += f", {self.heartbeats} heartbeats"
        if self.behind_heartbeat:
            text += f", {self.behind_heartbeat} ticks older than a heartbeat sent before them"
        return text + self.kept()

    def kept(self) -> str:
        """What the spool did, for the end of :meth:`line` ('' when nothing).

        >>> FeedStats(republished=3, spooled=5).kept()
        ', 3 kept from the last run republished, 5 unacknowledged kept for the next run'
        """
        text = ""
        if self.republished:
            text += f", {self.republished} kept from the last run republished"
        if self.spooled:
            text += f", {self.spooled} unacknowledged kept for the next run"
        return text


class TickPublisher:
    """Validates, encodes and produces ticks; dead-letters what does not pass."""

    def __init__(
        self,
        producer: RecordProducer,
        prices: TopicContract,
        dead_letters: DeadLetters,
        *,
        known_tickers: Collection[str] | None = None,
        price_format: PriceFormat = "tick",
        source: str = "unknown",
        heartbeats: Heartbeats | None = None,
    ) -> None:
        self._producer = producer
        self._prices = prices
        self._dead = dead_letters
        self._known = None if known_tickers is None else frozenset(known_tickers)
        self._format: PriceFormat = price_format
        self._codec = codec_for("BourseData" if price_format == "bourse" else "PriceTick")
        self._source = source
        self.heartbeats = heartbeats
        self.stats = FeedStats()

    def reject(self, reason: str, detail: str, payload: bytes) -> None:
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
        FEED_REJECTS.labels(reason).inc()
        self._dead.send(reason, detail, payload, source_topic=self._prices.name)

    def publish(
        self, event_time_ms: int, ticker: str, price: float, volume: float | None = None
    ) -> bool:
        """Produce one tick; returns False when it was dead-lettered instead."""
        if self._known is not None and ticker not in self._known:
            self.reject(
                "unknown_ticker",
                f"ticker {ticker!r} is in no configured portfolio",
                _raw(event_time_ms, ticker, price),
            )
            return False
        if not (math.isfinite(price) and price > 0):
            self.reject(
                "invalid_price",
                f"price {price!r} of {ticker} is not a positive number",
                _raw(event_time_ms, ticker, price),
            )
            return False
        tick = {
            "ticker": ticker,
            "price": float(price),
            "event_time": int(event_time_ms),
            "volume": None if volume is None or not math.isfinite(volume) else float(volume),
            "source": self._source,
            "sequence": None,
        }
        try:
            if self._format == "bourse":
                value = self._codec.encode(bourse_from_price_tick(PriceTick.from_record(tick)))
            else:
                value = self._codec.encode(tick)
        except SchemaError as error:
            self.reject("schema", str(error), _raw(event_time_ms, ticker, price))
            return False
        self._producer.send_raw(
            self._prices.name, ticker.encode(), value, timestamp_ms=event_time_ms
        )
        self.stats.published += 1
        FEED_TICKS.inc()
        if self.heartbeats is not None:
            promised = self.heartbeats.promised
            if promised is not None and event_time_ms < promised:
                self._behind(event_time_ms, ticker, promised)
        return True

    def _behind(self, event_time_ms: int, ticker: str, promised: int) -> None:
        # Published all the same: the job decides whether its bar is still open; dropping it
        # here would lose a tick silently.
        if not self.stats.behind_heartbeat:
            log.warning(
                "%s tick at %d published after a heartbeat promised nothing older than %d "
                "(the source reported it late); further ones are only counted",
                ticker,
                event_time_ms,
                promised,
            )
        self.stats.behind_heartbeat += 1

    def run(
        self,
        ticks: Iterable[tuple[int, str, float]],
        *,
        rate: float | None = None,
        max_ticks: int | None = None,
        duration_s: float | None = None,
        progress: Callable[[str], None] | None = None,
        progress_every_s: float = 5.0,
        horizon: Horizon | None = None,
    ) -> FeedStats:
        """Publish ``ticks``, at most ``rate`` a second (None: as fast as possible).

        With :attr:`heartbeats`, they run while this does, and ``horizon`` (called on this
        thread before the first tick, after each one and at the end) moves their T; without a
        ``horizon`` only their own clock does. Their last round goes out when this returns.
        """
        beats = self.heartbeats
        step = _stepper(beats, horizon)
        interrupted = False
        try:
            if step is not None:
                step()
            if beats is not None:
                beats.start()
            self._run(ticks, rate, max_ticks, duration_s, progress, progress_every_s, step)
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            if beats is not None:
                if step is not None:
                    step()  # an exhausted finite source answers one past its last tick
                # A stop request must be prompt: the thread may be waiting for the broker.
                beats.stop(wait_s=HEARTBEAT_STOP_S if interrupted else None)
                self.stats.heartbeats = beats.sent
        return self.stats

    def _run(
        self,
        ticks: Iterable[tuple[int, str, float]],
        rate: float | None,
        max_ticks: int | None,
        duration_s: float | None,
        progress: Callable[[str], None] | None,
        progress_every_s: float,
        step: Callable[[], None] | None,
    ) -> None:
        start = time.monotonic()
        next_report = start + progress_every_s
        for sent, (event_time_ms, ticker, price) in enumerate(ticks):
            if max_ticks is not None and sent >= max_ticks:
                break
            now = time.monotonic()
            if duration_s is not None and now - start >= duration_s:
                break
            if rate:
                due = start + sent / rate
                if due > now:
                    time.sleep(due - now)
            self.publish(event_time_ms, ticker, price)
            if step is not None:
                step()  # only now that the tick's produce call has returned may T pass it
            if progress is not None and now >= next_report:
                if self.heartbeats is not None:
                    self.stats.heartbeats = self.heartbeats.sent
                progress(self.stats.line())
                next_report = now + progress_every_s


def _stepper(beats: Heartbeats | None, horizon: Horizon | None) -> Callable[[], None] | None:
    """What moves the heartbeats' T from the source's horizon (None: nothing to move)."""
    if beats is None or horizon is None:
        return None
    advance = beats.advance

    def step() -> None:
        advance(horizon())

    return step


def _raw(event_time_ms: int, ticker: str, price: float) -> bytes:
    # What the feed had before encoding: kept so a dead letter loses nothing.
    return json.dumps(
        {"event_time": event_time_ms, "ticker": ticker, "price": repr(price)}
    ).encode()
