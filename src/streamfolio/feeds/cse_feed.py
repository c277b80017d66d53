"""``streamfolio feed --source cse``: the exchange's live board, polled during its sessions."""

from __future__ import annotations

from collections.abc import Iterator

from streamfolio.config import Settings
from streamfolio.feeds.cse.board import Reject
from streamfolio.feeds.cse.client import CseClient
from streamfolio.feeds.cse.poller import CsePoller
from streamfolio.feeds.options import FeedOptions, Progress
from streamfolio.feeds.publish import TickPublisher


def cse_ticks(
    settings: Settings,
    options: FeedOptions,
    publisher: TickPublisher,
    progress: Progress,
    *,
    client: CseClient | None = None,
    max_polls: int | None = None,
) -> Iterator[tuple[int, str, float]]:
    """Ticks of the configured tickers; rejected rows go straight to the dead-letter topic.

    ``client`` and ``max_polls`` are for tests (recorded responses, a bounded run).
    """
    tickers = sorted({t for p in settings.portfolios for t in p.tickers})
    calendar = settings.exchange.calendar()
    client = client or CseClient(calendar=calendar)
    poller = CsePoller(
        client,
        tickers=tickers,
        interval_s=options.interval_s,
        calendar=calendar,
        market_hours_only=not options.all_hours,
        max_polls=max_polls,
    )
    progress(
        f"polling the CSE live board every {options.interval_s:g} s for {len(tickers)} tickers"
        + ("" if options.all_hours else " during trading sessions")
    )
    with client:
        for item in poller:
            if isinstance(item, Reject):
                publisher.reject(item.reason, item.detail, item.payload)
                continue
            yield item.event_time, item.ticker, item.price
