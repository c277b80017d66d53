"""``streamfolio feed``: pick a source, publish its ticks and heartbeats, stop cleanly.

Each source says how far its heartbeats may go (SEMANTICS.md §4): the simulator and a replay
know their next tick, so their heartbeats promise its event time (less the simulator's
disorder), and a replay that ends promises one past its last tick; the CSE poller cannot know
what the exchange will report, so it promises its wall clock minus ``feed.heartbeat_lag_ms``
(``--lag-ms``). ``--source heartbeats`` publishes no ticks, only those clock heartbeats, for a
prices topic another producer writes (:mod:`streamfolio.feeds.heartbeat_feed`).

A broker outage loses nothing (docs/outage.md): what the producer accepted waits in its memory;
Ctrl-C or SIGTERM stops the feed within seconds all the same, keeping what the broker has not
acknowledged on disk for the next run, which publishes it first (:mod:`streamfolio.feeds.spool`).

The options are :class:`~streamfolio.feeds.options.FeedOptions`, importable from here too.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path

import numpy as np

from streamfolio.config import Settings
from streamfolio.errors import UsageError
from streamfolio.feeds.heartbeat import Heartbeats, wall_clock_floor
from streamfolio.feeds.options import FeedOptions, Progress
from streamfolio.feeds.publish import FeedStats, Horizon, PriceFormat, TickPublisher
from streamfolio.feeds.simulate import (
    Calibration,
    Disorder,
    TickSimulator,
    crash_regime,
    daily_calibration,
    reference_calibration,
)
from streamfolio.feeds.spool import STOP_FLUSH_S, Spool, StopSignals, spool_path
from streamfolio.kafka.clients import DeadLetters, RecordProducer
from streamfolio.kafka.topics import contract

log = logging.getLogger(__name__)


def configured_tickers(settings: Settings) -> list[str]:
    """Every ticker a portfolio may hold, sorted: the configured portfolios' and
    ``exchange.universe`` (a portfolio added at run time may hold any of them)."""
    from streamfolio.portfolios import universe

    return sorted(universe(settings))


def _last_closes() -> dict[str, float]:
    from streamfolio.feeds.history import bundled_history_path, read_history

    history = read_history(bundled_history_path())
    return {str(t): float(p) for t, p in zip(history.tickers, history.prices, strict=True)}


def calibration_for(settings: Settings, kind: str, drift: float) -> Calibration:
    """The simulator's calibration for the configured tickers."""
    tickers = configured_tickers(settings)
    closes = _last_closes()
    if kind == "reference":
        text = (
            resources.files("streamfolio")
            .joinpath("data", "reference", "covariance.json")
            .read_text()
        )
        cov: dict[str, dict[str, float]] = json.loads(text)
        missing = [t for t in tickers if t not in cov]
        if missing:
            raise UsageError(
                f"the reference covariance has no tickers {', '.join(missing)}; "
                "use --calibration history"
            )
        sub = {a: {b: cov[a][b] for b in tickers} for a in tickers}
        return reference_calibration(sub, annual_drift=drift, start_prices=closes)
    if kind == "history":
        from streamfolio.bootstrap import daily_statistics
        from streamfolio.feeds.history import bundled_history_path, read_history

        history = read_history(bundled_history_path())
        rows = list(
            zip(
                history.times_ms.tolist(),
                history.tickers.tolist(),
                history.prices.tolist(),
                strict=True,
            )
        )
        daily = daily_statistics(rows, tickers)
        return daily_calibration(
            tickers,
            daily.covariance,
            annual_drift=drift,
            trading_days_per_year=float(settings.exchange.trading_days_per_year),
            start_prices=[closes.get(t, 100.0) for t in tickers],
        )
    raise UsageError(f"unknown calibration {kind!r}; use reference or history")


def _start_ms(start: str | None) -> int:
    if start is None:
        return int(time.time() * 1000)
    when = dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


class SimulatedTicks:
    """The simulator's ticks, and the least event time of those not yielded yet.

    >>> import numpy as np
    >>> from streamfolio.feeds.simulate import Calibration
    >>> c = Calibration(("A", "B"), np.zeros(2), np.eye(2) * 1e-8, np.array([10.0, 20.0]))
    >>> ticks = SimulatedTicks(TickSimulator(c, rate=4.0, start_ms=0))
    >>> stream = iter(ticks)
    >>> ticks.horizon(), next(stream)[0], ticks.horizon(), next(stream)[0], ticks.horizon()
    (0, 0, 250, 250, 500)
    """

    def __init__(self, simulator: TickSimulator) -> None:
        self._simulator = simulator
        self._yielded = 0

    def __iter__(self) -> Iterator[tuple[int, str, float]]:
        for block in self._simulator.blocks():
            for tick in block:
                # Counted before the yield: once the tick is published, the horizon is past it.
                self._yielded += 1
                yield tick

    def horizon(self) -> int:
        """No tick still to come is older than this."""
        return self._simulator.earliest_from(self._yielded)


