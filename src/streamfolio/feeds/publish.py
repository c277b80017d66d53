"""Publishing price ticks to Kafka: validation, dead letters, pacing, progress.

Every feed (``sim``, ``replay``, ``cse``) hands its ticks to :class:`TickPublisher`, which checks
each one (known ticker, positive finite price), encodes it in the project's ``PriceTick`` schema
or the reference's ``BourseData`` schema, and produces it keyed by ticker with the Kafka record
timestamp set to the tick's event time (the streaming job's watermarks come from it). What fails
a check goes to the dead-letter topic with its reason; the feed keeps going.
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
from streamfolio.kafka.clients import DeadLetters, RecordProducer
from streamfolio.kafka.topics import TopicContract
from streamfolio.messages import PriceTick, bourse_from_price_tick
from streamfolio.serde import codec_for

log = logging.getLogger(__name__)

PriceFormat = Literal["tick", "bourse"]


@dataclass(slots=True)
class FeedStats:
    """Counters a feed reports while it runs and when it stops."""

    published: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

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
    ) -> None:
        self._producer = producer
        self._prices = prices
        self._dead = dead_letters
        self._known = None if known_tickers is None else frozenset(known_tickers)
        self._format: PriceFormat = price_format
        self._codec = codec_for("BourseData" if price_format == "bourse" else "PriceTick")
        self._source = source
        self.stats = FeedStats()

    def reject(self, reason: str, detail: str, payload: bytes) -> None:
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
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
        return True

    def run(
        self,
        ticks: Iterable[tuple[int, str, float]],
        *,
        rate: float | None = None,
        max_ticks: int | None = None,
        duration_s: float | None = None,
        progress: Callable[[str], None] | None = None,
        progress_every_s: float = 5.0,
    ) -> FeedStats:
        """Publish ``ticks``, at most ``rate`` a second (None: as fast as possible)."""
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
            if progress is not None and now >= next_report:
                progress(self.stats.line())
                next_report = now + progress_every_s
        return self.stats


def _raw(event_time_ms: int, ticker: str, price: float) -> bytes:
    # What the feed had before encoding: kept so a dead letter loses nothing.
    return json.dumps(
        {"event_time": event_time_ms, "ticker": ticker, "price": repr(price)}
    ).encode()
