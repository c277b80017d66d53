"""The components count into their registries where the work happens: the feed's publisher,
and the dashboard's event streams (open while a browser watches)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from streamfolio.dashboard.app import event_stream
from streamfolio.feeds.publish import TickPublisher
from streamfolio.kafka.topics import TopicContract
from streamfolio.observability.metrics import registry


def _value(component: Any, name: str, **labels: str) -> float:
    return registry(component).get_sample_value(name, labels or None) or 0.0


class Sink:
    def send_raw(self, *_: Any, **__: Any) -> None:
        pass


class Letters:
    def send(self, *_: Any, **__: Any) -> None:
        pass


def test_the_publisher_counts_ticks_and_rejects_by_reason() -> None:
    prices = TopicContract("prices", "intraday-stock-prices", "PriceTick", "ticker")
    publisher = TickPublisher(Sink(), prices, Letters(), known_tickers={"ATW"})  # type: ignore[arg-type]
    ticks = _value("feed", "streamfolio_feed_ticks_published_total")
    unknown = _value("feed", "streamfolio_feed_rejects_total", reason="unknown_ticker")
    assert publisher.publish(1_750_000_000_000, "ATW", 700.0)
    assert not publisher.publish(1_750_000_000_000, "XYZ", 1.0)
    assert _value("feed", "streamfolio_feed_ticks_published_total") == ticks + 1
    assert _value("feed", "streamfolio_feed_rejects_total", reason="unknown_ticker") == unknown + 1


class Health:
    def health_report(self) -> dict[str, Any]:
        return {}


def test_an_event_stream_is_a_client_while_it_is_open() -> None:
    async def watch() -> list[float]:
        seen = []
        stream = event_stream(
            Health(),
            None,
            0,
            closing=threading.Event(),
            interval_s=0,
            max_events=2,  # type: ignore[arg-type]
        )
        async for _ in stream:
            seen.append(_value("dashboard", "streamfolio_dashboard_clients"))
        seen.append(_value("dashboard", "streamfolio_dashboard_clients"))
        return seen

    before = _value("dashboard", "streamfolio_dashboard_clients")
    seen = asyncio.run(watch())
    assert seen[0] == before + 1 and seen[-1] == before