def _simulated(settings: Settings, options: FeedOptions) -> SimulatedTicks:
    calibration = calibration_for(settings, options.calibration, options.drift)
    regimes = None
    if options.regime_change_after_s is not None:
        # The change comes after that many seconds of wall time, i.e. speedup× as much event time.
        crashed = options.crash or calibration.tickers
        after = options.regime_change_after_s * options.speedup
        regimes = {after: crash_regime(calibration, crashed, options.crash_drift)}
    bound = settings.flink.max_out_of_orderness_ms
    longest_bar = max(p.bar_seconds for p in settings.portfolios) * 1000
    disorder = Disorder(
        out_of_order=options.out_of_order,
        bound_ms=bound,
        late=options.late,
        late_by_ms=bound + 2 * longest_bar,
    )
    simulator = TickSimulator(
        calibration,
        options.rate / options.speedup,
        _start_ms(options.start),
        seed=options.seed,
        regimes=regimes,
        disorder=disorder,
    )
    return SimulatedTicks(simulator)


class ReplayedTicks:
    """A tick file's rows, paced by ``speed``, and the least event time of those not yielded.

    Tick files may be out of order, so the horizon is the minimum over the rows still to come;
    once every row is out it is one past the greatest event time, which lets the last bars
    close.

    >>> ticks = ReplayedTicks([(5, "A", 1.0), (3, "B", 2.0), (9, "A", 1.5)])
    >>> stream = iter(ticks)
    >>> ticks.horizon(), next(stream)[0], ticks.horizon(), next(stream)[0], ticks.horizon()
    (3, 5, 3, 3, 9)
    >>> list(stream), ticks.horizon()
    ([(9, 'A', 1.5)], 10)
    >>> ReplayedTicks([]).horizon() is None
    True
    """

    def __init__(self, rows: Iterable[tuple[int, str, float]], *, speed: float = 0.0) -> None:
        self._rows = list(rows)
        self._speed = speed
        self._next = 0
        times = np.array([row[0] for row in self._rows], dtype=np.int64)
        # least[i] = min(times[i:]); least[n] = max(times) + 1, the promise after the last row.
        tail = [int(times.max()) + 1] if len(times) else []
        self._least = np.minimum.accumulate(times[::-1])[::-1].tolist() + tail

    def __iter__(self) -> Iterator[tuple[int, str, float]]:
        # Keep the file's event-time spacing, compressed by speed (0: as fast as possible).
        wall_start = time.monotonic()
        first: int | None = None
        for index, row in enumerate(self._rows):
            if self._speed > 0:
                first = row[0] if first is None else first
                due = wall_start + (row[0] - first) / 1000.0 / self._speed
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            # Moved before the yield: once the row is published, the horizon is past it.
            self._next = index + 1
            yield row

    def horizon(self) -> int | None:
        """No row still to come is older than this (None for an empty file)."""
        return self._least[self._next] if self._least else None


def _replayed(options: FeedOptions) -> ReplayedTicks:
    from streamfolio.feeds.history import read_history

    if options.prices is None:
        raise UsageError("--source replay needs --prices FILE (CSV time,ticker,price[,volume])")
    history = read_history(options.prices, ticks=True)
    rows = zip(
        history.times_ms.tolist(), history.tickers.tolist(), history.prices.tolist(), strict=True
    )
    return ReplayedTicks(rows, speed=options.speed)


