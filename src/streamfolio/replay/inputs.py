"""Feeding the replay from files and topics: tick-file rows, and whole topic contents.

:func:`ticks_from_rows` adapts the rows of a tick file; :func:`replay_topic_records` replays what
the prices and control topics hold, which is what the streaming job must produce from them.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from streamfolio.intake import ControlKind
from streamfolio.replay.clock import DEFAULT_MAX_FUTURE_SKEW_MS, wall_clock_ms
from streamfolio.replay.engine import ReplayEngine
from streamfolio.replay.records import PriceRecord, ReplayEvent, ReplayPortfolio, Tick


def ticks_from_rows(
    rows: Iterable[tuple[int, str, float] | tuple[int, str, float, int]],
) -> Iterator[Tick]:
    """Adapt ``(event_time_ms, ticker, price[, partition])`` rows to :class:`Tick`.

    >>> list(ticks_from_rows([(5, "A", 1.5), (6, "B", 2, 1)]))
    [Tick(event_time_ms=5, ticker='A', price=1.5, partition=0, offset=None), \
Tick(event_time_ms=6, ticker='B', price=2.0, partition=1, offset=None)]
    """
    for row in rows:
        partition = int(row[3]) if len(row) > 3 else 0
        yield Tick(int(row[0]), row[1], float(row[2]), partition)


def replay_topic_records(
    portfolios: Sequence[ReplayPortfolio],
    prices: Mapping[int, Iterable[PriceRecord]],
    controls: Iterable[tuple[ControlKind, Mapping[str, Any]]] = (),
    *,
    definitions: Iterable[tuple[str, int, ReplayPortfolio | None]] = (),
    bar_sizes_ms: Collection[int] = (),
    max_out_of_orderness_ms: int = 0,
    max_future_skew_ms: int | None = DEFAULT_MAX_FUTURE_SKEW_MS,
    now_ms: Callable[[], int] = wall_clock_ms,
) -> list[ReplayEvent]:
    """The replay's events for the contents of the topics: what the job must produce from them.

    ``prices`` maps every partition of the prices topic (an empty one too: it holds the
    watermark back until the end) to its decoded records in offset order; a record's
    ``partition`` is set to its key. ``definitions`` (the portfolios topic: ``(portfolio_id,
    T, portfolio or None for a removal)``, :meth:`ReplayEngine.define`) and ``controls``
    (initial statistics and weights) are passed first, so each takes effect at its timestamp
    (:meth:`ReplayEngine.control`); a job that reads one only after a bar ending after its
    timestamp is final differs, by design. ``bar_sizes_ms``: the job's bar sizes beyond the
    portfolios' (``flink.bar_seconds``). The partitions
    are read merged by event time (any interleaving gives the same output per portfolio), and
    the end of the records closes every open bar, as a bounded source does.

    >>> from streamfolio.core.portfolio import PortfolioSpec
    >>> from streamfolio.replay.records import Heartbeat
    >>> spec = PortfolioSpec("p", ("A", "B"), bar_ms=1_000, periods_per_year=1_000)
    >>> prices = {0: [Tick(0, "A", 10, offset=0), Tick(1_000, "A", 11, offset=1)],
    ...           1: [Tick(0, "B", 20, offset=0), Heartbeat(900, offset=1),
    ...               Tick(2_000, "B", 21, offset=2)]}
    >>> weights = {"timestamp": 0, "portfolio_id": "p", "weights": {"A": 0.5, "B": 0.5}}
    >>> events = replay_topic_records([ReplayPortfolio(spec)], prices, [("weights", weights)],
    ...                               now_ms=lambda: 10_000)
    >>> [(e.kind, e.record["timestamp"]) for e in events]
    [('stats', 2000), ('stats', 3000), ('metrics', 3000)]
    """
    engine = ReplayEngine(
        portfolios,
        max_out_of_orderness_ms=max_out_of_orderness_ms,
        partitions=list(prices),
        max_future_skew_ms=max_future_skew_ms,
        now_ms=now_ms,
        bar_sizes_ms=bar_sizes_ms,
    )
    events: list[ReplayEvent] = []
    for portfolio_id, timestamp, portfolio in definitions:
        events.extend(engine.define(portfolio_id, timestamp, portfolio))
    for kind, record in controls:
        events.extend(engine.control(kind, record))

    def located(partition: int, records: Iterable[PriceRecord]) -> Iterator[PriceRecord]:
        for record in records:
            yield record if record.partition == partition else replace(record, partition=partition)

    # heapq.merge keeps each partition's own order whatever its event times.
    merged = heapq.merge(
        *(located(p, records) for p, records in prices.items()),
        key=lambda r: (r.event_time_ms, r.partition),
    )
    events.extend(engine.run(merged))
    return events
