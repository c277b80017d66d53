"""``streamfolio feed``: pick a source, publish its ticks, stop cleanly."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from streamfolio.config import Settings
from streamfolio.feeds.publish import FeedStats, PriceFormat, TickPublisher
from streamfolio.feeds.simulate import (
    Calibration,
    Disorder,
    TickSimulator,
    crash_regime,
    daily_calibration,
    reference_calibration,
)
from streamfolio.kafka.clients import DeadLetters, RecordProducer
from streamfolio.kafka.topics import contract

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class FeedOptions:
    source: str = "sim"
    rate: float = 20.0
    fast: bool = False
    duration_s: float | None = None
    max_ticks: int | None = None
    price_format: str | None = None
    seed: int = 7
    start: str | None = None
    calibration: str = "reference"
    drift: float = 0.10
    regime_change_after_s: float | None = None
    crash: tuple[str, ...] = ()
    crash_drift: float = -0.8
    speedup: float = 1.0
    out_of_order: float = 0.0
    late: float = 0.0
    prices: Path | None = None
    speed: float = 0.0
    interval_s: float = 2.0
    all_hours: bool = False


def configured_tickers(settings: Settings) -> list[str]:
    """Every ticker of every configured portfolio, sorted."""
    return sorted({t for p in settings.portfolios for t in p.tickers})


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
            raise ValueError(
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
    raise ValueError(f"unknown calibration {kind!r}; use reference or history")


def _start_ms(start: str | None) -> int:
    if start is None:
        return int(time.time() * 1000)
    when = dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def _simulated(settings: Settings, options: FeedOptions) -> Iterator[tuple[int, str, float]]:
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
    for block in simulator.blocks():
        yield from block


def _replayed(options: FeedOptions) -> Iterator[tuple[int, str, float]]:
    from streamfolio.feeds.history import read_history

    if options.prices is None:
        raise ValueError("--source replay needs --prices FILE (CSV time,ticker,price[,volume])")
    history = read_history(options.prices, ticks=True)
    rows = zip(
        history.times_ms.tolist(), history.tickers.tolist(), history.prices.tolist(), strict=True
    )
    if options.speed <= 0:
        yield from rows
        return
    # Keep the file's event-time spacing, compressed by --speed.
    wall_start = time.monotonic()
    first: int | None = None
    for event_ms, ticker, price in rows:
        first = event_ms if first is None else first
        due = wall_start + (event_ms - first) / 1000.0 / options.speed
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield event_ms, ticker, price


def run_feed(settings: Settings, options: FeedOptions, progress: Progress) -> FeedStats:
    """Run one feed until its source ends, ``--duration``/``--max-ticks``, or Ctrl-C."""
    price_format: PriceFormat = (
        "bourse" if (options.price_format or settings.flink.price_format) == "bourse" else "tick"
    )
    producer = RecordProducer(settings.kafka)
    dead = DeadLetters(producer, contract(settings, "dead_letter"), component="feed")
    publisher = TickPublisher(
        producer,
        contract(settings, "prices"),
        dead,
        known_tickers=configured_tickers(settings),
        price_format=price_format,
        source=options.source,
    )
    rate: float | None = None
    if options.source == "sim":
        ticks = _simulated(settings, options)
        rate = None if options.fast else options.rate
    elif options.source == "replay":
        ticks = _replayed(options)
    elif options.source == "cse":
        from streamfolio.feeds.cse_feed import cse_ticks

        ticks = cse_ticks(settings, options, publisher, progress)
    else:
        raise ValueError(f"unknown source {options.source!r}; use sim, replay or cse")
    progress(
        f"feed {options.source}: publishing to {settings.topics.prices} at "
        f"{settings.kafka.bootstrap_servers} ({price_format} format); Ctrl-C to stop"
    )
    try:
        publisher.run(
            ticks,
            rate=rate,
            max_ticks=options.max_ticks,
            duration_s=options.duration_s,
            progress=progress,
        )
    except KeyboardInterrupt:
        progress("stopping: flushing accepted ticks (Ctrl-C again to abandon them)")
    _flush(producer, progress)
    return publisher.stats


def _flush(producer: RecordProducer, progress: Progress) -> None:
    """Wait for every accepted tick to be acknowledged, however long the broker is away."""
    waited = 0.0
    while True:
        remaining = producer.flush(5.0)
        if remaining == 0:
            return
        waited += 5.0
        progress(
            f"waiting for the broker: {remaining} tick(s) not yet acknowledged ({waited:.0f} s)"
        )