def run_feed(
    settings: Settings,
    options: FeedOptions,
    progress: Progress,
    *,
    producer: RecordProducer | None = None,
) -> FeedStats:
    """Run one feed until its source ends, ``--duration``/``--max-ticks``, Ctrl-C or SIGTERM.

    ``producer`` replaces the Kafka producer in tests.
    Unless ``feed.heartbeat_ms`` is 0, heartbeats go out on every partition of the prices
    topic all along, and a last round after the last tick. ``--source heartbeats`` sends
    nothing else, until ``--duration`` or Ctrl-C
    (:class:`~streamfolio.feeds.heartbeat_feed.HeartbeatFeed`).

    Before anything new, the messages the last run kept on disk go out
    (:meth:`~streamfolio.feeds.spool.Spool.republish`). At the end the feed waits for the
    broker's acknowledgements: as long as it takes when the feed ended by itself, at most
    :data:`~streamfolio.feeds.spool.STOP_FLUSH_S` on Ctrl-C or SIGTERM, after which what is left
    is kept on disk for the next run (:meth:`~streamfolio.feeds.spool.Spool.finish`).
    """
    lag_ms = settings.feed.heartbeat_lag_ms if options.lag_ms is None else options.lag_ms
    if options.source == "heartbeats":
        return _run_heartbeats(settings, options, progress, producer, lag_ms)
    price_format: PriceFormat = (
        "bourse" if (options.price_format or settings.flink.price_format) == "bourse" else "tick"
    )
    producer = producer or RecordProducer(settings.kafka, component="feed")
    prices = contract(settings, "prices")
    dead = DeadLetters(producer, contract(settings, "dead_letter"), component="feed")
    heartbeats: Heartbeats | None = None
    if settings.feed.heartbeat_ms > 0:
        heartbeats = Heartbeats(
            producer,
            prices.name,
            interval_ms=settings.feed.heartbeat_ms,
            source=options.source,
            clock_floor=(wall_clock_floor(lag_ms) if options.source == "cse" else None),
        )
    publisher = TickPublisher(
        producer,
        prices,
        dead,
        known_tickers=configured_tickers(settings),
        price_format=price_format,
        source=options.source,
        heartbeats=heartbeats,
    )
    rate: float | None = None
    horizon: Horizon | None = None
    if options.source == "sim":
        simulated = _simulated(settings, options)
        source: Iterable[tuple[int, str, float]] = simulated
        horizon = simulated.horizon
        rate = None if options.fast else options.rate
    elif options.source == "replay":
        replayed = _replayed(options)
        source, horizon = replayed, replayed.horizon
    elif options.source == "cse":
        from streamfolio.feeds.cse_feed import cse_ticks

        source = cse_ticks(settings, options, publisher, progress)
    else:
        raise UsageError(f"unknown source {options.source!r}; use sim, replay, cse or heartbeats")
    beats = (
        f", heartbeats every {settings.feed.heartbeat_ms} ms"
        if heartbeats is not None
        else ", no heartbeats (feed.heartbeat_ms: 0)"
    )
    stats = publisher.stats
    with StopSignals(on_stop=producer.stop_waiting) as signals:
        spool = Spool(producer, feed_spool_path(settings), progress, signals)
        republished = False
        try:
            stats.republished = spool.republish()
            republished = True
            progress(
                f"feed {options.source}: publishing to {settings.topics.prices} at "
                f"{settings.kafka.bootstrap_servers} ({price_format} format{beats}); "
                "Ctrl-C to stop"
            )
            publisher.run(
                source,
                rate=rate,
                max_ticks=options.max_ticks,
                duration_s=options.duration_s,
                progress=progress,
                horizon=horizon,
            )
        except KeyboardInterrupt:
            if not republished:
                return stats  # nothing new accepted; the file keeps the last run's messages
            progress(
                f"stopping: waiting {STOP_FLUSH_S:g} s at most for the broker to acknowledge "
                "what was accepted (the rest is kept on disk for the next run)"
            )
            stats.spooled = spool.finish(requested=True)
            return stats
        stats.spooled = spool.finish(requested=False)
    return stats


def feed_spool_path(settings: Settings) -> Path:
    """Where this feed keeps what the broker had not acknowledged when it was stopped."""
    return spool_path(settings.feed.spool_dir, settings.topics.prices, settings.kafka.client_id)


def _run_heartbeats(
    settings: Settings,
    options: FeedOptions,
    progress: Progress,
    producer: RecordProducer | None,
    lag_ms: int,
) -> FeedStats:
    from streamfolio.feeds.heartbeat_feed import HeartbeatFeed

    if options.max_ticks is not None:
        raise UsageError(
            "--source heartbeats publishes no ticks: stop it with --duration or Ctrl-C, "
            "not --max-ticks"
        )
    feed = HeartbeatFeed(settings, lag_ms=lag_ms)
    producer = producer or RecordProducer(settings.kafka, component="feed")
    with StopSignals(on_stop=producer.stop_waiting) as signals:
        spool = Spool(producer, feed_spool_path(settings), progress, signals)
        try:
            feed.stats.republished = spool.republish()
        except KeyboardInterrupt:
            return feed.stats
        stats = feed.run(producer, progress, duration_s=options.duration_s)
        stats.spooled = spool.finish(requested=feed.interrupted)
    return stats
